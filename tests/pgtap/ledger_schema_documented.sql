-- The ledger's tables, columns, keys and functions exist as documented, and every table,
-- column and function in schema compliance carries a comment (checked generically, so it
-- also covers what later areas add).
BEGIN;
SELECT plan(26);

SELECT has_table('compliance', 'audit_outbox', 'compliance.audit_outbox exists');
SELECT has_table('compliance', 'audit_events', 'compliance.audit_events exists');
SELECT has_table('compliance', 'drainer_state', 'compliance.drainer_state exists');
SELECT has_table('compliance', 'verification_state', 'compliance.verification_state exists');
SELECT has_table('compliance', 'integrity_incidents', 'compliance.integrity_incidents exists');
SELECT columns_are('compliance', 'audit_events',
                   ARRAY['seq', 'event_id', 'occurred_at', 'recorded_at', 'tenant_id', 'event_type', 'actor',
                         'payload', 'hash_version', 'prev_hash', 'event_hash', 'payload_salt', 'actor_salt',
                         'payload_commitment', 'actor_commitment', 'payload_erased_by', 'actor_erased_by'],
                   'audit_events has the documented columns');
SELECT col_is_pk('compliance', 'audit_events', 'seq', 'seq is the primary key of audit_events');
SELECT col_is_unique('compliance', 'audit_events', 'event_id', 'event_id is unique');
-- Each index costs the drain per row; a random-order one (event_hash) also grows with the log.
-- The erased-events index is partial: empty until an erasure, so free for the drain. The
-- (tenant_id, seq) index lists a tenant's leaves for its proofs and tenant bundles; the
-- partial one the few tenant heads commitments.
SELECT indexes_are('compliance', 'audit_events',
                   ARRAY['audit_events_pkey', 'audit_events_event_id_key', 'idx_audit_events_recorded_at',
                         'idx_audit_events_erased', 'audit_events_tenant_seq', 'audit_events_tenant_heads'],
                   'audit_events has only the seq, event_id, recorded_at, (partial) erased and tenant indexes');
SELECT col_type_is('compliance', 'audit_events', 'payload', 'jsonb', 'payload is jsonb');
SELECT col_type_is('compliance', 'audit_events', 'event_hash', 'bytea', 'event_hash is bytea');
SELECT col_type_is('compliance', 'audit_events', 'occurred_at', 'timestamp with time zone', 'occurred_at is timestamptz');
SELECT col_not_null('compliance', 'audit_events', 'prev_hash', 'prev_hash is NOT NULL');
SELECT col_is_null('compliance', 'audit_events', 'tenant_id', 'tenant_id may be NULL (system-wide events)');
SELECT throws_ok($$INSERT INTO compliance.audit_events VALUES (1, gen_random_uuid(), now(), now(), NULL, 'a.b', 'x',
                   '{}', 1, sha256('x'), '\x00')$$, '23514', NULL, 'a hash that is not 32 bytes is refused');
SELECT is((SELECT count(*) FROM compliance.drainer_state), 1::bigint, 'drainer_state has its single row');

SELECT has_function('compliance', 'emit', ARRAY['text', 'text', 'jsonb', 'text', 'timestamp with time zone'],
                    'compliance.emit(event_type, actor, payload, tenant_id, occurred_at) exists');
SELECT function_returns('compliance', 'drain', ARRAY['integer'], 'integer', 'compliance.drain(max_rows) returns integer');
SELECT is_procedure('compliance', 'run_drainer', ARRAY['interval', 'integer', 'double precision'],
                    'compliance.run_drainer is a procedure (it commits batch by batch)');
SELECT function_returns('compliance', 'verify_chain', ARRAY['bigint', 'bigint'], 'setof record',
                        'compliance.verify_chain(from_seq, to_seq) returns a table');
SELECT has_function('compliance', 'schedule_jobs', ARRAY[]::text[], 'compliance.schedule_jobs() exists');
SELECT has_function('compliance', 'unschedule_jobs', ARRAY[]::text[], 'compliance.unschedule_jobs() exists');
SELECT has_function('compliance', 'cron_job_health', ARRAY[]::text[], 'compliance.cron_job_health() exists');

-- Comments: everything in the schema except extension members.
SELECT is_empty(
    $$SELECT c.oid::regclass FROM pg_class AS c
       WHERE c.relnamespace = 'compliance'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''
         AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.objid = c.oid AND d.deptype = 'e')$$,
    'every table and view in schema compliance has a comment'
);
SELECT is_empty(
    $$SELECT c.oid::regclass, a.attname FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid
       WHERE c.relnamespace = 'compliance'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         AND a.attnum > 0 AND NOT a.attisdropped
         AND coalesce(col_description(c.oid, a.attnum), '') = ''$$,
    'every column in schema compliance has a comment'
);
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
       WHERE p.pronamespace = 'compliance'::regnamespace
         AND coalesce(obj_description(p.oid, 'pg_proc'), '') = ''
         AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.objid = p.oid AND d.deptype = 'e')$$,
    'every function and procedure in schema compliance has a comment'
);

SELECT * FROM finish();
ROLLBACK;
