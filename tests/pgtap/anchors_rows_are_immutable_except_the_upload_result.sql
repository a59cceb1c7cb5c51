-- compliance.anchors is append-only for every role, the owner included, also under
-- session_replication_role = replica: rows are never deleted or truncated, the anchored
-- fields (the checkpoint too) never change, and the only updates are attempts/last_error
-- while pending and one transition to uploaded (complete result, with the signed checkpoint)
-- or failed (alarm). Everything else is AC040; a signed note of another text breaks a CHECK.
BEGIN;
SELECT plan(25);

SELECT compliance.emit('test.anchored', 'tester', '{}') FROM generate_series(1, 2);
SELECT compliance.drain(100);
SELECT compliance.create_anchor() AS cadence \gset
SELECT anchor_id AS id, 'anchors/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.json' AS key,
       'checkpoints/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.checkpoint' AS cp_key,
       checkpoint || E'\n— test AAAA\n' AS signed
  FROM compliance.anchors \gset

SELECT throws_ok($$INSERT INTO compliance.anchors (cadence_id, seq_from, seq_to, head_hash, event_count, document,
                                                   document_digest, created_at, status)
                   SELECT repeat('a', 64), 3, 3, head_hash, 1, replace(document, cadence_id, repeat('a', 64)),
                          sha256(convert_to(replace(document, cadence_id, repeat('a', 64)), 'UTF8')), now(),
                          'uploaded'
                     FROM compliance.anchors$$,
                 'AC040', NULL, 'a new row must be pending');
SELECT throws_ok(format('UPDATE compliance.anchors SET head_hash = sha256(''x'') WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'head_hash never changes');
SELECT throws_ok(format('UPDATE compliance.anchors SET seq_to = 1 WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'the range never changes');
SELECT throws_ok(format('UPDATE compliance.anchors SET document = document || '' '' WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'the document never changes');
SELECT throws_ok(format('UPDATE compliance.anchors SET created_at = now() - interval ''1 day'' WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'created_at never changes');
SELECT throws_ok(format('UPDATE compliance.anchors SET checkpoint = replace(checkpoint, ''/'', ''-'') WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'the checkpoint never changes');
SELECT throws_ok(format('DELETE FROM compliance.anchors WHERE anchor_id = %s', :id), 'AC020', NULL,
                 'DELETE is refused');
SELECT throws_ok('TRUNCATE compliance.anchors', 'AC020', NULL, 'TRUNCATE is refused');

SELECT lives_ok(format('UPDATE compliance.anchors SET attempts = 2, last_error = ''timeout'' WHERE anchor_id = %s', :id),
                'while pending, attempts and last_error may be updated');
SELECT throws_ok(format('UPDATE compliance.anchors SET attempts = 1 WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'attempts never decrease');
SELECT throws_ok(format('UPDATE compliance.anchors SET bucket = ''b'' WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'a pending anchor has no partial upload result');
SELECT throws_ok(format('UPDATE compliance.anchors SET status = ''uploaded'', bucket = ''b'', object_key = %L,
                                version_id = ''v1'', lock_mode = ''GOVERNANCE'' WHERE anchor_id = %s', :'key', :id),
                 'AC040', NULL, 'uploaded without retain_until and anchored_at is refused');
SELECT throws_ok(format('UPDATE compliance.anchors SET status = ''failed'', last_error = NULL WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'failed without the alarm in last_error is refused');

SET LOCAL session_replication_role = replica;
SELECT throws_ok(format('UPDATE compliance.anchors SET head_hash = sha256(''x'') WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'the guard also fires under session_replication_role = replica');
SELECT throws_ok(format('DELETE FROM compliance.anchors WHERE anchor_id = %s', :id), 'AC020', NULL,
                 'DELETE is refused under session_replication_role = replica');
RESET session_replication_role;

SELECT throws_ok(format('UPDATE compliance.anchors SET status = ''uploaded'', bucket = ''b'', object_key = %L,
                                version_id = ''v1'', lock_mode = ''GOVERNANCE'', retain_until = now() + interval ''1 day'',
                                anchored_at = now(), attempts = 3 WHERE anchor_id = %s', :'key', :id),
                 'AC040', NULL, 'uploaded without the signed checkpoint is refused');
SELECT throws_ok(format('UPDATE compliance.anchors SET status = ''uploaded'', bucket = ''b'', object_key = %L,
                                version_id = ''v1'', lock_mode = ''GOVERNANCE'', retain_until = now() + interval ''1 day'',
                                anchored_at = now(), attempts = 3, signed_checkpoint = %L, checkpoint_key = %L,
                                checkpoint_version_id = ''c1'' WHERE anchor_id = %s',
                        :'key', replace(:'signed', 'auditchain/', 'other/'), :'cp_key', :id),
                 '23514', NULL, 'a signed note whose text is not the checkpoint breaks anchors_signed_checkpoint_note');
SELECT lives_ok(format('UPDATE compliance.anchors SET status = ''uploaded'', bucket = ''b'', object_key = %L,
                               version_id = ''v1'', lock_mode = ''GOVERNANCE'', retain_until = now() + interval ''1 day'',
                               anchored_at = now(), attempts = 3, signed_checkpoint = %L, checkpoint_key = %L,
                               checkpoint_version_id = ''c1'' WHERE anchor_id = %s', :'key', :'signed', :'cp_key', :id),
                'pending -> uploaded with the complete result is allowed once');
SELECT throws_ok(format('UPDATE compliance.anchors SET version_id = ''v2'' WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'an uploaded anchor''s version id never changes');
SELECT throws_ok(format('UPDATE compliance.anchors SET retain_until = now() WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'an uploaded anchor''s retain_until never changes');
SELECT throws_ok(format('UPDATE compliance.anchors SET status = ''pending'', bucket = NULL, object_key = NULL,
                                version_id = NULL, lock_mode = NULL, retain_until = NULL, anchored_at = NULL
                          WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'uploaded never goes back to pending');
SELECT throws_ok(format('UPDATE compliance.anchors SET attempts = attempts + 1 WHERE anchor_id = %s', :id),
                 'AC040', NULL, 'an uploaded anchor''s attempts are final');

SELECT compliance.emit('test.anchored', 'tester', '{}');
SELECT compliance.drain(100);
SELECT compliance.create_anchor();
SELECT max(anchor_id) AS id2 FROM compliance.anchors \gset
SELECT lives_ok(format('UPDATE compliance.anchors SET status = ''failed'', last_error = ''integrity alarm''
                         WHERE anchor_id = %s', :id2),
                'pending -> failed with the alarm is allowed');
SELECT throws_ok(format('UPDATE compliance.anchors SET last_error = ''resolved'' WHERE anchor_id = %s', :id2),
                 'AC040', NULL, 'a failed anchor is final');
SELECT results_eq('SELECT status::text FROM compliance.anchors ORDER BY anchor_id',
                  $$VALUES ('uploaded'), ('failed')$$, 'the refused statements changed nothing');

SELECT * FROM finish();
ROLLBACK;
