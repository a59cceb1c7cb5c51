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
'Record one audit event: validates it (SQLSTATEs AC001-AC006) and queues it in audit_outbox; returns its UUIDv7.';
