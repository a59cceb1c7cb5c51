-- The hash formats, versions 1 and 2 (docs/hash-format.md): event_hash = SHA-256(prev_hash ||
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

-- compliance._new_salt_key(): 32 bytes from two gen_random_uuid() values (PostgreSQL's
-- CSPRNG, pg_strong_random; no pgcrypto needed), 244 random bits once the UUIDs' fixed
-- version and variant bits are set aside. The drainer draws one per batch and derives each
-- event's two salts from it (compliance._salts): one SHA-256 per event instead of four
-- gen_random_uuid() calls, which cost a system call each. Touches no table.
CREATE OR REPLACE FUNCTION compliance._new_salt_key()
RETURNS bytea
LANGUAGE sql
VOLATILE
PARALLEL SAFE
RETURN pg_catalog.uuid_send(pg_catalog.gen_random_uuid()) || pg_catalog.uuid_send(pg_catalog.gen_random_uuid());
COMMENT ON FUNCTION compliance._new_salt_key() IS
'Internal: 32 bytes (244 random bits) from two gen_random_uuid() values: a drain batch''s key for deriving salts.';

-- compliance._salts(salt_key, outbox_id): an event's two v2 salts, SHA-256(salt_key ||
-- int8send(outbox_id)): bytes 1-16 the payload salt, 17-32 the actor salt. The key is secret
-- and never stored, the input has a fixed length (no length extension) and outbox_id is
-- unique, so the salts are independent pseudo-random values: one salt, or any number of
-- other events' salts, tells nothing about another. Touches no table.
CREATE OR REPLACE FUNCTION compliance._salts(salt_key bytea, outbox_id bigint)
RETURNS bytea
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN pg_catalog.sha256(_salts.salt_key || pg_catalog.int8send(_salts.outbox_id));
COMMENT ON FUNCTION compliance._salts(bytea, bigint) IS
'Internal: SHA-256(key || outbox_id): an event''s payload salt (bytes 1-16) and actor salt (17-32).';

-- compliance.commitment(salt, value): the v2 commitment to a payload text or an actor:
-- SHA-256(salt || UTF-8 bytes of value). The salt has a fixed length, so salt and value need
-- no separator. STABLE only because convert_to is. Touches no table.
CREATE OR REPLACE FUNCTION compliance.commitment(salt bytea, value text)
RETURNS bytea
LANGUAGE sql
STABLE
STRICT
PARALLEL SAFE
RETURN pg_catalog.sha256(commitment.salt || pg_catalog.convert_to(commitment.value, 'UTF8'));
COMMENT ON FUNCTION compliance.commitment(bytea, text) IS
'SHA-256(salt || UTF-8 value): the salted commitment through which a v2 record holds a payload text or an actor.';

-- compliance.event_record_v2(...): the canonical record v2 as UTF-8 bytes: v1's lines 2-7,
-- the tag auditchain:v2, and the actor and payload commitments as hex (lines 8 and 9).
-- STABLE only because convert_to is. Touches no table.
CREATE OR REPLACE FUNCTION compliance.event_record_v2(
    seq bigint,
    event_id uuid,
    occurred_at timestamptz,
    recorded_at timestamptz,
    tenant_id text,
    event_type text,
    actor_commitment bytea,
    payload_commitment bytea
)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.convert_to(
    'auditchain:v2' || E'\n'
    || event_record_v2.seq::text || E'\n'
    || event_record_v2.event_id::text || E'\n'
    || compliance._epoch_us(event_record_v2.occurred_at)::text || E'\n'
    || compliance._epoch_us(event_record_v2.recorded_at)::text || E'\n'
    || CASE
        WHEN event_record_v2.tenant_id IS NULL THEN '-'
        ELSE pg_catalog.octet_length(event_record_v2.tenant_id)::text || ':' || event_record_v2.tenant_id
    END || E'\n'
    || pg_catalog.octet_length(event_record_v2.event_type)::text || ':' || event_record_v2.event_type || E'\n'
    || pg_catalog.encode(event_record_v2.actor_commitment, 'hex') || E'\n'
    || pg_catalog.encode(event_record_v2.payload_commitment, 'hex'),
    'UTF8'
);
COMMENT ON FUNCTION compliance.event_record_v2(bigint, uuid, timestamptz, timestamptz, text, text, bytea, bytea) IS
'Canonical record v2 of an event (docs/hash-format.md): v1''s fields with the actor and payload as salted commitments.';

-- compliance._row_actor_commitment(event) / _row_payload_commitment(event): the commitment a
-- stored v2 row's record holds: recomputed from value and salt while the value is present,
-- the stored commitment once compliance.erase removed it. NULL when the row is in neither
-- state (a value removed by another path), which every check reports. Touch no table.
CREATE OR REPLACE FUNCTION compliance._row_actor_commitment(event compliance.audit_events)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE
    WHEN _row_actor_commitment.event.actor_erased_by IS NULL
        THEN compliance.commitment(_row_actor_commitment.event.actor_salt, _row_actor_commitment.event.actor)
    ELSE _row_actor_commitment.event.actor_commitment
END;
COMMENT ON FUNCTION compliance._row_actor_commitment(compliance.audit_events) IS
'Internal: the actor commitment of a stored v2 row (from actor and salt, or as stored once erased).';

CREATE OR REPLACE FUNCTION compliance._row_payload_commitment(event compliance.audit_events)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE
    WHEN _row_payload_commitment.event.payload_erased_by IS NULL
        THEN compliance.commitment(_row_payload_commitment.event.payload_salt, _row_payload_commitment.event.payload::text)
    ELSE _row_payload_commitment.event.payload_commitment
END;
COMMENT ON FUNCTION compliance._row_payload_commitment(compliance.audit_events) IS
'Internal: the payload commitment of a stored v2 row (from payload text and salt, or as stored once erased).';

-- compliance._row_record(event): the canonical record of a stored audit_events row in its
-- hash_version, for every check that re-hashes the chain from its columns. NULL when a v2
-- field is neither present nor erased. Not STRICT and without SET, so the planner inlines
-- it (and what it calls) into set-based queries such as _verify_range. Touches no table.
CREATE OR REPLACE FUNCTION compliance._row_record(event compliance.audit_events)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE
    WHEN _row_record.event.hash_version = 1 THEN compliance.event_record(
        _row_record.event.seq, _row_record.event.event_id, _row_record.event.occurred_at,
        _row_record.event.recorded_at, _row_record.event.tenant_id, _row_record.event.event_type,
        _row_record.event.actor, compliance.payload_digest(_row_record.event.payload)
    )
    ELSE compliance.event_record_v2(
        _row_record.event.seq, _row_record.event.event_id, _row_record.event.occurred_at,
        _row_record.event.recorded_at, _row_record.event.tenant_id, _row_record.event.event_type,
        compliance._row_actor_commitment(_row_record.event), compliance._row_payload_commitment(_row_record.event)
    )
END;
COMMENT ON FUNCTION compliance._row_record(compliance.audit_events) IS
'Internal: canonical record (v1 or v2, by hash_version) of a stored audit_events row.';
