-- The uploader's lease protocol: claim_next_anchor hands each pending anchor to one uploader
-- at a time under a lease; a lease that expired can be taken over; a result is recorded only
-- under the live lease that claimed the anchor (AC043 for a late or overtaken uploader);
-- recording releases the lease and repeating the same result is a no-op that returns false.
BEGIN;
SELECT plan(33);

CREATE FUNCTION pg_temp.key_of(anchor_id bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT 'anchors/' || lpad(a.seq_to::text, 20, '0') || '-' || a.cadence_id || '.json'
      FROM compliance.anchors AS a WHERE a.anchor_id = key_of.anchor_id
$$;
-- The signed checkpoint's shape and key that record_anchor_upload expects with the result.
CREATE FUNCTION pg_temp.signed_of(anchor_id bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT a.checkpoint || E'\n— test-key 3q2+7wAAAAA=\n' FROM compliance.anchors AS a WHERE a.anchor_id = signed_of.anchor_id
$$;
CREATE FUNCTION pg_temp.cp_key_of(anchor_id bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT 'checkpoints/' || lpad(a.seq_to::text, 20, '0') || '-' || a.cadence_id || '.checkpoint'
      FROM compliance.anchors AS a WHERE a.anchor_id = cp_key_of.anchor_id
$$;

SELECT compliance.emit('test.anchored', 'tester', '{}');
SELECT compliance.drain(100);
SELECT compliance.create_anchor();
SELECT compliance.emit('test.anchored', 'tester', '{}');
SELECT compliance.drain(100);
SELECT compliance.create_anchor();
SELECT min(anchor_id) AS a1, max(anchor_id) AS a2 FROM compliance.anchors \gset

-- Claims.
SELECT throws_ok($$SELECT * FROM compliance.claim_next_anchor(' ')$$, '22023', NULL, 'claimed_by must name the uploader');
SELECT throws_ok($$SELECT * FROM compliance.claim_next_anchor(repeat('u', 257))$$, '22023', NULL,
                 'claimed_by is at most 256 characters');
SELECT throws_ok($$SELECT * FROM compliance.claim_next_anchor('u1', '0 seconds')$$, '22023', NULL,
                 'a lease must be positive');
SELECT throws_ok($$SELECT * FROM compliance.claim_next_anchor('u1', '2 days')$$, '22023', NULL,
                 'a lease is at most one day');

SELECT anchor_id = :a1 AS first_is_a1, lease_id AS lease1 FROM compliance.claim_next_anchor('u1', '50 milliseconds') \gset
SELECT ok(:'first_is_a1'::boolean, 'the first claim gets the oldest pending anchor');
SELECT row_eq(format('SELECT claimed_by, lease_id FROM compliance.anchors WHERE anchor_id = %s', :a1),
              ROW('u1'::text, :'lease1'::uuid), 'the claim records its uploader and lease');
SELECT anchor_id = :a2 AS second_is_a2, lease_id AS lease2,
       lease_expires_at - clock_timestamp() BETWEEN interval '4 minutes' AND interval '5 minutes' AS default_lease
  FROM compliance.claim_next_anchor('u2') \gset
SELECT ok(:'second_is_a2'::boolean, 'a second claim does not get the leased anchor but the next one');
SELECT ok(:'default_lease'::boolean, 'the default lease is 5 minutes');
SELECT is((SELECT count(*) FROM compliance.claim_next_anchor('u3')), 0::bigint,
          'nothing is claimed while every pending anchor is leased');
SELECT is((SELECT count(*) FROM compliance.claim_pending_anchors(10)), 0::bigint,
          'the deprecated claim leaves leased anchors alone too');
SELECT ok(compliance.anchor_heartbeat(:a2, :'lease2'), 'the holder renews its lease');
SELECT ok(NOT compliance.anchor_heartbeat(:a2, gen_random_uuid()), 'another lease_id renews nothing');

-- Expiry and takeover.
SELECT pg_sleep(0.1);
SELECT ok(NOT compliance.anchor_heartbeat(:a1, :'lease1'), 'an expired lease cannot be renewed');
SELECT throws_ok(format('SELECT compliance.record_anchor_error(%s, ''SlowDown'', %L)', :a1, :'lease1'), 'AC043', NULL,
                 'a result under an expired lease is refused');
SELECT anchor_id = :a1 AS took_a1, lease_id AS lease3 FROM compliance.claim_next_anchor('u3') \gset
SELECT ok(:'took_a1'::boolean, 'an expired lease is taken over by the next claim');
SELECT isnt(:'lease3'::uuid, :'lease1'::uuid, 'under a new lease');
SELECT throws_ok(format($$SELECT compliance.record_anchor_upload(%s, 'b', %L, 'v1', 'GOVERNANCE',
                                 now() + interval '1 day', %L)$$, :a1, pg_temp.key_of(:a1), :'lease1'),
                 'AC043', NULL, 'the overtaken uploader''s result is refused');
SELECT throws_ok(format($$SELECT compliance.record_anchor_upload(%s, 'b', %L, 'v1', 'GOVERNANCE',
                                 now() + interval '1 day')$$, :a1, pg_temp.key_of(:a1)),
                 'AC043', NULL, 'a result without a lease is refused while someone holds one');
SELECT is((SELECT attempts FROM compliance.anchors WHERE anchor_id = :a1), 0, 'refused results change nothing');

-- Recording under the live lease, and repeating it.
SELECT date_trunc('second', now() + interval '1 day') AS until \gset
SELECT is(compliance.record_anchor_upload(:a1, 'b', pg_temp.key_of(:a1), 'v1', 'GOVERNANCE', :'until', :'lease3',
                                          pg_temp.signed_of(:a1), pg_temp.cp_key_of(:a1), 'c1'),
          true, 'the holder records its upload');
SELECT row_eq(format('SELECT status::text, attempts, lease_expires_at FROM compliance.anchors WHERE anchor_id = %s', :a1),
              ROW('uploaded'::text, 1, NULL::timestamptz), 'the anchor is uploaded and its lease released');
SELECT is(compliance.record_anchor_upload(:a1, 'b', pg_temp.key_of(:a1), 'v1', 'GOVERNANCE', :'until', :'lease3',
                                          pg_temp.signed_of(:a1), pg_temp.cp_key_of(:a1), 'c1'),
          false, 'recording the same upload again is a no-op');
SELECT is(compliance.record_anchor_upload(:a1, 'b', pg_temp.key_of(:a1), 'v1', 'GOVERNANCE', :'until', :'lease1',
                                          pg_temp.signed_of(:a1), pg_temp.cp_key_of(:a1), 'c1'),
          false, 'so is the same result from the overtaken uploader (the object is written once)');
SELECT throws_ok(format($$SELECT compliance.record_anchor_upload(%s, 'b', %L, 'v2', 'GOVERNANCE', %L, %L)$$,
                        :a1, pg_temp.key_of(:a1), :'until', :'lease3'),
                 'AC043', NULL, 'a different result after the lease was released is refused');

SELECT is(compliance.record_anchor_error(:a2, 'SlowDown: reduce your request rate', :'lease2'), true,
          'a transient error is recorded');
SELECT is(compliance.record_anchor_error(:a2, 'SlowDown: reduce your request rate', :'lease2'), false,
          'and its repeat under the same lease is a no-op');
SELECT row_eq(format('SELECT status::text, attempts, lease_expires_at FROM compliance.anchors WHERE anchor_id = %s', :a2),
              ROW('pending'::text, 1, NULL::timestamptz), 'the anchor stays pending, counted once, lease released');
SELECT anchor_id = :a2 AS retook_a2, lease_id AS lease4 FROM compliance.claim_next_anchor('u4') \gset
SELECT ok(:'retook_a2'::boolean, 'a released anchor is claimed again at once');
SELECT is(compliance.record_anchor_integrity_failure(:a2, 'b', pg_temp.key_of(:a2), 'v9', 'integrity alarm', :'lease4'),
          true, 'an integrity alarm is recorded');
SELECT is(compliance.record_anchor_integrity_failure(:a2, 'b', pg_temp.key_of(:a2), 'v9', 'integrity alarm', :'lease4'),
          false, 'and its repeat is a no-op');
SELECT is((SELECT count(*) FROM compliance.claim_next_anchor('u5')), 0::bigint, 'final anchors are never claimed');

-- The guard: only a claim changes who holds the anchor, and a claim carries no result.
SELECT compliance.emit('test.anchored', 'tester', '{}');
SELECT compliance.drain(100);
SELECT compliance.create_anchor();
SELECT anchor_id AS a3 FROM compliance.claim_next_anchor('u6') \gset
SELECT throws_ok(format('UPDATE compliance.anchors SET claimed_by = ''mallory'' WHERE anchor_id = %s', :a3), 'AC040',
                 NULL, 'claimed_by changes only with a new lease');
SELECT throws_ok(format('UPDATE compliance.anchors SET lease_id = gen_random_uuid(), attempts = attempts + 1 '
                        'WHERE anchor_id = %s', :a3), 'AC040', NULL, 'a claim carries no result');

SELECT * FROM finish();
ROLLBACK;
