-- Anchors: record the chain head (create_anchor, run by pg_cron), let the uploader take
-- pending anchors and record what it wrote to S3, and keep every row's history immutable.
-- The document format is in docs/anchoring.md.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._guard_anchor_change(): trigger on compliance.anchors (BEFORE INSERT OR UPDATE,
-- ENABLE ALWAYS). A new row must be pending with no attempts and no claim. Afterwards the
-- anchored fields never change, and only the lease and result columns do, while pending: a
-- claim (a new lease_id with its claimed_by, claimed_at and lease, nothing else), a lease
-- renewed or released, attempts/last_error (a failed attempt), the one-time transition to
-- uploaded with the complete upload result (with the signed checkpoint when the anchor has
-- a checkpoint), or to failed with the alarm in last_error.
-- Everything else raises AC040.
CREATE OR REPLACE FUNCTION compliance._guard_anchor_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status IS DISTINCT FROM 'pending'::compliance.anchor_status
           OR NEW.attempts IS DISTINCT FROM 0 OR NEW.last_error IS NOT NULL
           OR pg_catalog.num_nonnulls(NEW.lease_id, NEW.claimed_by, NEW.claimed_at, NEW.lease_expires_at,
                                      NEW.signed_checkpoint, NEW.checkpoint_key, NEW.checkpoint_version_id) > 0 THEN
            RAISE EXCEPTION 'a new anchor must be pending, with no attempts, no error and no claim'
                USING ERRCODE = 'AC040';
        END IF;
        RETURN NEW;
    END IF;

    IF (NEW.anchor_id, NEW.cadence_id, NEW.seq_from, NEW.seq_to, NEW.head_hash, NEW.event_count,
        NEW.prev_anchor_digest, NEW.document, NEW.document_digest, NEW.created_at, NEW.checkpoint, NEW.tree_root)
       IS DISTINCT FROM
       (OLD.anchor_id, OLD.cadence_id, OLD.seq_from, OLD.seq_to, OLD.head_hash, OLD.event_count,
        OLD.prev_anchor_digest, OLD.document, OLD.document_digest, OLD.created_at, OLD.checkpoint, OLD.tree_root) THEN
        RAISE EXCEPTION 'anchor %: the anchored head, its checkpoint and its document never change', OLD.anchor_id
            USING ERRCODE = 'AC040';
    END IF;
    IF OLD.status <> 'pending' THEN
        RAISE EXCEPTION 'anchor % is %: its upload result is final', OLD.anchor_id, OLD.status
            USING ERRCODE = 'AC040';
    END IF;
    IF NEW.attempts < OLD.attempts THEN
        RAISE EXCEPTION 'anchor %: attempts cannot decrease', OLD.anchor_id USING ERRCODE = 'AC040';
    END IF;
    IF NEW.lease_id IS DISTINCT FROM OLD.lease_id THEN
        -- A claim: a fresh lease and nothing else, so a claim can never carry a result.
        IF NEW.lease_id IS NULL OR NEW.lease_expires_at IS NULL OR NEW.status <> 'pending'
           OR NEW.attempts <> OLD.attempts OR NEW.last_error IS DISTINCT FROM OLD.last_error THEN
            RAISE EXCEPTION 'anchor %: a claim sets a new lease and changes nothing else', OLD.anchor_id
                USING ERRCODE = 'AC040';
        END IF;
    ELSIF (NEW.claimed_by, NEW.claimed_at) IS DISTINCT FROM (OLD.claimed_by, OLD.claimed_at) THEN
        RAISE EXCEPTION 'anchor %: claimed_by and claimed_at change only with a new lease_id', OLD.anchor_id
            USING ERRCODE = 'AC040';
    END IF;
    CASE NEW.status
        WHEN 'pending' THEN
            IF pg_catalog.num_nonnulls(NEW.bucket, NEW.object_key, NEW.version_id, NEW.lock_mode, NEW.retain_until,
                            NEW.anchored_at, NEW.signed_checkpoint, NEW.checkpoint_key, NEW.checkpoint_version_id) > 0 THEN
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
            IF NEW.checkpoint IS NOT NULL
               AND pg_catalog.num_nulls(NEW.signed_checkpoint, NEW.checkpoint_key, NEW.checkpoint_version_id) > 0 THEN
                RAISE EXCEPTION 'anchor %: uploaded with a checkpoint needs signed_checkpoint, checkpoint_key '
                                'and checkpoint_version_id', OLD.anchor_id
                    USING ERRCODE = 'AC040';
            END IF;
        WHEN 'failed' THEN
            IF NEW.last_error IS NULL
               OR pg_catalog.num_nonnulls(NEW.lock_mode, NEW.retain_until, NEW.anchored_at, NEW.signed_checkpoint,
                                          NEW.checkpoint_key, NEW.checkpoint_version_id) > 0 THEN
                RAISE EXCEPTION 'anchor %: failed needs the alarm in last_error and no lock result',
                    OLD.anchor_id
                    USING ERRCODE = 'AC040';
            END IF;
    END CASE;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION compliance._guard_anchor_change() IS
