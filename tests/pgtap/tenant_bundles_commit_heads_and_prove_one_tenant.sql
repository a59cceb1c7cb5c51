-- Tenant bundles: commit_tenant_heads commits every tenant's head into the log once per new
-- head (a compliance.tenant_heads event nobody else may write or erase), a tenant-mode export
-- is refused with a specific SQLSTATE until a signed checkpoint covers a commitment, and its
-- plan and lines hold the tenant's events and proofs and nothing of any other tenant.
BEGIN;
SELECT plan(25);

-- An uploader that records each pending anchor as uploaded with a (fake) signed checkpoint:
-- SQL checks the note's shape, the signature is the offline verifier's business.
CREATE FUNCTION pg_temp.upload_anchors() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_anchor record;
BEGIN
    LOOP
        SELECT * INTO v_anchor FROM compliance.claim_next_anchor('pgtap');
        EXIT WHEN NOT FOUND;
        PERFORM compliance.record_anchor_upload(
            v_anchor.anchor_id, 'bucket', 'x/anchors/' || lpad(v_anchor.seq_to::text, 20, '0') || '-'
            || v_anchor.cadence_id || '.json', 'v1', 'COMPLIANCE', now() + interval '1 day', v_anchor.lease_id,
            (SELECT a.checkpoint FROM compliance.anchors AS a WHERE a.anchor_id = v_anchor.anchor_id)
            || E'\n— pgtap AAAAAA==\n',
            'x/checkpoints/' || lpad(v_anchor.seq_to::text, 20, '0') || '-' || v_anchor.cadence_id || '.checkpoint', 'v2');
    END LOOP;
END;
$$;

-- Producers cannot write or erase a commitment.
SELECT throws_ok($$SELECT compliance.emit('compliance.tenant_heads', 'mallory', '{"tree_size": 1}')$$, 'AC008', NULL,
                 'emit refuses the reserved compliance.tenant_heads type');

SELECT is(compliance.commit_tenant_heads(), NULL, 'an empty log has no heads to commit');
SELECT throws_ok($$SELECT compliance.request_export('{"tenant_id": "acme"}', 'auditor', 'tenant')$$, 'AC035', NULL,
                 'a tenant export before any signed checkpoint covers a commitment is refused');

-- seq 1-9: acme, beta and no tenant in turn.
SELECT compliance.emit('user.login', 'alice', jsonb_build_object('n', i), (ARRAY['acme', 'beta', NULL])[i % 3 + 1])
  FROM generate_series(0, 8) AS i;
SELECT compliance.drain();
SELECT compliance.create_anchor();
SELECT isnt(compliance.commit_tenant_heads(), NULL, 'the heads at seq 9 are committed');
SELECT is(compliance.commit_tenant_heads(), NULL, 'a second run while the commitment waits in the outbox does nothing');
SELECT results_eq(
    $$SELECT event_type, tenant_id, actor, payload FROM compliance.audit_outbox$$,
    $$SELECT 'compliance.tenant_heads', NULL::text, 'compliance.commit_tenant_heads',
             jsonb_build_object('tree_size', 9, 'tenants', 3, 'root', encode(r.root, 'hex'))
        FROM compliance.tenant_heads_root() AS r$$,
    'the commitment names the size, the number of tenants and the root of the heads tree'
);
SELECT compliance.drain();
SELECT is(compliance.commit_tenant_heads(), NULL, 'nothing but the commitment was chained since: nothing to commit');
SELECT results_eq($$SELECT tree_size, tenants, root FROM compliance.tenant_heads_root(9)$$,
                  $$SELECT 9::bigint, 3::bigint, decode(payload ->> 'root', 'hex') FROM compliance.audit_events WHERE seq = 10$$,
                  'the heads at the committed size are still proved after the log grew');
SELECT throws_ok($$SELECT * FROM compliance.tenant_heads_root(8)$$, 'AC104', NULL,
                 'a size at which no heads were committed is refused');
SELECT throws_ok($$SELECT compliance.erase('{10}', '{payload}', 'r', 'GDPR Art. 17')$$, 'AC086', NULL,
                 'a commitment cannot be erased');

-- The first anchor (seq 9) does not cover the commitment (seq 10); the second one does.
SELECT pg_temp.upload_anchors();
SELECT throws_ok($$SELECT compliance.request_export('{"tenant_id": "acme", "to_checkpoint": 9}', 'auditor', 'tenant')$$,
                 'AC035', NULL, 'a checkpoint that covers no commitment cannot prove a tenant');
SELECT compliance.create_anchor();
SELECT pg_temp.upload_anchors();

-- Bad requests.
SELECT throws_ok($$SELECT compliance.request_export('{"tenant_id": "acme"}', 'auditor', 'everything')$$, 'AC034', NULL,
                 'an unknown mode');
