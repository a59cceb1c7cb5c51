-- The producers' write path.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._is_event_type(event_type): the event_type rule (3-128 characters of
-- lower-case dotted words), shared by emit (AC001) and export filters (AC030); false for
-- NULL. Touches no table.
CREATE OR REPLACE FUNCTION compliance._is_event_type(event_type text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN coalesce(
    _is_event_type.event_type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'
    AND pg_catalog.length(_is_event_type.event_type) BETWEEN 3 AND 128,
    false
);
COMMENT ON FUNCTION compliance._is_event_type(text) IS
'Internal: true when a text is a valid event type (3-128 characters of lower-case dotted words, e.g. data.export_initiated).';

-- compliance.emit(event_type, actor, payload, tenant_id, occurred_at): validate one event
-- and INSERT it into compliance.audit_outbox; no chain work. Returns the event's UUIDv7.
-- Touches: compliance.audit_outbox (INSERT).
-- Rules and their SQLSTATEs (docs/api.md):
--   AC001 event_type: 3-128 chars, lower-case dotted words, e.g. data.export_initiated
--   AC002 actor: not blank (some non-whitespace character), at most 256 chars
--   AC003 payload: a JSON object (not NULL, array, scalar)
--   AC004 payload: at most 256 KiB (262,144 bytes) of canonical JSON text, the bytes that are
--         hashed and exported; measured on the text so that a compressed or TOASTed value
--         from a table column is held to the same limit
--   AC005 occurred_at: not after now() + 5 minutes, not before 1970-01-01 UTC
--   AC006 tenant_id: NULL, or 1-128 chars with no control characters
--   AC008 event_type compliance.tenant_heads: written only by commit_tenant_heads (a producer's
--         would pass for a commitment of the tenant heads)
CREATE OR REPLACE FUNCTION compliance.emit(
    event_type text,
    actor text,
    payload jsonb DEFAULT '{}',
    tenant_id text DEFAULT NULL,
    occurred_at timestamptz DEFAULT NULL
)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event_id uuid := compliance._uuidv7();
    v_occurred_at timestamptz := coalesce(emit.occurred_at, pg_catalog.now());
    v_payload_bytes integer;
BEGIN
    IF NOT compliance._is_event_type(emit.event_type) THEN
        RAISE EXCEPTION 'invalid event_type %', coalesce(pg_catalog.quote_literal(emit.event_type), 'NULL')
            USING ERRCODE = 'AC001',
                  HINT = 'Use 3-128 characters of lower-case dotted words, e.g. data.export_initiated.';
    END IF;
    IF emit.event_type = 'compliance.tenant_heads' THEN
        RAISE EXCEPTION 'event_type compliance.tenant_heads is reserved: only compliance.commit_tenant_heads writes it'
            USING ERRCODE = 'AC008';
    END IF;
    IF emit.actor IS NULL OR emit.actor !~ '[^[:space:]]' OR pg_catalog.length(emit.actor) > 256 THEN
        RAISE EXCEPTION 'invalid actor: it must not be blank and at most 256 characters'
            USING ERRCODE = 'AC002';
    END IF;
    IF emit.payload IS NULL OR pg_catalog.jsonb_typeof(emit.payload) <> 'object' THEN
        RAISE EXCEPTION 'invalid payload: it must be a JSON object, not %',
            coalesce(pg_catalog.jsonb_typeof(emit.payload), 'NULL')
            USING ERRCODE = 'AC003';
    END IF;
    v_payload_bytes := pg_catalog.octet_length(emit.payload::text);
    IF v_payload_bytes > 262144 THEN
        RAISE EXCEPTION 'payload too large: % bytes of JSON text, the limit is 262144', v_payload_bytes
            USING ERRCODE = 'AC004';
    END IF;
    IF v_occurred_at > pg_catalog.now() + interval '5 minutes'
       OR v_occurred_at < '1970-01-01 00:00:00+00'::timestamptz THEN
        RAISE EXCEPTION 'occurred_at % is out of range', v_occurred_at
            USING ERRCODE = 'AC005',
                  HINT = 'It must lie between 1970-01-01 UTC and five minutes from now.';
    END IF;
    IF emit.tenant_id IS NOT NULL
       AND (pg_catalog.length(emit.tenant_id) NOT BETWEEN 1 AND 128 OR emit.tenant_id ~ '[[:cntrl:]]') THEN
        RAISE EXCEPTION 'invalid tenant_id: 1-128 characters without control characters, or NULL'
            USING ERRCODE = 'AC006';
    END IF;

    INSERT INTO compliance.audit_outbox (event_id, occurred_at, tenant_id, event_type, actor, payload)
    VALUES (v_event_id, v_occurred_at, emit.tenant_id, emit.event_type, emit.actor, emit.payload);
    RETURN v_event_id;
END;
$$;
COMMENT ON FUNCTION compliance.emit(text, text, jsonb, text, timestamptz) IS
'Record one audit event: validates it (SQLSTATEs AC001-AC006, AC008) and queues it in audit_outbox; returns its UUIDv7.';

-- compliance._batch_event_problem(event, occurred_at): NULL when one element of an
-- emit_batch array is a well-formed event that passes emit's rules, otherwise its SQLSTATE,
-- a space and the message. occurred_at is the element's occurred_at already cast (now()
-- when absent). The element's shape comes first (AC007: an object with only emit's
-- argument names, each a JSON string where emit takes text), then emit's rules in emit's
-- order, each the same expression as in emit (the pgTAP test emit_batch_validates_like_emit
-- holds the two to the same verdicts). Inlined into emit_batch's one statement.
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance._batch_event_problem(event jsonb, occurred_at timestamptz)
RETURNS text
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE
    WHEN pg_catalog.jsonb_typeof(event) IS DISTINCT FROM 'object'
        THEN 'AC007 not a JSON object but ' || coalesce(pg_catalog.jsonb_typeof(event), 'NULL')
    WHEN event - '{event_type,actor,payload,tenant_id,occurred_at}'::text[] <> '{}'::jsonb
        THEN 'AC007 unknown key(s): only event_type, actor, payload, tenant_id and occurred_at are allowed'
    WHEN pg_catalog.jsonb_typeof(event -> 'event_type') NOT IN ('string', 'null')
         OR pg_catalog.jsonb_typeof(event -> 'actor') NOT IN ('string', 'null')
         OR pg_catalog.jsonb_typeof(event -> 'tenant_id') NOT IN ('string', 'null')
         OR pg_catalog.jsonb_typeof(event -> 'occurred_at') NOT IN ('string', 'null')
        THEN 'AC007 event_type, actor, tenant_id and occurred_at must be JSON strings (or null)'
    WHEN NOT compliance._is_event_type(event ->> 'event_type')
        THEN 'AC001 invalid event_type ' || coalesce(pg_catalog.quote_literal(event ->> 'event_type'), 'NULL')
    WHEN event ->> 'event_type' = 'compliance.tenant_heads'
        THEN 'AC008 event_type compliance.tenant_heads is reserved: only compliance.commit_tenant_heads writes it'
    WHEN (event ->> 'actor') IS NULL OR (event ->> 'actor') !~ '[^[:space:]]'
         OR pg_catalog.length(event ->> 'actor') > 256
        THEN 'AC002 invalid actor: it must not be blank and at most 256 characters'
    WHEN pg_catalog.jsonb_typeof(coalesce(event -> 'payload', '{}')) <> 'object'
        THEN 'AC003 invalid payload: it must be a JSON object, not '
             || pg_catalog.jsonb_typeof(coalesce(event -> 'payload', '{}'))
    WHEN pg_catalog.octet_length(coalesce(event -> 'payload', '{}')::text) > 262144
        THEN 'AC004 payload too large: ' || pg_catalog.octet_length((event -> 'payload')::text)
             || ' bytes of JSON text, the limit is 262144'
    WHEN occurred_at > pg_catalog.now() + interval '5 minutes'
         OR occurred_at < '1970-01-01 00:00:00+00'::timestamptz
        THEN 'AC005 occurred_at ' || occurred_at || ' is out of range'
    WHEN (event ->> 'tenant_id') IS NOT NULL
         AND (pg_catalog.length(event ->> 'tenant_id') NOT BETWEEN 1 AND 128
              OR (event ->> 'tenant_id') ~ '[[:cntrl:]]')
        THEN 'AC006 invalid tenant_id: 1-128 characters without control characters, or NULL'
