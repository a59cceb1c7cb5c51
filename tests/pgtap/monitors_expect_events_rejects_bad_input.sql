-- compliance.expect_events and its companions refuse bad input with their own SQLSTATEs
-- (AC090 name, AC091 pattern / tenant / actor, AC092 max_silence, AC093 unknown monitor)
-- and write nothing when they do; re-declaring updates in place.
BEGIN;
SELECT plan(22);

SELECT throws_ok($$SELECT compliance.expect_events(NULL, 'auth.%', '1 minute')$$, 'AC090', NULL, 'a NULL name is refused');
SELECT throws_ok($$SELECT compliance.expect_events('', 'auth.%', '1 minute')$$, 'AC090', NULL, 'an empty name is refused');
SELECT throws_ok($$SELECT compliance.expect_events('Auth', 'auth.%', '1 minute')$$, 'AC090', NULL,
                 'an upper-case name is refused (it becomes part of alarm names)');
SELECT throws_ok($$SELECT compliance.expect_events('auth login', 'auth.%', '1 minute')$$, 'AC090', NULL,
                 'a name with a space is refused');
SELECT throws_ok($$SELECT compliance.expect_events(repeat('a', 64), 'auth.%', '1 minute')$$, 'AC090', NULL,
                 'a 64-character name is refused');
SELECT throws_ok($$SELECT compliance.expect_events('auth', NULL, '1 minute')$$, 'AC091', NULL, 'a NULL pattern is refused');
SELECT throws_ok($$SELECT compliance.expect_events('auth', '', '1 minute')$$, 'AC091', NULL, 'an empty pattern is refused');
SELECT throws_ok($$SELECT compliance.expect_events('auth', 'Auth.%', '1 minute')$$, 'AC091', NULL,
                 'a pattern no event type can match (upper case) is refused');
SELECT throws_ok($$SELECT compliance.expect_events('auth', 'auth\%', '1 minute')$$, 'AC091', NULL,
                 'a pattern with a LIKE escape is refused');
SELECT throws_ok($$SELECT compliance.expect_events('auth', 'auth.%', '1 minute', '')$$, 'AC091', NULL,
                 'an empty tenant_id is refused');
SELECT throws_ok($$SELECT compliance.expect_events('auth', 'auth.%', '1 minute', NULL, '   ')$$, 'AC091', NULL,
                 'a blank actor_pattern is refused');
SELECT throws_ok($$SELECT compliance.expect_events('auth', 'auth.%', '0 seconds')$$, 'AC092', NULL,
                 'a zero max_silence is refused');
SELECT throws_ok($$SELECT compliance.expect_events('auth', 'auth.%', '-5 minutes')$$, 'AC092', NULL,
                 'a negative max_silence is refused');
SELECT throws_ok($$SELECT compliance.expect_events('auth', 'auth.%', NULL)$$, 'AC092', NULL,
                 'a NULL max_silence is refused');
SELECT is_empty('SELECT * FROM compliance.event_expectations', 'nothing was written by the refused calls');

SELECT throws_ok($$SELECT compliance.pause_expectation('nope')$$, 'AC093', NULL, 'pausing an unknown monitor is refused');
SELECT throws_ok($$SELECT compliance.resume_expectation('nope')$$, 'AC093', NULL, 'resuming an unknown monitor is refused');
SELECT throws_ok($$SELECT compliance.drop_expectation('nope')$$, 'AC093', NULL, 'dropping an unknown monitor is refused');

SELECT is(compliance.expect_events('auth', 'auth.%', '10 minutes', 'tenant-1', 'svc-%'), true, 'declaring creates');
SELECT is(compliance.expect_events('auth', 'auth.%', '5 minutes', 'tenant-1', 'svc-%'), false, 're-declaring updates');
SELECT results_eq(
    $$SELECT name, event_type_pattern, max_silence, tenant_id, actor_pattern, paused FROM compliance.event_expectations$$,
    $$VALUES ('auth', 'auth.%', interval '5 minutes', 'tenant-1', 'svc-%', false)$$,
    'one monitor, with the latest max_silence'
);
SELECT is(compliance.drop_expectation('auth'), true, 'dropping a monitor removes it');

SELECT * FROM finish();
ROLLBACK;
