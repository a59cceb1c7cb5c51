-- Anchors: record the chain head (create_anchor, run by pg_cron), let the uploader take
-- pending anchors and record what it wrote to S3, and keep every row's history immutable.
-- The document format is in docs/anchoring.md.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance.guard_anchor_change(): trigger on compliance.anchors (BEFORE INSERT OR UPDATE,
-- ENABLE ALWAYS). A new row must be pending with no attempts. Afterwards the anchored
-- fields never change, and the only updates are, while pending: attempts/last_error (a
-- failed attempt), the one-time transition to uploaded with the complete upload result,
-- or to failed with the alarm in last_error. Everything else raises AC040.
CREATE OR REPLACE FUNCTION compliance.guard_anchor_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status IS DISTINCT FROM 'pending'::compliance.anchor_status
           OR NEW.attempts IS DISTINCT FROM 0 OR NEW.last_error IS NOT NULL THEN
            RAISE EXCEPTION 'a new anchor must be pending, with no attempts and no error'
                USING ERRCODE = 'AC040';
        END IF;
        RETURN NEW;
    END IF;

    IF (NEW.anchor_id, NEW.cadence_id, NEW.seq_from, NEW.seq_to, NEW.head_hash, NEW.event_count,
        NEW.prev_anchor_digest, NEW.document, NEW.document_digest, NEW.created_at)
       IS DISTINCT FROM
       (OLD.anchor_id, OLD.cadence_id, OLD.seq_from, OLD.seq_to, OLD.head_hash, OLD.event_count,
        OLD.prev_anchor_digest, OLD.document, OLD.document_digest, OLD.created_at) THEN
        RAISE EXCEPTION 'anchor %: the anchored head and its document never change', OLD.anchor_id
            USING ERRCODE = 'AC040';
    END IF;
    IF OLD.status <> 'pending' THEN
        RAISE EXCEPTION 'anchor % is %: its upload result is final', OLD.anchor_id, OLD.status
            USING ERRCODE = 'AC040';
    END IF;
    IF NEW.attempts < OLD.attempts THEN
        RAISE EXCEPTION 'anchor %: attempts cannot decrease', OLD.anchor_id USING ERRCODE = 'AC040';
    END IF;
    CASE NEW.status
        WHEN 'pending' THEN
            IF pg_catalog.num_nonnulls(NEW.bucket, NEW.object_key, NEW.version_id, NEW.lock_mode, NEW.retain_until,
                            NEW.anchored_at) > 0 THEN
                RAISE EXCEPTION 'anchor %: a pending anchor has no upload result', OLD.anchor_id
                    USING ERRCODE = 'AC040';
            END IF;
        WHEN 'uploaded' THEN
            IF pg_catalog.num_nulls(NEW.bucket, NEW.object_key, NEW.version_id, NEW.lock_mode, NEW.retain_until,
                         NEW.anchored_at) > 0 THEN
                RAISE EXCEPTION 'anchor %: uploaded needs bucket, object_key, version_id, lock_mode, '
                                'retain_until and anchored_at', OLD.anchor_id
                    USING ERRCODE = 'AC040';
            END IF;
        WHEN 'failed' THEN
            IF NEW.last_error IS NULL
               OR pg_catalog.num_nonnulls(NEW.lock_mode, NEW.retain_until, NEW.anchored_at) > 0 THEN
                RAISE EXCEPTION 'anchor %: failed needs the alarm in last_error and no lock result',
                    OLD.anchor_id
                    USING ERRCODE = 'AC040';
            END IF;
    END CASE;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION compliance.guard_anchor_change() IS
'Trigger: a new anchor is pending; afterwards only attempts/last_error while pending and one transition '
'to uploaded (complete result) or failed (alarm) are allowed; anything else raises AC040.';

CREATE OR REPLACE TRIGGER guard_anchor_change
BEFORE INSERT OR UPDATE ON compliance.anchors
FOR EACH ROW EXECUTE FUNCTION compliance.guard_anchor_change();
ALTER TABLE compliance.anchors ENABLE ALWAYS TRIGGER guard_anchor_change;
COMMENT ON TRIGGER guard_anchor_change ON compliance.anchors IS
'Anchor rows are written once and may only receive their upload result (compliance.guard_anchor_change).';
SELECT compliance.protect_table('compliance.anchors', false);

