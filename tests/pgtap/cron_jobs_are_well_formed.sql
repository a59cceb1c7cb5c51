-- compliance.cron_jobs() lists this database's pg_cron jobs: named auditchain:<database>:<job>,
-- five-field schedules (pg_cron 1.4 silently reads a sixth field as something else), one
-- statement per command (a procedure may COMMIT only when its CALL is the whole command),
-- each calling a function that is installed, and the purge running in pg_cron's database.
BEGIN;
SELECT plan(8);
SELECT current_database() AS db, current_setting('cron.database_name') AS cron_db \gset

SELECT results_eq(
    $$SELECT job, schedule, command, database_name FROM compliance.cron_jobs()
       WHERE job <> 'purge-run-details' ORDER BY job$$,
    format($$VALUES ('anchor', '*/15 * * * *', 'SELECT compliance.create_anchor()', %1$L),
                    ('drain', '* * * * *', 'CALL compliance.run_drainer()', %1$L),
                    ('reconcile-exports', '*/5 * * * *', 'SELECT compliance.reconcile_exports()', %1$L),
                    ('sample', '* * * * *', 'SELECT compliance.record_activity_sample()', %1$L),
                    ('tenant-heads', '7,22,37,52 * * * *', 'SELECT compliance.commit_tenant_heads()', %1$L),
                    ('verify', '* * * * *', 'SELECT compliance.verify_new_events()', %1$L)$$, :'db'),
    'drain, sample and verify every minute, anchor and commit the tenant heads every 15 minutes, reconcile exports every 5, in this database'
);
SELECT is_empty(
    $$SELECT jobname FROM compliance.cron_jobs() WHERE jobname <> 'auditchain:' || current_database() || ':' || job$$,
    'every job is named auditchain:<database>:<job>'
);
SELECT is_empty(
    $$SELECT jobname FROM compliance.cron_jobs() WHERE cardinality(regexp_split_to_array(schedule, ' ')) <> 5$$,
    'every schedule has exactly five fields'
);
SELECT is_empty(
    $$SELECT jobname FROM compliance.cron_jobs() WHERE position(';' IN command) > 0$$,
    'every command is a single statement'
);
SELECT is_empty(
    $$SELECT j.jobname FROM compliance.cron_jobs() AS j
       LEFT JOIN pg_proc AS p ON p.pronamespace = 'compliance'::regnamespace AND p.proname = j.entry_point
       WHERE j.entry_point IS NOT NULL
         AND (p.oid IS NULL
              OR j.command <> CASE WHEN p.prokind = 'p' THEN 'CALL ' ELSE 'SELECT ' END
                               || 'compliance.' || j.entry_point || '()')$$,
    'every job calls its installed compliance function, with CALL for a procedure'
);
SELECT row_eq(
    $$SELECT schedule, database_name FROM compliance.cron_jobs() WHERE job = 'purge-run-details'$$,
    ROW('17 * * * *'::text, current_setting('cron.database_name')),
    'the purge runs hourly in pg_cron''s database'
);
SELECT is(
    (SELECT command FROM compliance.cron_jobs() WHERE job = 'purge-run-details'),
    'DELETE FROM cron.job_run_details WHERE jobid IN (SELECT jobid FROM cron.job '
    || 'WHERE pg_catalog.starts_with(jobname::text, ' || quote_literal('auditchain:' || current_database() || ':')
    || ')) AND coalesce(end_time, start_time) < pg_catalog.now() - interval ''7 days''',
    'the purge deletes only this database''s job runs older than 7 days'
);
SELECT is(compliance._cron_conninfo(),
          format('host=''%s'' port=''%s'' dbname=''%s'' user=''%s''',
                 split_part(current_setting('unix_socket_directories'), ',', 1), current_setting('port'),
                 current_setting('cron.database_name'), current_user),
          'dblink reaches pg_cron''s database through this server''s socket as the current role by default');
SELECT * FROM finish();
ROLLBACK;
