-- drainer_halted follows the drainer's recorded halt until it is acknowledged, and
-- verification_failed follows the incremental verifier's finding.
BEGIN;
SELECT plan(5);

CREATE FUNCTION pg_temp.metric(p_name text) RETURNS double precision
LANGUAGE sql AS $$ SELECT value FROM compliance.metrics() WHERE metric = p_name $$;

SELECT compliance.emit('test.flagged', 'tester', jsonb_build_object('n', n)) FROM generate_series(1, 2) AS n;
SELECT compliance.drain();

-- Edit the head event as a superuser who gets past the append-only guard would.
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
UPDATE compliance.audit_events SET payload = '{"n": 99}' WHERE seq = 2;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;

-- What run_drainer does when a batch raises AC010.
SELECT ok(compliance.record_halt(), 'the head check fails and the halt is recorded');
SELECT is(pg_temp.metric('drainer_halted'), 1::double precision, 'a recorded halt sets drainer_halted');
SELECT compliance.acknowledge_integrity_failure(2, 'INC-1: test edit of seq 2, investigated');
SELECT is(pg_temp.metric('drainer_halted'), 0::double precision,
          'acknowledge_integrity_failure clears drainer_halted');

SELECT compliance.verify_new_events();
SELECT is(pg_temp.metric('verification_failed'), 1::double precision,
          'verification_failed is set when the incremental verifier finds the edited event');
SELECT is(pg_temp.metric('verification_lag'), 1::double precision,
          'verification_lag counts every event from the failing one on (seq 1 did verify)');

SELECT * FROM finish();
ROLLBACK;
