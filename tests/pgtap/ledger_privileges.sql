-- Least privilege for the ledger: compliance_writer may only emit (and request exports),
-- compliance_drainer may only drain, compliance_auditor may only read the ledger and verify
-- it, PUBLIC gets nothing in schema compliance, internal helpers are granted to no role, and
-- every SECURITY DEFINER function pins its search_path.
BEGIN;
SELECT plan(43);

-- PUBLIC: nothing at all, whoever added the object (functions get EXECUTE for PUBLIC by default).
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
       CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
       WHERE p.pronamespace = 'compliance'::regnamespace AND a.grantee = 0$$,
    'PUBLIC can execute no function or procedure in schema compliance'
);
SELECT is_empty(
    $$SELECT c.oid::regclass FROM pg_class AS c
       CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
                                                                     c.relowner))) AS a
       WHERE c.relnamespace = 'compliance'::regnamespace AND a.grantee = 0$$,
    'PUBLIC has no privilege on any table, view or sequence in schema compliance'
);
SELECT schema_privs_are('compliance', 'public', ARRAY[]::text[], 'PUBLIC has no privilege on schema compliance');
SELECT schema_privs_are('compliance_dblink', 'public', ARRAY[]::text[], 'PUBLIC cannot reach dblink''s schema');

-- Which routines each role may run.
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
       WHERE p.pronamespace = 'compliance'::regnamespace
         AND has_function_privilege('compliance_writer', p.oid, 'EXECUTE')
         AND p.proname NOT IN ('emit', 'emit_batch', 'request_export', 'normalize_export_filter')$$,
    'compliance_writer can execute emit, emit_batch, request_export and normalize_export_filter and nothing else'
);
SELECT set_eq(
    $$SELECT p.oid::regprocedure::text FROM pg_proc AS p
       WHERE p.pronamespace = 'compliance'::regnamespace
         AND has_function_privilege('compliance_drainer', p.oid, 'EXECUTE')$$,
    ARRAY['compliance.drain(integer)', 'compliance.run_drainer(interval,integer,double precision)',
          'compliance.record_halt()'],
    'compliance_drainer can execute drain, run_drainer and record_halt, nothing else'
);
SELECT function_privs_are('compliance', 'emit', ARRAY['text', 'text', 'jsonb', 'text', 'timestamptz'],
                          'compliance_writer', ARRAY['EXECUTE'], 'compliance_writer can emit');
SELECT function_privs_are('compliance', 'emit', ARRAY['text', 'text', 'jsonb', 'text', 'timestamptz'],
                          'compliance_drainer', ARRAY[]::text[], 'compliance_drainer cannot emit');
SELECT function_privs_are('compliance', 'emit', ARRAY['text', 'text', 'jsonb', 'text', 'timestamptz'],
                          'compliance_auditor', ARRAY[]::text[], 'compliance_auditor cannot emit');
SELECT function_privs_are('compliance', 'drain', ARRAY['integer'], 'compliance_drainer', ARRAY['EXECUTE'],
                          'compliance_drainer can drain');
SELECT function_privs_are('compliance', 'drain', ARRAY['integer'], 'compliance_writer', ARRAY[]::text[],
                          'compliance_writer cannot drain');
SELECT function_privs_are('compliance', 'run_drainer', ARRAY['interval', 'integer', 'double precision'],
                          'compliance_drainer', ARRAY['EXECUTE'], 'compliance_drainer can run the drainer loop');
SELECT function_privs_are('compliance', 'record_halt', ARRAY[]::text[], 'compliance_drainer', ARRAY['EXECUTE'],
                          'compliance_drainer can record a halt (run_drainer runs with its rights)');
SELECT function_privs_are('compliance', 'verify_chain', ARRAY['bigint', 'bigint'], 'compliance_auditor',
                          ARRAY['EXECUTE'], 'compliance_auditor can verify the chain');
SELECT function_privs_are('compliance', 'verify_chain', ARRAY['bigint', 'bigint'], 'compliance_writer',
                          ARRAY[]::text[], 'compliance_writer cannot verify the chain');
SELECT is_empty(
    $$SELECT p.oid::regprocedure, r.rolname FROM pg_proc AS p
       CROSS JOIN pg_roles AS r
       WHERE p.pronamespace = 'compliance'::regnamespace
         AND r.rolname IN ('compliance_writer', 'compliance_drainer', 'compliance_anchor', 'compliance_watchdog',
                           'compliance_exporter', 'compliance_auditor')
         AND p.proname IN ('_uuidv7', '_forbid_change', '_protect_table', '_epoch_us', 'payload_digest', 'event_record',
                           'event_hash', '_row_record', '_check_chain_head', 'acknowledge_integrity_failure',
                           '_verify_range', 'acknowledge_verification_failure',
                           'verify_new_events', '_cron_job_prefix', '_cron_conninfo', '_cron_exec',
                           '_cron_manual_schedule', 'schedule_jobs', 'unschedule_jobs', 'cron_jobs',
                           'cron_job_health',
                           '_chain_link', '_tree_leaf', '_tree_node', '_tree_fold', '_tree_fold_right',
                           '_tree_leaves', '_tree_leaves_checked', '_tree_stored_node', '_tree_range_hash',
                           '_tree_proof_hash', '_tree_append', '_tree_catch_up', '_tree_size', '_tree_check_chunks',
                           '_tree_recorded_roots')
         AND has_function_privilege(r.oid, p.oid, 'EXECUTE')$$,
    'internal helpers and owner-only operations are granted to no group role'
);

