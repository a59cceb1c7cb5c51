-- The hash format, version 1 (docs/hash-format.md): event_hash = SHA-256(prev_hash ||
-- SHA-256(record)), so that a bundle can prove an event it does not reveal from the
-- digest of its record alone. Written as SQL-standard bodies
-- (RETURN ...): they are parsed once at creation, so a caller's search_path can never
-- change what they compute, and the planner can still inline them into set-based queries.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance.epoch_us(ts): microseconds since 1970-01-01 00:00:00 UTC, exact and
-- independent of TimeZone and DateStyle (interval arithmetic, no calendar). Touches no table.
CREATE OR REPLACE FUNCTION compliance.epoch_us(p_ts timestamptz)
RETURNS bigint
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN (EXTRACT(EPOCH FROM p_ts - '1970-01-01 00:00:00+00'::timestamptz) * 1000000)::bigint;
COMMENT ON FUNCTION compliance.epoch_us(timestamptz) IS
'Microseconds since the Unix epoch (UTC), the timestamp form used in the canonical record.';

-- compliance.payload_digest(payload): SHA-256 of the payload's canonical text
-- (PostgreSQL's jsonb output, UTF-8). STABLE only because convert_to is. Touches no table.
CREATE OR REPLACE FUNCTION compliance.payload_digest(p_payload jsonb)
RETURNS bytea
LANGUAGE sql
STABLE
STRICT
PARALLEL SAFE
RETURN pg_catalog.sha256(pg_catalog.convert_to(p_payload::text, 'UTF8'));
COMMENT ON FUNCTION compliance.payload_digest(jsonb) IS
'SHA-256 of the canonical jsonb text of a payload; the payload enters the chain only through this digest.';

-- compliance.event_record(...): the canonical record v1 as UTF-8 bytes. Text fields are
-- length-prefixed (<octets>:<value>) so no field can imitate a separator; a NULL tenant
-- is "-". STABLE only because convert_to is. Touches no table.
CREATE OR REPLACE FUNCTION compliance.event_record(
    p_seq bigint,
    p_event_id uuid,
    p_occurred_at timestamptz,
    p_recorded_at timestamptz,
    p_tenant_id text,
    p_event_type text,
    p_actor text,
    p_payload_digest bytea
)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.convert_to(
    'auditchain:v1' || E'\n'
    || p_seq::text || E'\n'
    || p_event_id::text || E'\n'
    || compliance.epoch_us(p_occurred_at)::text || E'\n'
    || compliance.epoch_us(p_recorded_at)::text || E'\n'
    || CASE
        WHEN p_tenant_id IS NULL THEN '-'
        ELSE pg_catalog.octet_length(p_tenant_id)::text || ':' || p_tenant_id
    END || E'\n'
    || pg_catalog.octet_length(p_event_type)::text || ':' || p_event_type || E'\n'
    || pg_catalog.octet_length(p_actor)::text || ':' || p_actor || E'\n'
    || pg_catalog.encode(p_payload_digest, 'hex'),
    'UTF8'
);
COMMENT ON FUNCTION compliance.event_record(bigint, uuid, timestamptz, timestamptz, text, text, text, bytea) IS
'Canonical record v1 of an event (docs/hash-format.md); event_hash = sha256(prev_hash || sha256(record)).';

-- compliance._chain_link(prev_hash, record_digest): one link of the chain from the record's
-- digest, for the drainer, which computes each digest once for both the chain and the Merkle
-- tree's leaf. Touches no table.
CREATE OR REPLACE FUNCTION compliance._chain_link(prev_hash bytea, record_digest bytea)
RETURNS bytea
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN pg_catalog.sha256(prev_hash || record_digest);
COMMENT ON FUNCTION compliance._chain_link(bytea, bytea) IS
'Internal: SHA-256 of the previous event hash followed by the record digest (event_hash from the digest).';

-- compliance.event_hash(prev_hash, record): one link of the chain, over the record's
-- digest rather than the record itself: an export bundle can then represent an event it
-- excludes by that digest and still let a verifier re-derive its event_hash
-- (docs/bundle-verification.md). Touches no table.
CREATE OR REPLACE FUNCTION compliance.event_hash(p_prev_hash bytea, p_record bytea)
RETURNS bytea
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN compliance._chain_link(p_prev_hash, pg_catalog.sha256(p_record));
COMMENT ON FUNCTION compliance.event_hash(bytea, bytea) IS
'SHA-256 of the previous event hash (32 bytes) followed by the SHA-256 of the canonical record (32 bytes).';

-- compliance.row_record(event): the canonical record of a stored audit_events row, for
-- every check that re-hashes the chain from its columns. Not STRICT and without SET, so the
-- planner inlines it (and what it calls) into set-based queries such as verify_range.
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance.row_record(p_event compliance.audit_events)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN compliance.event_record(
    p_event.seq, p_event.event_id, p_event.occurred_at, p_event.recorded_at, p_event.tenant_id,
    p_event.event_type, p_event.actor, compliance.payload_digest(p_event.payload)
);
COMMENT ON FUNCTION compliance.row_record(compliance.audit_events) IS
'Internal: canonical record v1 of a stored audit_events row (event_record over its columns).';
