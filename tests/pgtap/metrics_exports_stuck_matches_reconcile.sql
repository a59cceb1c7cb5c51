-- exports_stuck counts exactly the running export jobs compliance.reconcile_exports()
-- would fail: no progress from the runner (heartbeat, else the claim) for 15 minutes.
-- Time passing is simulated by moving the job's timestamps back with the status-machine
-- trigger disabled for that one statement.
BEGIN;
SELECT plan(6);

CREATE FUNCTION pg_temp.metric(p_name text) RETURNS double precision
LANGUAGE sql AS $$ SELECT value FROM compliance.metrics() WHERE metric = p_name $$;

CREATE FUNCTION pg_temp.age_job(p_job_id uuid, p_started interval, p_heartbeat interval) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    ALTER TABLE compliance.export_jobs DISABLE TRIGGER export_jobs_guard;
    UPDATE compliance.export_jobs
       SET created_at = now() - p_started - interval '1 minute', started_at = now() - p_started,
           heartbeat_at = now() - p_heartbeat
     WHERE job_id = p_job_id;
    ALTER TABLE compliance.export_jobs ENABLE ALWAYS TRIGGER export_jobs_guard;
END;
$$;

SELECT compliance.request_export('{}', 'auditor@example.com') AS job_id \gset
SELECT ok(compliance.claim_export(:'job_id'), 'the runner claims the job');
SELECT is(pg_temp.metric('exports_stuck'), 0::double precision, 'a job claimed just now is not stuck');

SELECT pg_temp.age_job(:'job_id', interval '40 minutes', interval '2 minutes');
SELECT is(pg_temp.metric('exports_stuck'), 0::double precision,
          'a long-running job whose runner reported progress 2 minutes ago is not stuck');

SELECT pg_temp.age_job(:'job_id', interval '40 minutes', interval '16 minutes');
SELECT is(pg_temp.metric('exports_stuck'), 1::double precision,
          'a running job with no progress for 16 minutes is stuck');

SELECT is(compliance.reconcile_exports(), 1, 'reconcile_exports fails that same job');
SELECT is(pg_temp.metric('exports_stuck'), 0::double precision, 'after reconciliation nothing is stuck');

SELECT * FROM finish();
ROLLBACK;
