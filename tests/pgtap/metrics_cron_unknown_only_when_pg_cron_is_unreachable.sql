-- The pg_cron metrics are NULL with the verdict "unknown" only when pg_cron cannot be
-- reached (what compliance.cron_job_health() raises then: AC050-AC052, no privilege, its
-- tables missing); any other error in reading it is a bug and makes metrics() raise instead
-- of reporting "unknown" for ever. cron_job_health() is replaced, inside this transaction
-- only, by one that raises the given SQLSTATE.
BEGIN;
SELECT plan(9);

CREATE FUNCTION pg_temp.break_cron_job_health(p_sqlstate text) RETURNS void
LANGUAGE plpgsql AS $outer$
BEGIN
    EXECUTE pg_catalog.format($f$
        CREATE OR REPLACE FUNCTION compliance.cron_job_health()
        RETURNS TABLE (jobname text, job text, database_name text, scheduled boolean, jobid bigint,
                       active boolean, last_status text, last_started_at timestamptz,
                       last_ended_at timestamptz, last_message text, last_succeeded_at timestamptz,
                       runs_last_hour bigint, failures_last_hour bigint)
        LANGUAGE plpgsql AS $b$
        BEGIN
            RAISE EXCEPTION 'simulated' USING ERRCODE = %L;
        END;
        $b$
    $f$, p_sqlstate);
END;
$outer$;

CREATE FUNCTION pg_temp.cron_rows_when(p_sqlstate text)
RETURNS TABLE (metric text, value double precision, verdict text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.break_cron_job_health(p_sqlstate);
    RETURN QUERY SELECT m.metric, m.value, m.verdict FROM compliance.metrics() AS m WHERE m.metric LIKE 'cron\_%';
END;
$$;

-- pg_cron not loaded, dblink missing, its database unreachable, a broken connection, dblink
-- refusing a password-less connection, no privilege, pg_cron's tables missing.
SELECT set_eq(
           pg_catalog.format('SELECT * FROM pg_temp.cron_rows_when(%L)', s.sqlstate),
           $$VALUES ('cron_failed_runs_last_hour', NULL::double precision, 'unknown'),
                    ('cron_jobs_unscheduled', NULL, 'unknown'),
                    ('cron_minutely_jobs_last_start_age_seconds', NULL, 'unknown')$$,
           pg_catalog.format('SQLSTATE %s from pg_cron: its metrics are NULL and unknown', s.sqlstate))
  FROM unnest(ARRAY['AC050', 'AC051', 'AC052', '08006', '2F003', '42501', '42P01']) AS s (sqlstate);

SELECT pg_temp.break_cron_job_health('22012');
SELECT throws_ok('SELECT * FROM compliance.metrics()', '22012', 'simulated',
                 'a division by zero in reading pg_cron raises: a bug is not "unknown"');
SELECT pg_temp.break_cron_job_health('XX000');
SELECT throws_ok('SELECT * FROM compliance.metrics()', 'XX000', 'simulated',
                 'an internal error in reading pg_cron raises');

SELECT * FROM finish();
ROLLBACK;
