-- compliance.audit_events_hex shows every event with prev_hash and event_hash as 64
-- lower-case hex characters, the same bytes as audit_events, and changes nothing: it is a
-- security_invoker view, so it gives no role more than audit_events already does.
BEGIN;
SELECT plan(6);

SELECT compliance.emit('test.hex', 'tester', jsonb_build_object('n', n), 'tenant-a') FROM generate_series(1, 3) AS n;
SELECT compliance.drain();

SELECT set_eq(
    $$SELECT seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload, hash_version,
             decode(prev_hash, 'hex') AS prev_hash, decode(event_hash, 'hex') AS event_hash
        FROM compliance.audit_events_hex$$,
    $$SELECT seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload, hash_version,
             prev_hash, event_hash
        FROM compliance.audit_events$$,
    'the view holds every event, its hashes decoding to the stored bytes'
);
SELECT is_empty(
    $$SELECT seq FROM compliance.audit_events_hex
       WHERE prev_hash !~ '^[0-9a-f]{64}$' OR event_hash !~ '^[0-9a-f]{64}$'$$,
    'both hashes are 64 lower-case hex characters'
);
SELECT is((SELECT prev_hash FROM compliance.audit_events_hex WHERE seq = 1), repeat('0', 64),
          'the first event''s prev_hash is 64 zeros');
SELECT is((SELECT h.prev_hash FROM compliance.audit_events_hex AS h WHERE h.seq = 2),
          (SELECT h.event_hash FROM compliance.audit_events_hex AS h WHERE h.seq = 1),
          'each prev_hash is the previous event''s event_hash, as text');
SELECT ok((SELECT reloptions @> ARRAY['security_invoker=true'] FROM pg_class
            WHERE oid = 'compliance.audit_events_hex'::regclass),
          'the view runs with the reader''s privileges');

CREATE ROLE ac_hex_auditor LOGIN IN ROLE compliance_auditor;
SET LOCAL ROLE ac_hex_auditor;
SELECT throws_ok($$DELETE FROM compliance.audit_events_hex$$, '42501', NULL,
                 'an auditor cannot change events through the view');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
