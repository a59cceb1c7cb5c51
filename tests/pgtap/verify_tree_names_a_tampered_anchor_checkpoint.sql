-- verify_tree compares every anchor's recorded checkpoint (its root column, its checkpoint
-- body and its signed note) with the tree recomputed from the events, and names the anchor
-- whose checkpoint row was altered. Tampering is simulated by a superuser who disables the
-- anchors guard (and a CHECK where the change would break it) inside a rolled-back block.
BEGIN;
SELECT plan(6);

SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 300) AS g;
SELECT compliance.drain(1000);
SELECT compliance.create_anchor();
SELECT compliance.emit('auth.login', 'user-' || g) FROM generate_series(1, 20) AS g;
SELECT compliance.drain(1000);
SELECT compliance.create_anchor();
SELECT anchor_id AS a1, cadence_id AS c1 FROM compliance.anchors WHERE seq_to = 300 \gset
SELECT anchor_id AS a2, cadence_id AS c2 FROM compliance.anchors WHERE seq_to = 320 \gset
UPDATE compliance.anchors
   SET status = 'uploaded', bucket = 'b', object_key = 'anchors/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.json',
       version_id = 'v1', lock_mode = 'GOVERNANCE', retain_until = now() + interval '1 day', anchored_at = now(),
       signed_checkpoint = checkpoint || E'\n— test-key 3q2+7wAAAAA=\n',
       checkpoint_key = 'checkpoints/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.checkpoint',
       checkpoint_version_id = 'c1'
 WHERE anchor_id = :a1;

SELECT row_eq('SELECT * FROM compliance.verify_tree()', ROW(true, 320::bigint, NULL::text),
              'intact anchors'' checkpoints agree with the tree');

CREATE FUNCTION pg_temp.verdict_after(statements text)
RETURNS TABLE (ok boolean, leaves_checked bigint, problem text)
LANGUAGE plpgsql
AS $$
BEGIN
    BEGIN
        ALTER TABLE compliance.anchors DISABLE TRIGGER guard_anchor_change;
        ALTER TABLE compliance.anchors DISABLE TRIGGER forbid_row_change;
        EXECUTE statements;
        RETURN QUERY SELECT * FROM compliance.verify_tree();
        RAISE EXCEPTION 'undo' USING ERRCODE = 'TT001';
    EXCEPTION WHEN SQLSTATE 'TT001' THEN
        RETURN;
    END;
END;
$$;

SELECT row_eq(format($$SELECT * FROM pg_temp.verdict_after(
                  'UPDATE compliance.anchors SET tree_root = sha256(''x''),
                          checkpoint = replace(checkpoint, encode(tree_root, ''base64''), encode(sha256(''x''), ''base64'')),
                          document = replace(document, encode(tree_root, ''base64''), encode(sha256(''x''), ''base64'')),
                          document_digest = sha256(convert_to(replace(document, encode(tree_root, ''base64''),
                                                                       encode(sha256(''x''), ''base64'')), ''UTF8''))
                    WHERE seq_to = 320')$$),
              ROW(false, 320::bigint,
                  format('root at tree size 320 recorded by the checkpoint of anchor %s (seq_to 320, cadence_id %s) '
                         'differs from the tree recomputed from the events', :a2, :'c2')),
              'a consistently forged checkpoint row (root, body, document) is named by its anchor');
SELECT row_eq(format($$SELECT * FROM pg_temp.verdict_after(
                  'ALTER TABLE compliance.anchors DROP CONSTRAINT anchors_checkpoint_body;
                   ALTER TABLE compliance.anchors DROP CONSTRAINT anchors_document_checkpoint;
                   ALTER TABLE compliance.anchors DROP CONSTRAINT anchors_signed_checkpoint_note;
                   UPDATE compliance.anchors SET checkpoint = replace(checkpoint, E''\n300\n'', E''\n299\n'')
                    WHERE anchor_id = %s')$$, :a1),
              ROW(false, 320::bigint,
                  format('root at tree size 299 recorded by the checkpoint of anchor %s (seq_to 300, cadence_id %s) '
                         'differs from the tree recomputed from the events', :a1, :'c1')),
              'a checkpoint body naming another size is named by its anchor');
SELECT row_eq(format($$SELECT * FROM pg_temp.verdict_after(
                  'ALTER TABLE compliance.anchors DROP CONSTRAINT anchors_signed_checkpoint_note;
                   UPDATE compliance.anchors SET signed_checkpoint = replace(signed_checkpoint, ''auditchain/'', ''other/'')
                    WHERE anchor_id = %s')$$, :a1),
              ROW(false, 320::bigint,
                  format('the signed_checkpoint of anchor %s (seq_to 300, cadence_id %s) is not a checkpoint of this '
                         'log''s tree (origin, size or root missing or malformed)', :a1, :'c1')),
              'a signed note of another origin is named by its anchor');
SELECT row_eq(format($$SELECT * FROM pg_temp.verdict_after(
                  'ALTER TABLE compliance.anchors DROP CONSTRAINT anchors_checkpoint_body;
                   UPDATE compliance.anchors SET tree_root = NULL WHERE anchor_id = %s')$$, :a1),
              ROW(false, 320::bigint,
                  format('the tree_root of anchor %s (seq_to 300, cadence_id %s) is not a checkpoint of this '
                         'log''s tree (origin, size or root missing or malformed)', :a1, :'c1')),
              'a root removed from a checkpoint row is named');
SELECT row_eq('SELECT * FROM compliance.verify_tree()', ROW(true, 320::bigint, NULL::text),
              'the tampering was rolled back');

SELECT * FROM finish();
ROLLBACK;
