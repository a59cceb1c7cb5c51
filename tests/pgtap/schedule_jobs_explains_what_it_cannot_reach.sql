-- When pg_cron lives in another database and dblink is missing, the scheduling functions
-- raise AC051 and their HINT holds the exact statements to run in pg_cron's database; when
-- the cron database cannot be reached they raise AC052 (no job is touched in either case).
-- ALTER DATABASE ... SET auditchain.cron_conninfo overrides how dblink connects.
BEGIN;
SELECT plan(9);
SELECT current_database() AS db, current_setting('cron.database_name') AS cron_db \gset

-- The SQLSTATE, message and HINT of a statement.
CREATE FUNCTION pg_temp.error_of(p_statement text)
RETURNS TABLE (error_state text, message text, hint text)
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE p_statement;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END;
$$;

SELECT isnt(current_setting('cron.database_name'), current_database()::text,
            'these tests run outside pg_cron''s database');

DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET auditchain.cron_conninfo = %L', current_database(),
                   'host=/nonexistent/socket port=1 dbname=postgres connect_timeout=2');
END
$$;
SELECT is(compliance._cron_conninfo(), 'host=/nonexistent/socket port=1 dbname=postgres connect_timeout=2',
          'the database setting auditchain.cron_conninfo overrides the default connection');
SET LOCAL auditchain.cron_conninfo = 'host=elsewhere';
SELECT is(compliance._cron_conninfo(), 'host=/nonexistent/socket port=1 dbname=postgres connect_timeout=2',
          'a session cannot redirect it with SET');
SELECT is((SELECT error_state FROM pg_temp.error_of('SELECT compliance.schedule_jobs()')), 'AC052',
          'an unreachable cron database is AC052');
SELECT is((SELECT error_state FROM pg_temp.error_of('SELECT * FROM compliance.cron_job_health()')), 'AC052',
          'cron_job_health raises AC052 too');

DROP EXTENSION dblink;
CREATE TEMP TABLE refused AS SELECT * FROM pg_temp.error_of('SELECT compliance.schedule_jobs()');
SELECT row_eq(
    'SELECT error_state, message FROM refused',
    ROW('AC051'::text, format('pg_cron runs in database %s and the dblink extension is not installed in database %s',
                              :'cron_db', :'db')),
    'without dblink schedule_jobs raises AC051'
);
SELECT is_empty(
    $$SELECT j.jobname FROM compliance.cron_jobs() AS j, refused AS r
       WHERE position(format('SELECT cron.schedule_in_database(%L, %L, %L, %L);',
                             j.jobname, j.schedule, j.command, j.database_name) IN r.hint) = 0$$,
    'its HINT holds the cron.schedule_in_database statement of every job'
);
SELECT ok((SELECT position(format('Run in database %s', current_setting('cron.database_name')) IN hint) > 0
             FROM refused),
          'and names the database to run them in');
SELECT is((SELECT hint FROM pg_temp.error_of('SELECT compliance.unschedule_jobs()')),
          format(E'Run in database %s as the role that should own the jobs:\n'
                 'SELECT cron.unschedule(jobid) FROM cron.job WHERE starts_with(jobname::text, %L);\n'
                 'or install dblink here (CREATE EXTENSION dblink SCHEMA compliance_dblink;) and call again.',
                 :'cron_db', 'auditchain:' || :'db' || ':'),
          'unschedule_jobs'' HINT gives the statement that removes this database''s jobs');

SELECT * FROM finish();
ROLLBACK;
