-- compliance.event_receipt (what `auditchain prove` reads): the event given by seq or
-- event_id, the uploaded anchor with a signed checkpoint of the largest tree covering it, the
-- inclusion proof for that size and the event's bundle line. Exactly one of seq and event_id
-- (22023); an event not chained is AC074; no signed checkpoint covering it yet is AC075. The
-- auditor role may call it.
BEGIN;
SELECT plan(11);

CREATE FUNCTION pg_temp.upload(p_seq_to bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE compliance.anchors
       SET status = 'uploaded', bucket = 'b', object_key = 'anchors/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.json',
           version_id = 'v1', lock_mode = 'GOVERNANCE', retain_until = now() + interval '1 day', anchored_at = now(),
           signed_checkpoint = checkpoint || E'\n— test-key 3q2+7wAAAAA=\n',
           checkpoint_key = 'checkpoints/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.checkpoint',
           checkpoint_version_id = 'c1'
     WHERE seq_to = p_seq_to
$$;

SELECT compliance.emit('invoice.paid', 'user-' || g, jsonb_build_object('amount', g), 'tenant-a')
  FROM generate_series(1, 10) AS g;
SELECT compliance.drain(1000);
SELECT compliance.create_anchor();
SELECT event_id AS e4 FROM compliance.audit_events WHERE seq = 4 \gset

SELECT throws_ok('SELECT * FROM compliance.event_receipt()', '22023', NULL, 'neither seq nor event_id is refused');
SELECT throws_ok(format('SELECT * FROM compliance.event_receipt(4, %L)', :'e4'), '22023', NULL,
                 'both seq and event_id are refused');
SELECT throws_ok('SELECT * FROM compliance.event_receipt(11)', 'AC074', NULL, 'a seq not chained is AC074');
SELECT throws_ok(format('SELECT * FROM compliance.event_receipt(event_id => %L)', gen_random_uuid()), 'AC074', NULL,
                 'an unknown event_id is AC074');
SELECT throws_ok('SELECT * FROM compliance.event_receipt(4)', 'AC075',
                 'event seq 4 is not covered by a signed checkpoint yet: the next anchor will cover it',
                 'a pending anchor has no signed checkpoint yet: AC075');

SELECT pg_temp.upload(10);
SELECT compliance.emit('invoice.paid', 'user-' || g, jsonb_build_object('amount', g)) FROM generate_series(11, 20) AS g;
SELECT compliance.drain(1000);
SELECT compliance.create_anchor();
SELECT results_eq($$SELECT event_seq, tree_size, inclusion_proof, signed_checkpoint FROM compliance.event_receipt(4)$$,
                  $$SELECT 4::bigint, 10::bigint, compliance.inclusion_proof(4, 10), signed_checkpoint
                      FROM compliance.anchors WHERE seq_to = 10$$,
                  'the only uploaded signed checkpoint covering seq 4 is that of the anchor at seq 10');
SELECT throws_ok('SELECT * FROM compliance.event_receipt(15)', 'AC075', NULL,
                 'an event after the last uploaded checkpoint is AC075');
SELECT pg_temp.upload(20);
SELECT results_eq(format($$SELECT event_seq, tree_size, inclusion_proof FROM compliance.event_receipt(event_id => %L)$$, :'e4'),
                  $$VALUES (4::bigint, 20::bigint, compliance.inclusion_proof(4, 20))$$,
                  'by event_id, against the newest checkpoint covering it');
SELECT is((SELECT event_line::jsonb FROM compliance.event_receipt(4)),
          (SELECT jsonb_build_object('seq', 4, 'event_id', e.event_id, 'occurred_at', compliance._iso_utc(e.occurred_at),
                                     'recorded_at', compliance._iso_utc(e.recorded_at), 'tenant_id', 'tenant-a',
                                     'event_type', 'invoice.paid', 'actor', 'user-4', 'payload', e.payload::text,
                                     'prev_hash', encode(e.prev_hash, 'hex'), 'event_hash', encode(e.event_hash, 'hex'),
                                     'hash_version', 2, 'actor_salt', encode(e.actor_salt, 'hex'),
                                     'payload_salt', encode(e.payload_salt, 'hex'))
             FROM compliance.audit_events AS e WHERE e.seq = 4),
          'the event line is the bundle line (hash format v2: values with their salts, the payload as its jsonb text)');
SELECT is((SELECT event_line FROM compliance.event_receipt(4)),
          (SELECT compliance._event_line(e, false) FROM compliance.audit_events AS e WHERE e.seq = 4),
          'it is the line export_lines writes for a matched event (one definition)');

SET LOCAL ROLE compliance_auditor;
SELECT lives_ok('SELECT * FROM compliance.event_receipt(4)', 'the auditor role may call it');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
