-- UPDATE, DELETE and TRUNCATE on the ledger raise AC020 for every role, the owner and a
-- superuser included, and still do under session_replication_role = replica. The
-- single-row state tables may be updated but never lose their row.
BEGIN;
SELECT plan(24);

SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 3) AS g;
SELECT compliance.drain();
INSERT INTO compliance.integrity_incidents (halted_at, halted_seq, halted_reason, resumed_from_seq, resumed_from_hash, note)
VALUES (now(), 3, 'staged for this test', 3, decode(repeat('00', 32), 'hex'), 'staged');

SELECT throws_ok($$UPDATE compliance.audit_events SET actor = 'mallory' WHERE seq = 2$$, 'AC020',
                 'compliance.audit_events is append-only: UPDATE is not allowed', 'UPDATE of an event raises AC020');
SELECT throws_ok('DELETE FROM compliance.audit_events WHERE seq = 2', 'AC020',
                 'compliance.audit_events is append-only: DELETE is not allowed', 'DELETE of an event raises AC020');
SELECT throws_ok('TRUNCATE compliance.audit_events', 'AC020',
                 'compliance.audit_events is append-only: TRUNCATE is not allowed', 'TRUNCATE of events raises AC020');
SELECT throws_ok($$UPDATE compliance.integrity_incidents SET note = 'rewritten'$$, 'AC020', NULL,
                 'UPDATE of an integrity incident raises AC020');
SELECT throws_ok('DELETE FROM compliance.integrity_incidents', 'AC020', NULL,
                 'DELETE of an integrity incident raises AC020');
SELECT throws_ok('TRUNCATE compliance.integrity_incidents', 'AC020', NULL,
                 'TRUNCATE of integrity incidents raises AC020');
SELECT throws_ok('DELETE FROM compliance.drainer_state', 'AC020', NULL, 'DELETE of drainer_state raises AC020');
SELECT throws_ok('TRUNCATE compliance.drainer_state', 'AC020', NULL, 'TRUNCATE of drainer_state raises AC020');
SELECT throws_ok('DELETE FROM compliance.verification_state', 'AC020', NULL,
                 'DELETE of verification_state raises AC020');
SELECT throws_ok('TRUNCATE compliance.verification_state', 'AC020', NULL,
                 'TRUNCATE of verification_state raises AC020');
SELECT lives_ok('UPDATE compliance.verification_state SET last_run_at = now()',
                'verification_state is still updated in place');

-- Replica mode silences ordinary triggers (logical replication, pg_restore); not these.
SET LOCAL session_replication_role = replica;
SELECT throws_ok($$UPDATE compliance.audit_events SET actor = 'mallory' WHERE seq = 2$$, 'AC020', NULL,
                 'UPDATE raises AC020 under session_replication_role = replica');
SELECT throws_ok('DELETE FROM compliance.audit_events WHERE seq = 2', 'AC020', NULL,
                 'DELETE raises AC020 under session_replication_role = replica');
SELECT throws_ok('TRUNCATE compliance.audit_events', 'AC020', NULL,
                 'TRUNCATE raises AC020 under session_replication_role = replica');
SELECT throws_ok('DELETE FROM compliance.integrity_incidents', 'AC020', NULL,
                 'DELETE of an incident raises AC020 under replica');
SET LOCAL session_replication_role = local;
SELECT throws_ok('DELETE FROM compliance.audit_events WHERE seq = 2', 'AC020', NULL,
                 'DELETE raises AC020 under session_replication_role = local');
RESET session_replication_role;

-- A role with the privileges still meets the guard: grant them for the test.
CREATE ROLE ac_pgtap_table_owner_like NOLOGIN;
GRANT USAGE ON SCHEMA compliance TO ac_pgtap_table_owner_like;
GRANT UPDATE, DELETE, TRUNCATE ON compliance.audit_events TO ac_pgtap_table_owner_like;
SET LOCAL ROLE ac_pgtap_table_owner_like;
SELECT throws_ok($$UPDATE compliance.audit_events SET actor = 'mallory'$$, 'AC020', NULL,
                 'a role granted UPDATE still gets AC020');
SELECT throws_ok('TRUNCATE compliance.audit_events', 'AC020', NULL, 'a role granted TRUNCATE still gets AC020');
RESET ROLE;

SELECT is((SELECT count(*) FROM compliance.audit_events), 3::bigint, 'all three events are still there');
SELECT is((SELECT actor FROM compliance.audit_events WHERE seq = 2), 'user-2', 'and unchanged');
SELECT lives_ok('SELECT compliance.drain()', 'appending by the drainer still works');

-- Every guard trigger in the schema fires in every replication mode (ENABLE ALWAYS).
SELECT is_empty(
    $$SELECT c.relname, t.tgname FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
       WHERE c.relnamespace = 'compliance'::regnamespace
         AND t.tgfoid = 'compliance._forbid_change()'::regprocedure AND t.tgenabled <> 'A'$$,
    'every _forbid_change trigger in schema compliance is ENABLE ALWAYS'
);
SELECT set_has(
    $$SELECT c.relname::text || '.' || t.tgname FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
       WHERE t.tgfoid = 'compliance._forbid_change()'::regprocedure$$,
    $$VALUES ('audit_events.forbid_truncate'),
             ('integrity_incidents.forbid_row_change'), ('integrity_incidents.forbid_truncate'),
             ('drainer_state.forbid_row_change'), ('drainer_state.forbid_truncate'),
             ('verification_state.forbid_row_change'), ('verification_state.forbid_truncate')$$,
    'the ledger tables carry the guard triggers'
);
SELECT ok((SELECT t.tgtype & 16 = 16 AND t.tgtype & 8 = 8 AND t.tgenabled = 'A'
                   AND t.tgfoid = 'compliance._audit_events_guard()'::regprocedure
              FROM pg_trigger AS t
            WHERE t.tgrelid = 'compliance.audit_events'::regclass AND t.tgname = 'forbid_row_change'),
          'the audit_events row guard (the erasure-aware _audit_events_guard) covers UPDATE and DELETE, ENABLE ALWAYS');

SELECT * FROM finish();
ROLLBACK;
