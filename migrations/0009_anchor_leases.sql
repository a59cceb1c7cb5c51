-- Anchor leases: the uploader claims a pending anchor in a short transaction that records
-- who holds it and until when, uploads with no transaction open, and records the result in
-- a second short transaction that is refused once the lease expired or was taken over
-- (compliance.claim_next_anchor and the record_* functions in sql/45_anchors.sql).
-- Also drops the functions whose signatures change: the record_* functions gain the lease,
-- and public parameters lose their p_ prefix, which CREATE OR REPLACE cannot rename. Each
-- is dropped only if present, so a fresh install (functions not yet created) prints nothing;
-- sql/ recreates them right after the migrations.

ALTER TABLE compliance.anchors
ADD COLUMN lease_id uuid,
ADD COLUMN claimed_by text CONSTRAINT anchors_claimed_by_text CHECK (
    btrim(claimed_by) <> '' AND length(claimed_by) <= 256
),
ADD COLUMN claimed_at timestamptz,
ADD COLUMN lease_expires_at timestamptz,
ADD CONSTRAINT anchors_claim_complete CHECK (num_nonnulls(lease_id, claimed_by, claimed_at) IN (0, 3)),
ADD CONSTRAINT anchors_lease_after_claim CHECK (
    lease_expires_at IS NULL OR (lease_id IS NOT NULL AND lease_expires_at > claimed_at)
),
ADD CONSTRAINT anchors_lease_only_pending CHECK (lease_expires_at IS NULL OR status = 'pending'),
ADD CONSTRAINT anchors_claim_after_creation CHECK (claimed_at >= created_at);

COMMENT ON COLUMN compliance.anchors.lease_id IS
'Token of the latest claim (claim_next_anchor); a result is accepted only with the live lease''s token.';
COMMENT ON COLUMN compliance.anchors.claimed_by IS 'Uploader that made the latest claim (host:pid by default).';
COMMENT ON COLUMN compliance.anchors.claimed_at IS 'When the latest claim was made.';
COMMENT ON COLUMN compliance.anchors.lease_expires_at IS
'Set while an uploader holds the anchor: until then no other uploader claims it and afterwards '
'the holder''s result is refused (AC043). NULL once a result is recorded or never claimed.';
COMMENT ON CONSTRAINT anchors_claimed_by_text ON compliance.anchors IS 'An uploader name is 1-256 characters, not blank.';
COMMENT ON CONSTRAINT anchors_claim_complete ON compliance.anchors IS
'A claim records its token, its uploader and its time together.';
COMMENT ON CONSTRAINT anchors_lease_after_claim ON compliance.anchors IS 'A lease belongs to a claim and ends after it.';
COMMENT ON CONSTRAINT anchors_lease_only_pending ON compliance.anchors IS
'Only a pending anchor can be held; recording a result releases the lease.';
COMMENT ON CONSTRAINT anchors_claim_after_creation ON compliance.anchors IS 'An anchor is claimed after it was created.';

DO $$
DECLARE
    v_signature text;
BEGIN
    FOREACH v_signature IN ARRAY ARRAY[
        -- Dependents first: the two SQL-standard bodies reference record_failed_attempt.
        'compliance.record_anchor_error(bigint, text)',
        'compliance.record_anchor_integrity_failure(bigint, text, text, text, text)',
        'compliance.record_failed_attempt(bigint, text, compliance.anchor_status, text, text, text)',
        'compliance.record_anchor_upload(bigint, text, text, text, text, timestamptz)',
        'compliance.pending_anchor(bigint)',
        'compliance.acknowledge_integrity_failure(bigint, text)',
        'compliance.acknowledge_verification_failure(bigint, text)',
        'compliance.acknowledge_anchor_failure(bigint, text)'
    ] LOOP
        IF pg_catalog.to_regprocedure(v_signature) IS NOT NULL THEN
            EXECUTE 'DROP FUNCTION ' || v_signature;
        END IF;
    END LOOP;
END;
$$;
