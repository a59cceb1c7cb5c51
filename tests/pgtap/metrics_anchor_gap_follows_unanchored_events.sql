-- anchor_gap_seconds is the age of the oldest chained event that no uploaded anchor
-- protects: a pending or failed anchor protects nothing, an upload brings the gap to 0,
-- and events chained after it open a new gap. The events are chained as the drainer
-- would have chained them at an earlier time (valid hashes, verify_chain passes), which is
-- how a gap of 40 minutes exists inside one test transaction.
BEGIN;
SELECT plan(11);

CREATE FUNCTION pg_temp.metric(p_name text) RETURNS double precision
LANGUAGE sql AS $$ SELECT value FROM compliance.metrics() WHERE metric = p_name $$;

-- Append p_count events recorded at p_at to the chain and move the drainer's head (and tree).
CREATE FUNCTION pg_temp.chain_at(p_count integer, p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    v_hash bytea;
    v_next bytea;
    v_id uuid;
BEGIN
    SELECT last_seq, last_hash INTO v_seq, v_hash FROM compliance.drainer_state;
    FOR i IN 1..p_count LOOP
        v_seq := v_seq + 1;
        v_id := compliance._uuidv7();
        v_next := compliance.event_hash(v_hash, compliance.event_record(
            v_seq, v_id, p_at, p_at, NULL, 'test.backdated', 'tester', compliance.payload_digest('{}')));
        INSERT INTO compliance.audit_events
            (seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload, hash_version,
             prev_hash, event_hash)
        VALUES (v_seq, v_id, p_at, p_at, NULL, 'test.backdated', 'tester', '{}', 1, v_hash, v_next);
        v_hash := v_next;
    END LOOP;
    UPDATE compliance.drainer_state SET last_seq = v_seq, last_hash = v_hash, last_success_at = p_at;
    -- The drainer extends the Merkle tree with the chain.
    PERFORM compliance._tree_catch_up();
    PERFORM compliance._tenant_trees_catch_up();
END;
$$;

-- The key record_anchor_upload expects for an anchor.
CREATE FUNCTION pg_temp.anchor_key(p_anchor_id bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT 'anchors/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.json'
      FROM compliance.anchors WHERE anchor_id = p_anchor_id
$$;

SELECT pg_temp.chain_at(2, now() - interval '40 minutes');
SELECT is(pg_temp.metric('anchor_gap_seconds'), 2400::double precision,
          'with no anchor at all, the gap is the age of the first event');
SELECT is(pg_temp.metric('anchor_last_upload_age_seconds'), NULL, 'no upload ever: last upload age is NULL');

SELECT isnt(compliance.create_anchor(), NULL, 'create_anchor records an anchor for the head');
SELECT results_eq(
    $$SELECT metric, value FROM compliance.metrics()
       WHERE metric IN ('anchor_gap_seconds', 'anchors_pending')$$,
    $$VALUES ('anchor_gap_seconds', 2400::double precision), ('anchors_pending', 1)$$,
    'a pending anchor protects nothing yet: the gap stays, anchors_pending counts it'
);

SELECT compliance.record_anchor_error(max(anchor_id), 'EndpointConnectionError: bucket unreachable')
  FROM compliance.anchors;
SELECT is(pg_temp.metric('anchor_gap_seconds'), 2400::double precision,
          'a failed upload attempt leaves the anchor pending and the gap growing');

SELECT compliance.record_anchor_upload(anchor_id, 'anchor-bucket', pg_temp.anchor_key(anchor_id), 'v1',
                                       'GOVERNANCE', now() + interval '365 days', NULL,
                                       checkpoint || E'\n— test-key 3q2+7wAAAAA=\n',
                                       replace(replace(pg_temp.anchor_key(anchor_id), 'anchors/', 'checkpoints/'),
                                               '.json', '.checkpoint'), 'c1')
  FROM compliance.anchors WHERE status = 'pending';
SELECT results_eq(
    $$SELECT metric, value FROM compliance.metrics()
       WHERE metric IN ('anchor_gap_seconds', 'anchor_last_upload_age_seconds', 'anchors_pending')$$,
    $$VALUES ('anchor_gap_seconds', 0::double precision), ('anchor_last_upload_age_seconds', 0),
             ('anchors_pending', 0)$$,
    'after the upload every event is protected: gap 0, last upload just now, nothing pending'
);

SELECT pg_temp.chain_at(3, now() - interval '20 minutes');
SELECT is(pg_temp.metric('anchor_gap_seconds'), 1200::double precision,
          'events chained after the last uploaded anchor open a new gap from the first of them');

SELECT isnt(compliance.create_anchor(), NULL, 'a second anchor for the new head');
SELECT compliance.record_anchor_integrity_failure(
           anchor_id, 'anchor-bucket', pg_temp.anchor_key(anchor_id), 'v-other',
           'different content already at the key')
  FROM compliance.anchors WHERE status = 'pending';
SELECT results_eq(
    $$SELECT metric, value FROM compliance.metrics()
       WHERE metric IN ('anchor_gap_seconds', 'anchors_pending', 'anchors_failed')$$,
    $$VALUES ('anchor_gap_seconds', 1200::double precision), ('anchors_pending', 0), ('anchors_failed', 1)$$,
    'a failed anchor (integrity alarm) is counted and protects nothing'
);

INSERT INTO compliance.audit_outbox (event_id, emitted_at, occurred_at, event_type, actor, payload)
VALUES (compliance._uuidv7(), now() - interval '50 minutes', now(), 'test.queued', 'tester', '{}');
SELECT is(pg_temp.metric('anchor_gap_seconds'), 3000::double precision,
          'an older event waiting in the outbox sets the gap when it is the oldest unprotected one');

SELECT ok((SELECT ok FROM compliance.verify_chain()), 'the backdated chain is a valid chain');

SELECT * FROM finish();
ROLLBACK;
