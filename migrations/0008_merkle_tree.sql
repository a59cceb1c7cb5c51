-- The RFC 6962 / RFC 9162 Merkle tree over audit_events (docs/proofs.md "The tree in
-- PostgreSQL"): the roots of complete subtrees of 256 leaves and more, and the compact range
-- of the head in drainer_state. Levels 0-7 are not stored: they are recomputed from at most
-- 256 events when a proof needs them. The tree of events chained before this migration is
-- built when sql/47_merkle.sql is applied, in the same `migrate` run (migrations run before
-- the definitions, so the hashing functions do not exist yet at this point).
-- The append-only guards are attached in sql/47_merkle.sql.
-- creates: compliance.merkle_nodes
-- creates: compliance.merkle_nodes.forbid_row_change
-- creates: compliance.merkle_nodes.forbid_truncate

-- One row per completed chunk of 256 leaves rather than one per node: the row of chunk k
-- holds every node that the leaf closing the chunk completed (level 8 node k, then level 9
-- node k/2 when k is odd, and so on up), which halves the storage of a (level, index) key.
-- roots is at most 63 hashes (2 kB) and never compressible, so it is stored PLAIN; taking
-- the column from a PLAIN template (LIKE ... INCLUDING STORAGE, PostgreSQL 15 has no STORAGE
-- clause in CREATE TABLE) means no TOAST table and index are created for nothing.
CREATE TEMPORARY TABLE merkle_nodes_storage (roots bytea NOT NULL) ON COMMIT DROP;
ALTER TABLE merkle_nodes_storage ALTER COLUMN roots SET STORAGE PLAIN;
CREATE TABLE compliance.merkle_nodes (
    chunk bigint PRIMARY KEY CHECK (chunk >= 0),
    LIKE merkle_nodes_storage INCLUDING STORAGE,
    CHECK (octet_length(roots) >= 32 AND octet_length(roots) % 32 = 0)
);
COMMENT ON TABLE compliance.merkle_nodes IS
'Append-only: the stored Merkle nodes of levels 8 and up, one row per completed chunk of 256 leaves.';
COMMENT ON COLUMN compliance.merkle_nodes.chunk IS
'Chunk number k: leaves 256k to 256k+255, that is seq 256k+1 to 256k+256.';
COMMENT ON COLUMN compliance.merkle_nodes.roots IS
'The nodes completed by leaf 256k+255, 32 bytes each: level 8 node k, then level 8+j node k>>j for each trailing 1 bit of k.';

ALTER TABLE compliance.drainer_state
ADD COLUMN tree_size bigint NOT NULL DEFAULT 0 CHECK (tree_size >= 0),
ADD COLUMN tree_frontier bytea[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN compliance.drainer_state.tree_size IS
'Leaves in the Merkle tree: equals last_seq once the drainer has committed a batch.';
COMMENT ON COLUMN compliance.drainer_state.tree_frontier IS
'Compact range of the tree head: the roots of the complete subtrees that make up tree_size leaves, largest first.';
