-- Anchor checkpoints (anchor document format_version 2, docs/anchoring.md): create_anchor
-- records the C2SP tlog-checkpoint body of the Merkle tree at seq_to and its root; the
-- uploader signs the body outside the database, uploads the signed note as its own object
-- with Object Lock and records it here with the anchor's result. Anchors created before
-- this migration keep format_version 1 and no checkpoint.
-- Also drops record_anchor_upload, whose signature gains the checkpoint result (CREATE OR
-- REPLACE cannot add parameters); sql/45_anchors.sql recreates it right after.

ALTER TABLE compliance.anchors
ADD COLUMN checkpoint text,
ADD COLUMN tree_root bytea CONSTRAINT anchors_tree_root_size CHECK (octet_length(tree_root) = 32),
ADD COLUMN signed_checkpoint text,
ADD COLUMN checkpoint_key text,
ADD COLUMN checkpoint_version_id text CONSTRAINT anchors_checkpoint_version_text CHECK (checkpoint_version_id <> ''),
-- The body names the tree at seq_to with the recorded root; the origin line is checked
-- where it is written (create_anchor) and by verify_tree.
ADD CONSTRAINT anchors_checkpoint_body CHECK (
    (checkpoint IS NULL) = (tree_root IS NULL)
    AND (
        checkpoint IS NULL
        OR (
            checkpoint ~ '^auditchain/[0-9]+/[^\n]+\n[0-9]+\n[A-Za-z0-9+/]{43}=\n$'
            AND split_part(checkpoint, E'\n', 2) = seq_to::text
            AND split_part(checkpoint, E'\n', 3) = encode(tree_root, 'base64')
        )
    )
),
-- The document carries the same body: what is uploaded and what SQL compares agree.
ADD CONSTRAINT anchors_document_checkpoint CHECK (
    (document::jsonb ->> 'checkpoint') IS NOT DISTINCT FROM checkpoint
    AND ((document::jsonb ->> 'format_version')::integer = 2) = (checkpoint IS NOT NULL)
),
-- A signed note is the body, a blank line and one or more signature lines.
ADD CONSTRAINT anchors_signed_checkpoint_note CHECK (
    signed_checkpoint IS NULL
    OR (
        checkpoint IS NOT NULL
        AND left(signed_checkpoint, length(checkpoint) + 1) = checkpoint || E'\n'
        AND substr(signed_checkpoint, length(checkpoint) + 2) ~ '^(— [^ \n]+ [A-Za-z0-9+/]+=*\n)+$'
    )
),
ADD CONSTRAINT anchors_checkpoint_key_check CHECK (
    checkpoint_key ~ ('checkpoints/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '\.checkpoint$')
),
-- Uploaded with a checkpoint means its signed note is in the bucket too; never before.
ADD CONSTRAINT anchors_checkpoint_result_check CHECK (
    CASE
        WHEN status = 'uploaded' AND checkpoint IS NOT NULL THEN
            num_nulls(signed_checkpoint, checkpoint_key, checkpoint_version_id) = 0
        ELSE num_nonnulls(signed_checkpoint, checkpoint_key, checkpoint_version_id) = 0
    END
);

COMMENT ON COLUMN compliance.anchors.checkpoint IS
'C2SP tlog-checkpoint body of the Merkle tree at seq_to (origin, size, base64 root, each line ending in a newline); '
'NULL for format_version 1 anchors.';
COMMENT ON COLUMN compliance.anchors.tree_root IS 'Merkle tree root at seq_to (tree_root(seq_to)) named by checkpoint.';
COMMENT ON COLUMN compliance.anchors.signed_checkpoint IS
'The checkpoint as a signed note (body, blank line, signatures), recorded by the uploader with the upload result.';
COMMENT ON COLUMN compliance.anchors.checkpoint_key IS
'S3 key of the signed checkpoint object: <prefix>checkpoints/<seq_to, 20 digits>-<cadence_id>.checkpoint.';
COMMENT ON COLUMN compliance.anchors.checkpoint_version_id IS 'S3 version id of the signed checkpoint object.';
COMMENT ON CONSTRAINT anchors_tree_root_size ON compliance.anchors IS 'A tree root is 32 bytes.';
COMMENT ON CONSTRAINT anchors_checkpoint_version_text ON compliance.anchors IS 'A version id is not empty.';
COMMENT ON CONSTRAINT anchors_checkpoint_body ON compliance.anchors IS
'The checkpoint body names tree size seq_to and the recorded root.';
COMMENT ON CONSTRAINT anchors_document_checkpoint ON compliance.anchors IS
'A format_version 2 document carries exactly the recorded checkpoint body; version 1 has none.';
COMMENT ON CONSTRAINT anchors_signed_checkpoint_note ON compliance.anchors IS
'The signed note is the recorded checkpoint body followed by a blank line and signature lines.';
COMMENT ON CONSTRAINT anchors_checkpoint_key_check ON compliance.anchors IS
'The checkpoint object key is derived from seq_to and cadence_id.';
COMMENT ON CONSTRAINT anchors_checkpoint_result_check ON compliance.anchors IS
'An uploaded anchor with a checkpoint has its signed note, key and version; no other anchor has any.';

DO $$
BEGIN
    IF pg_catalog.to_regprocedure(
        'compliance.record_anchor_upload(bigint, text, text, text, text, timestamptz, uuid)'
    ) IS NOT NULL THEN
        DROP FUNCTION compliance.record_anchor_upload(bigint, text, text, text, text, timestamptz, uuid);
    END IF;
END;
$$;
