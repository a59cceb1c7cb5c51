-- compliance_watchdog can call compliance.metrics() and expectation_status() and nothing else: no other routine, no
-- table, view or sequence, so it can neither read audit events nor change anything.
BEGIN;
SELECT plan(13);

SELECT ok(has_function_privilege('compliance_watchdog', 'compliance.metrics()', 'EXECUTE'),
          'compliance_watchdog may execute compliance.metrics()');
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text
        FROM pg_proc AS p
       WHERE p.pronamespace = 'compliance'::regnamespace
         AND p.oid NOT IN ('compliance.metrics()'::regprocedure, 'compliance.expectation_status()'::regprocedure)
         AND has_function_privilege('compliance_watchdog', p.oid, 'EXECUTE')$$,
    'compliance_watchdog may execute no other function or procedure of schema compliance than metrics() and expectation_status()'
);
SELECT is_empty(
    $$SELECT c.relname
        FROM pg_class AS c
       WHERE c.relnamespace = 'compliance'::regnamespace
         AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
         AND has_table_privilege('compliance_watchdog', c.oid,
                                 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')$$,
    'compliance_watchdog has no privilege on any table, view or sequence of schema compliance'
);
SELECT ok(NOT has_schema_privilege('compliance_watchdog', 'compliance', 'CREATE'),
          'compliance_watchdog cannot create objects in schema compliance');

SELECT compliance.emit('test.watched', 'tester');
SELECT compliance.drain();

SET LOCAL ROLE compliance_watchdog;
SELECT is((SELECT value FROM compliance.metrics() WHERE metric = 'chain_length'), 1::double precision,
          'as compliance_watchdog, metrics() reports the chain');
SELECT throws_ok($$SELECT count(*) FROM compliance.audit_events$$, '42501', NULL,
                 'as compliance_watchdog, reading audit_events is refused');
SELECT throws_ok($$SELECT count(*) FROM compliance.audit_outbox$$, '42501', NULL,
                 'as compliance_watchdog, reading the outbox is refused');
SELECT throws_ok($$SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()$$, '42501', NULL,
                 'as compliance_watchdog, verify_chain (which reads events) is refused');
SELECT throws_ok($$SELECT compliance.emit('test.forged', 'watchdog')$$, '42501', NULL,
                 'as compliance_watchdog, emitting an event is refused');
SELECT throws_ok($$SELECT compliance.drain()$$, '42501', NULL, 'as compliance_watchdog, draining is refused');
SELECT throws_ok($$SELECT compliance.create_anchor()$$, '42501', NULL,
                 'as compliance_watchdog, recording an anchor is refused');
SELECT throws_ok($$SELECT compliance.reconcile_exports()$$, '42501', NULL,
                 'as compliance_watchdog, failing export jobs is refused');
SELECT throws_ok($$UPDATE compliance.drainer_state SET halted_at = NULL, halted_reason = NULL$$, '42501', NULL,
                 'as compliance_watchdog, clearing a drainer halt is refused');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