'Internal: trigger: a new anchor is pending and unclaimed; afterwards, while pending, only claims and leases, '
'attempts/last_error and one transition to uploaded (complete result) or failed (alarm); anything else raises AC040.';

CREATE OR REPLACE TRIGGER guard_anchor_change
BEFORE INSERT OR UPDATE ON compliance.anchors
FOR EACH ROW EXECUTE FUNCTION compliance._guard_anchor_change();
ALTER TABLE compliance.anchors ENABLE ALWAYS TRIGGER guard_anchor_change;
COMMENT ON TRIGGER guard_anchor_change ON compliance.anchors IS
'Anchor rows are written once and may only receive their upload result (compliance._guard_anchor_change).';
SELECT compliance._protect_table('compliance.anchors', false);

-- compliance.create_anchor(): when the chain head has moved past the last anchor, record a
-- pending anchor for the new range with its document (format_version 2: with the C2SP
-- checkpoint of the Merkle tree at the head and the consistency proof from the previous
-- anchor's tree size) and digest, and wake the uploader (NOTIFY auditchain_anchor, payload
-- cadence_id). Returns the cadence_id, or NULL when the head has not moved. The same head
-- always gives the same cadence_id, so a second run is a no-op. Refuses (AC010/AC011) to
-- anchor a head the drainer's check rejects, and (AC042) when the event of the last anchor
-- no longer has the anchored hash. A database whose name cannot be part of a checkpoint
-- origin (spaces, '+', control characters) gets format_version 1 documents.
-- Touches: drainer_state (read, FOR SHARE), audit_events, merkle_nodes (read), anchors (INSERT).
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
    v_root bytea;
    v_checkpoint text;
    v_proof jsonb;
