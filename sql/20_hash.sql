-- The hash format, version 1 (docs/hash-format.md): event_hash = SHA-256(prev_hash ||
-- SHA-256(record)), so that a bundle can prove an event it does not reveal from the
-- digest of its record alone. Written as SQL-standard bodies
-- (RETURN ...): they are parsed once at creation, so a caller's search_path can never
-- change what they compute, and the planner can still inline them into set-based queries.
SET LOCAL search_path = pg_catalog, pg_temp;

-- compliance._epoch_us(ts): microseconds since 1970-01-01 00:00:00 UTC, exact and
-- independent of TimeZone and DateStyle (interval arithmetic, no calendar). Touches no table.
CREATE OR REPLACE FUNCTION compliance._epoch_us(ts timestamptz)
RETURNS bigint
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN (EXTRACT(EPOCH FROM _epoch_us.ts - '1970-01-01 00:00:00+00'::timestamptz) * 1000000)::bigint;
COMMENT ON FUNCTION compliance._epoch_us(timestamptz) IS
'Internal: microseconds since the Unix epoch (UTC), the timestamp form used in the canonical record.';

-- compliance.payload_digest(payload): SHA-256 of the payload's canonical text
-- (PostgreSQL's jsonb output, UTF-8). STABLE only because convert_to is. Touches no table.
CREATE OR REPLACE FUNCTION compliance.payload_digest(payload jsonb)
RETURNS bytea
LANGUAGE sql
STABLE
STRICT
PARALLEL SAFE
RETURN pg_catalog.sha256(pg_catalog.convert_to(payload_digest.payload::text, 'UTF8'));
COMMENT ON FUNCTION compliance.payload_digest(jsonb) IS
'SHA-256 of the canonical jsonb text of a payload; the payload enters the chain only through this digest.';

-- compliance.event_record(...): the canonical record v1 as UTF-8 bytes. Text fields are
-- length-prefixed (<octets>:<value>) so no field can imitate a separator; a NULL tenant
-- is "-". STABLE only because convert_to is. Touches no table.
CREATE OR REPLACE FUNCTION compliance.event_record(
    seq bigint,
    event_id uuid,
    occurred_at timestamptz,
    recorded_at timestamptz,
    tenant_id text,
    event_type text,
    actor text,
    payload_digest bytea
)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.convert_to(
    'auditchain:v1' || E'\n'
    || event_record.seq::text || E'\n'
    || event_record.event_id::text || E'\n'
    || compliance._epoch_us(event_record.occurred_at)::text || E'\n'
    || compliance._epoch_us(event_record.recorded_at)::text || E'\n'
    || CASE
        WHEN event_record.tenant_id IS NULL THEN '-'
        ELSE pg_catalog.octet_length(event_record.tenant_id)::text || ':' || event_record.tenant_id
    END || E'\n'
    || pg_catalog.octet_length(event_record.event_type)::text || ':' || event_record.event_type || E'\n'
    || pg_catalog.octet_length(event_record.actor)::text || ':' || event_record.actor || E'\n'
    || pg_catalog.encode(event_record.payload_digest, 'hex'),
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
CREATE OR REPLACE FUNCTION compliance.event_hash(prev_hash bytea, record bytea)
RETURNS bytea
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN compliance._chain_link(event_hash.prev_hash, pg_catalog.sha256(event_hash.record));
COMMENT ON FUNCTION compliance.event_hash(bytea, bytea) IS
'SHA-256 of the previous event hash (32 bytes) followed by the SHA-256 of the canonical record (32 bytes).';

-- compliance._row_record(event): the canonical record of a stored audit_events row, for
-- every check that re-hashes the chain from its columns. Not STRICT and without SET, so the
-- planner inlines it (and what it calls) into set-based queries such as _verify_range.
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance._row_record(event compliance.audit_events)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN compliance.event_record(
    _row_record.event.seq, _row_record.event.event_id, _row_record.event.occurred_at,
    _row_record.event.recorded_at, _row_record.event.tenant_id, _row_record.event.event_type,
    _row_record.event.actor, compliance.payload_digest(_row_record.event.payload)
);
COMMENT ON FUNCTION compliance._row_record(compliance.audit_events) IS
'Internal: canonical record v1 of a stored audit_events row (event_record over its columns).';
