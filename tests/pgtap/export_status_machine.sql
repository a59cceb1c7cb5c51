-- The export job status machine lives in the database: queued -> running -> completed or
-- failed and nothing else (AC031), each step sets only its own columns, the request's
-- columns never change, rows can never be deleted or truncated (AC020), and the guards
-- hold with session_replication_role = replica.
BEGIN;
SELECT plan(27);

CREATE FUNCTION pg_temp.new_job() RETURNS uuid
LANGUAGE sql AS $$ SELECT compliance.request_export('{"tenant_id":"acme"}', 'auditor@example.com') $$;

CREATE FUNCTION pg_temp.complete(p_job_id uuid, p_digest text DEFAULT 'data') RETURNS boolean
LANGUAGE sql AS $$
    SELECT compliance.complete_export(p_job_id, 'bundles', 'exports/' || p_job_id || '/', 3, 2,
                                      sha256(convert_to(p_digest, 'UTF8')), 120, 5, 7)
$$;

SELECT pg_temp.new_job() AS queued_job \gset
SELECT pg_temp.new_job() AS running_job \gset
SELECT pg_temp.new_job() AS completed_job \gset
SELECT pg_temp.new_job() AS failed_job \gset
SELECT compliance.claim_export(j) FROM unnest(ARRAY[:'running_job', :'completed_job', :'failed_job']::uuid[]) AS j;

-- Illegal transitions, tried with plain UPDATEs as a superuser would.
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET status = 'completed', completed_at = now() WHERE job_id = %L$$,
                        :'queued_job'),
                 'AC031', format('export job %s: illegal status transition queued -> completed', :'queued_job'),
                 'queued -> completed is refused');
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET status = 'failed', job_error = 'x' WHERE job_id = %L$$,
                        :'queued_job'),
                 'AC031', format('export job %s: illegal status transition queued -> failed', :'queued_job'),
                 'queued -> failed is refused');
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET status = 'queued', started_at = NULL WHERE job_id = %L$$,
                        :'running_job'),
                 'AC031', format('export job %s: illegal status transition running -> queued', :'running_job'),
                 'running -> queued is refused');
SELECT throws_ok(format($$SELECT compliance.fail_export(%L, 'never started')$$, :'queued_job'),
                 'AC031', format('export job %s is queued, only a running job can fail', :'queued_job'),
                 'fail_export refuses a queued job');
SELECT throws_ok(format($$SELECT pg_temp.complete(%L)$$, :'queued_job'),
                 'AC031', format('export job %s is queued, only a running job can complete', :'queued_job'),
                 'complete_export refuses a queued job');

-- The request's columns and the claim time are fixed.
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET filter = '{}' WHERE job_id = %L$$, :'queued_job'),
                 'AC031', format('export job %s: illegal status transition queued -> queued', :'queued_job'),
                 'a queued job cannot be edited');
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET filter = '{}', requested_by = 'mallory' WHERE job_id = %L$$,
                        :'running_job'),
                 'AC031', format('export job %s: filter, requested_by cannot change on running -> running', :'running_job'),
                 'a running job''s request cannot be edited; the error names the columns');
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET started_at = started_at - interval '1 hour' WHERE job_id = %L$$,
                        :'running_job'),
                 'AC031', format('export job %s: started_at cannot change on running -> running', :'running_job'),
                 'started_at cannot be rewritten');
SELECT throws_ok($$INSERT INTO compliance.export_jobs (job_id, requested_by, filter, status, request_event_id, started_at)
                   VALUES (compliance._uuidv7(), 'mallory', '{}', 'running', compliance._uuidv7(), now())$$,
                 'AC031', NULL, 'a job cannot be inserted already running');
SELECT ok(compliance.export_heartbeat(:'running_job'), 'a running job''s heartbeat is the one update that keeps it running');
SELECT ok(NOT compliance.export_heartbeat(:'queued_job'), 'a queued job has no heartbeat');

-- Completion and failure, each only once.
SELECT ok(pg_temp.complete(:'completed_job'), 'complete_export completes a running job');
SELECT ok(NOT pg_temp.complete(:'completed_job'), 'completing again with the same result is a no-op');
SELECT throws_ok(format($$SELECT pg_temp.complete(%L, 'other data')$$, :'completed_job'),
                 'AC031', format('export job %s is completed, only a running job can complete', :'completed_job'),
                 'completing again with a different result is refused');
SELECT throws_ok(format($$SELECT compliance.fail_export(%L, 'late')$$, :'completed_job'),
                 'AC031', format('export job %s is completed, only a running job can fail', :'completed_job'),
                 'a completed job cannot fail');
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET status = 'running' WHERE job_id = %L$$, :'completed_job'),
                 'AC031', format('export job %s: illegal status transition completed -> running', :'completed_job'),
                 'completed -> running is refused');
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET data_bytes = 1 WHERE job_id = %L$$, :'completed_job'),
                 'AC031', format('export job %s: illegal status transition completed -> completed', :'completed_job'),
                 'a completed job''s result cannot be edited');
SELECT ok(compliance.fail_export(:'failed_job', 'NoSuchBucket: The specified bucket does not exist'),
          'fail_export fails a running job');
SELECT ok(NOT compliance.fail_export(:'failed_job', 'second reason'), 'failing again is a no-op');
SELECT is((SELECT job_error FROM compliance.export_jobs WHERE job_id = :'failed_job'),
          'NoSuchBucket: The specified bucket does not exist', 'and the first reason is kept');
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET status = 'running', job_error = NULL, completed_at = NULL
                          WHERE job_id = %L$$, :'failed_job'),
                 'AC031', format('export job %s: illegal status transition failed -> running', :'failed_job'),
                 'failed -> running is refused: a failed job is retried with a fresh request');

-- The schema rejects results that contradict themselves.
SELECT compliance.claim_export(:'queued_job');
SELECT throws_ok(format($$SELECT compliance.complete_export(%L, 'bundles', 'p/', 5, 2, sha256('x'), 10, 5, 7)$$,
                        :'queued_job'),
                 '23514', NULL, 'row_count must be the size of the seq range');
SELECT throws_ok(format($$SELECT compliance.complete_export(%L, 'bundles', 'p/', 1, 0, sha256('x'), 10, NULL, NULL)$$,
                        :'queued_job'),
                 '23514', NULL, 'an empty range has no lines');

-- Never deleted, never truncated, also in replica mode.
SELECT throws_ok($$DELETE FROM compliance.export_jobs$$, 'AC020',
                 'compliance.export_jobs is append-only: DELETE is not allowed', 'DELETE is refused');
SELECT throws_ok($$TRUNCATE compliance.export_jobs$$, 'AC020',
                 'compliance.export_jobs is append-only: TRUNCATE is not allowed', 'TRUNCATE is refused');
SET LOCAL session_replication_role = replica;
SELECT throws_ok($$DELETE FROM compliance.export_jobs$$, 'AC020', NULL,
                 'DELETE is refused with session_replication_role = replica');
SELECT throws_ok(format($$UPDATE compliance.export_jobs SET status = 'queued', started_at = NULL WHERE job_id = %L$$,
                        :'running_job'),
                 'AC031', NULL, 'the status machine holds with session_replication_role = replica');

SELECT * FROM finish();
ROLLBACK;
