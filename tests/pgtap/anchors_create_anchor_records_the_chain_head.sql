-- compliance.create_anchor records one pending anchor per new chain head: the document and
-- digest of docs/anchoring.md, a cadence_id that depends only on the head, a range that
-- continues the previous anchor and a link to its digest, the C2SP checkpoint of the Merkle
-- tree at the head (format_version 2) and the consistency proof from the previous anchor's
-- tree; the same head records nothing.
-- It refuses a halted drainer (AC011), a tampered head (AC010) and a chain that no longer
-- holds the last anchored head (AC042).
BEGIN;
SELECT plan(20);

SELECT is(compliance.create_anchor(), NULL, 'with no event there is nothing to anchor');

SELECT compliance.emit('test.anchored', 'tester', jsonb_build_object('i', i)) FROM generate_series(1, 3) AS i;
SELECT compliance.drain(100);
SELECT compliance.create_anchor() AS first_cadence \gset
SELECT system_identifier::text AS sysid FROM pg_control_system() \gset
SELECT encode(event_hash, 'hex') AS head3 FROM compliance.audit_events WHERE seq = 3 \gset

SELECT is(:'first_cadence',
          encode(sha256(convert_to('auditchain-anchor:v1:' || :'sysid' || ':' || current_database() || ':3:'
                                   || :'head3', 'UTF8')), 'hex'),
          'cadence_id is the SHA-256 of the chain-head fingerprint');
SELECT is(document::jsonb - 'created_at',
          jsonb_build_object(
              'format', 'auditchain-anchor', 'format_version', 2, 'cadence_id', :'first_cadence',
              'seq_from', 1, 'seq_to', 3, 'head_hash', :'head3', 'event_count', 3, 'prev_anchor_digest', NULL,
              'database', jsonb_build_object('system_identifier', :'sysid', 'database_name', current_database()),
              'checkpoint', 'auditchain/' || :'sysid' || '/' || current_database() || E'\n3\n'
                            || encode(compliance.tree_root(3), 'base64') || E'\n',
              'consistency_proof', NULL),
          'the document names the format, range, head hash, database and the checkpoint of the tree at seq 3')
  FROM compliance.anchors;
SELECT results_eq($$SELECT checkpoint, tree_root FROM compliance.anchors$$,
                  $$SELECT document::jsonb ->> 'checkpoint', compliance.tree_root(3) FROM compliance.anchors$$,
                  'the row records the checkpoint body and the root');
SELECT is(document::jsonb ->> 'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
          'created_at in the document is the row''s created_at in UTC with microseconds')
  FROM compliance.anchors;
SELECT matches(document::jsonb ->> 'created_at', '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$',
               'created_at is ISO-8601 with six fractional digits and Z')
  FROM compliance.anchors;
SELECT is(document_digest, sha256(convert_to(document, 'UTF8')), 'document_digest is the SHA-256 of the document')
  FROM compliance.anchors;
SELECT results_eq($$SELECT seq_from, seq_to, event_count, status::text, attempts FROM compliance.anchors$$,
                  $$VALUES (1::bigint, 3::bigint, 3::bigint, 'pending', 0)$$,
                  'the anchor is pending and covers seq 1..3');

SELECT is(compliance.create_anchor(), NULL, 'the same head again records nothing');
SELECT is((SELECT count(*) FROM compliance.anchors), 1::bigint, 'still one anchor');

SELECT compliance.emit('test.anchored', 'tester', jsonb_build_object('i', i)) FROM generate_series(4, 5) AS i;
SELECT compliance.drain(100);
SELECT isnt(compliance.create_anchor(), NULL, 'a moved head records a new anchor');
SELECT results_eq(
    $$SELECT a.seq_from, a.seq_to, a.event_count, a.prev_anchor_digest = p.document_digest,
             a.document::jsonb ->> 'prev_anchor_digest' = encode(p.document_digest, 'hex')
        FROM compliance.anchors AS a JOIN compliance.anchors AS p ON p.seq_to = a.seq_from - 1$$,
    $$VALUES (4::bigint, 5::bigint, 2::bigint, true, true)$$,
    'the new anchor continues the previous range and links to its digest'
);
SELECT is(document::jsonb -> 'consistency_proof',
          jsonb_build_object('from_tree_size', 3,
                             'hashes', (SELECT jsonb_agg(encode(h, 'base64') ORDER BY n)
                                          FROM unnest(compliance.consistency_proof(3, 5)) WITH ORDINALITY AS p (h, n))),
          'the consistency proof leads from the previous anchor''s tree size to this one''s')
  FROM compliance.anchors WHERE seq_to = 5;
SELECT is(split_part(checkpoint, E'\n', 2) || ' ' || split_part(checkpoint, E'\n', 3),
          '5 ' || encode(compliance.tree_root(5), 'base64'), 'the second checkpoint names tree size 5 and its root')
  FROM compliance.anchors WHERE seq_to = 5;

-- Stage what only a superuser can do: triggers off, change, triggers back on.
SELECT compliance.emit('test.anchored', 'tester', '{"i": 6}');
SELECT compliance.drain(100);
ALTER TABLE compliance.audit_events DISABLE TRIGGER ALL;
UPDATE compliance.audit_events SET event_hash = sha256('rewritten') WHERE seq = 5;
SELECT throws_ok('SELECT compliance.create_anchor()', 'AC042', NULL,
                 'a changed hash at the last anchored seq is refused with AC042');
UPDATE compliance.audit_events AS e SET event_hash = n.prev_hash FROM compliance.audit_events AS n
 WHERE e.seq = 5 AND n.seq = 6;
SELECT lives_ok('SELECT compliance.create_anchor()', 'with the hash restored the head is anchored again');

SELECT compliance.emit('test.anchored', 'tester', '{"i": 7}');
SELECT compliance.drain(100);
DELETE FROM compliance.audit_events WHERE seq >= 6;
UPDATE compliance.drainer_state
   SET last_seq = 5, last_hash = (SELECT event_hash FROM compliance.audit_events WHERE seq = 5), tree_size = 5;
SELECT throws_ok('SELECT compliance.create_anchor()', 'AC042', NULL,
                 'a tail cut below the last anchor (drainer state adjusted) is refused with AC042');
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change;
ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_truncate;

UPDATE compliance.drainer_state SET last_seq = 5, last_hash = sha256('not the head');
SELECT throws_ok('SELECT compliance.create_anchor()', 'AC010', NULL,
                 'a head that does not match what the drainer wrote is refused with AC010');
UPDATE compliance.drainer_state SET halted_at = now(), halted_seq = 5, halted_reason = 'test halt';
SELECT throws_ok('SELECT compliance.create_anchor()', 'AC011', NULL, 'a halted drainer is refused with AC011');
SELECT is((SELECT count(*) FROM compliance.anchors), 3::bigint, 'no refused call recorded an anchor');

SELECT * FROM finish();
ROLLBACK;
