-- Claiming an export job is a compare-and-set on status = 'queued': the first claim wins,
-- any later one (a second runner, a re-delivered request, a finished job) returns false
-- and changes nothing. claim_next_export takes the oldest queued job.
BEGIN;
SELECT plan(12);

SELECT compliance.request_export('{}', 'auditor@example.com') AS first_job \gset
SELECT compliance.request_export('{}', 'auditor@example.com') AS second_job \gset

SELECT ok(compliance.claim_export(:'first_job'), 'the first claim of a queued job wins');
SELECT results_eq(
    format($$SELECT status::text, started_at = now() FROM compliance.export_jobs WHERE job_id = %L$$, :'first_job'),
    $$VALUES ('running', true)$$,
    'the claimed job is running since the claim'
);
CREATE TEMP TABLE before_reclaim AS SELECT * FROM compliance.export_jobs WHERE job_id = :'first_job';
SELECT ok(NOT compliance.claim_export(:'first_job'), 'a second claim of the running job returns false');
SELECT results_eq(
    format($$SELECT to_jsonb(j) FROM compliance.export_jobs AS j WHERE job_id = %L$$, :'first_job'),
    $$SELECT to_jsonb(b) FROM before_reclaim AS b$$,
    'and leaves the row exactly as it was'
);

SELECT compliance.complete_export(:'first_job', 'bundles', 'exports/x/', 0, 0, sha256('gz'), 20, NULL, NULL);
CREATE TEMP TABLE before_redelivery AS SELECT * FROM compliance.export_jobs WHERE job_id = :'first_job';
SELECT ok(NOT compliance.claim_export(:'first_job'), 'a re-delivered claim of a completed job returns false');
SELECT results_eq(
    format($$SELECT to_jsonb(j) FROM compliance.export_jobs AS j WHERE job_id = %L$$, :'first_job'),
    $$SELECT to_jsonb(b) FROM before_redelivery AS b$$,
    'and changes nothing'
);

SELECT throws_ok($$SELECT compliance.claim_export('01890000-0000-7000-8000-000000000000')$$, 'P0002',
                 'export job 01890000-0000-7000-8000-000000000000 does not exist', 'claiming an unknown job raises P0002');

SELECT compliance.request_export('{}', 'auditor@example.com') AS third_job \gset
SELECT is(compliance.claim_next_export(), :'second_job'::uuid, 'claim_next_export takes the oldest queued job');
SELECT is(compliance.claim_next_export(), :'third_job'::uuid, 'then the next one');
SELECT is(compliance.claim_next_export(), NULL, 'and NULL when nothing is queued');
SELECT is((SELECT count(*) FROM compliance.export_jobs WHERE status = 'running'), 2::bigint,
          'each job was claimed exactly once');
SELECT ok(NOT compliance.claim_export(:'third_job'), 'a job claimed by claim_next_export cannot be claimed again');

SELECT * FROM finish();
ROLLBACK;
