-- Outbox depth and the age of its oldest row rise while nothing drains, count queued
-- events as unanchored, and fall back to zero once the drainer has run.
BEGIN;
SELECT plan(8);

CREATE FUNCTION pg_temp.metric(p_name text) RETURNS double precision
LANGUAGE sql AS $$ SELECT value FROM compliance.metrics() WHERE metric = p_name $$;

-- Three events emitted 10, 5 and 1 minutes ago that no drainer has picked up.
INSERT INTO compliance.audit_outbox (event_id, emitted_at, occurred_at, event_type, actor, payload)
SELECT compliance._uuidv7(), now() - m * interval '1 minute', now() - m * interval '1 minute',
       'test.queued', 'tester', '{}'
  FROM unnest(ARRAY[10, 5, 1]) AS m;

SELECT is(pg_temp.metric('outbox_depth'), 3::double precision, 'outbox_depth counts the queued rows');
SELECT is(pg_temp.metric('outbox_oldest_age_seconds'), 600::double precision,
          'outbox_oldest_age_seconds is the age of the oldest queued row');
SELECT is(pg_temp.metric('anchor_gap_seconds'), 600::double precision,
          'anchor_gap_seconds counts an event still in the outbox as unanchored since it was emitted');
SELECT is(pg_temp.metric('chain_length'), 0::double precision, 'nothing is chained yet');

SELECT is(compliance.drain(), 3, 'the drainer moves the three rows');
SELECT results_eq(
    $$SELECT metric, value FROM compliance.metrics()
       WHERE metric IN ('outbox_depth', 'outbox_oldest_age_seconds', 'chain_length', 'verification_lag')$$,
    $$VALUES ('outbox_depth', 0::double precision), ('outbox_oldest_age_seconds', 0),
             ('chain_length', 3), ('verification_lag', 3)$$,
    'after the drain: empty outbox, chain length 3, three events not yet verified'
);
SELECT is(pg_temp.metric('drainer_last_success_age_seconds'), 0::double precision,
          'drainer_last_success_age_seconds is 0 right after a successful batch');

SELECT compliance.verify_new_events();
SELECT results_eq(
    $$SELECT metric, value FROM compliance.metrics()
       WHERE metric IN ('verification_lag', 'verification_last_run_age_seconds', 'verification_failed')$$,
    $$VALUES ('verification_lag', 0::double precision), ('verification_failed', 0),
             ('verification_last_run_age_seconds', 0)$$,
    'after the incremental verifier ran: no lag, no failure, last run just now'
);

SELECT * FROM finish();
ROLLBACK;