END;
COMMENT ON FUNCTION compliance._batch_event_problem(jsonb, timestamptz) IS
'Internal: NULL when an emit_batch element is a valid event, else its SQLSTATE and message.';

-- compliance.emit_batch(events): emit for many events in one call, for producers that
-- forward from a queue or import history. events is a JSON array of objects with emit's
-- argument names as keys (event_type and actor required; payload, tenant_id and occurred_at
-- optional with emit's defaults; occurred_at a timestamptz literal). All or nothing: the
-- first bad element (lowest index) fails the whole call with emit's SQLSTATE for that rule,
-- or AC007 for a malformed array or element, and a message starting "events[<index>]: "
-- (0-based); otherwise one INSERT queues every event in array order (increasing outbox_ids,
-- so the drainer chains them in that order) and the event ids come back in the same order.
-- Touches: compliance.audit_outbox (INSERT).
CREATE OR REPLACE FUNCTION compliance.emit_batch(events jsonb)
RETURNS uuid[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_bad_index bigint;
    v_problem text;
    v_ids uuid[];
    v_event jsonb;
    v_occurred_at timestamptz;
BEGIN
    IF pg_catalog.jsonb_typeof(emit_batch.events) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'events must be a JSON array of event objects, not %',
            coalesce(pg_catalog.jsonb_typeof(emit_batch.events), 'NULL')
            USING ERRCODE = 'AC007';
    END IF;
    BEGIN
        -- One pass: each element is checked and, when good, inserted; a bad one is left out,
        -- so fewer rows than elements means one was bad and the error below undoes the rest.
        WITH queued AS (
            INSERT INTO compliance.audit_outbox (event_id, occurred_at, tenant_id, event_type, actor, payload)
            SELECT compliance._uuidv7(), t.occurred_at, x.value ->> 'tenant_id', x.value ->> 'event_type',
                   x.value ->> 'actor', coalesce(x.value -> 'payload', '{}')
              FROM pg_catalog.jsonb_array_elements(emit_batch.events) WITH ORDINALITY AS x (value, idx)
             CROSS JOIN LATERAL (
                 SELECT coalesce((x.value ->> 'occurred_at')::timestamptz, pg_catalog.now()) AS occurred_at
             ) AS t
             WHERE compliance._batch_event_problem(x.value, t.occurred_at) IS NULL
             ORDER BY x.idx
            RETURNING outbox_id, event_id
        )
        SELECT pg_catalog.array_agg(q.event_id ORDER BY q.outbox_id) INTO v_ids FROM queued AS q;
        IF coalesce(pg_catalog.cardinality(v_ids), 0) < pg_catalog.jsonb_array_length(emit_batch.events) THEN
            SELECT x.idx - 1, compliance._batch_event_problem(x.value, t.occurred_at)
              INTO v_bad_index, v_problem
              FROM pg_catalog.jsonb_array_elements(emit_batch.events) WITH ORDINALITY AS x (value, idx)
             CROSS JOIN LATERAL (
                 SELECT coalesce((x.value ->> 'occurred_at')::timestamptz, pg_catalog.now()) AS occurred_at
             ) AS t
             WHERE compliance._batch_event_problem(x.value, t.occurred_at) IS NOT NULL
             ORDER BY x.idx
             LIMIT 1;
        END IF;
    EXCEPTION WHEN data_exception THEN
        -- An occurred_at that is not a timestamp stops the statement without saying where:
        -- find the first bad element one by one (only on this error path).
        v_problem := NULL;
        v_bad_index := -1;
        FOR v_event IN SELECT x.value FROM pg_catalog.jsonb_array_elements(emit_batch.events) AS x LOOP
            v_bad_index := v_bad_index + 1;
            BEGIN
                v_occurred_at := coalesce((v_event ->> 'occurred_at')::timestamptz, pg_catalog.now());
                v_problem := compliance._batch_event_problem(v_event, v_occurred_at);
            EXCEPTION WHEN data_exception THEN
                v_problem := compliance._batch_event_problem(v_event, pg_catalog.now());
                IF v_problem IS NULL OR v_problem NOT LIKE 'AC007 %' THEN
                    v_problem := 'AC007 occurred_at ' || pg_catalog.quote_literal(v_event ->> 'occurred_at')
                                 || ' is not a timestamp';
                END IF;
            END;
            EXIT WHEN v_problem IS NOT NULL;
        END LOOP;
        IF v_problem IS NULL THEN
            RAISE;
        END IF;
    END;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'events[%]: %', v_bad_index, pg_catalog.substr(v_problem, 7)
            USING ERRCODE = pg_catalog.left(v_problem, 5),
                  DETAIL = pg_catalog.format('index=%s', v_bad_index);
    END IF;
    RETURN coalesce(v_ids, '{}');
END;
$$;
COMMENT ON FUNCTION compliance.emit_batch(jsonb) IS
'Record many audit events at once, all or nothing: validates each like emit (AC001-AC006, AC007 for a malformed '
'array or element) and queues them in array order; returns their UUIDv7s in that order.';
