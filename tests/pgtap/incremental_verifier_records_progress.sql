-- compliance.verify_new_events (run by pg_cron every minute) verifies the events after the
-- point it reached last time, records how far the chain is verified, and records a failure
-- without moving past it, so that every later run reports it again.
BEGIN;
SELECT plan(12);

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
              ROW(10::bigint, false, 13::bigint, 'content changed: the event no longer matches its event_hash'::text),
              'the failure is recorded with its seq, and progress stays before it');
SELECT compliance.verify_new_events();
SELECT row_eq('SELECT verified_seq, last_ok, first_bad_seq FROM compliance.verification_state',
              ROW(10::bigint, false, 13::bigint), 'the next run reports it again');

-- Once the event is put back (say, restored from a backup) the verifier moves on.
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
UPDATE compliance.audit_events SET actor = 'user-13' WHERE seq = 13;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
SELECT is(compliance.verify_new_events(), 5::bigint, 'the run after the repair checks the five events again');
SELECT row_eq('SELECT verified_seq, last_ok, first_bad_seq, problem FROM compliance.verification_state',
              ROW(15::bigint, true, NULL::bigint, NULL::text), 'and records the chain verified to seq 15');

SELECT * FROM finish();
ROLLBACK;