SELECT throws_ok($$SELECT compliance.request_export('{}', 'auditor', 'tenant')$$, 'AC030', NULL,
                 'tenant mode needs a tenant_id');
SELECT throws_ok($$SELECT compliance.request_export('{"tenant_ids": ["acme"]}', 'auditor', 'tenant')$$, 'AC030', NULL,
                 'tenant mode names exactly one tenant');
SELECT throws_ok($$SELECT compliance.request_export('{"tenant_id": "acme", "event_types": ["user.login"]}', 'auditor',
                 'tenant')$$, 'AC030', NULL, 'tenant mode takes no other filter');
SELECT throws_ok($$SELECT compliance.request_export('{"tenant_id": "acme", "to_checkpoint": "10"}', 'auditor',
                 'tenant')$$, 'AC030', NULL, 'a checkpoint is a tree size, not a string');
SELECT throws_ok($$SELECT compliance.request_export('{"tenant_id": "acme", "to_checkpoint": 12}', 'auditor', 'tenant')$$,
                 'AC035', NULL, 'a size without a signed checkpoint');
SELECT throws_ok($$SELECT compliance.request_export('{"tenant_id": "gamma"}', 'auditor', 'tenant')$$, 'AC035', NULL,
                 'a tenant without events among the committed ones');

-- acme's bundle against the checkpoint of size 10.
SELECT compliance.request_export('{"tenant_id": "acme"}', 'auditor', 'tenant') AS acme_job \gset
SELECT compliance.claim_export(:'acme_job');
SELECT results_eq(
    format($$SELECT p ->> 'mode', p -> 'format_version', p -> 'filter', p -> 'seq_from', p -> 'seq_to', p -> 'line_count',
                    p -> 'tenant' -> 'to' -> 'head' -> 'tree_size', p ? 'anchors', p -> 'tenant' ? 'from'
               FROM compliance.export_plan(%L) AS p$$, :'acme_job'),
    $$VALUES ('tenant', '4'::jsonb, '{"tenant_id": "acme", "to_checkpoint": 10, "withhold_payloads": false}'::jsonb,
              '1'::jsonb, '7'::jsonb, '3'::jsonb, '3'::jsonb, false, false)$$,
    'the plan: tenant mode, the checkpoint resolved into the filter, acme''s three events, no range-only fields'
);
SELECT results_eq(
    format($$SELECT seq, matched FROM compliance.tenant_export_lines(%L, 1, 10)$$, :'acme_job'),
    $$VALUES (1::bigint, true), (4, true), (7, true)$$,
    'the lines are acme''s events only'
);
SELECT is(
    (SELECT p -> 'tenant' -> 'to' ->> 'checkpoint' FROM compliance.export_plan(:'acme_job') AS p),
    (SELECT signed_checkpoint FROM compliance.anchors WHERE seq_to = 10),
    'the bundle carries the signed checkpoint of size 10'
);
SELECT is(
    (SELECT (p -> 'tenant' -> 'to' -> 'commitment' ->> 'line')::jsonb ->> 'event_type'
       FROM compliance.export_plan(:'acme_job') AS p),
    'compliance.tenant_heads',
    'and the commitment it covers, as a bundle line'
);
SELECT is_empty(format($$SELECT * FROM compliance.export_lines(%L, 1, 10)$$, :'acme_job'),
                'the range-mode lines give nothing for a tenant-mode job');

-- Events without a tenant form a tenant of their own; between two checkpoints.
SELECT compliance.emit('user.logout', 'bob', '{}', NULL);
SELECT compliance.drain();
SELECT compliance.create_anchor();
SELECT compliance.commit_tenant_heads();
SELECT compliance.drain();
SELECT compliance.create_anchor();
SELECT pg_temp.upload_anchors();
SELECT compliance.request_export('{"tenant_id": null, "from_checkpoint": 10}', 'auditor', 'tenant') AS null_job \gset
SELECT compliance.claim_export(:'null_job');
SELECT results_eq(
    format($$SELECT l.seq
               FROM compliance.export_plan(%1$L) AS p,
                    compliance.tenant_export_lines(%1$L, (p ->> 'seq_from')::bigint, (p ->> 'seq_to')::bigint) AS l$$,
           :'null_job'),
    $$VALUES (10::bigint), (12)$$,
    'between the checkpoints of size 10 and 13 (heads at 9 and 12): the commitment at seq 10 and the logout at 12, '
    'both without a tenant (seq 11 is acme''s export request)'
);
SELECT ok(
    (SELECT p -> 'tenant' ? 'from' AND jsonb_array_length(p -> 'tenant' -> 'consistency_proof') > 0
       FROM compliance.export_plan(:'null_job') AS p),
    'with from_checkpoint the plan carries the earlier proof and the consistency proof'
);

SELECT * FROM finish();
ROLLBACK;