-- compliance.create_anchor(): when the chain head has moved past the last anchor, record a
-- pending anchor for the new range with its document and digest, and wake the uploader
-- (NOTIFY auditchain_anchor, payload cadence_id). Returns the cadence_id, or NULL when the
-- head has not moved. The same head always gives the same cadence_id, so a second run is
-- a no-op. Refuses (AC010/AC011) to anchor a head the drainer's check rejects, and (AC042)
-- when the event of the last anchor no longer has the anchored hash.
-- Touches: drainer_state (read, FOR SHARE), audit_events (read), anchors (INSERT).
CREATE OR REPLACE FUNCTION compliance.create_anchor()
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_head compliance.drainer_state%ROWTYPE;
    v_last compliance.anchors%ROWTYPE;
    v_event_hash bytea;
    v_system_identifier text;
    v_database_name text := pg_catalog.current_database();
    v_seq_from bigint;
    v_cadence_id text;
    v_document text;
    v_created text;
BEGIN
    -- One creator at a time; the share lock keeps a drain batch from committing between
    -- reading the head and recording it.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('auditchain.anchor')::bigint);
    SELECT * INTO STRICT v_head FROM compliance.drainer_state FOR SHARE;
    IF v_head.halted_at IS NOT NULL THEN
        RAISE EXCEPTION 'drainer halted since % at seq %: no anchor is recorded for a halted chain',
            v_head.halted_at, v_head.halted_seq
            USING ERRCODE = 'AC011',
                  HINT = 'See docs/runbook.md "Drainer halted".';
    END IF;
    PERFORM compliance.check_chain_head(v_head.last_seq, v_head.last_hash);

    SELECT * INTO v_last FROM compliance.anchors AS a ORDER BY a.seq_to DESC LIMIT 1;
    IF FOUND THEN
        SELECT e.event_hash INTO v_event_hash FROM compliance.audit_events AS e WHERE e.seq = v_last.seq_to;
        IF v_event_hash IS DISTINCT FROM v_last.head_hash THEN
            RAISE EXCEPTION 'anchored history changed: seq % no longer has the hash anchored by %',
                v_last.seq_to, v_last.cadence_id
                USING ERRCODE = 'AC042',
                      DETAIL = pg_catalog.format('seq=%s', v_last.seq_to),
                      HINT = 'The chain was rewritten or cut below an anchor; run `auditchain verify`.';
        END IF;
    END IF;
    IF v_head.last_seq <= coalesce(v_last.seq_to, 0) THEN
        RETURN NULL;
    END IF;

    SELECT s.system_identifier::text INTO STRICT v_system_identifier FROM pg_catalog.pg_control_system() AS s;
    v_seq_from := coalesce(v_last.seq_to, 0) + 1;
    v_cadence_id := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
        'auditchain-anchor:v1:' || v_system_identifier || ':' || v_database_name || ':'
        || v_head.last_seq::text || ':' || pg_catalog.encode(v_head.last_hash, 'hex'), 'UTF8')), 'hex');
    v_document := pg_catalog.jsonb_build_object(
        'format', 'auditchain-anchor',
        'format_version', 1,
        'cadence_id', v_cadence_id,
        'seq_from', v_seq_from,
        'seq_to', v_head.last_seq,
        'head_hash', pg_catalog.encode(v_head.last_hash, 'hex'),
        'event_count', v_head.last_seq - v_seq_from + 1,
        'prev_anchor_digest', pg_catalog.encode(v_last.document_digest, 'hex'),
        'created_at', compliance.iso_utc(pg_catalog.now()),
        'database', pg_catalog.jsonb_build_object(
            'system_identifier', v_system_identifier,
            'database_name', v_database_name
        )
    )::text;

    INSERT INTO compliance.anchors (
        cadence_id, seq_from, seq_to, head_hash, event_count, prev_anchor_digest, document,
        document_digest, created_at
    )
    VALUES (
        v_cadence_id, v_seq_from, v_head.last_seq, v_head.last_hash, v_head.last_seq - v_seq_from + 1,
        v_last.document_digest, v_document, pg_catalog.sha256(pg_catalog.convert_to(v_document, 'UTF8')),
        pg_catalog.now()
    )
    ON CONFLICT (cadence_id) DO NOTHING
    RETURNING cadence_id INTO v_created;
    IF v_created IS NOT NULL THEN
        PERFORM pg_catalog.pg_notify('auditchain_anchor', v_created);
    END IF;
    RETURN v_created;
