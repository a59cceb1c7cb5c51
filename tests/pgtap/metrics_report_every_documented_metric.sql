-- compliance.metrics() returns the documented, stable set of metrics with their units, and
-- on a fresh installation the values say "nothing queued, nothing at risk, nothing yet".
BEGIN;
SELECT plan(5);

SELECT results_eq(
    $$SELECT metric, unit FROM compliance.metrics()$$,
    $$VALUES ('outbox_depth', 'count'),
             ('outbox_oldest_age_seconds', 'seconds'),
             ('anchor_gap_seconds', 'seconds'),
             ('anchor_last_upload_age_seconds', 'seconds'),
             ('anchors_pending', 'count'),
             ('anchors_retrying', 'count'),
             ('anchors_failed', 'count'),
             ('chain_length', 'count'),
             ('drainer_last_success_age_seconds', 'seconds'),
             ('drainer_halted', 'boolean'),
             ('verification_lag', 'count'),
             ('verification_failed', 'boolean'),
             ('verification_last_run_age_seconds', 'seconds'),
             ('exports_stuck', 'count'),
             ('cron_failed_runs_last_hour', 'count'),
             ('cron_jobs_unscheduled', 'count'),
             ('cron_minutely_jobs_last_start_age_seconds', 'seconds'),
             ('silent_producers', 'count'),
             ('erased_events', 'count')$$,
    'metrics() returns every documented metric once, in the documented order, with its unit'
);

SELECT results_eq(
    $$SELECT metric, value FROM compliance.metrics()
       WHERE metric NOT IN ('anchor_last_upload_age_seconds', 'drainer_last_success_age_seconds',
                            'verification_last_run_age_seconds', 'cron_failed_runs_last_hour',
                            'cron_jobs_unscheduled', 'cron_minutely_jobs_last_start_age_seconds')$$,
    $$VALUES ('outbox_depth', 0::double precision), ('outbox_oldest_age_seconds', 0), ('anchor_gap_seconds', 0),
             ('anchors_pending', 0), ('anchors_retrying', 0), ('anchors_failed', 0), ('chain_length', 0), ('drainer_halted', 0),
             ('verification_lag', 0), ('verification_failed', 0), ('exports_stuck', 0), ('silent_producers', 0), ('erased_events', 0)$$,
    'a fresh installation has an empty outbox, no gap, no anchors, no chain and no alarm flags'
);

SELECT is_empty(
    $$SELECT metric FROM compliance.metrics()
       WHERE metric IN ('anchor_last_upload_age_seconds', 'drainer_last_success_age_seconds',
                        'verification_last_run_age_seconds')
         AND value IS NOT NULL$$,
    'ages of things that never happened (upload, drain, verifier run) are NULL, not 0'
);

SELECT is(
    (SELECT p.provolatile::text || p.prosecdef::text FROM pg_proc AS p
      WHERE p.oid = 'compliance.metrics()'::regprocedure),
    'strue',
    'metrics() is STABLE and SECURITY DEFINER (the watchdog needs no table privilege)'
);

SELECT ok(
    (SELECT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'] FROM pg_proc AS p
      WHERE p.oid = 'compliance.metrics()'::regprocedure),
    'metrics() pins search_path to pg_catalog, pg_temp'
);

SELECT * FROM finish();
ROLLBACK;
