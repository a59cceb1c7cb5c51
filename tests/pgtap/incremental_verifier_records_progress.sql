-- compliance.verify_new_events (run by pg_cron every minute) verifies the events after the
-- point it reached last time, records how far the chain is verified, and records a failure
-- without moving past it, so that every later run reports it again, until an operator
-- acknowledges it with compliance.acknowledge_verification_failure.
BEGIN;
SELECT plan(17);

SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 10) AS g;
SELECT compliance.drain();

SELECT is(compliance.verify_new_events(4), 4::bigint, 'a run checks at most max_rows events');
SELECT row_eq('SELECT verified_seq, verified_hash, last_ok FROM compliance.verification_state',
              ROW(4::bigint, (SELECT event_hash FROM compliance.audit_events WHERE seq = 4), true),
              'and records the seq and hash it verified up to');
SELECT is(compliance.verify_new_events(), 6::bigint, 'the next run starts where the last one stopped');
SELECT is((SELECT verified_seq FROM compliance.verification_state), 10::bigint, 'the whole chain is verified');
SELECT is(compliance.verify_new_events(), 0::bigint, 'with nothing new a run checks nothing');
SELECT is((SELECT verified_seq FROM compliance.verification_state), 10::bigint, 'and keeps its progress');
SELECT ok((SELECT last_run_at = now() FROM compliance.verification_state), 'every run records when it ran');

SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(11, 15) AS g;
SELECT compliance.drain();
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
UPDATE compliance.audit_events SET actor = 'mallory' WHERE seq = 13;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;

SELECT is(compliance.verify_new_events(), 5::bigint, 'a run over damaged events still reports how many it checked');
SELECT row_eq('SELECT verified_seq, last_ok, first_bad_seq, problem FROM compliance.verification_state',
              ROW(12::bigint, false, 13::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'the failure is recorded with its seq, and progress stops just before it');
SELECT compliance.verify_new_events();
SELECT row_eq('SELECT verified_seq, last_ok, first_bad_seq FROM compliance.verification_state',
              ROW(12::bigint, false, 13::bigint), 'the next run reports it again');

-- Once the event is put back (say, restored from a backup) the verifier moves on.
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
UPDATE compliance.audit_events SET actor = 'user-13' WHERE seq = 13;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
SELECT is(compliance.verify_new_events(), 3::bigint, 'the run after the repair checks the three events from the failure on');
SELECT row_eq('SELECT verified_seq, last_ok, first_bad_seq, problem FROM compliance.verification_state',
              ROW(15::bigint, true, NULL::bigint, NULL::text), 'and records the chain verified to seq 15');

-- A break nobody can repair: after investigation the operator acknowledges it.
SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(16, 20) AS g;
SELECT compliance.drain();
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
UPDATE compliance.audit_events SET payload = '{"forged": true}' WHERE seq = 17;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
SELECT compliance.verify_new_events();
SELECT throws_ok($$SELECT compliance.acknowledge_verification_failure(18, 'wrong seq')$$, 'AC012', NULL,
                 'only the seq the verifier is failing at can be acknowledged');
SELECT throws_ok($$SELECT compliance.acknowledge_verification_failure(17, ' ')$$, 'AC013', NULL,
                 'an acknowledgement needs a note');
SELECT is(compliance.acknowledge_verification_failure(17, 'INC-42: payload edited by hand, see ticket'), true,
          'the acknowledgement returns true');
SELECT row_eq($$SELECT halted_seq, resumed_from_seq, note FROM compliance.integrity_incidents
                ORDER BY incident_id DESC LIMIT 1$$,
              ROW(17::bigint, 17::bigint, 'INC-42: payload edited by hand, see ticket'::text),
              'and is recorded as an integrity incident');
SELECT compliance.verify_new_events();
SELECT row_eq('SELECT verified_seq, last_ok FROM compliance.verification_state', ROW(20::bigint, true),
              'the verifier then continues after the acknowledged event');

SELECT * FROM finish();
ROLLBACK;
