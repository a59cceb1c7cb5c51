-- The tenant trees are folded per tenant-heads commitment, not per batch (docs/proofs.md
-- "How they are maintained"): each drained batch leaves one row here with the tenant key and
-- leaf hash of each of its events, in the batch's transaction; _tenant_trees_fold appends
-- them to tenant_trees in seq order and deletes them. The heads a reader sees are the stored
-- ones extended by these leaves.
-- creates: compliance.tenant_tree_pending

-- first_seq is the seq of the batch's first event; element i of both arrays belongs to event
-- first_seq + i - 1.
CREATE TABLE compliance.tenant_tree_pending (
    first_seq bigint PRIMARY KEY CHECK (first_seq > 0),
    tenant_keys text[] NOT NULL,
    leaf_hashes bytea[] NOT NULL,
    CONSTRAINT tenant_tree_pending_one_key_per_leaf CHECK (
        cardinality(leaf_hashes) > 0 AND cardinality(tenant_keys) = cardinality(leaf_hashes)
    )
);
-- Stored out of line uncompressed: hashes do not compress, and the drainer should not spend
-- time trying.
ALTER TABLE compliance.tenant_tree_pending ALTER COLUMN tenant_keys SET STORAGE EXTERNAL,
ALTER COLUMN leaf_hashes SET STORAGE EXTERNAL;
COMMENT ON TABLE compliance.tenant_tree_pending IS
'Drained batches not yet folded into tenant_trees: each event''s tenant key and leaf hash; written by drain, '
'emptied by _tenant_trees_fold.';
COMMENT ON COLUMN compliance.tenant_tree_pending.first_seq IS
'Seq of the batch''s first event; the arrays hold its events in seq order.';
COMMENT ON COLUMN compliance.tenant_tree_pending.tenant_keys IS
'Each event''s tenant key: its tenant id, or the empty string for an event without a tenant.';
COMMENT ON COLUMN compliance.tenant_tree_pending.leaf_hashes IS
'Each event''s leaf hash (of its record digest), as in the global tree.';
COMMENT ON CONSTRAINT tenant_tree_pending_one_key_per_leaf ON compliance.tenant_tree_pending IS
'A batch has at least one event, and one tenant key per leaf hash.';
