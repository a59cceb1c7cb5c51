-- The uploader's functions: claim_pending_anchors hands out pending anchors in seq order;
-- record_anchor_upload marks one uploaded with its signed checkpoint (idempotent for the
-- same result, AC041 for an inconsistent one: a note that is not the recorded checkpoint, a
-- checkpoint key outside the anchor's prefix); record_anchor_error keeps it pending with attempts + 1;
-- record_anchor_integrity_failure marks it failed for good.
BEGIN;
SELECT plan(20);

CREATE FUNCTION pg_temp.key_of(p_anchor_id bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT 'prod/anchors/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.json'
      FROM compliance.anchors WHERE anchor_id = p_anchor_id
$$;
CREATE FUNCTION pg_temp.cp_key_of(p_anchor_id bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT 'prod/checkpoints/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.checkpoint'
      FROM compliance.anchors WHERE anchor_id = p_anchor_id
$$;
-- The shape of a signed note: the body, a blank line, a signature line (the signature itself
-- is the uploader's and the verifier's business: PostgreSQL has no Ed25519).
CREATE FUNCTION pg_temp.signed_of(p_anchor_id bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT checkpoint || E'\n— test-key 3q2+7wAAAAA=\n' FROM compliance.anchors WHERE anchor_id = p_anchor_id
$$;

SELECT compliance.emit('test.anchored', 'tester', '{}');
SELECT compliance.drain(100);
SELECT compliance.create_anchor();
SELECT compliance.emit('test.anchored', 'tester', '{}');
SELECT compliance.drain(100);
SELECT compliance.create_anchor();
SELECT min(anchor_id) AS a1, max(anchor_id) AS a2 FROM compliance.anchors \gset

SELECT results_eq('SELECT seq_to FROM compliance.claim_pending_anchors(10)', $$VALUES (1::bigint), (2::bigint)$$,
                  'claim_pending_anchors returns pending anchors in seq order');
SELECT results_eq('SELECT seq_to FROM compliance.claim_pending_anchors(1)', $$VALUES (1::bigint)$$,
                  'at most max_anchors of them');
SELECT throws_ok('SELECT * FROM compliance.claim_pending_anchors(0)', '22023', NULL, 'max_anchors must be positive');

SELECT lives_ok(format('SELECT compliance.record_anchor_error(%s, %L)', :a1, 'SlowDown: reduce your request rate'),
                'record_anchor_error accepts a transient error');
SELECT results_eq(format('SELECT status::text, attempts, last_error FROM compliance.anchors WHERE anchor_id = %s', :a1),
                  $$VALUES ('pending', 1, 'SlowDown: reduce your request rate')$$,
                  'the anchor stays pending with attempts + 1 and the error');
SELECT throws_ok(format('SELECT compliance.record_anchor_error(%s, %L)', :a1, ' '), 'AC041', NULL,
                 'an empty error text is AC041');

SELECT throws_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, ''v1'', ''GOVERNANCE'', now() + interval ''1 day'')',
                        :a1, 'prod/anchors/x.json'),
                 'AC041', NULL, 'a key that is not the anchor''s is AC041');
SELECT throws_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, ''v1'', ''LEGAL_HOLD'', now() + interval ''1 day'')',
                        :a1, pg_temp.key_of(:a1)),
                 'AC041', NULL, 'an unknown lock mode is AC041');
SELECT throws_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, ''v1'', ''GOVERNANCE'', now() - interval ''1 day'')',
                        :a1, pg_temp.key_of(:a1)),
                 'AC041', NULL, 'a retain-until in the past is AC041');
SELECT throws_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, '''', ''GOVERNANCE'', now() + interval ''1 day'')',
                        :a1, pg_temp.key_of(:a1)),
                 'AC041', NULL, 'an empty version id is AC041');
SELECT throws_ok('SELECT compliance.record_anchor_upload(999999, ''b'', ''k'', ''v1'', ''GOVERNANCE'', now() + interval ''1 day'')',
                 'AC041', NULL, 'an unknown anchor is AC041');

SELECT now() + interval '365 days' AS until \gset
SELECT throws_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, ''v1'', ''COMPLIANCE'', %L)',
                        :a1, pg_temp.key_of(:a1), :'until'),
                 'AC041', NULL, 'an anchor with a checkpoint is not uploaded without its signed note');
SELECT throws_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, ''v1'', ''COMPLIANCE'', %L, NULL, %L, %L, ''c1'')',
                        :a1, pg_temp.key_of(:a1), :'until', replace(pg_temp.signed_of(:a1), 'auditchain/', 'other/'),
                        pg_temp.cp_key_of(:a1)),
                 'AC041', NULL, 'a signed note whose text is not the recorded checkpoint is AC041');
SELECT throws_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, ''v1'', ''COMPLIANCE'', %L, NULL, %L, %L, ''c1'')',
                        :a1, pg_temp.key_of(:a1), :'until', pg_temp.signed_of(:a1),
                        replace(pg_temp.cp_key_of(:a1), 'prod/', 'other/')),
                 'AC041', NULL, 'a checkpoint key outside the anchor''s prefix is AC041');
SELECT lives_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, ''v1'', ''COMPLIANCE'', %L, NULL, %L, %L, ''c1'')',
                       :a1, pg_temp.key_of(:a1), :'until', pg_temp.signed_of(:a1), pg_temp.cp_key_of(:a1)),
                'record_anchor_upload records a consistent result');
SELECT lives_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, ''v1'', ''COMPLIANCE'', %L, NULL, %L, %L, ''c1'')',
                       :a1, pg_temp.key_of(:a1), :'until', pg_temp.signed_of(:a1), pg_temp.cp_key_of(:a1)),
                'recording the same result again is a no-op');
SELECT throws_ok(format('SELECT compliance.record_anchor_upload(%s, ''b'', %L, ''v2'', ''COMPLIANCE'', %L, NULL, %L, %L, ''c1'')',
                        :a1, pg_temp.key_of(:a1), :'until', pg_temp.signed_of(:a1), pg_temp.cp_key_of(:a1)),
                 'AC041', NULL, 'a different result for an uploaded anchor is AC041');
SELECT results_eq(format('SELECT status::text, attempts, version_id, lock_mode FROM compliance.anchors WHERE anchor_id = %s', :a1),
                  $$VALUES ('uploaded', 2, 'v1', 'COMPLIANCE')$$,
                  'the anchor is uploaded with the first result, attempts counted once');

SELECT compliance.record_anchor_integrity_failure(:a2, 'b', pg_temp.key_of(:a2), 'v9', 'integrity alarm: different content');
SELECT results_eq(format('SELECT status::text, attempts, version_id, last_error FROM compliance.anchors WHERE anchor_id = %s', :a2),
                  $$VALUES ('failed', 1, 'v9', 'integrity alarm: different content')$$,
                  'record_anchor_integrity_failure marks the anchor failed with the alarm');
SELECT is((SELECT count(*) FROM compliance.claim_pending_anchors(10)), 0::bigint,
          'uploaded and failed anchors are never claimed again');

SELECT * FROM finish();
ROLLBACK;
