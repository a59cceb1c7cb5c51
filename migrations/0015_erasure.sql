-- Erasure without breaking the proofs (docs/erasure.md): hash format v2 commits to the
-- payload and the actor through salted commitments, so compliance.erase can remove a value
-- and its salt and keep the commitment, which the record still hashes.
-- Adds to audit_events the salts, the commitments kept after an erasure and which erasure
-- event removed what; payload and actor become nullable (only an erased v2 value is NULL,
-- see the CHECKs); the role compliance_eraser, granted to nobody.
-- Also drops verify_chain, whose result gains erased_events (CREATE OR REPLACE cannot
-- change a result type); sql/50_verify.sql recreates it right after the migrations.
-- creates: compliance_eraser
-- creates: compliance.idx_audit_events_erased

ALTER TABLE compliance.audit_events
ALTER COLUMN payload DROP NOT NULL,
ALTER COLUMN actor DROP NOT NULL,
DROP CONSTRAINT audit_events_hash_version_check,
ADD CONSTRAINT audit_events_hash_version_check CHECK (hash_version IN (1, 2)),
ADD COLUMN payload_salt bytea CONSTRAINT audit_events_payload_salt_length CHECK (octet_length(payload_salt) = 16),
ADD COLUMN actor_salt bytea CONSTRAINT audit_events_actor_salt_length CHECK (octet_length(actor_salt) = 16),
ADD COLUMN payload_commitment bytea
CONSTRAINT audit_events_payload_commitment_length CHECK (octet_length(payload_commitment) = 32),
ADD COLUMN actor_commitment bytea
CONSTRAINT audit_events_actor_commitment_length CHECK (octet_length(actor_commitment) = 32),
ADD COLUMN payload_erased_by bigint,
ADD COLUMN actor_erased_by bigint,
-- v1 rows are exactly what they were; a v2 field is either present (value and salt) or
-- erased (commitment and the erasure event's seq), never anything in between. Plain IS
-- NULL tests: the drainer pays for these on every row it inserts.
ADD CONSTRAINT audit_events_v1_unsalted CHECK (
    hash_version <> 1 OR (
        payload IS NOT NULL AND actor IS NOT NULL AND payload_salt IS NULL AND actor_salt IS NULL
        AND payload_commitment IS NULL AND actor_commitment IS NULL
        AND payload_erased_by IS NULL AND actor_erased_by IS NULL
    )
),
ADD CONSTRAINT audit_events_v2_payload_state CHECK (
    hash_version <> 2
    OR (payload_erased_by IS NULL AND payload IS NOT NULL AND payload_salt IS NOT NULL AND payload_commitment IS NULL)
    OR (payload_erased_by > seq AND payload IS NULL AND payload_salt IS NULL AND payload_commitment IS NOT NULL)
),
ADD CONSTRAINT audit_events_v2_actor_state CHECK (
    hash_version <> 2
    OR (actor_erased_by IS NULL AND actor IS NOT NULL AND actor_salt IS NOT NULL AND actor_commitment IS NULL)
    OR (actor_erased_by > seq AND actor IS NULL AND actor_salt IS NULL AND actor_commitment IS NOT NULL)
);

-- verify_chain and metrics count erased events; erased events are few.
CREATE INDEX idx_audit_events_erased ON compliance.audit_events (seq)
WHERE payload_erased_by IS NOT NULL OR actor_erased_by IS NOT NULL;

COMMENT ON COLUMN compliance.audit_events.actor IS
'Who performed the action; NULL only once compliance.erase removed it (v2 events).';
COMMENT ON COLUMN compliance.audit_events.payload IS
'Event details, a JSON object; hashed through its digest (v1) or salted commitment (v2); '
'NULL only once compliance.erase removed it.';
COMMENT ON COLUMN compliance.audit_events.hash_version IS
'Canonical record format used for event_hash (docs/hash-format.md): 1 unsalted, 2 salted commitments.';
COMMENT ON COLUMN compliance.audit_events.payload_salt IS
'v2: 16 pseudo-random bytes derived by the drainer from a per-batch CSPRNG key; the payload commitment '
'is SHA-256(salt || payload text). '
'Removed with the payload by compliance.erase.';
COMMENT ON COLUMN compliance.audit_events.actor_salt IS
'v2: 16 pseudo-random bytes derived by the drainer from a per-batch CSPRNG key; the actor commitment '
'is SHA-256(salt || actor). '
'Removed with the actor by compliance.erase.';
COMMENT ON COLUMN compliance.audit_events.payload_commitment IS
'Set by compliance.erase when it removes the payload: the commitment the record hashes from then on.';
COMMENT ON COLUMN compliance.audit_events.actor_commitment IS
'Set by compliance.erase when it removes the actor: the commitment the record hashes from then on.';
COMMENT ON COLUMN compliance.audit_events.payload_erased_by IS
'seq of the compliance.erasure event that removed the payload; NULL while it is present.';
COMMENT ON COLUMN compliance.audit_events.actor_erased_by IS
'seq of the compliance.erasure event that removed the actor; NULL while it is present.';
COMMENT ON INDEX compliance.idx_audit_events_erased IS 'The few erased events, counted by verify_chain and metrics.';

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compliance_eraser') THEN
        CREATE ROLE compliance_eraser NOLOGIN;
    END IF;
END
$roles$;
COMMENT ON ROLE compliance_eraser IS
'auditchain data controller: may erase personal data from events (compliance.erase); granted to nobody by default.';

DO $$
BEGIN
    IF pg_catalog.to_regprocedure('compliance.verify_chain(bigint, bigint)') IS NOT NULL THEN
        DROP FUNCTION compliance.verify_chain(bigint, bigint);
    END IF;
END;
$$;