END;
$$;
COMMENT ON FUNCTION compliance.create_anchor() IS
'pg_cron, every 15 minutes: records a pending anchor when the chain head moved (NOTIFY auditchain_anchor); '
'returns its cadence_id, or NULL when there is nothing new.';

-- compliance.claim_pending_anchors(max_anchors): up to max_anchors pending anchors in seq
-- order, row-locked FOR UPDATE SKIP LOCKED. The locks last until the caller's transaction
-- ends: the uploader keeps that transaction open across its S3 calls and records each
-- result in it, so a crash anywhere rolls back to pending and another uploader never takes
-- the same anchor meanwhile. Touches: anchors (SELECT FOR UPDATE).
CREATE OR REPLACE FUNCTION compliance.claim_pending_anchors(p_max_anchors integer DEFAULT 10)
RETURNS TABLE (
    anchor_id bigint, cadence_id text, seq_from bigint, seq_to bigint, document text, document_digest bytea,
    attempts integer
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_max_anchors IS NULL OR p_max_anchors < 1 THEN
        RAISE EXCEPTION 'max_anchors must be a positive integer' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        SELECT a.anchor_id, a.cadence_id, a.seq_from, a.seq_to, a.document, a.document_digest, a.attempts
          FROM compliance.anchors AS a
         WHERE a.status = 'pending'
         ORDER BY a.seq_to
         LIMIT p_max_anchors
           FOR UPDATE SKIP LOCKED;
END;
$$;
COMMENT ON FUNCTION compliance.claim_pending_anchors(integer) IS
'Uploader: locks and returns up to max_anchors pending anchors (SKIP LOCKED) until the caller''s transaction ends.';

-- compliance.pending_anchor(anchor_id): the anchor row, locked, if it is pending; raises
-- AC041 when it does not exist or already has its result. Touches: anchors (SELECT FOR UPDATE).
CREATE OR REPLACE FUNCTION compliance.pending_anchor(p_anchor_id bigint)
RETURNS compliance.anchors
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_anchor compliance.anchors%ROWTYPE;
BEGIN
    SELECT * INTO v_anchor FROM compliance.anchors AS a WHERE a.anchor_id = p_anchor_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no anchor %', p_anchor_id USING ERRCODE = 'AC041';
    END IF;
    IF v_anchor.status <> 'pending' THEN
        RAISE EXCEPTION 'anchor % is already %', p_anchor_id, v_anchor.status USING ERRCODE = 'AC041';
    END IF;
    RETURN v_anchor;
END;
$$;
COMMENT ON FUNCTION compliance.pending_anchor(bigint) IS
'Internal: the pending anchor row, locked; AC041 when missing or already uploaded/failed.';

-- compliance.record_anchor_upload(anchor_id, bucket, object_key, version_id, lock_mode,
-- retain_until): the anchor's object is in the bucket with this lock; mark it uploaded.
-- Repeating the same result is a no-op; anything inconsistent raises AC041.
-- Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance.record_anchor_upload(
    p_anchor_id bigint,
    p_bucket text,
    p_object_key text,
    p_version_id text,
    p_lock_mode text,
    p_retain_until timestamptz
)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_anchor compliance.anchors%ROWTYPE;
    v_key_suffix text;
BEGIN
    SELECT * INTO v_anchor FROM compliance.anchors AS a WHERE a.anchor_id = p_anchor_id;
    IF v_anchor.status = 'uploaded'
       AND (v_anchor.bucket, v_anchor.object_key, v_anchor.version_id, v_anchor.lock_mode, v_anchor.retain_until)
           IS NOT DISTINCT FROM (p_bucket, p_object_key, p_version_id, p_lock_mode, p_retain_until) THEN
        RETURN;
    END IF;
    v_anchor := compliance.pending_anchor(p_anchor_id);
    v_key_suffix := 'anchors/' || pg_catalog.lpad(v_anchor.seq_to::text, 20, '0') || '-' || v_anchor.cadence_id
                    || '.json';
    IF coalesce(p_bucket, '') = '' OR coalesce(p_version_id, '') = '' THEN
        RAISE EXCEPTION 'anchor %: bucket and version_id are required', p_anchor_id USING ERRCODE = 'AC041';
    END IF;
    IF p_object_key IS NULL OR pg_catalog.right(p_object_key, pg_catalog.length(v_key_suffix)) <> v_key_suffix THEN
        RAISE EXCEPTION 'anchor %: object key % does not end with %', p_anchor_id, p_object_key, v_key_suffix
            USING ERRCODE = 'AC041';
    END IF;
    IF p_lock_mode IS NULL OR p_lock_mode NOT IN ('GOVERNANCE', 'COMPLIANCE') THEN
        RAISE EXCEPTION 'anchor %: lock mode must be GOVERNANCE or COMPLIANCE, not %', p_anchor_id,
            coalesce(p_lock_mode, 'NULL')
            USING ERRCODE = 'AC041';
    END IF;
    IF p_retain_until IS NULL OR p_retain_until <= pg_catalog.now() THEN
        RAISE EXCEPTION 'anchor %: retain_until % is not in the future', p_anchor_id, p_retain_until
            USING ERRCODE = 'AC041';
    END IF;
    UPDATE compliance.anchors AS a
       SET status = 'uploaded', bucket = p_bucket, object_key = p_object_key, version_id = p_version_id,
           lock_mode = p_lock_mode, retain_until = p_retain_until, anchored_at = pg_catalog.clock_timestamp(),
           attempts = a.attempts + 1
     WHERE a.anchor_id = p_anchor_id;
END;
$$;
COMMENT ON FUNCTION compliance.record_anchor_upload(bigint, text, text, text, text, timestamptz) IS
'Uploader: marks a pending anchor uploaded with its bucket, key, version id and Object Lock; '
'idempotent for the same result, AC041 for anything inconsistent.';

-- compliance.record_failed_attempt(anchor_id, error, status, bucket, object_key,
-- version_id): one upload attempt that did not succeed; attempts + 1 and last_error, and
-- the new status (pending to retry, failed for an alarm). Raises AC041 without an error
-- text or when the anchor is not pending. Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance.record_failed_attempt(
    p_anchor_id bigint,
    p_error text,
    p_status compliance.anchor_status,
    p_bucket text DEFAULT NULL,
    p_object_key text DEFAULT NULL,
    p_version_id text DEFAULT NULL
)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.btrim(coalesce(p_error, '')) = '' THEN
        RAISE EXCEPTION 'anchor %: an error text is required', p_anchor_id USING ERRCODE = 'AC041';
    END IF;
    PERFORM compliance.pending_anchor(p_anchor_id);
    UPDATE compliance.anchors AS a
       SET status = p_status, bucket = p_bucket, object_key = p_object_key, version_id = p_version_id,
           attempts = a.attempts + 1, last_error = pg_catalog.left(p_error, 2000)
     WHERE a.anchor_id = p_anchor_id;
END;
$$;
COMMENT ON FUNCTION compliance.record_failed_attempt(bigint, text, compliance.anchor_status, text, text, text) IS
'Internal: records an upload attempt that failed (attempts + 1, last_error) with the anchor''s new status.';

-- compliance.record_anchor_error(anchor_id, error): a transient upload failure (endpoint
-- unreachable, throttling, access or KMS denied). The anchor stays pending for the next run.
-- Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance.record_anchor_error(p_anchor_id bigint, p_error text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT compliance.record_failed_attempt(p_anchor_id, p_error, 'pending');
END;
COMMENT ON FUNCTION compliance.record_anchor_error(bigint, text) IS
'Uploader: records a transient upload failure (attempts + 1, last_error); the anchor stays pending.';

-- compliance.record_anchor_integrity_failure(anchor_id, bucket, object_key, version_id,
-- error): different content is already at the anchor's key. Terminal: the anchor becomes
-- failed with the alarm in last_error and is never retried (the object is never
-- overwritten). Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance.record_anchor_integrity_failure(
    p_anchor_id bigint,
    p_bucket text,
    p_object_key text,
    p_version_id text,
    p_error text
)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT compliance.record_failed_attempt(p_anchor_id, p_error, 'failed', p_bucket, p_object_key, p_version_id);
END;
COMMENT ON FUNCTION compliance.record_anchor_integrity_failure(bigint, text, text, text, text) IS
'Uploader: integrity alarm, different content already at the anchor''s key; marks the anchor failed (terminal).';
