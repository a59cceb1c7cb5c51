-- compliance.metrics() decides each metric's verdict in SQL from its thresholds: above
-- warning_above a warning, above critical_above critical, a NULL value gets its
-- verdict_when_null, and a metric gated by another (verification_last_run_age_seconds by
-- verification_lag) is ok while that one is 0. What status, the Prometheus endpoint and the
-- alarms show comes from here.
BEGIN;
SELECT plan(15);

CREATE FUNCTION pg_temp.verdict(p_name text) RETURNS text
LANGUAGE sql AS $$ SELECT verdict FROM compliance.metrics() WHERE metric = p_name $$;

CREATE FUNCTION pg_temp.queue(p_rows integer, p_age interval) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO compliance.audit_outbox (event_id, emitted_at, occurred_at, event_type, actor, payload)
    SELECT compliance._uuidv7(), now() - p_age, now(), 'test.queued', 'tester', '{}'
      FROM generate_series(1, p_rows);
$$;

SELECT is_empty(
    $$SELECT t.metric FROM compliance._metric_thresholds() AS t
       WHERE t.metric NOT IN (SELECT m.metric FROM compliance.metrics() AS m)
          OR t.ok_while_zero NOT IN (SELECT m.metric FROM compliance.metrics() AS m)
          OR t.verdict_when_null NOT IN ('ok', 'warning', 'critical', 'unknown')$$,
    'every threshold names a metric that metrics() reports, and a valid verdict when NULL'
);
SELECT set_eq(
    $$SELECT m.metric, m.warning_above, m.critical_above, m.alarm_above FROM compliance.metrics() AS m
       WHERE m.warning_above IS NOT NULL OR m.critical_above IS NOT NULL OR m.alarm_above IS NOT NULL$$,
    $$SELECT t.metric, t.warning_above, t.critical_above, t.alarm_above FROM compliance._metric_thresholds() AS t$$,
    'metrics() reports each metric''s thresholds as _metric_thresholds() defines them'
);
SELECT is_empty(
    $$SELECT m.metric FROM compliance.metrics() AS m
       WHERE m.verdict NOT IN ('ok', 'warning', 'critical', 'unknown') OR m.verdict IS NULL$$,
    'every verdict is ok, warning, critical or unknown'
);

-- The outbox: 99 rows ok, 100 a warning; rows waiting over 5 minutes a warning at any depth.
SELECT pg_temp.queue(99, interval '0');
SELECT is(pg_temp.verdict('outbox_depth'), 'ok', '99 queued rows are ok');
SELECT pg_temp.queue(1, interval '0');
SELECT is(pg_temp.verdict('outbox_depth'), 'warning', 'the 100th queued row is a warning');
SELECT is(pg_temp.verdict('outbox_oldest_age_seconds'), 'ok', 'rows queued just now are ok');
DELETE FROM compliance.audit_outbox;
SELECT pg_temp.queue(1, interval '301 seconds');
SELECT is(pg_temp.verdict('outbox_oldest_age_seconds'), 'warning', 'a row waiting over 5 minutes is a warning');

-- The anchor gap (here: the oldest queued row's age): over 20 minutes a warning, over 30
-- critical (the alarm).
SELECT is(pg_temp.verdict('anchor_gap_seconds'), 'ok', 'a 5-minute anchor gap is ok');
DELETE FROM compliance.audit_outbox;
SELECT pg_temp.queue(1, interval '21 minutes');
SELECT is(pg_temp.verdict('anchor_gap_seconds'), 'warning', 'a 21-minute anchor gap is a warning');
DELETE FROM compliance.audit_outbox;
SELECT pg_temp.queue(1, interval '31 minutes');
SELECT is(pg_temp.verdict('anchor_gap_seconds'), 'critical', 'a 31-minute anchor gap is critical');

-- The verifier: never run is ok while nothing waits for it, a warning once events do.
SELECT is(pg_temp.verdict('verification_last_run_age_seconds'), 'ok',
          'a verifier that never ran is ok while the chain is empty');
SELECT compliance.drain(1000);
SELECT is(pg_temp.verdict('verification_last_run_age_seconds'), 'warning',
          'a verifier that never ran is a warning once chained events wait for it');
SELECT compliance.verify_new_events();
SELECT is(pg_temp.verdict('verification_last_run_age_seconds'), 'ok', 'after a verifier run it is ok');

-- Flags: a halted drainer is critical.
SELECT is(pg_temp.verdict('drainer_halted'), 'ok', 'a running drainer is ok');
UPDATE compliance.drainer_state SET halted_at = now(), halted_seq = 1, halted_reason = 'test';
SELECT is(pg_temp.verdict('drainer_halted'), 'critical', 'a halted drainer is critical');

SELECT * FROM finish();
ROLLBACK;