-- Table privileges.
SELECT table_privs_are('compliance', 'audit_events', 'compliance_auditor', ARRAY['SELECT'],
                       'compliance_auditor can only SELECT audit_events');
SELECT table_privs_are('compliance', 'drainer_state', 'compliance_auditor', ARRAY['SELECT'],
                       'compliance_auditor can only SELECT drainer_state');
SELECT table_privs_are('compliance', 'verification_state', 'compliance_auditor', ARRAY['SELECT'],
                       'compliance_auditor can only SELECT verification_state');
SELECT table_privs_are('compliance', 'integrity_incidents', 'compliance_auditor', ARRAY['SELECT'],
                       'compliance_auditor can only SELECT integrity_incidents');
SELECT table_privs_are('compliance', 'audit_outbox', 'compliance_auditor', ARRAY[]::text[],
                       'compliance_auditor has no privilege on audit_outbox');
SELECT is_empty(
    $$SELECT c.oid::regclass, r.rolname FROM pg_class AS c
       CROSS JOIN pg_roles AS r
       WHERE c.relnamespace = 'compliance'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
         AND r.rolname IN ('compliance_writer', 'compliance_drainer')
         AND (has_table_privilege(r.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
              OR (c.relkind = 'S' AND has_sequence_privilege(r.oid, c.oid, 'USAGE, SELECT, UPDATE')))$$,
    'compliance_writer and compliance_drainer have no table or sequence privilege (they go through functions)'
);
SELECT is_empty(
    $$SELECT c.oid::regclass FROM pg_class AS c
       WHERE c.relnamespace = 'compliance'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
         AND has_table_privilege('compliance_auditor', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')$$,
    'compliance_auditor can change no table'
);

-- SECURITY DEFINER functions run as the owner: they must not resolve names through the caller.
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
       WHERE p.pronamespace = 'compliance'::regnamespace AND p.prosecdef
         AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)$$,
    'every SECURITY DEFINER function in schema compliance pins search_path = pg_catalog, pg_temp'
);

-- The same, as each role sees it.
SET LOCAL ROLE compliance_writer;
SELECT lives_ok($$SELECT compliance.emit('auth.login', 'writer')$$, 'compliance_writer emits');
SELECT throws_ok('SELECT compliance.drain()', '42501', NULL, 'compliance_writer cannot drain');
SELECT throws_ok('SELECT count(*) FROM compliance.audit_outbox', '42501', NULL,
                 'compliance_writer cannot read the outbox');
SELECT throws_ok($$INSERT INTO compliance.audit_outbox (event_id, occurred_at, event_type, actor, payload)
                   VALUES (gen_random_uuid(), now(), 'auth.login', 'x', '{}')$$, '42501', NULL,
                 'compliance_writer cannot bypass emit''s validation');
SELECT throws_ok('SELECT count(*) FROM compliance.audit_events', '42501', NULL, 'compliance_writer cannot read events');
SELECT throws_ok('SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()', '42501', NULL, 'compliance_writer cannot verify');
RESET ROLE;

SET LOCAL ROLE compliance_drainer;
SELECT is(compliance.drain(), 1, 'compliance_drainer drains the writer''s event');
SELECT ok(NOT compliance.record_halt(), 'compliance_drainer can run record_halt, which records nothing on a sound chain');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'drainer')$$, '42501', NULL, 'compliance_drainer cannot emit');
SELECT throws_ok('SELECT count(*) FROM compliance.audit_events', '42501', NULL,
                 'compliance_drainer cannot read events directly');
SELECT throws_ok($$SELECT compliance.acknowledge_integrity_failure(1, 'x')$$, '42501', NULL,
                 'compliance_drainer cannot acknowledge its own halt');
SELECT throws_ok('UPDATE compliance.drainer_state SET halted_at = NULL', '42501', NULL,
                 'compliance_drainer cannot clear a halt by hand');
RESET ROLE;

SET LOCAL ROLE compliance_auditor;
SELECT is((SELECT count(*) FROM compliance.audit_events), 1::bigint, 'compliance_auditor reads events');
SELECT lives_ok('SELECT * FROM compliance.drainer_state, compliance.verification_state',
                'compliance_auditor reads the drainer''s and verifier''s state');
SELECT lives_ok('SELECT * FROM compliance.integrity_incidents', 'compliance_auditor reads integrity incidents');
SELECT row_eq('SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()', ROW(true, 1::bigint, NULL::bigint, NULL::text),
              'compliance_auditor verifies the chain');
SELECT throws_ok($$UPDATE compliance.audit_events SET actor = 'x'$$, '42501', NULL,
                 'compliance_auditor cannot update events');
SELECT throws_ok('SELECT compliance.verify_new_events()', '42501', NULL,
                 'compliance_auditor cannot move the incremental verifier');
SELECT throws_ok($$SELECT compliance.emit('auth.login', 'auditor')$$, '42501', NULL, 'compliance_auditor cannot emit');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
