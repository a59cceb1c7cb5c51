-- Exports (docs/exports.md): requests, the job status machine, the CAS claim, and the
-- queries that define a bundle (export bundle v1). The runner (`auditchain export run`)
-- only streams what these functions return to S3.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._iso_utc(ts): ISO-8601 in UTC with exactly six fractional digits and "Z", the
-- timestamp form of bundles and manifests. Touches no table.
CREATE OR REPLACE FUNCTION compliance._iso_utc(ts timestamptz)
RETURNS text
LANGUAGE sql
STABLE
STRICT
PARALLEL SAFE
RETURN pg_catalog.to_char(_iso_utc.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
COMMENT ON FUNCTION compliance._iso_utc(timestamptz) IS
'Internal: ISO-8601 UTC text with microseconds and "Z" (2026-01-02T03:04:05.000006Z), as written in export bundles.';

-- compliance._validate_export_filter(filter): raises AC030 naming the offending key unless
-- the filter is a JSON object made only of the documented keys with well-formed values.
-- Timestamps must carry an explicit offset so that the session TimeZone cannot change
-- what a filter selects. Touches no table.
CREATE OR REPLACE FUNCTION compliance._validate_export_filter(filter jsonb)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_allowed constant text[] := ARRAY[
        'from', 'to', 'tenant_id', 'tenant_ids', 'event_types', 'actor', 'withhold_payloads'
    ];
    v_key text;
    v_value jsonb;
    v_element jsonb;
    v_bounds timestamptz[] := ARRAY[NULL, NULL]::timestamptz[];
    v_position integer;
BEGIN
    IF _validate_export_filter.filter IS NULL OR pg_catalog.jsonb_typeof(_validate_export_filter.filter) <> 'object' THEN
        RAISE EXCEPTION 'invalid export filter: it must be a JSON object, not %',
            coalesce(pg_catalog.jsonb_typeof(_validate_export_filter.filter), 'NULL')
            USING ERRCODE = 'AC030';
    END IF;
    FOR v_key IN SELECT k.key FROM pg_catalog.jsonb_object_keys(_validate_export_filter.filter) AS k (key) ORDER BY k.key LOOP
        IF NOT v_key = ANY (v_allowed) THEN
            RAISE EXCEPTION 'invalid export filter: unknown key "%"', v_key
                USING ERRCODE = 'AC030',
                      HINT = 'Allowed keys: ' || pg_catalog.array_to_string(v_allowed, ', ') || '.';
        END IF;
    END LOOP;

    FOREACH v_key IN ARRAY ARRAY['from', 'to'] LOOP
        v_value := _validate_export_filter.filter -> v_key;
        CONTINUE WHEN v_value IS NULL;
        v_position := pg_catalog.array_position(ARRAY['from', 'to'], v_key);
        IF pg_catalog.jsonb_typeof(v_value) <> 'string'
           OR (v_value #>> '{}')
              !~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$' THEN
            RAISE EXCEPTION 'invalid export filter: "%" must be an ISO-8601 timestamp with a time zone, not %',
                v_key, v_value::text
                USING ERRCODE = 'AC030', HINT = 'For example "2026-01-31T00:00:00Z" or "2026-01-31T01:00:00+01:00".';
        END IF;
        BEGIN
            v_bounds[v_position] := (v_value #>> '{}')::timestamptz;
        EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format THEN
            RAISE EXCEPTION 'invalid export filter: "%" is not a valid timestamp: %', v_key, v_value::text
                USING ERRCODE = 'AC030';
        END;
        -- Manifests write bounds as four-digit UTC years (compliance._iso_utc).
        IF pg_catalog.date_part('year', v_bounds[v_position] AT TIME ZONE 'UTC') NOT BETWEEN 1 AND 9999 THEN
            RAISE EXCEPTION 'invalid export filter: "%" lies outside the years 0001-9999 in UTC: %', v_key, v_value::text
                USING ERRCODE = 'AC030';
        END IF;
    END LOOP;
    IF v_bounds[1] >= v_bounds[2] THEN
        RAISE EXCEPTION 'invalid export filter: "from" (%) must be before "to" (%)',
            _validate_export_filter.filter ->> 'from', _validate_export_filter.filter ->> 'to'
            USING ERRCODE = 'AC030';
    END IF;

    IF _validate_export_filter.filter ? 'tenant_id' AND _validate_export_filter.filter ? 'tenant_ids' THEN
        RAISE EXCEPTION 'invalid export filter: give "tenant_id" or "tenant_ids", not both' USING ERRCODE = 'AC030';
    END IF;
    v_value := _validate_export_filter.filter -> 'tenant_id';
    IF v_value IS NOT NULL AND NOT compliance._export_filter_text_ok(v_value, 128) THEN
        RAISE EXCEPTION 'invalid export filter: "tenant_id" must be a string of 1-128 characters without control characters, not %',
            v_value::text
            USING ERRCODE = 'AC030';
    END IF;

    FOREACH v_key IN ARRAY ARRAY['tenant_ids', 'event_types'] LOOP
        v_value := _validate_export_filter.filter -> v_key;
        CONTINUE WHEN v_value IS NULL;
        IF pg_catalog.jsonb_typeof(v_value) <> 'array' OR pg_catalog.jsonb_array_length(v_value) = 0 THEN
            RAISE EXCEPTION 'invalid export filter: "%" must be a non-empty array of strings, not %', v_key, v_value::text
                USING ERRCODE = 'AC030';
        END IF;
        FOR v_element IN SELECT a.value FROM pg_catalog.jsonb_array_elements(v_value) AS a (value) LOOP
            IF v_key = 'tenant_ids' AND NOT compliance._export_filter_text_ok(v_element, 128) THEN
                RAISE EXCEPTION 'invalid export filter: "tenant_ids" holds %, not a string of 1-128 characters without control characters',
                    v_element::text
                    USING ERRCODE = 'AC030';
            END IF;
            IF v_key = 'event_types' AND (
                   pg_catalog.jsonb_typeof(v_element) <> 'string'
                   OR NOT compliance._is_event_type(v_element #>> '{}')) THEN
                RAISE EXCEPTION 'invalid export filter: "event_types" holds %, which is not a valid event type',
                    v_element::text
                    USING ERRCODE = 'AC030',
                          HINT = 'Event types are 3-128 characters of lower-case dotted words, e.g. data.export_initiated.';
            END IF;
        END LOOP;
    END LOOP;

    -- The actor rule is emit's (AC002), so that a filter can select every actor emit accepts.
    v_value := _validate_export_filter.filter -> 'actor';
    IF v_value IS NOT NULL AND (pg_catalog.jsonb_typeof(v_value) <> 'string'
                                OR (v_value #>> '{}') !~ '[^[:space:]]'
                                OR pg_catalog.length(v_value #>> '{}') > 256) THEN
        RAISE EXCEPTION 'invalid export filter: "actor" must be a non-blank string of at most 256 characters, not %',
            v_value::text
            USING ERRCODE = 'AC030';
    END IF;

    v_value := _validate_export_filter.filter -> 'withhold_payloads';
    IF v_value IS NOT NULL AND pg_catalog.jsonb_typeof(v_value) <> 'boolean' THEN
        RAISE EXCEPTION 'invalid export filter: "withhold_payloads" must be true or false, not %', v_value::text
            USING ERRCODE = 'AC030';
    END IF;
END;
$$;
COMMENT ON FUNCTION compliance._validate_export_filter(jsonb) IS
'Internal: raises AC030 naming the key unless the export filter is well-formed (docs/exports.md, "Filters").';

-- compliance.normalize_export_filter(filter): the filter in the one form an export manifest
-- records (format_version 2), so that an offline verifier compares values and re-decides no
-- rule: "from"/"to" as compliance._iso_utc instants, tenant_ids and event_types de-duplicated
-- and sorted by code point (COLLATE "C", whatever the database's collation), and
-- withhold_payloads always present. Raises AC030 as _validate_export_filter does. Touches no table.
CREATE OR REPLACE FUNCTION compliance.normalize_export_filter(filter jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_filter constant jsonb := normalize_export_filter.filter;
BEGIN
    PERFORM compliance._validate_export_filter(v_filter);
    RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'from', compliance._iso_utc((v_filter ->> 'from')::timestamptz),
        'to', compliance._iso_utc((v_filter ->> 'to')::timestamptz),
        'tenant_id', v_filter -> 'tenant_id',
        'tenant_ids', (
            SELECT pg_catalog.jsonb_agg(DISTINCT t.value COLLATE "C" ORDER BY t.value COLLATE "C")
              FROM pg_catalog.jsonb_array_elements_text(v_filter -> 'tenant_ids') AS t (value)
        ),
        'event_types', (
            SELECT pg_catalog.jsonb_agg(DISTINCT t.value COLLATE "C" ORDER BY t.value COLLATE "C")
              FROM pg_catalog.jsonb_array_elements_text(v_filter -> 'event_types') AS t (value)
        ),
        'actor', v_filter -> 'actor',
        'withhold_payloads', coalesce((v_filter -> 'withhold_payloads')::boolean, false)
    ));
END;
$$;
COMMENT ON FUNCTION compliance.normalize_export_filter(jsonb) IS
'A validated export filter in the canonical form export manifests record (canonical instants, sorted lists); AC030 if invalid.';

-- compliance._export_filter_text_ok(value, max_length): is a filter value a JSON string of
-- 1..max_length characters without control characters? Touches no table.
CREATE OR REPLACE FUNCTION compliance._export_filter_text_ok(value jsonb, max_length integer)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN pg_catalog.jsonb_typeof(_export_filter_text_ok.value) = 'string'
    AND pg_catalog.length(_export_filter_text_ok.value #>> '{}') BETWEEN 1 AND _export_filter_text_ok.max_length
    AND (_export_filter_text_ok.value #>> '{}') !~ '[[:cntrl:]]';
COMMENT ON FUNCTION compliance._export_filter_text_ok(jsonb, integer) IS
'Internal: true when a filter value is a string of 1..max_length characters without control characters.';

-- compliance._export_filter_matches(filter, occurred_at, tenant_id, event_type, actor): does
-- an event match a validated filter? "from" is inclusive, "to" exclusive; a named tenant
-- never matches a system-wide (NULL tenant) event. An SQL-standard body so that the
-- planner inlines it into the queries of export_plan and export_lines. Touches no table.
CREATE OR REPLACE FUNCTION compliance._export_filter_matches(
    filter jsonb,
    occurred_at timestamptz,
    tenant_id text,
    event_type text,
    actor text
)
RETURNS boolean
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN coalesce(
    (
        _export_filter_matches.filter -> 'from' IS NULL
        OR _export_filter_matches.occurred_at >= (_export_filter_matches.filter ->> 'from')::timestamptz
    )
    AND (
        _export_filter_matches.filter -> 'to' IS NULL
        OR _export_filter_matches.occurred_at < (_export_filter_matches.filter ->> 'to')::timestamptz
    )
    AND (
        _export_filter_matches.filter -> 'tenant_id' IS NULL
        OR _export_filter_matches.tenant_id = _export_filter_matches.filter ->> 'tenant_id'
    )
    AND (
        _export_filter_matches.filter -> 'tenant_ids' IS NULL
        OR _export_filter_matches.filter -> 'tenant_ids' ? _export_filter_matches.tenant_id
    )
    AND (
        _export_filter_matches.filter -> 'event_types' IS NULL
        OR _export_filter_matches.filter -> 'event_types' ? _export_filter_matches.event_type
    )
    AND (
        _export_filter_matches.filter -> 'actor' IS NULL
        OR _export_filter_matches.actor = _export_filter_matches.filter ->> 'actor'
    ),
    false
);
COMMENT ON FUNCTION compliance._export_filter_matches(jsonb, timestamptz, text, text, text) IS
'Internal: whether an event matches a validated export filter (from inclusive, to exclusive).';

-- compliance._validate_tenant_export_filter(filter): raises AC030 naming the key unless the
-- filter of a tenant-mode export names exactly one tenant ("tenant_id": a tenant id, or null
-- for the events without a tenant) and optionally "to_checkpoint" and "from_checkpoint"
-- (checkpoint tree sizes, from < to) and "withhold_payloads". Touches no table.
CREATE OR REPLACE FUNCTION compliance._validate_tenant_export_filter(filter jsonb)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_allowed constant text[] := ARRAY['tenant_id', 'to_checkpoint', 'from_checkpoint', 'withhold_payloads'];
    v_key text;
    v_value jsonb;
BEGIN
    IF filter IS NULL OR pg_catalog.jsonb_typeof(filter) <> 'object' OR NOT filter ? 'tenant_id' THEN
        RAISE EXCEPTION 'invalid tenant export filter: it must be a JSON object naming one "tenant_id"'
            USING ERRCODE = 'AC030', HINT = 'For example {"tenant_id": "acme"}; null names the events without a tenant.';
    END IF;
    FOR v_key IN SELECT k.key FROM pg_catalog.jsonb_object_keys(filter) AS k (key) ORDER BY k.key LOOP
        IF NOT v_key = ANY (v_allowed) THEN
            RAISE EXCEPTION 'invalid tenant export filter: unknown key "%"', v_key
                USING ERRCODE = 'AC030',
                      HINT = 'Allowed keys in tenant mode: ' || pg_catalog.array_to_string(v_allowed, ', ') || '.';
        END IF;
    END LOOP;
    v_value := filter -> 'tenant_id';
    IF pg_catalog.jsonb_typeof(v_value) <> 'null' AND NOT compliance._export_filter_text_ok(v_value, 128) THEN
        RAISE EXCEPTION 'invalid tenant export filter: "tenant_id" must be null or a string of 1-128 characters '
                        'without control characters, not %', v_value::text
            USING ERRCODE = 'AC030';
    END IF;
    FOREACH v_key IN ARRAY ARRAY['to_checkpoint', 'from_checkpoint'] LOOP
        v_value := filter -> v_key;
        CONTINUE WHEN v_value IS NULL;
        IF pg_catalog.jsonb_typeof(v_value) <> 'number' OR v_value::text !~ '^[1-9][0-9]{0,17}$' THEN
            RAISE EXCEPTION 'invalid tenant export filter: "%" must be a checkpoint''s tree size (a positive integer), not %',
                v_key, v_value::text
                USING ERRCODE = 'AC030';
        END IF;
    END LOOP;
    IF (filter ->> 'from_checkpoint')::bigint >= (filter ->> 'to_checkpoint')::bigint THEN
        RAISE EXCEPTION 'invalid tenant export filter: "from_checkpoint" (%) must be smaller than "to_checkpoint" (%)',
            filter ->> 'from_checkpoint', filter ->> 'to_checkpoint'
            USING ERRCODE = 'AC030';
    END IF;
    v_value := filter -> 'withhold_payloads';
    IF v_value IS NOT NULL AND pg_catalog.jsonb_typeof(v_value) <> 'boolean' THEN
        RAISE EXCEPTION 'invalid tenant export filter: "withhold_payloads" must be true or false, not %', v_value::text
            USING ERRCODE = 'AC030';
    END IF;
END;
$$;
COMMENT ON FUNCTION compliance._validate_tenant_export_filter(jsonb) IS
'Internal: raises AC030 naming the key unless a tenant-mode export filter is well-formed (docs/exports.md, "Tenant mode").';

-- compliance._tenant_checkpoint_proof(tenant_id, checkpoint_size): what a tenant bundle
-- carries for one signed checkpoint (docs/exports.md "Tenant mode"): the signed note of the
-- uploaded anchor whose tree size is checkpoint_size, the newest compliance.tenant_heads
-- event it covers (its bundle line and inclusion proof) and the tenant's head at the size that
-- event commits to (tenant tree size, root, index and inclusion proof among the heads); hashes
-- in base64. Also returns that heads size and the tenant tree size. AC035 when there is no
-- such signed checkpoint, it covers no commitment, or the tenant has no event among the
-- committed ones. Touches: anchors, audit_events, tenant_head_history, tenant_trees,
-- merkle_nodes (read).
CREATE OR REPLACE FUNCTION compliance._tenant_checkpoint_proof(tenant_id text, checkpoint_size bigint)
RETURNS TABLE (heads_size bigint, tenant_size bigint, proof jsonb)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_signed text;
    v_commitment compliance.audit_events%ROWTYPE;
    v_heads_size bigint;
    v_head record;
BEGIN
    SELECT a.signed_checkpoint INTO v_signed
      FROM compliance.anchors AS a
     WHERE a.seq_to = checkpoint_size AND a.status = 'uploaded' AND a.signed_checkpoint IS NOT NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no signed checkpoint of tree size %: none was uploaded at that size', checkpoint_size
            USING ERRCODE = 'AC035',
                  HINT = 'Checkpoint sizes are the seq_to of uploaded anchors with a signed_checkpoint.';
    END IF;
    SELECT * INTO v_commitment FROM compliance._tenant_heads_commitment(checkpoint_size);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the checkpoint of tree size % covers no tenant heads commitment yet', checkpoint_size
            USING ERRCODE = 'AC035',
                  HINT = 'The tenant-heads job commits the heads every 15 minutes; the next signed checkpoint covers them.';
    END IF;
    v_heads_size := (v_commitment.payload ->> 'tree_size')::bigint;
    IF NOT EXISTS (
        SELECT 1 FROM compliance.tenant_head_history AS h
         WHERE h.tenant_key = coalesce(_tenant_checkpoint_proof.tenant_id, '') AND h.heads_size <= v_heads_size
    ) THEN
        RAISE EXCEPTION 'tenant % has no event among the first % events, whose heads the checkpoint of tree size % commits to',
            coalesce(pg_catalog.quote_literal(_tenant_checkpoint_proof.tenant_id), 'NULL (events without a tenant)'),
            v_heads_size, checkpoint_size
            USING ERRCODE = 'AC035';
    END IF;
    SELECT * INTO STRICT v_head FROM compliance.tenant_head_proof(_tenant_checkpoint_proof.tenant_id, v_heads_size);
    RETURN QUERY SELECT v_heads_size, v_head.tenant_tree_size, pg_catalog.jsonb_build_object(
        'checkpoint', v_signed,
        'commitment', pg_catalog.jsonb_build_object(
            'line', compliance._event_line(v_commitment, false),
            'inclusion_proof', compliance._base64_hashes(compliance.inclusion_proof(v_commitment.seq, checkpoint_size))
        ),
        'head', pg_catalog.jsonb_build_object(
            'tree_size', v_head.tenant_tree_size,
            'root', pg_catalog.encode(v_head.tenant_root, 'base64'),
            'index', v_head.head_index,
            'inclusion_proof', compliance._base64_hashes(v_head.proof)
        )
    );
END;
$$;
COMMENT ON FUNCTION compliance._tenant_checkpoint_proof(text, bigint) IS
'Internal: a tenant bundle''s proof for one signed checkpoint (note, heads commitment and its inclusion, the tenant''s '
'head and its inclusion); AC035 when it cannot be given.';

-- compliance._tenant_export_proofs(filter): everything a tenant bundle proves with, for a
-- validated tenant-mode filter: the checkpoint sizes (to_checkpoint, when the filter has none,
-- the newest signed checkpoint that covers a heads commitment), the committed heads sizes
-- (heads_size, from_heads_size; 0 without from_checkpoint) and tenant tree sizes
-- (tenant_size, from_tenant_size), and the manifest's "tenant" object; with from_checkpoint,
-- the earlier proof with the tenant tree's compact range there, the global consistency proof
-- between the checkpoints and the tenant's between its heads. AC035 when a checkpoint cannot
-- serve. Touches: anchors, audit_events, tenant_head_history, tenant_trees, merkle_nodes (read).
CREATE OR REPLACE FUNCTION compliance._tenant_export_proofs(filter jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant_id text := filter ->> 'tenant_id';
    v_to_size bigint := (filter ->> 'to_checkpoint')::bigint;
    v_from_size bigint := (filter ->> 'from_checkpoint')::bigint;
    v_to record;
    v_from record;
    v_from_heads_size bigint := 0;
    v_from_tenant_size bigint := 0;
    v_tenant jsonb;
BEGIN
    IF v_to_size IS NULL THEN
        SELECT pg_catalog.max(a.seq_to) INTO v_to_size
          FROM compliance.anchors AS a
         WHERE a.status = 'uploaded' AND a.signed_checkpoint IS NOT NULL
           AND a.seq_to >= (SELECT pg_catalog.min(e.seq) FROM compliance.audit_events AS e
                             WHERE e.event_type = 'compliance.tenant_heads');
        IF v_to_size IS NULL THEN
            RAISE EXCEPTION 'no signed checkpoint covers a tenant heads commitment yet'
                USING ERRCODE = 'AC035',
                      HINT = 'The tenant-heads job commits the heads; the next uploaded checkpoint covers them.';
        END IF;
        IF v_from_size >= v_to_size THEN
            RAISE EXCEPTION 'from_checkpoint % is not older than the newest signed checkpoint (tree size %)',
                v_from_size, v_to_size
                USING ERRCODE = 'AC035';
        END IF;
    END IF;
    SELECT * INTO STRICT v_to FROM compliance._tenant_checkpoint_proof(v_tenant_id, v_to_size);
    v_tenant := pg_catalog.jsonb_build_object('tenant_id', filter -> 'tenant_id', 'to', v_to.proof);
    IF v_from_size IS NOT NULL THEN
        SELECT * INTO STRICT v_from FROM compliance._tenant_checkpoint_proof(v_tenant_id, v_from_size);
        v_from_heads_size := v_from.heads_size;
        v_from_tenant_size := v_from.tenant_size;
        v_tenant := v_tenant || pg_catalog.jsonb_build_object(
            'from', v_from.proof || pg_catalog.jsonb_build_object(
                'frontier', compliance._base64_hashes(compliance._tree_compact_range(
                    compliance._tenant_leaves(coalesce(v_tenant_id, ''), v_from.tenant_size)))
            ),
            'consistency_proof', compliance._base64_hashes(compliance.consistency_proof(v_from_size, v_to_size)),
            'tenant_consistency_proof', compliance._base64_hashes(
                CASE WHEN v_from.tenant_size = v_to.tenant_size THEN '{}'::bytea[]
                     ELSE compliance.tenant_consistency_proof(v_tenant_id, v_from.tenant_size, v_to.tenant_size) END)
        );
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'to_checkpoint', v_to_size,
        'from_checkpoint', v_from_size,
        'heads_size', v_to.heads_size,
        'from_heads_size', v_from_heads_size,
        'tenant_size', v_to.tenant_size,
        'from_tenant_size', v_from_tenant_size,
        'tenant', v_tenant
    );
END;
$$;
COMMENT ON FUNCTION compliance._tenant_export_proofs(jsonb) IS
'Internal: the checkpoints, committed sizes and proofs of a tenant bundle for a tenant-mode filter; AC035 when a '
'checkpoint cannot serve.';

-- compliance.request_export(filter, requested_by, mode): validate the mode (AC034), the
-- filter for that mode (AC030), the requester (AC032) and, in tenant mode, that a signed
-- checkpoint can prove the tenant's head (AC035), queue a job, and emit data.export_initiated
-- (payload: job_id, mode, filter; actor: requested_by; tenant: the filter's tenant_id if it
-- names one) in the same transaction. Returns the job_id.
-- Touches: export_jobs (INSERT), audit_outbox (via emit), anchors, audit_events,
-- tenant_head_history (read, tenant mode).
CREATE OR REPLACE FUNCTION compliance.request_export(filter jsonb, requested_by text, mode text DEFAULT 'range')
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job_id uuid := compliance._uuidv7();
    v_event_id uuid;
BEGIN
    IF request_export.mode IS NULL OR request_export.mode NOT IN ('range', 'tenant') THEN
        RAISE EXCEPTION 'invalid export mode %: range or tenant', coalesce(pg_catalog.quote_literal(request_export.mode), 'NULL')
            USING ERRCODE = 'AC034';
    END IF;
    IF request_export.mode = 'tenant' THEN
        PERFORM compliance._validate_tenant_export_filter(request_export.filter);
    ELSE
        PERFORM compliance._validate_export_filter(request_export.filter);
    END IF;
    IF request_export.requested_by IS NULL OR pg_catalog.btrim(request_export.requested_by) = ''
       OR pg_catalog.length(request_export.requested_by) > 256 THEN
        RAISE EXCEPTION 'invalid requested_by: it must be non-blank and at most 256 characters'
            USING ERRCODE = 'AC032';
    END IF;
    IF request_export.mode = 'tenant' THEN
        -- Refuse now what the runner could not build: the checkpoints must exist and prove the tenant.
        PERFORM compliance._tenant_export_proofs(request_export.filter);
    END IF;
    v_event_id := compliance.emit(
        'data.export_initiated',
        request_export.requested_by,
        pg_catalog.jsonb_build_object('job_id', v_job_id, 'mode', request_export.mode, 'filter', request_export.filter),
        request_export.filter ->> 'tenant_id'
    );
    INSERT INTO compliance.export_jobs (job_id, requested_by, filter, request_event_id, mode)
    VALUES (v_job_id, request_export.requested_by, request_export.filter, v_event_id, request_export.mode);
    RETURN v_job_id;
END;
$$;
COMMENT ON FUNCTION compliance.request_export(jsonb, text, text) IS
'Queues an export job (mode range or tenant, AC034) after validating its filter (AC030), requester (AC032) and, in '
'tenant mode, its checkpoints (AC035); emits data.export_initiated. Returns job_id.';

-- compliance._export_jobs_guard(): the status machine. Rows are inserted queued; an update
-- must be queued -> running, running -> completed|failed, or a running job's heartbeat,
-- and may change only the columns that step sets. Anything else raises AC031.
-- Touches: export_jobs (trigger).
CREATE OR REPLACE FUNCTION compliance._export_jobs_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_result_columns constant text[] := ARRAY[
        'status', 'completed_at', 'job_error', 'output_bucket', 'output_prefix', 'row_count',
        'matched_count', 'data_sha256', 'data_bytes', 'seq_from', 'seq_to', 'heartbeat_at'
    ];
    v_may_change text[];
    v_changed text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'queued' THEN
            RAISE EXCEPTION 'export job %: new jobs are queued, not %', NEW.job_id, NEW.status
                USING ERRCODE = 'AC031';
        END IF;
        RETURN NEW;
    END IF;

    v_may_change := CASE
        WHEN OLD.status = 'queued' AND NEW.status = 'running' THEN ARRAY['status', 'started_at', 'heartbeat_at']
        WHEN OLD.status = 'running' AND NEW.status = 'running' THEN ARRAY['heartbeat_at']
        WHEN OLD.status = 'running' AND NEW.status IN ('completed', 'failed') THEN v_result_columns
    END;
    IF v_may_change IS NULL THEN
        RAISE EXCEPTION 'export job %: illegal status transition % -> %', OLD.job_id, OLD.status, NEW.status
            USING ERRCODE = 'AC031',
                  HINT = 'Allowed: queued -> running, running -> completed, running -> failed.';
    END IF;
    SELECT pg_catalog.array_agg(n.key ORDER BY n.key) INTO v_changed
      FROM pg_catalog.jsonb_each(pg_catalog.to_jsonb(NEW)) AS n
      JOIN pg_catalog.jsonb_each(pg_catalog.to_jsonb(OLD)) AS o ON o.key = n.key
     WHERE n.value IS DISTINCT FROM o.value
       AND NOT n.key = ANY (v_may_change);
    IF v_changed IS NOT NULL THEN
        RAISE EXCEPTION 'export job %: % cannot change on % -> %', OLD.job_id,
            pg_catalog.array_to_string(v_changed, ', '), OLD.status, NEW.status
            USING ERRCODE = 'AC031';
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION compliance._export_jobs_guard() IS
'Internal: trigger: enforces the export job status machine and which columns each step may set (AC031).';

CREATE OR REPLACE TRIGGER export_jobs_guard
BEFORE INSERT OR UPDATE ON compliance.export_jobs
FOR EACH ROW EXECUTE FUNCTION compliance._export_jobs_guard();
ALTER TABLE compliance.export_jobs ENABLE ALWAYS TRIGGER export_jobs_guard;
COMMENT ON TRIGGER export_jobs_guard ON compliance.export_jobs IS
'Status machine of export jobs (fires even with session_replication_role = replica).';
SELECT compliance._protect_table('compliance.export_jobs', false);

-- compliance.claim_export(job_id): compare-and-set queued -> running. True when this call
-- claimed the job; false when it was not queued (another runner has it, or it finished),
-- so a re-delivered request changes nothing. P0002 for an unknown job.
-- Touches: export_jobs (UPDATE).
CREATE OR REPLACE FUNCTION compliance.claim_export(job_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE compliance.export_jobs AS j
       SET status = 'running', started_at = pg_catalog.now()
     WHERE j.job_id = claim_export.job_id AND j.status = 'queued';
    IF FOUND THEN
        RETURN true;
    END IF;
    PERFORM compliance._export_job_status(claim_export.job_id);
    RETURN false;
END;
$$;
COMMENT ON FUNCTION compliance.claim_export(uuid) IS
'Claims a queued export job (queued -> running); false if it is not queued. Safe to call again.';

-- compliance.claim_next_export(): claim the oldest queued job, skipping jobs another
-- runner is claiming right now. NULL when none is queued. Touches: export_jobs (UPDATE).
CREATE OR REPLACE FUNCTION compliance.claim_next_export()
RETURNS uuid
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    UPDATE compliance.export_jobs AS j
       SET status = 'running', started_at = pg_catalog.now()
     WHERE j.job_id = (
             SELECT q.job_id
               FROM compliance.export_jobs AS q
              WHERE q.status = 'queued'
              ORDER BY q.created_at, q.job_id
              LIMIT 1
                FOR UPDATE SKIP LOCKED
           )
       AND j.status = 'queued'
    RETURNING j.job_id;
END;
COMMENT ON FUNCTION compliance.claim_next_export() IS
'Claims the oldest queued export job (FOR UPDATE SKIP LOCKED) and returns its job_id; NULL when none is queued.';

-- compliance._export_job_status(job_id): the job's status; P0002 when there is no such job.
-- Touches: export_jobs (read).
CREATE OR REPLACE FUNCTION compliance._export_job_status(job_id uuid)
RETURNS compliance.export_status
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status compliance.export_status;
BEGIN
    SELECT j.status INTO v_status FROM compliance.export_jobs AS j WHERE j.job_id = _export_job_status.job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'export job % does not exist', _export_job_status.job_id USING ERRCODE = 'P0002';
    END IF;
    RETURN v_status;
END;
$$;
COMMENT ON FUNCTION compliance._export_job_status(uuid) IS
'Internal: status of an export job; raises P0002 when the job does not exist.';

-- compliance.export_heartbeat(job_id): a running runner reports progress, so that
-- reconcile_exports leaves it alone. False when the job is no longer running (it was
-- reconciled): the runner must stop. Touches: export_jobs (UPDATE).
CREATE OR REPLACE FUNCTION compliance.export_heartbeat(job_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE compliance.export_jobs AS j
       SET heartbeat_at = pg_catalog.clock_timestamp()
     WHERE j.job_id = export_heartbeat.job_id AND j.status = 'running';
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION compliance.export_heartbeat(uuid) IS
'A runner''s progress report for its running job; false when the job is no longer running.';

-- compliance._export_manifest_header(job): the manifest fields both modes share: format,
-- versions, mode, the job and its requester, when it was made, whether payloads are
-- withheld, the data object's name and the database identity. Touches no table.
CREATE OR REPLACE FUNCTION compliance._export_manifest_header(job compliance.export_jobs)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'format', 'auditchain-export',
        'format_version', 4,
        'hash_version', 2,
        'mode', job.mode,
        'job_id', job.job_id,
        'requested_by', job.requested_by,
        'created_at', compliance._iso_utc(pg_catalog.now()),
        'withheld_payloads', coalesce((job.filter -> 'withhold_payloads')::boolean, false),
        'data_object', 'events.ndjson.gz',
        'database', pg_catalog.jsonb_build_object(
            'system_identifier', (SELECT s.system_identifier::text FROM pg_catalog.pg_control_system() AS s),
            'database_name', pg_catalog.current_database()
        )
    );
$$;
COMMENT ON FUNCTION compliance._export_manifest_header(compliance.export_jobs) IS
'Internal: the manifest fields both export modes share (format, versions, mode, job, requester, time, database).';

-- compliance.export_plan(job_id): everything the manifest (format_version 4) says about a
-- running job's bundle except the data object's own digest and size. Range mode: the range,
-- its prev_hash, the match count, the covering anchors and the database identity; tenant
-- mode: compliance._tenant_export_plan. Call it in the REPEATABLE READ transaction that then
-- streams the lines, so both see one snapshot. AC033 unless the job is running; AC035 when a
-- tenant bundle's checkpoint cannot serve.
-- Touches: export_jobs, audit_events, anchors (read; tenant mode as _tenant_export_plan).
CREATE OR REPLACE FUNCTION compliance.export_plan(job_id uuid)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job compliance.export_jobs%ROWTYPE;
    v_first bigint;
    v_last bigint;
    v_matched bigint;
    v_seq_to bigint;
    v_range_prev_hash bytea;
    v_anchors jsonb;
BEGIN
    IF compliance._export_job_status(export_plan.job_id) <> 'running' THEN
        RAISE EXCEPTION 'export job % is %, not running', export_plan.job_id, compliance._export_job_status(export_plan.job_id)
            USING ERRCODE = 'AC033', HINT = 'Claim it first (compliance.claim_export).';
    END IF;
    SELECT * INTO STRICT v_job FROM compliance.export_jobs AS j WHERE j.job_id = export_plan.job_id;
    IF v_job.mode = 'tenant' THEN
        RETURN compliance._tenant_export_plan(v_job);
    END IF;

    SELECT min(e.seq), max(e.seq), pg_catalog.count(*)
      INTO v_first, v_last, v_matched
      FROM compliance.audit_events AS e
     WHERE compliance._export_filter_matches(v_job.filter, e.occurred_at, e.tenant_id, e.event_type, e.actor);

    IF v_first IS NOT NULL THEN
        -- Extend to the next uploaded anchor so that the bundle ends on a WORM-anchored head.
        SELECT coalesce(min(a.seq_to), v_last) INTO v_seq_to
          FROM compliance.anchors AS a
         WHERE a.status = 'uploaded' AND a.seq_to >= v_last;
        SELECT e.prev_hash INTO STRICT v_range_prev_hash FROM compliance.audit_events AS e WHERE e.seq = v_first;
        SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'cadence_id', a.cadence_id,
                   'seq_to', a.seq_to,
                   'head_hash', pg_catalog.encode(a.head_hash, 'hex'),
                   'document_digest', pg_catalog.encode(a.document_digest, 'hex'),
                   'bucket', a.bucket,
                   'key', a.object_key,
                   'version_id', a.version_id
               ) ORDER BY a.seq_to), '[]')
          INTO v_anchors
          FROM compliance.anchors AS a
         WHERE a.status = 'uploaded' AND a.seq_to BETWEEN v_first AND v_seq_to;
    END IF;

    RETURN compliance._export_manifest_header(v_job) || pg_catalog.jsonb_build_object(
        'filter', compliance.normalize_export_filter(v_job.filter),
        'seq_from', v_first,
        'seq_to', v_seq_to,
        'range_prev_hash', pg_catalog.encode(v_range_prev_hash, 'hex'),
        'line_count', coalesce(v_seq_to - v_first + 1, 0),
        'matched_count', v_matched,
        'anchors', coalesce(v_anchors, '[]')
    );
END;
$$;
COMMENT ON FUNCTION compliance.export_plan(uuid) IS
'Manifest of a running export job''s bundle, without data_sha256 and data_bytes (manifest format_version 4); AC033 unless running.';

-- compliance._tenant_export_plan(job): the manifest of a running tenant-mode job (docs/exports.md
-- "Tenant mode"): the filter with its checkpoints resolved, the seq range and count of the
-- tenant's events the bundle holds (those after the earlier committed heads, up to the later
-- ones) and the "tenant" proofs. XX001 when the tenant's events disagree with its committed
-- head. Touches: audit_events, anchors, tenant_head_history, tenant_trees, merkle_nodes (read).
CREATE OR REPLACE FUNCTION compliance._tenant_export_plan(job compliance.export_jobs)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_proofs jsonb := compliance._tenant_export_proofs(job.filter);
    v_after bigint := (v_proofs ->> 'from_heads_size')::bigint;
    v_upto bigint := (v_proofs ->> 'heads_size')::bigint;
    v_first bigint;
    v_last bigint;
    v_count bigint;
BEGIN
    -- Two queries rather than IS NOT DISTINCT FROM, which no index serves.
    IF job.filter ->> 'tenant_id' IS NULL THEN
        SELECT min(e.seq), max(e.seq), pg_catalog.count(*) INTO v_first, v_last, v_count
          FROM compliance.audit_events AS e
         WHERE e.tenant_id IS NULL AND e.seq > v_after AND e.seq <= v_upto;
    ELSE
        SELECT min(e.seq), max(e.seq), pg_catalog.count(*) INTO v_first, v_last, v_count
          FROM compliance.audit_events AS e
         WHERE e.tenant_id = job.filter ->> 'tenant_id' AND e.seq > v_after AND e.seq <= v_upto;
    END IF;
    IF v_count <> (v_proofs ->> 'tenant_size')::bigint - (v_proofs ->> 'from_tenant_size')::bigint THEN
        RAISE EXCEPTION 'the tenant has % events among seq % to % but its committed heads say %', v_count,
            v_after + 1, v_upto, (v_proofs ->> 'tenant_size')::bigint - (v_proofs ->> 'from_tenant_size')::bigint
            USING ERRCODE = 'XX001', HINT = 'Run compliance.verify_tree().';
    END IF;
    RETURN compliance._export_manifest_header(job) || pg_catalog.jsonb_build_object(
        'filter', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'to_checkpoint', v_proofs -> 'to_checkpoint',
            'from_checkpoint', v_proofs -> 'from_checkpoint',
            'withhold_payloads', coalesce((job.filter -> 'withhold_payloads')::boolean, false)
        )) || pg_catalog.jsonb_build_object('tenant_id', job.filter -> 'tenant_id'),
        'seq_from', v_first,
        'seq_to', v_last,
        'line_count', v_count,
        'matched_count', v_count,
        'tenant', v_proofs -> 'tenant'
    );
END;
$$;
COMMENT ON FUNCTION compliance._tenant_export_plan(compliance.export_jobs) IS
'Internal: manifest (format_version 4, mode tenant) of a running tenant-mode export job, without the data object''s digest and size.';

-- compliance._event_line(event, withheld): the line of a matched event in an export bundle
-- and in a receipt (`auditchain prove`): compact JSON with the record's fields, the payload
-- as its exact jsonb text (or payload_sha256 when withheld), prev_hash and event_hash. The
-- one definition of that line. Plain SQL without SET so that export_lines inlines it.
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance._event_line(event compliance.audit_events, withheld boolean)
RETURNS text
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE
    WHEN _event_line.event.hash_version = 1 THEN pg_catalog.format(
        '{"seq":%s,"event_id":"%s","occurred_at":"%s","recorded_at":"%s","tenant_id":%s,'
        '"event_type":%s,"actor":%s,%s,"prev_hash":"%s","event_hash":"%s"}',
        _event_line.event.seq, _event_line.event.event_id, compliance._iso_utc(_event_line.event.occurred_at),
        compliance._iso_utc(_event_line.event.recorded_at),
        coalesce(pg_catalog.to_json(_event_line.event.tenant_id)::text, 'null'),
        pg_catalog.to_json(_event_line.event.event_type)::text, pg_catalog.to_json(_event_line.event.actor)::text,
        CASE
            WHEN _event_line.withheld THEN '"payload_sha256":"'
                || pg_catalog.encode(compliance.payload_digest(_event_line.event.payload), 'hex') || '"'
            ELSE '"payload":' || pg_catalog.to_json(_event_line.event.payload::text)::text
        END,
        pg_catalog.encode(_event_line.event.prev_hash, 'hex'), pg_catalog.encode(_event_line.event.event_hash, 'hex'))
    -- Hash format v2: a value with its salt; an erased value as its commitment and the seq
    -- of the erasure event; a withheld payload as its commitment alone.
    ELSE pg_catalog.format(
        '{"seq":%s,"hash_version":2,"event_id":"%s","occurred_at":"%s","recorded_at":"%s","tenant_id":%s,'
        '"event_type":%s,%s,%s,"prev_hash":"%s","event_hash":"%s"}',
        _event_line.event.seq, _event_line.event.event_id, compliance._iso_utc(_event_line.event.occurred_at),
        compliance._iso_utc(_event_line.event.recorded_at),
        coalesce(pg_catalog.to_json(_event_line.event.tenant_id)::text, 'null'),
        pg_catalog.to_json(_event_line.event.event_type)::text,
        CASE
            WHEN _event_line.event.actor_erased_by IS NOT NULL THEN pg_catalog.format(
                '"actor_commitment":"%s","actor_erased_by":%s',
                pg_catalog.encode(_event_line.event.actor_commitment, 'hex'), _event_line.event.actor_erased_by)
            ELSE pg_catalog.format('"actor":%s,"actor_salt":"%s"',
                pg_catalog.to_json(_event_line.event.actor)::text, pg_catalog.encode(_event_line.event.actor_salt, 'hex'))
        END,
        CASE
            WHEN _event_line.event.payload_erased_by IS NOT NULL THEN pg_catalog.format(
                '"payload_commitment":"%s","payload_erased_by":%s',
                pg_catalog.encode(_event_line.event.payload_commitment, 'hex'), _event_line.event.payload_erased_by)
            WHEN _event_line.withheld THEN '"payload_commitment":"'
                || pg_catalog.encode(compliance._row_payload_commitment(_event_line.event), 'hex') || '"'
            ELSE pg_catalog.format('"payload":%s,"payload_salt":"%s"',
                pg_catalog.to_json(_event_line.event.payload::text)::text,
                pg_catalog.encode(_event_line.event.payload_salt, 'hex'))
        END,
        pg_catalog.encode(_event_line.event.prev_hash, 'hex'), pg_catalog.encode(_event_line.event.event_hash, 'hex'))
END;
COMMENT ON FUNCTION compliance._event_line(compliance.audit_events, boolean) IS
'Internal: the export-bundle line of a matched event (hash format v1 or v2, payload withheld or not, erased fields as commitments); also the event line of a receipt.';

-- compliance.export_lines(job_id, seq_from, seq_to): the data object of a running job's
-- bundle, one row per seq of [seq_from, seq_to] in seq order: matched events in full
-- (v1: payload as its exact jsonb text, or payload_sha256 when withheld; v2: payload and
-- actor with their salts, or their commitments when erased or withheld), excluded events as
-- their hashes and the SHA-256 of their record, from which a verifier re-derives their
-- event_hash without seeing their content. Each line is compact JSON. No rows unless the
-- job is a running range-mode job (a tenant bundle must not show other tenants' hashes). Plain SQL and called in the select list (SELECT
-- compliance.export_lines(...)) it streams row by row; in FROM, PostgreSQL would
-- materialise it first.
-- Touches: export_jobs, audit_events (read).
CREATE OR REPLACE FUNCTION compliance.export_lines(job_id uuid, seq_from bigint, seq_to bigint)
RETURNS TABLE (seq bigint, matched boolean, line text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.seq,
           m.matched,
           CASE
               WHEN NOT m.matched THEN pg_catalog.format(
                   '{"seq":%s,"prev_hash":"%s","record_sha256":"%s","event_hash":"%s","excluded":true}',
                   e.seq, pg_catalog.encode(e.prev_hash, 'hex'),
                   pg_catalog.encode(pg_catalog.sha256(compliance._row_record(e)), 'hex'),
                   pg_catalog.encode(e.event_hash, 'hex'))
               ELSE compliance._event_line(e, m.withheld)
           END
      FROM compliance.export_jobs AS j
      JOIN compliance.audit_events AS e ON e.seq BETWEEN export_lines.seq_from AND export_lines.seq_to
     CROSS JOIN LATERAL (
           SELECT compliance._export_filter_matches(j.filter, e.occurred_at, e.tenant_id, e.event_type, e.actor)
                      AS matched,
                  coalesce((j.filter -> 'withhold_payloads')::boolean, false) AS withheld
       ) AS m
     WHERE j.job_id = export_lines.job_id AND j.status = 'running' AND j.mode = 'range'
     ORDER BY e.seq;
$$;
COMMENT ON FUNCTION compliance.export_lines(uuid, bigint, bigint) IS
'NDJSON lines (export bundle v1) of a running export job for seq range [seq_from, seq_to]; call it in the select list to stream.';

-- compliance.tenant_export_lines(job_id, seq_from, seq_to): the data object of a running
-- tenant-mode job's bundle: one row per event of the job's tenant with seq in [seq_from,
-- seq_to], in seq order, each the line of a matched event (compliance._event_line; payload
-- withheld as its commitment when the filter says so). Nothing about any other event. No
-- rows unless the job is a running tenant-mode job. Plain SQL called in the select list, it
-- streams row by row (as export_lines); the tenant comes from a sub-select so that one index
-- range scan on (tenant_id, seq) delivers the rows in order.
-- Touches: export_jobs, audit_events (read).
CREATE OR REPLACE FUNCTION compliance.tenant_export_lines(job_id uuid, seq_from bigint, seq_to bigint)
RETURNS TABLE (seq bigint, matched boolean, line text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    (SELECT e.seq, true, compliance._event_line(e, w.withheld)
       FROM compliance.audit_events AS e,
            LATERAL (SELECT coalesce((j.filter -> 'withhold_payloads')::boolean, false) AS withheld
                       FROM compliance.export_jobs AS j
                      WHERE j.job_id = tenant_export_lines.job_id) AS w
      WHERE e.tenant_id = (SELECT j.filter ->> 'tenant_id'
                             FROM compliance.export_jobs AS j
                            WHERE j.job_id = tenant_export_lines.job_id AND j.status = 'running' AND j.mode = 'tenant')
        AND e.seq BETWEEN tenant_export_lines.seq_from AND tenant_export_lines.seq_to
      ORDER BY e.seq)
    UNION ALL
    (SELECT e.seq, true, compliance._event_line(e, w.withheld)
       FROM compliance.audit_events AS e,
            LATERAL (SELECT coalesce((j.filter -> 'withhold_payloads')::boolean, false) AS withheld
                       FROM compliance.export_jobs AS j
                      WHERE j.job_id = tenant_export_lines.job_id) AS w
      WHERE e.tenant_id IS NULL
        AND EXISTS (SELECT 1
                      FROM compliance.export_jobs AS j
                     WHERE j.job_id = tenant_export_lines.job_id AND j.status = 'running' AND j.mode = 'tenant'
                       AND j.filter -> 'tenant_id' = 'null'::jsonb)
        AND e.seq BETWEEN tenant_export_lines.seq_from AND tenant_export_lines.seq_to
      ORDER BY e.seq);
$$;
COMMENT ON FUNCTION compliance.tenant_export_lines(uuid, bigint, bigint) IS
'NDJSON lines of a running tenant-mode export job: the tenant''s events in [seq_from, seq_to]; call it in the select list to stream.';

-- compliance.complete_export(job_id, ...): running -> completed with where the bundle is
-- and what it holds. False (and no change) when the job already completed with exactly
-- this result; AC031 for any other job that is not running.
-- Touches: export_jobs (UPDATE).
CREATE OR REPLACE FUNCTION compliance.complete_export(
    job_id uuid,
    output_bucket text,
    output_prefix text,
    row_count bigint,
    matched_count bigint,
    data_sha256 bytea,
    data_bytes bigint,
    seq_from bigint,
    seq_to bigint
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE compliance.export_jobs AS j
       SET status = 'completed', completed_at = pg_catalog.now(),
           output_bucket = complete_export.output_bucket, output_prefix = complete_export.output_prefix,
           row_count = complete_export.row_count, matched_count = complete_export.matched_count,
           data_sha256 = complete_export.data_sha256, data_bytes = complete_export.data_bytes,
           seq_from = complete_export.seq_from, seq_to = complete_export.seq_to
     WHERE j.job_id = complete_export.job_id AND j.status = 'running';
    IF FOUND THEN
        RETURN true;
    END IF;
    IF EXISTS (
        SELECT 1
          FROM compliance.export_jobs AS j
         WHERE j.job_id = complete_export.job_id AND j.status = 'completed'
           AND (j.output_bucket, j.output_prefix, j.row_count, j.matched_count, j.data_sha256, j.data_bytes,
                j.seq_from, j.seq_to)
               IS NOT DISTINCT FROM
               (complete_export.output_bucket, complete_export.output_prefix, complete_export.row_count,
                complete_export.matched_count, complete_export.data_sha256, complete_export.data_bytes,
                complete_export.seq_from, complete_export.seq_to)
    ) THEN
        RETURN false;
    END IF;
    RAISE EXCEPTION 'export job % is %, only a running job can complete', complete_export.job_id,
        compliance._export_job_status(complete_export.job_id)
        USING ERRCODE = 'AC031';
END;
$$;
COMMENT ON FUNCTION compliance.complete_export(uuid, text, text, bigint, bigint, bytea, bigint, bigint, bigint) IS
'Marks a running export job completed with its bundle location, counts, digest and range; AC031 if not running.';

-- compliance.fail_export(job_id, error): running -> failed with the reason. False (no
-- change, the first reason kept) when the job already failed; AC031 when it is queued or
-- completed. Touches: export_jobs (UPDATE).
CREATE OR REPLACE FUNCTION compliance.fail_export(job_id uuid, error text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status compliance.export_status;
BEGIN
    UPDATE compliance.export_jobs AS j
       SET status = 'failed', completed_at = pg_catalog.now(), job_error = fail_export.error
     WHERE j.job_id = fail_export.job_id AND j.status = 'running';
    IF FOUND THEN
        RETURN true;
    END IF;
    v_status := compliance._export_job_status(fail_export.job_id);
    IF v_status = 'failed' THEN
        RETURN false;
    END IF;
    RAISE EXCEPTION 'export job % is %, only a running job can fail', fail_export.job_id, v_status
        USING ERRCODE = 'AC031';
END;
$$;
COMMENT ON FUNCTION compliance.fail_export(uuid, text) IS
'Marks a running export job failed with a reason; false if it already failed, AC031 if queued or completed.';

-- compliance._export_stuck_after(): how long a running export job may go without progress
-- from its runner before it counts as stuck: the default of reconcile_exports() and what
-- the exports_stuck metric counts, so both always agree. Touches no table.
CREATE OR REPLACE FUNCTION compliance._export_stuck_after()
RETURNS interval
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN interval '15 minutes';
COMMENT ON FUNCTION compliance._export_stuck_after() IS
'Internal: a running export job without progress for this long is stuck (reconcile_exports() default, exports_stuck metric).';

-- compliance.reconcile_exports(stuck_after): fail running jobs whose runner has reported
-- no progress (heartbeat, or the claim itself) for stuck_after (default
-- _export_stuck_after(), 15 minutes): it crashed or lost its connection. Returns how many.
-- What pg_cron runs; an operator may run it too.
-- Touches: export_jobs (UPDATE).
CREATE OR REPLACE FUNCTION compliance.reconcile_exports(stuck_after interval DEFAULT compliance._export_stuck_after())
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_failed integer;
BEGIN
    IF reconcile_exports.stuck_after IS NULL OR reconcile_exports.stuck_after < interval '0' THEN
        RAISE EXCEPTION 'stuck_after must be a non-negative interval' USING ERRCODE = '22023';
    END IF;
    UPDATE compliance.export_jobs AS j
       SET status = 'failed',
           completed_at = pg_catalog.now(),
           job_error = pg_catalog.format(
               'reconciled: running since %s with no progress from its runner since %s (stuck_after %s); '
               'the runner crashed or lost its connection; request the export again',
               compliance._iso_utc(j.started_at), compliance._iso_utc(coalesce(j.heartbeat_at, j.started_at)),
               reconcile_exports.stuck_after)
     WHERE j.status = 'running'
       AND coalesce(j.heartbeat_at, j.started_at) < pg_catalog.now() - reconcile_exports.stuck_after;
    GET DIAGNOSTICS v_failed = ROW_COUNT;
    RETURN v_failed;
END;
$$;
COMMENT ON FUNCTION compliance.reconcile_exports(interval) IS
'Fails running export jobs whose runner reported no progress for stuck_after (default 15 minutes); returns how many.';
