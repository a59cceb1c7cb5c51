-- Tenant bundles (docs/exports.md "Tenant mode"): the heads of every tenant's tree are
-- committed into the global log by compliance.tenant_heads events, which
-- commit_tenant_heads (pg_cron) emits, so that the next signed checkpoint covers them. A
-- bundle built against an older checkpoint needs the heads as they were at that commitment: each commitment records the
-- heads that changed since the previous one (tenant_head_history), and a tenant's head at
-- any committed size is its newest row at or below that size.
-- Also drops request_export (gains the mode), tenant_heads_root and tenant_head_proof (gain
-- the committed size): CREATE OR REPLACE cannot add a parameter.
-- creates: compliance.tenant_head_history
-- creates: compliance.audit_events_tenant_heads
-- creates: compliance.tenant_head_history_heads_size

-- heads_size is the global tree size the commitment describes; a row is written only when
-- the tenant's tree grew since the tenant's previous row.
CREATE TABLE compliance.tenant_head_history (
    tenant_key text COLLATE "C" NOT NULL CHECK (octet_length(tenant_key) <= 512),
    heads_size bigint NOT NULL CHECK (heads_size > 0),
    tree_size bigint NOT NULL CHECK (tree_size > 0 AND tree_size <= heads_size),
    tree_root bytea NOT NULL CHECK (octet_length(tree_root) = 32),
    PRIMARY KEY (tenant_key, heads_size)
);
COMMENT ON TABLE compliance.tenant_head_history IS
'Each tenant''s head (size, root) at every tenant-heads commitment where it changed; written by commit_tenant_heads.';
COMMENT ON COLUMN compliance.tenant_head_history.tenant_key IS
'The tenant id; the empty string for events without a tenant.';
COMMENT ON COLUMN compliance.tenant_head_history.heads_size IS
'The global tree size of the commitment (the tenant heads describe the first heads_size events).';
COMMENT ON COLUMN compliance.tenant_head_history.tree_size IS
'The tenant tree''s size at heads_size: the tenant''s events among the first heads_size.';
COMMENT ON COLUMN compliance.tenant_head_history.tree_root IS 'The tenant tree''s RFC 6962 root at tree_size.';

-- The committed sizes (a proof at one, the newest commitment).
CREATE INDEX tenant_head_history_heads_size ON compliance.tenant_head_history (heads_size);

-- Finds the newest commitment at or below a checkpoint's size without scanning the log.
CREATE INDEX audit_events_tenant_heads ON compliance.audit_events (seq)
WHERE event_type = 'compliance.tenant_heads';

ALTER TABLE compliance.export_jobs
ADD COLUMN mode text NOT NULL DEFAULT 'range' CONSTRAINT export_jobs_mode_check CHECK (mode IN ('range', 'tenant'));
-- A tenant bundle has a line per tenant event, not per seq of its range; every line matched.
ALTER TABLE compliance.export_jobs
DROP CONSTRAINT export_jobs_row_count_is_range,
ADD CONSTRAINT export_jobs_row_count_is_range CHECK (
    CASE mode
        WHEN 'range' THEN row_count = coalesce(seq_to - seq_from + 1, 0)
        ELSE row_count <= coalesce(seq_to - seq_from + 1, 0) AND matched_count = row_count
    END
);
COMMENT ON CONSTRAINT export_jobs_row_count_is_range ON compliance.export_jobs IS
'A range bundle has one line per seq of its range; a tenant bundle one per tenant event in it, every one matched.';
COMMENT ON COLUMN compliance.export_jobs.mode IS
'range: every event of a seq range, the unmatched as hashes; tenant: one tenant''s events with its tree''s proofs.';

-- Their signatures gain a parameter; sql/49_tenant_heads.sql and sql/70_exports.sql
-- recreate them right after.
DO $$
DECLARE
    v_signature text;
BEGIN
    FOREACH v_signature IN ARRAY ARRAY[
        'compliance.request_export(jsonb, text)', 'compliance.tenant_heads_root()', 'compliance.tenant_head_proof(text)'
    ] LOOP
        IF pg_catalog.to_regprocedure(v_signature) IS NOT NULL THEN
            EXECUTE 'DROP FUNCTION ' || v_signature;
        END IF;
    END LOOP;
END;
$$;
