-- Per-tenant Merkle trees (docs/proofs.md "Tenant trees"): beside the global tree, one RFC
-- 6962 tree per tenant whose leaves are that tenant's record digests in seq order. Only each
-- tenant's head is stored (its compact range); anything older is recomputed from the tenant's
-- events, found through the (tenant_id, seq) index below. The trees of events chained before
-- this migration are built when sql/48_tenant_trees.sql is applied, in the same migrate run.
-- creates: compliance.tenant_trees
-- creates: compliance.audit_events_tenant_seq

-- tenant_key is the tenant id, or '' for the events without a tenant: a tenant id is 1-128
-- characters (emit, AC006), so the empty string can never be one. COLLATE "C" orders the keys
-- by their UTF-8 bytes, the order any verifier reproduces without a collation library.
-- Each drained batch updates the row of every tenant in it: half-empty pages keep those
-- updates HOT (no index entry per update).
CREATE TABLE compliance.tenant_trees (
    tenant_key text COLLATE "C" PRIMARY KEY CHECK (octet_length(tenant_key) <= 512),
    tree_size bigint NOT NULL CHECK (tree_size > 0),
    tree_frontier bytea[] NOT NULL
) WITH (fillfactor = 50);
COMMENT ON TABLE compliance.tenant_trees IS
'The head of each tenant''s Merkle tree (leaves: the tenant''s record digests in seq order), kept by the drainer.';
COMMENT ON COLUMN compliance.tenant_trees.tenant_key IS
'The tenant id; the empty string for events without a tenant (no tenant id is empty).';
COMMENT ON COLUMN compliance.tenant_trees.tree_size IS
'Leaves in the tenant''s tree: the tenant''s chained events.';
COMMENT ON COLUMN compliance.tenant_trees.tree_frontier IS
'Compact range of the tenant tree''s head: roots of its complete subtrees, largest first.';

-- A tenant's leaves in seq order for its proofs and for verify_tree. NULL tenant_ids are
-- indexed too (a btree keeps them), so the tenant-less events are found the same way.
CREATE INDEX audit_events_tenant_seq ON compliance.audit_events (tenant_id, seq);
