-- The three acknowledge_* functions (drainer halt, incremental verifier failure, failed
-- anchor) keep one contract: (subject, note) parameters without prefix, a boolean that is
-- true when acknowledged now and false when it already was (the first note kept), and one
-- note rule: NULL, blank or longer than 2,000 characters is AC013, whatever the state.
BEGIN;
SELECT plan(26);

SELECT is(
    (SELECT array_agg(format('%s(%s) RETURNS %s', p.proname, pg_get_function_identity_arguments(p.oid),
                             pg_get_function_result(p.oid)) ORDER BY p.proname)
       FROM pg_proc AS p
      WHERE p.pronamespace = 'compliance'::regnamespace AND p.proname LIKE 'acknowledge\_%'),
    ARRAY['acknowledge_anchor_failure(anchor_id bigint, note text) RETURNS boolean',
          'acknowledge_integrity_failure(resume_from_seq bigint, note text) RETURNS boolean',
          'acknowledge_verification_failure(bad_seq bigint, note text) RETURNS boolean'],
    'three functions, one signature shape, one return type');

-- Something to acknowledge for each: a tampered chain that halts the drainer and fails the
-- incremental verifier, and an anchor with an integrity alarm.
SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 4) AS g;
SELECT compliance.drain();
SELECT compliance.create_anchor();
SELECT compliance.record_anchor_integrity_failure(
           a.anchor_id, 'b', 'anchors/' || lpad(a.seq_to::text, 20, '0') || '-' || a.cadence_id || '.json', 'v9',
           'integrity alarm: different content')
  FROM compliance.anchors AS a;
SELECT anchor_id AS failed_anchor FROM compliance.anchors \gset
ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change;
UPDATE compliance.audit_events SET actor = 'mallory' WHERE seq = 4;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
SELECT compliance.record_halt();
SELECT compliance.verify_new_events();

CREATE FUNCTION pg_temp.calls(note text) RETURNS SETOF text
LANGUAGE sql AS $$
    VALUES (format('SELECT compliance.acknowledge_integrity_failure(4, %L)', note)),
           (format('SELECT compliance.acknowledge_verification_failure(4, %L)', note)),
           (format('SELECT compliance.acknowledge_anchor_failure(%s, %L)',
                   (SELECT max(anchor_id) FROM compliance.anchors), note))
$$;

-- One note rule, checked before anything else.
SELECT throws_ok(c, 'AC013', 'a note of 1-2000 characters describing the investigation is required',
                 'a NULL note: ' || c)
  FROM pg_temp.calls(NULL) AS c;
SELECT throws_ok(c, 'AC013', NULL, 'a blank note: ' || left(c, 60)) FROM pg_temp.calls(E' \t') AS c;
SELECT throws_ok(c, 'AC013', NULL, 'a note over 2000 characters: ' || left(c, 60))
  FROM pg_temp.calls(repeat('n', 2001)) AS c;

-- Acknowledged now: true; again: false, and the first note stays.
SELECT is(compliance.acknowledge_integrity_failure(4, repeat('n', 2000)), true, 'a drainer halt is acknowledged');
SELECT is(compliance.acknowledge_integrity_failure(4, 'again'), false, 'acknowledging the halt again is a no-op');
SELECT is(compliance.acknowledge_verification_failure(4, 'INC-2: verifier'), true,
          'a verifier failure is acknowledged');
SELECT is(compliance.acknowledge_verification_failure(4, 'again'), false,
          'acknowledging the verifier failure again is a no-op');
SELECT is(compliance.acknowledge_anchor_failure(:failed_anchor, 'INC-3: anchor'), true,
          'a failed anchor is acknowledged');
SELECT is(compliance.acknowledge_anchor_failure(:failed_anchor, 'again'), false,
          'acknowledging the failed anchor again is a no-op');
SELECT results_eq($$SELECT note FROM compliance.integrity_incidents ORDER BY incident_id$$,
                  ARRAY[repeat('n', 2000), 'INC-2: verifier'], 'one incident each, with the first note');
SELECT is((SELECT note FROM compliance.anchor_failure_reviews), 'INC-3: anchor', 'one review, with the first note');
SELECT is((SELECT halted_at FROM compliance.drainer_state), NULL, 'the drainer is no longer halted');
SELECT is((SELECT last_ok FROM compliance.verification_state), NULL, 'the verifier is no longer failing');

-- Nothing to acknowledge is refused, each with its subject's code.
SELECT throws_ok($$SELECT compliance.acknowledge_integrity_failure(3, 'n')$$, 'AC012', NULL,
                 'a halt that never happened');
SELECT throws_ok($$SELECT compliance.acknowledge_verification_failure(3, 'n')$$, 'AC012', NULL,
                 'a verifier failure that never happened');
SELECT throws_ok($$SELECT compliance.acknowledge_anchor_failure(-1, 'n')$$, 'AC060', NULL,
                 'an anchor that does not exist');

-- Named notation works with the unprefixed names.
SELECT is(compliance.acknowledge_anchor_failure(anchor_id => :failed_anchor, note => 'named'), false,
          'named arguments: anchor_id, note');
SELECT is(compliance.acknowledge_integrity_failure(resume_from_seq => 4, note => 'named'), false,
          'named arguments: resume_from_seq, note');
SELECT is(compliance.acknowledge_verification_failure(bad_seq => 4, note => 'named'), false,
          'named arguments: bad_seq, note');

SELECT * FROM finish();
ROLLBACK;
