-- The drainer moves each monitor's high-water mark to the newest chained event that matches
-- its pattern, tenant and actor; a changed match starts a new watch; expectation_status()
-- calls a monitor silent after max_silence without a matching event (outbox included),
-- never while paused; metrics() counts the silent ones.
BEGIN;
SELECT plan(14);

SELECT compliance.expect_events('auth', 'auth.%', '10 minutes');
SELECT compliance.expect_events('auth-t1', 'auth.%', '10 minutes', 't1', 'svc-%');
SELECT compliance.expect_events('billing', 'billing.%', '10 minutes');

SELECT compliance.emit('auth.login', 'alice', '{}', 't1');
SELECT compliance.emit('auth.login', 'svc-gateway', '{}', 't2');
SELECT compliance.emit('payments.charged', 'svc-billing');
SELECT is(compliance.drain(100), 3, 'three events chained');

SELECT results_eq(
    $$SELECT name, last_seq FROM compliance.event_expectations ORDER BY name$$,
    $$VALUES ('auth', 2::bigint), ('auth-t1', NULL), ('billing', NULL)$$,
    'each mark is the newest matching seq: other tenants, actors and event types do not count'
);
-- auth's mark pretends to be from later than this batch (less than a second after it).
UPDATE compliance.event_expectations SET last_event_at = clock_timestamp() + interval '0.9 seconds' WHERE name = 'auth';
SELECT compliance.emit('auth.logout', 'svc-gateway', '{}', 't1');
SELECT is(compliance.drain(100), 1, 'one more event chained');
SELECT is((SELECT last_seq FROM compliance.event_expectations WHERE name = 'auth-t1'), 4::bigint,
          'a matching tenant and actor move the mark');
SELECT is((SELECT last_seq FROM compliance.event_expectations WHERE name = 'auth'), 2::bigint,
          'a mark moves only a second or more forward: one row update a second per busy monitor, not one per batch');

SELECT compliance.expect_events('auth', 'auth.%', '20 minutes');
SELECT is((SELECT last_seq FROM compliance.event_expectations WHERE name = 'auth'), 2::bigint,
          'changing only max_silence keeps the mark');
SELECT compliance.expect_events('auth', 'auth.login', '20 minutes');
SELECT is((SELECT last_seq FROM compliance.event_expectations WHERE name = 'auth'), NULL::bigint,
          'changing the pattern starts a new watch');

-- Move the watches and marks back in time: billing and auth have been quiet for an hour.
UPDATE compliance.event_expectations
   SET watched_since = now() - interval '1 hour', last_event_at = now() - interval '1 hour';
SELECT results_eq(
    $$SELECT name, silent, silence_seconds >= 3600 FROM compliance.expectation_status()$$,
    $$VALUES ('auth', true, true), ('auth-t1', true, true), ('billing', true, true)$$,
    'an hour without a matching event is silent'
);
SELECT is((SELECT value FROM compliance.metrics() WHERE metric = 'silent_producers'), 3::double precision,
          'metrics() counts the silent monitors');
SELECT is((SELECT verdict FROM compliance.metrics() WHERE metric = 'silent_producers'), 'warning',
          'a silent producer is a warning');

SELECT compliance.emit('billing.refunded', 'svc-billing');
SELECT is((SELECT silent FROM compliance.expectation_status() WHERE name = 'billing'), false,
          'an event still in the outbox counts');
SELECT ok((SELECT last_event_at = now() FROM compliance.expectation_status() WHERE name = 'billing'),
          'last_event_at is its emit time');

SELECT is(compliance.pause_expectation('auth'), true, 'pausing');
SELECT is((SELECT value FROM compliance.metrics() WHERE metric = 'silent_producers'), 1::double precision,
          'a paused monitor is not silent');

SELECT * FROM finish();
ROLLBACK;
