-- A failed anchor (integrity alarm) counts in anchors_failed until an operator records the
-- review with compliance.acknowledge_anchor_failure; the anchor itself stays failed and the
-- review is append-only.
BEGIN;
SELECT plan(10);

CREATE FUNCTION pg_temp.failed_anchors() RETURNS double precision
LANGUAGE sql AS $$ SELECT value FROM compliance.metrics() WHERE metric = 'anchors_failed' $$;

SELECT compliance.emit('test.anchored', 'tester');
SELECT compliance.drain();
SELECT compliance.create_anchor();
SELECT anchor_id AS anchor_id FROM compliance.anchors \gset

SELECT throws_ok(format($$SELECT compliance.acknowledge_anchor_failure(%s, 'nothing to see')$$, :anchor_id),
                 'AC060', NULL, 'a pending anchor has no integrity alarm to acknowledge');

SELECT compliance.record_anchor_integrity_failure(
           :anchor_id, 'anchor-bucket',
           'anchors/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.json', 'v-other',
           'integrity alarm: different content at the key')
  FROM compliance.anchors;
SELECT is(pg_temp.failed_anchors(), 1::double precision, 'the failed anchor counts in anchors_failed');

SELECT throws_ok(format($$SELECT compliance.acknowledge_anchor_failure(%s, '  ')$$, :anchor_id),
                 'AC013', NULL, 'a blank note is refused');
SELECT throws_ok($$SELECT compliance.acknowledge_anchor_failure(-1, 'no such anchor')$$,
                 'AC060', NULL, 'an unknown anchor is refused');
SELECT is(compliance.acknowledge_anchor_failure(:anchor_id, 'INC-7: stale clone wrote to our prefix'), true,
          'the review is recorded');
SELECT is(pg_temp.failed_anchors(), 0::double precision, 'a reviewed failed anchor no longer counts');
SELECT is((SELECT status::text FROM compliance.anchors WHERE anchor_id = :anchor_id), 'failed',
          'the anchor itself stays failed');
SELECT is(compliance.acknowledge_anchor_failure(:anchor_id, 'again'), false,
          'acknowledging again changes nothing');
SELECT is((SELECT note FROM compliance.anchor_failure_reviews), 'INC-7: stale clone wrote to our prefix',
          'the first note is kept');
SELECT throws_ok($$DELETE FROM compliance.anchor_failure_reviews$$, 'AC020', NULL,
                 'reviews are append-only');

SELECT * FROM finish();
ROLLBACK;