BEGIN
    -- One creator at a time. Then the drainer's own lock: it waits for a running batch to
    -- commit (the drainer only ever tries that lock, so it skips a beat rather than queue),
    -- so every later statement here sees that batch whole, the chain head and the tree alike.
    -- The share lock keeps the next batch from committing before this anchor is recorded.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('auditchain.anchor')::bigint);
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('auditchain.drainer')::bigint);
    SELECT * INTO STRICT v_head FROM compliance.drainer_state FOR SHARE;
    IF v_head.halted_at IS NOT NULL THEN
        RAISE EXCEPTION 'drainer halted since % at seq %: no anchor is recorded for a halted chain',
            v_head.halted_at, v_head.halted_seq
            USING ERRCODE = 'AC011',
                  HINT = 'See docs/runbook.md "Drainer halted".';
    END IF;
    PERFORM compliance._check_chain_head(v_head.last_seq, v_head.last_hash);

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
    -- The checkpoint origin follows formats.checkpoint.origin(): a note key name has no
    -- spaces or '+', and a control character would break the note's lines.
    IF v_database_name !~ '[[:space:][:cntrl:]+]' THEN
        v_root := compliance.tree_root(v_head.last_seq);
        v_checkpoint := 'auditchain/' || v_system_identifier || '/' || v_database_name || E'\n'
                        || v_head.last_seq::text || E'\n' || pg_catalog.encode(v_root, 'base64') || E'\n';
        IF v_last.seq_to IS NOT NULL THEN
            v_proof := pg_catalog.jsonb_build_object(
                'from_tree_size', v_last.seq_to,
                'hashes', compliance._base64_hashes(compliance.consistency_proof(v_last.seq_to, v_head.last_seq))
            );
        END IF;
    END IF;
    v_document := pg_catalog.jsonb_build_object(
        'format', 'auditchain-anchor',
        'format_version', CASE WHEN v_checkpoint IS NULL THEN 1 ELSE 2 END,
        'cadence_id', v_cadence_id,
        'seq_from', v_seq_from,
        'seq_to', v_head.last_seq,
        'head_hash', pg_catalog.encode(v_head.last_hash, 'hex'),
        'event_count', v_head.last_seq - v_seq_from + 1,
        'prev_anchor_digest', pg_catalog.encode(v_last.document_digest, 'hex'),
        'created_at', compliance._iso_utc(pg_catalog.now()),
        'database', pg_catalog.jsonb_build_object(
            'system_identifier', v_system_identifier,
            'database_name', v_database_name
        )
    );
    IF v_checkpoint IS NOT NULL THEN
        v_document := (v_document::jsonb || pg_catalog.jsonb_build_object(
            'checkpoint', v_checkpoint,
            'consistency_proof', v_proof
        ))::text;
    END IF;

    INSERT INTO compliance.anchors (
        cadence_id, seq_from, seq_to, head_hash, event_count, prev_anchor_digest, document,
        document_digest, created_at, checkpoint, tree_root
    )
    VALUES (
        v_cadence_id, v_seq_from, v_head.last_seq, v_head.last_hash, v_head.last_seq - v_seq_from + 1,
        v_last.document_digest, v_document, pg_catalog.sha256(pg_catalog.convert_to(v_document, 'UTF8')),
        pg_catalog.now(), v_checkpoint, v_root
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

-- The uploader's protocol (docs/anchoring.md "Claims and leases"): claim_next_anchor takes
-- one pending anchor under a lease in a short transaction of its own; the upload runs with
-- no transaction open, anchor_heartbeat renews the lease between S3 calls, and a record_*
-- function stores the result in a second short transaction. A result is accepted only
-- under the live lease that claimed the anchor (AC043 otherwise); recording releases it. An
-- uploader that dies holds the anchor until its lease expires, then the next one takes it
-- over; uploading again is safe (IfNoneMatch, and identical bytes count as uploaded).

-- compliance.claim_next_anchor(claimed_by, lease): lease the pending anchor with the lowest
-- seq_to that nobody holds (never claimed, released, or its lease expired), skipping rows
-- another uploader is claiming right now. Records a new lease_id, claimed_by, claimed_at and
-- lease_expires_at = now + lease; no row when nothing is pending and free. 22023 for a blank
-- or overlong claimed_by or a lease outside (0, 1 day]. Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance.claim_next_anchor(claimed_by text, lease interval DEFAULT '5 minutes')
RETURNS TABLE (
    anchor_id bigint, cadence_id text, seq_from bigint, seq_to bigint, document text, document_digest bytea,
    attempts integer, lease_id uuid, lease_expires_at timestamptz
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := pg_catalog.clock_timestamp();
BEGIN
    IF pg_catalog.btrim(coalesce(claim_next_anchor.claimed_by, '')) = ''
       OR pg_catalog.length(claim_next_anchor.claimed_by) > 256 THEN
        RAISE EXCEPTION 'claimed_by must name the uploader in 1-256 characters' USING ERRCODE = '22023';
    END IF;
    IF claim_next_anchor.lease IS NULL OR claim_next_anchor.lease <= interval '0'
       OR claim_next_anchor.lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be a positive interval of at most 1 day, not %',
            coalesce(claim_next_anchor.lease::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        UPDATE compliance.anchors AS a
           SET lease_id = pg_catalog.gen_random_uuid(), claimed_by = claim_next_anchor.claimed_by,
               claimed_at = v_now, lease_expires_at = v_now + claim_next_anchor.lease
         WHERE a.anchor_id = (
                 SELECT q.anchor_id
                   FROM compliance.anchors AS q
                  WHERE q.status = 'pending' AND (q.lease_expires_at IS NULL OR q.lease_expires_at <= v_now)
                  ORDER BY q.seq_to
                  LIMIT 1
                    FOR UPDATE SKIP LOCKED
               )
           AND a.status = 'pending' AND (a.lease_expires_at IS NULL OR a.lease_expires_at <= v_now)
        RETURNING a.anchor_id, a.cadence_id, a.seq_from, a.seq_to, a.document, a.document_digest, a.attempts,
                  a.lease_id, a.lease_expires_at;
END;
$$;
COMMENT ON FUNCTION compliance.claim_next_anchor(text, interval) IS
'Uploader: leases the next pending anchor nobody holds (default 5 minutes) and returns it with its lease_id; '
'no row when none is free.';

-- compliance.anchor_queue(): what waits for an uploader: pending anchors, how many of them
-- another uploader holds under a live lease right now, and when the first of those leases
-- expires (NULL when none is held), so an uploader that found nothing to claim can say why.
-- Touches: anchors (read).
CREATE OR REPLACE FUNCTION compliance.anchor_queue()
RETURNS TABLE (pending bigint, leased bigint, first_lease_expires_at timestamptz)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.count(*),
           pg_catalog.count(*) FILTER (WHERE a.lease_expires_at > pg_catalog.clock_timestamp()),
           pg_catalog.min(a.lease_expires_at) FILTER (WHERE a.lease_expires_at > pg_catalog.clock_timestamp())
      FROM compliance.anchors AS a
     WHERE a.status = 'pending';
$$;
COMMENT ON FUNCTION compliance.anchor_queue() IS
'Uploader: pending anchors, how many are held under a live lease, and when the first such lease expires.';

-- compliance.anchor_heartbeat(anchor_id, lease_id, lease): the holder renews its lease to
-- now + lease before its next S3 call. False when the lease is no longer held (it expired,
-- another uploader took the anchor over, or a result was recorded): the uploader must stop
-- working on the anchor. Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance.anchor_heartbeat(
    anchor_id bigint, lease_id uuid, lease interval DEFAULT '5 minutes'
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF anchor_heartbeat.lease IS NULL OR anchor_heartbeat.lease <= interval '0'
       OR anchor_heartbeat.lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be a positive interval of at most 1 day' USING ERRCODE = '22023';
    END IF;
    UPDATE compliance.anchors AS a
       SET lease_expires_at = pg_catalog.clock_timestamp() + anchor_heartbeat.lease
     WHERE a.anchor_id = anchor_heartbeat.anchor_id AND a.lease_id = anchor_heartbeat.lease_id
       AND a.status = 'pending' AND a.lease_expires_at > pg_catalog.clock_timestamp();
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION compliance.anchor_heartbeat(bigint, uuid, interval) IS
'Uploader: renews its lease on an anchor; false when the lease expired, was taken over or released.';

-- compliance.claim_pending_anchors(max_anchors): DEPRECATED (one release), replaced by
-- claim_next_anchor. Up to max_anchors pending anchors nobody holds under a lease, in seq
-- order, row-locked FOR UPDATE SKIP LOCKED until the caller's transaction ends; the caller
-- records results without a lease_id inside that transaction. Touches: anchors (SELECT FOR UPDATE).
CREATE OR REPLACE FUNCTION compliance.claim_pending_anchors(max_anchors integer DEFAULT 10)
RETURNS TABLE (
    anchor_id bigint, cadence_id text, seq_from bigint, seq_to bigint, document text, document_digest bytea,
    attempts integer
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF claim_pending_anchors.max_anchors IS NULL OR claim_pending_anchors.max_anchors < 1 THEN
        RAISE EXCEPTION 'max_anchors must be a positive integer' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
        SELECT a.anchor_id, a.cadence_id, a.seq_from, a.seq_to, a.document, a.document_digest, a.attempts
          FROM compliance.anchors AS a
         WHERE a.status = 'pending'
           AND (a.lease_expires_at IS NULL OR a.lease_expires_at <= pg_catalog.clock_timestamp())
         ORDER BY a.seq_to
         LIMIT claim_pending_anchors.max_anchors
           FOR UPDATE SKIP LOCKED;
END;
$$;
COMMENT ON FUNCTION compliance.claim_pending_anchors(integer) IS
'Deprecated (use claim_next_anchor): locks and returns up to max_anchors pending anchors nobody leases, '
'until the caller''s transaction ends.';

-- compliance._leased_anchor(anchor_id, lease_id): the anchor row, locked, when the caller
-- may record its result: with a lease_id, only while that lease is live (AC043 once it
-- expired, was taken over or was released); without one (a caller holding the row lock of
-- claim_pending_anchors, or an operator), only while nobody holds a live lease (AC043).
-- AC041 when the anchor does not exist or already has its result. Touches: anchors (SELECT FOR UPDATE).
CREATE OR REPLACE FUNCTION compliance._leased_anchor(anchor_id bigint, lease_id uuid)
RETURNS compliance.anchors
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_anchor compliance.anchors%ROWTYPE;
    v_now timestamptz := pg_catalog.clock_timestamp();
BEGIN
    SELECT * INTO v_anchor FROM compliance.anchors AS a WHERE a.anchor_id = _leased_anchor.anchor_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no anchor %', _leased_anchor.anchor_id USING ERRCODE = 'AC041';
    END IF;
    IF _leased_anchor.lease_id IS NOT NULL
       AND (v_anchor.lease_id IS DISTINCT FROM _leased_anchor.lease_id OR v_anchor.lease_expires_at IS NULL
            OR v_anchor.lease_expires_at <= v_now) THEN
        RAISE EXCEPTION 'anchor %: lease % is no longer held (it expired, another uploader took the anchor over, '
                        'or a result was recorded); the result was not recorded',
            _leased_anchor.anchor_id, _leased_anchor.lease_id
            USING ERRCODE = 'AC043',
                  HINT = 'Another uploader uploads the anchor again; the object is written at most once.';
    END IF;
    IF _leased_anchor.lease_id IS NULL AND v_anchor.lease_expires_at > v_now THEN
        RAISE EXCEPTION 'anchor % is leased by % until %; only that uploader records its result',
            _leased_anchor.anchor_id, v_anchor.claimed_by, v_anchor.lease_expires_at
            USING ERRCODE = 'AC043';
    END IF;
    IF v_anchor.status <> 'pending' THEN
        RAISE EXCEPTION 'anchor % is already %', _leased_anchor.anchor_id, v_anchor.status USING ERRCODE = 'AC041';
    END IF;
    RETURN v_anchor;
END;
$$;
COMMENT ON FUNCTION compliance._leased_anchor(bigint, uuid) IS
'Internal: the pending anchor row, locked, if the caller''s lease is live (AC043 if not); AC041 when missing or final.';

-- compliance.record_anchor_upload(anchor_id, bucket, object_key, version_id, lock_mode,
-- retain_until, lease_id, signed_checkpoint, checkpoint_key, checkpoint_version_id): the
-- anchor's object is in the bucket with this lock, and for an anchor with a checkpoint
-- (format_version 2) so is its signed checkpoint, whose note text must be exactly the
-- recorded checkpoint body followed by signature lines (the signature itself is checked by
-- the uploader and by `auditchain verify --vkey`: PostgreSQL has no Ed25519). Marks it
-- uploaded and releases the lease. True when recorded now; false (no change) when exactly
-- this result is already recorded. AC043 without the live lease; AC041 for anything
-- inconsistent. Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance.record_anchor_upload(
    anchor_id bigint,
    bucket text,
    object_key text,
    version_id text,
    lock_mode text,
    retain_until timestamptz,
    lease_id uuid DEFAULT NULL,
    signed_checkpoint text DEFAULT NULL,
    checkpoint_key text DEFAULT NULL,
    checkpoint_version_id text DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_anchor compliance.anchors%ROWTYPE;
    v_key_suffix text;
    v_checkpoint_suffix text;
BEGIN
    IF EXISTS (
        SELECT 1
          FROM compliance.anchors AS a
         WHERE a.anchor_id = record_anchor_upload.anchor_id AND a.status = 'uploaded'
           AND (a.bucket, a.object_key, a.version_id, a.lock_mode, a.retain_until, a.signed_checkpoint,
                a.checkpoint_key, a.checkpoint_version_id)
               IS NOT DISTINCT FROM
               (record_anchor_upload.bucket, record_anchor_upload.object_key, record_anchor_upload.version_id,
                record_anchor_upload.lock_mode, record_anchor_upload.retain_until,
                record_anchor_upload.signed_checkpoint, record_anchor_upload.checkpoint_key,
                record_anchor_upload.checkpoint_version_id)
    ) THEN
        RETURN false;
    END IF;
    v_anchor := compliance._leased_anchor(record_anchor_upload.anchor_id, record_anchor_upload.lease_id);
    v_key_suffix := 'anchors/' || pg_catalog.lpad(v_anchor.seq_to::text, 20, '0') || '-' || v_anchor.cadence_id
                    || '.json';
    IF coalesce(record_anchor_upload.bucket, '') = '' OR coalesce(record_anchor_upload.version_id, '') = '' THEN
        RAISE EXCEPTION 'anchor %: bucket and version_id are required', v_anchor.anchor_id USING ERRCODE = 'AC041';
    END IF;
    IF record_anchor_upload.object_key IS NULL
       OR pg_catalog.right(record_anchor_upload.object_key, pg_catalog.length(v_key_suffix)) <> v_key_suffix THEN
        RAISE EXCEPTION 'anchor %: object key % does not end with %', v_anchor.anchor_id,
            record_anchor_upload.object_key, v_key_suffix
            USING ERRCODE = 'AC041';
    END IF;
    IF record_anchor_upload.lock_mode IS NULL OR record_anchor_upload.lock_mode NOT IN ('GOVERNANCE', 'COMPLIANCE') THEN
        RAISE EXCEPTION 'anchor %: lock mode must be GOVERNANCE or COMPLIANCE, not %', v_anchor.anchor_id,
            coalesce(record_anchor_upload.lock_mode, 'NULL')
            USING ERRCODE = 'AC041';
    END IF;
    IF record_anchor_upload.retain_until IS NULL OR record_anchor_upload.retain_until <= pg_catalog.now() THEN
        RAISE EXCEPTION 'anchor %: retain_until % is not in the future', v_anchor.anchor_id,
            record_anchor_upload.retain_until
            USING ERRCODE = 'AC041';
    END IF;
    IF v_anchor.checkpoint IS NULL THEN
        IF pg_catalog.num_nonnulls(record_anchor_upload.signed_checkpoint, record_anchor_upload.checkpoint_key,
                                   record_anchor_upload.checkpoint_version_id) > 0 THEN
            RAISE EXCEPTION 'anchor % has no checkpoint (format_version 1): no signed checkpoint is recorded',
                v_anchor.anchor_id
                USING ERRCODE = 'AC041';
        END IF;
    ELSE
        v_checkpoint_suffix := 'checkpoints/' || pg_catalog.lpad(v_anchor.seq_to::text, 20, '0') || '-'
                               || v_anchor.cadence_id || '.checkpoint';
        IF record_anchor_upload.signed_checkpoint IS NULL
           OR pg_catalog.left(record_anchor_upload.signed_checkpoint, pg_catalog.length(v_anchor.checkpoint) + 1)
              <> v_anchor.checkpoint || E'\n'
           OR pg_catalog.substr(record_anchor_upload.signed_checkpoint, pg_catalog.length(v_anchor.checkpoint) + 2)
              !~ '^(— [^ \n]+ [A-Za-z0-9+/]+=*\n)+$' THEN
            RAISE EXCEPTION 'anchor %: the signed checkpoint is not the recorded checkpoint body followed by '
                            'signature lines', v_anchor.anchor_id
                USING ERRCODE = 'AC041',
                      HINT = 'The uploader signs exactly compliance.anchors.checkpoint (a C2SP signed note).';
        END IF;
        IF record_anchor_upload.checkpoint_key IS NULL
           OR pg_catalog.right(record_anchor_upload.checkpoint_key, pg_catalog.length(v_checkpoint_suffix))
              <> v_checkpoint_suffix
           OR pg_catalog.left(record_anchor_upload.checkpoint_key,
                              pg_catalog.length(record_anchor_upload.checkpoint_key) - pg_catalog.length(v_checkpoint_suffix))
              <> pg_catalog.left(record_anchor_upload.object_key,
                                 pg_catalog.length(record_anchor_upload.object_key) - pg_catalog.length(v_key_suffix)) THEN
            RAISE EXCEPTION 'anchor %: checkpoint key % is not the anchor''s prefix followed by %', v_anchor.anchor_id,
                record_anchor_upload.checkpoint_key, v_checkpoint_suffix
                USING ERRCODE = 'AC041';
        END IF;
        IF coalesce(record_anchor_upload.checkpoint_version_id, '') = '' THEN
            RAISE EXCEPTION 'anchor %: checkpoint_version_id is required', v_anchor.anchor_id USING ERRCODE = 'AC041';
        END IF;
    END IF;
    UPDATE compliance.anchors AS a
       SET status = 'uploaded', bucket = record_anchor_upload.bucket, object_key = record_anchor_upload.object_key,
           version_id = record_anchor_upload.version_id, lock_mode = record_anchor_upload.lock_mode,
           retain_until = record_anchor_upload.retain_until, anchored_at = pg_catalog.clock_timestamp(),
           attempts = a.attempts + 1, lease_expires_at = NULL,
           signed_checkpoint = record_anchor_upload.signed_checkpoint,
           checkpoint_key = record_anchor_upload.checkpoint_key,
           checkpoint_version_id = record_anchor_upload.checkpoint_version_id
     WHERE a.anchor_id = v_anchor.anchor_id;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION compliance.record_anchor_upload(bigint, text, text, text, text, timestamptz, uuid, text, text, text) IS
'Uploader: marks a pending anchor uploaded with its bucket, key, version id and Object Lock, and its signed checkpoint '
'object for a format_version 2 anchor, under its lease; false if exactly this result is recorded, AC043 without the '
'live lease, AC041 for anything inconsistent.';

-- compliance._record_failed_attempt(anchor_id, lease_id, error, status, bucket,
-- object_key, version_id): one upload attempt that did not succeed: attempts + 1,
-- last_error, the new status (pending to retry, failed for an alarm), lease released. True
-- when recorded now; false (no change) when this attempt is already recorded: the anchor
-- failed with the same alarm, or is pending with the same error recorded under this
-- released lease. AC041 without an error text or when the anchor is not pending; AC043
-- without the live lease. Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance._record_failed_attempt(
    anchor_id bigint,
    lease_id uuid,
    error text,
    status compliance.anchor_status,
    bucket text DEFAULT NULL,
    object_key text DEFAULT NULL,
    version_id text DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_error text := pg_catalog.left(_record_failed_attempt.error, 2000);
BEGIN
    IF pg_catalog.btrim(coalesce(v_error, '')) = '' THEN
        RAISE EXCEPTION 'anchor %: an error text is required', _record_failed_attempt.anchor_id USING ERRCODE = 'AC041';
    END IF;
    IF EXISTS (
        SELECT 1
          FROM compliance.anchors AS a
         WHERE a.anchor_id = _record_failed_attempt.anchor_id
           AND a.status = _record_failed_attempt.status AND a.last_error = v_error
           AND CASE a.status
                   WHEN 'failed' THEN
                       (a.bucket, a.object_key, a.version_id) IS NOT DISTINCT FROM
                       (_record_failed_attempt.bucket, _record_failed_attempt.object_key,
                        _record_failed_attempt.version_id)
                   ELSE a.lease_id = _record_failed_attempt.lease_id AND a.lease_expires_at IS NULL
               END
    ) THEN
        RETURN false;
    END IF;
    PERFORM compliance._leased_anchor(_record_failed_attempt.anchor_id, _record_failed_attempt.lease_id);
    UPDATE compliance.anchors AS a
       SET status = _record_failed_attempt.status, bucket = _record_failed_attempt.bucket,
           object_key = _record_failed_attempt.object_key, version_id = _record_failed_attempt.version_id,
           attempts = a.attempts + 1, last_error = v_error, lease_expires_at = NULL
     WHERE a.anchor_id = _record_failed_attempt.anchor_id;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION compliance._record_failed_attempt(bigint, uuid, text, compliance.anchor_status, text, text, text) IS
'Internal: records an upload attempt that failed (attempts + 1, last_error, lease released) with the anchor''s new status.';

-- compliance.record_anchor_error(anchor_id, error, lease_id): a transient upload failure
-- (endpoint unreachable, throttling, access or KMS denied). The anchor stays pending and its
-- lease is released, so the next run (of any uploader) retries it. True when recorded,
-- false for a repeat under the same lease. Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance.record_anchor_error(anchor_id bigint, error text, lease_id uuid DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT compliance._record_failed_attempt(anchor_id, lease_id, error, 'pending');
END;
COMMENT ON FUNCTION compliance.record_anchor_error(bigint, text, uuid) IS
'Uploader: records a transient upload failure (attempts + 1, last_error) and releases the lease; the anchor stays pending.';

-- compliance.record_anchor_integrity_failure(anchor_id, bucket, object_key, version_id,
-- error, lease_id): different content is already at the anchor's key. Terminal: the anchor
-- becomes failed with the alarm in last_error and is never retried (the object is never
-- overwritten). True when recorded, false when this alarm is already recorded.
-- Touches: anchors (UPDATE).
CREATE OR REPLACE FUNCTION compliance.record_anchor_integrity_failure(
    anchor_id bigint,
    bucket text,
    object_key text,
    version_id text,
    error text,
    lease_id uuid DEFAULT NULL
)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT compliance._record_failed_attempt(anchor_id, lease_id, error, 'failed', bucket, object_key, version_id);
END;
COMMENT ON FUNCTION compliance.record_anchor_integrity_failure(bigint, text, text, text, text, uuid) IS
'Uploader: integrity alarm, different content already at the anchor''s key; marks the anchor failed (terminal).';
