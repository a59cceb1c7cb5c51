-- Anchors: one row per chain head recorded by compliance.create_anchor and written to WORM
-- storage by `auditchain anchor`. The document format is docs/anchoring.md; the guards
-- (append-only, one-time upload result) are in sql/45_anchors.sql.
-- creates: compliance.anchor_status
-- creates: compliance.anchors
-- creates: compliance.anchors_cadence_id_key
-- creates: compliance.anchors_seq_to_key
-- creates: compliance.idx_anchors_pending
-- creates: compliance.anchors.guard_anchor_change
-- creates: compliance.anchors.forbid_row_change
-- creates: compliance.anchors.forbid_truncate

CREATE TYPE compliance.anchor_status AS ENUM ('pending', 'uploaded', 'failed');
COMMENT ON TYPE compliance.anchor_status IS
'pending: recorded, not yet in the bucket (retried); uploaded: written with Object Lock; '
'failed: integrity alarm, different content already at the key (terminal).';

CREATE TABLE compliance.anchors (
    anchor_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cadence_id text NOT NULL CONSTRAINT anchors_cadence_id_key UNIQUE
    CHECK (cadence_id ~ '^[0-9a-f]{64}$'),
    seq_from bigint NOT NULL CHECK (seq_from >= 1),
    seq_to bigint NOT NULL CONSTRAINT anchors_seq_to_key UNIQUE,
    head_hash bytea NOT NULL CHECK (octet_length(head_hash) = 32),
    event_count bigint NOT NULL,
    prev_anchor_digest bytea CHECK (octet_length(prev_anchor_digest) = 32),
    document text NOT NULL,
    document_digest bytea NOT NULL CHECK (octet_length(document_digest) = 32),
    created_at timestamptz NOT NULL,
    status compliance.anchor_status NOT NULL DEFAULT 'pending',
    bucket text CHECK (bucket <> ''),
    object_key text CHECK (object_key ~ ('anchors/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '\.json$')),
    version_id text CHECK (version_id <> ''),
    lock_mode text CHECK (lock_mode IN ('GOVERNANCE', 'COMPLIANCE')),
    retain_until timestamptz,
    anchored_at timestamptz,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error text,
    CONSTRAINT anchors_range_check CHECK (seq_to >= seq_from AND event_count = seq_to - seq_from + 1),
    CONSTRAINT anchors_first_has_no_prev CHECK ((seq_from = 1) = (prev_anchor_digest IS NULL)),
    CONSTRAINT anchors_digest_check
    CHECK (document_digest = sha256(convert_to(document, 'UTF8'))),
    -- The document is what goes to the bucket; the columns are how SQL finds it. They must agree.
    CONSTRAINT anchors_document_check CHECK (
        (document::jsonb ->> 'cadence_id') = cadence_id
        AND (document::jsonb ->> 'seq_from')::bigint = seq_from
        AND (document::jsonb ->> 'seq_to')::bigint = seq_to
        AND (document::jsonb ->> 'event_count')::bigint = event_count
        AND (document::jsonb ->> 'head_hash') = encode(head_hash, 'hex')
        AND (document::jsonb ->> 'prev_anchor_digest') IS NOT DISTINCT FROM encode(prev_anchor_digest, 'hex')
    ),
    CONSTRAINT anchors_upload_result_check CHECK (
        CASE status
            WHEN 'pending' THEN
                bucket IS NULL AND object_key IS NULL AND version_id IS NULL AND lock_mode IS NULL
                AND retain_until IS NULL AND anchored_at IS NULL
            WHEN 'uploaded' THEN
                bucket IS NOT NULL AND object_key IS NOT NULL AND version_id IS NOT NULL
                AND lock_mode IS NOT NULL AND retain_until IS NOT NULL AND anchored_at IS NOT NULL
            WHEN 'failed' THEN
                last_error IS NOT NULL AND lock_mode IS NULL AND retain_until IS NULL AND anchored_at IS NULL
        END
    )
);
CREATE INDEX idx_anchors_pending ON compliance.anchors (seq_to) WHERE status = 'pending';

COMMENT ON TABLE compliance.anchors IS
'Chain-head anchors (docs/anchoring.md). Rows are never deleted; the upload result is set once.';
COMMENT ON COLUMN compliance.anchors.anchor_id IS 'Creation order.';
COMMENT ON COLUMN compliance.anchors.cadence_id IS
'Hex SHA-256 of the chain-head fingerprint (system identifier, database, seq_to, head_hash): '
'the same head always gives the same cadence_id.';
COMMENT ON COLUMN compliance.anchors.seq_from IS 'First seq covered: the previous anchor''s seq_to + 1.';
COMMENT ON COLUMN compliance.anchors.seq_to IS 'The anchored chain head.';
COMMENT ON COLUMN compliance.anchors.head_hash IS 'event_hash of the event at seq_to.';
COMMENT ON COLUMN compliance.anchors.event_count IS 'seq_to - seq_from + 1.';
COMMENT ON COLUMN compliance.anchors.prev_anchor_digest IS
'document_digest of the previous anchor (anchors form their own chain); NULL for the first.';
COMMENT ON COLUMN compliance.anchors.document IS
'The anchor document (JSON, format auditchain-anchor v1), uploaded byte for byte as UTF-8.';
COMMENT ON COLUMN compliance.anchors.document_digest IS 'SHA-256 of the UTF-8 bytes of document.';
COMMENT ON COLUMN compliance.anchors.created_at IS 'When create_anchor recorded it (also in the document).';
COMMENT ON COLUMN compliance.anchors.status IS 'pending, uploaded or failed (see compliance.anchor_status).';
COMMENT ON COLUMN compliance.anchors.bucket IS 'S3 bucket holding the object (set on upload or alarm).';
COMMENT ON COLUMN compliance.anchors.object_key IS
'S3 key: <prefix>anchors/<seq_to, 20 digits>-<cadence_id>.json.';
COMMENT ON COLUMN compliance.anchors.version_id IS 'S3 version id of the anchor object.';
COMMENT ON COLUMN compliance.anchors.lock_mode IS 'Object Lock mode of the object: GOVERNANCE or COMPLIANCE.';
COMMENT ON COLUMN compliance.anchors.retain_until IS 'Object Lock retain-until date of the object.';
COMMENT ON COLUMN compliance.anchors.anchored_at IS 'When the upload was recorded.';
COMMENT ON COLUMN compliance.anchors.attempts IS 'Upload attempts recorded so far (failed ones and the final one).';
COMMENT ON COLUMN compliance.anchors.last_error IS
'Error of the most recent failed attempt (kept after a later success); for failed, the integrity alarm.';
COMMENT ON INDEX compliance.idx_anchors_pending IS 'The uploader''s queue: pending anchors in seq order.';
