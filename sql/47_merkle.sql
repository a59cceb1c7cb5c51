-- The RFC 6962 / RFC 9162 Merkle tree over audit_events (docs/proofs.md "The tree in
-- PostgreSQL"). Leaf i is seq i+1; its data is the event's 32-byte record digest
-- SHA-256(canonical record), so leaf hash = SHA-256(0x00 || digest), node hash =
-- SHA-256(0x01 || left || right), and the empty tree hashes to SHA-256(''). Stored: the
-- nodes of levels 8 and up (merkle_nodes, one row per 256 leaves) and the head's compact
-- range (drainer_state.tree_frontier). Anything below level 8 is recomputed from at most
-- 256 events, so a proof costs O(log n) lookups and at most two short range scans.
SET LOCAL search_path = pg_catalog, pg_temp;

SELECT compliance._protect_table('compliance.merkle_nodes', true);

-- compliance._tree_leaf(data): RFC 6962 leaf hash. Touches no table.
CREATE OR REPLACE FUNCTION compliance._tree_leaf(data bytea)
RETURNS bytea
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN pg_catalog.sha256('\x00'::bytea || data);
COMMENT ON FUNCTION compliance._tree_leaf(bytea) IS
'Internal: RFC 6962 leaf hash SHA-256(0x00 || data).';

-- compliance._tree_node(left, right): RFC 6962 interior node hash. Touches no table.
CREATE OR REPLACE FUNCTION compliance._tree_node(left_hash bytea, right_hash bytea)
RETURNS bytea
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
RETURN pg_catalog.sha256('\x01'::bytea || left_hash || right_hash);
COMMENT ON FUNCTION compliance._tree_node(bytea, bytea) IS
'Internal: RFC 6962 node hash SHA-256(0x01 || left || right).';

-- compliance._tree_fold(leaf_hashes): the Merkle tree hash of a list of leaf hashes, level
-- by level: pairs are hashed and an odd last node is promoted, which yields the RFC's split
-- at the largest power of two. Deliberately not the drainer's compact-range algorithm, so
-- that verify_tree checks what the drainer stored with an independent computation.
-- SHA-256('') for an empty list. FOREACH keeps each step O(1) (indexing a flat array of
-- bytea walks it from the start). Touches no table.
CREATE OR REPLACE FUNCTION compliance._tree_fold(leaf_hashes bytea[])
RETURNS bytea
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_level bytea[] := leaf_hashes;
    v_next bytea[];
    v_count integer;
    v_left bytea;
    v_hash bytea;
BEGIN
    IF pg_catalog.cardinality(v_level) = 0 THEN
        RETURN pg_catalog.sha256(''::bytea);
    END IF;
    WHILE pg_catalog.cardinality(v_level) > 1 LOOP
        v_next := '{}';
        v_count := 0;
        v_left := NULL;
        FOREACH v_hash IN ARRAY v_level LOOP
            IF v_left IS NULL THEN
                v_left := v_hash;
            ELSE
                v_count := v_count + 1;
                v_next[v_count] := compliance._tree_node(v_left, v_hash);
                v_left := NULL;
            END IF;
        END LOOP;
        IF v_left IS NOT NULL THEN
            v_next[v_count + 1] := v_left;
        END IF;
        v_level := v_next;
    END LOOP;
    RETURN v_level[1];
END;
$$;
COMMENT ON FUNCTION compliance._tree_fold(bytea[]) IS
'Internal: RFC 6962 Merkle tree hash of the given leaf hashes (SHA-256('''') when empty).';

-- compliance._tree_fold_right(pieces): the hash of a right edge given the roots of its
-- complete subtrees, largest first (a compact range): node(p1, node(p2, ... pn)).
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance._tree_fold_right(pieces bytea[])
RETURNS bytea
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer := pg_catalog.cardinality(pieces);
    v_hash bytea;
    v_i integer;
BEGIN
    IF v_count = 0 THEN
        RETURN pg_catalog.sha256(''::bytea);
    END IF;
    v_hash := pieces[v_count];
    FOR v_i IN REVERSE v_count - 1..1 LOOP
        v_hash := compliance._tree_node(pieces[v_i], v_hash);
    END LOOP;
    RETURN v_hash;
END;
$$;
COMMENT ON FUNCTION compliance._tree_fold_right(bytea[]) IS
'Internal: hash of a compact range (roots of complete subtrees, largest first), folded from the right.';

-- compliance._tree_leaves(first_seq, last_seq): the leaf hashes of the stored events in
-- [first_seq, last_seq], in seq order, recomputed from their columns (one PK range scan).
-- The caller checks the count. Touches: audit_events (read).
CREATE OR REPLACE FUNCTION compliance._tree_leaves(first_seq bigint, last_seq bigint)
RETURNS bytea[]
LANGUAGE sql
STABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
               pg_catalog.array_agg(compliance._tree_leaf(pg_catalog.sha256(compliance._row_record(e))) ORDER BY e.seq),
               '{}'
           )
      FROM compliance.audit_events AS e
     WHERE e.seq BETWEEN first_seq AND last_seq;
$$;
COMMENT ON FUNCTION compliance._tree_leaves(bigint, bigint) IS
'Internal: leaf hashes recomputed from the stored events of a seq range, in seq order.';

-- compliance._tree_leaves_checked(lo, hi): the leaf hashes of leaves [lo, hi) (0-based),
-- raising XX001 when an event under the tree is missing (verify_chain names it).
-- Touches: audit_events (read).
CREATE OR REPLACE FUNCTION compliance._tree_leaves_checked(lo bigint, hi bigint)
RETURNS bytea[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_leaves bytea[] := compliance._tree_leaves(lo + 1, hi);
BEGIN
    IF pg_catalog.cardinality(v_leaves) <> hi - lo THEN
        RAISE EXCEPTION 'events missing among seq % to %', lo + 1, hi
            USING ERRCODE = 'XX001', HINT = 'Run compliance.verify_chain().';
    END IF;
    RETURN v_leaves;
END;
$$;
COMMENT ON FUNCTION compliance._tree_leaves_checked(bigint, bigint) IS
'Internal: leaf hashes of leaves [lo, hi) recomputed from the events; XX001 when one is missing.';

-- compliance._tree_stored_node(level, index): the stored node (level >= 8), NULL when
-- there is none. Node (L, i) sits in the row of the chunk whose last leaf completed it.
-- Touches: merkle_nodes (read).
CREATE OR REPLACE FUNCTION compliance._tree_stored_node(level integer, index bigint)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.substr(n.roots, 32 * (level - 8) + 1, 32)
      FROM compliance.merkle_nodes AS n
     WHERE n.chunk = ((index + 1) << (level - 8)) - 1
       AND pg_catalog.octet_length(n.roots) >= 32 * (level - 7);
$$;
COMMENT ON FUNCTION compliance._tree_stored_node(integer, bigint) IS
'Internal: the stored Merkle node at (level, index), level >= 8; NULL when missing.';

-- compliance._tree_range_hash(lo, hi): the hash of leaves [lo, hi) (0-based) for a range
-- that is a node of some RFC tree (lo aligned to its largest complete subtree): stored
-- nodes for the complete subtrees of 256 leaves and more, one range scan of at most 255
-- events for the rest. Raises XX001 when a stored node or event is missing (verify_tree
-- names it). Touches: merkle_nodes, audit_events (read).
CREATE OR REPLACE FUNCTION compliance._tree_range_hash(lo bigint, hi bigint)
RETURNS bytea
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_pieces bytea[] := '{}';
    v_count integer := 0;
    v_pos bigint := lo;
    v_level integer;
    v_node bytea;
BEGIN
    FOR v_level IN REVERSE 62..8 LOOP
        IF ((hi - lo) & (1::bigint << v_level)) <> 0 THEN
            v_node := compliance._tree_stored_node(v_level, v_pos >> v_level);
            IF v_node IS NULL THEN
                RAISE EXCEPTION 'stored Merkle node level % index % is missing', v_level, v_pos >> v_level
                    USING ERRCODE = 'XX001', HINT = 'Run compliance.verify_tree().';
            END IF;
            v_count := v_count + 1;
            v_pieces[v_count] := v_node;
            v_pos := v_pos + (1::bigint << v_level);
        END IF;
    END LOOP;
    IF v_pos < hi THEN
        v_count := v_count + 1;
        v_pieces[v_count] := compliance._tree_fold(compliance._tree_leaves_checked(v_pos, hi));
    END IF;
    RETURN compliance._tree_fold_right(v_pieces);
END;
$$;
COMMENT ON FUNCTION compliance._tree_range_hash(bigint, bigint) IS
'Internal: Merkle hash of leaves [lo, hi) from stored nodes (levels >= 8) and at most 255 recomputed leaves.';

-- compliance._tree_proof_hash(lo, hi, chunk_lo, chunk, head_size, head): _tree_range_hash
-- for the proof functions, with two shortcuts: a range inside the chunk whose leaf hashes the
-- caller already holds (chunk, from leaf chunk_lo) is folded from them, and a right edge of
-- the head's tree ([lo, head_size) with lo a sum of the head's leading subtrees) from the
-- head's compact range. verify_tree does not use it: it recomputes what it checks.
-- Touches: as _tree_range_hash, only when neither shortcut applies.
CREATE OR REPLACE FUNCTION compliance._tree_proof_hash(
    lo bigint, hi bigint, chunk_lo bigint, chunk bytea[], head_size bigint, head bytea[]
)
RETURNS bytea
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF lo >= chunk_lo AND hi <= chunk_lo + pg_catalog.cardinality(chunk) THEN
        RETURN compliance._tree_fold(chunk[lo - chunk_lo + 1:hi - chunk_lo]);
    END IF;
    IF hi = head_size AND (lo = 0 OR hi - lo < (lo & -lo)) THEN
        RETURN compliance._tree_fold_right(
            head[pg_catalog.bit_count(lo::bit(64))::integer + 1:pg_catalog.cardinality(head)]
        );
    END IF;
    RETURN compliance._tree_range_hash(lo, hi);
END;
$$;
COMMENT ON FUNCTION compliance._tree_proof_hash(bigint, bigint, bigint, bytea[], bigint, bytea[]) IS
'Internal: hash of leaves [lo, hi) for a proof, from leaves the caller holds or the head''s compact range when they cover it.';

-- _tree_append took record digests before it took leaf hashes (the drainer hashes each leaf
-- once, for this tree and its tenant's); CREATE OR REPLACE cannot rename a parameter.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_proc AS p
                WHERE p.oid = pg_catalog.to_regprocedure('compliance._tree_append(bigint, bytea[])')
                  AND 'record_digests' = ANY(p.proargnames)) THEN
        DROP FUNCTION compliance._tree_append(bigint, bytea[]);
    END IF;
END;
$$;

-- compliance._tree_append(first_seq, leaf_hashes): extend the tree by the given leaves (RFC
-- 6962 leaf hashes, compliance._tree_leaf of each record digest), in the drainer's
-- transaction. Keeps the head's compact range in drainer_state and stores every node of
-- level 8 and up as it completes. Touches: drainer_state (UPDATE), merkle_nodes (INSERT).
CREATE OR REPLACE FUNCTION compliance._tree_append(first_seq bigint, leaf_hashes bytea[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_size bigint;
    v_stack bytea[];
    v_top integer;
    v_hash bytea;
    v_bits bigint;
    v_merges integer;
    v_roots bytea;
    v_chunks bigint[] := '{}';
    v_chunk_roots bytea[] := '{}';
    v_stored integer := 0;
BEGIN
    SELECT d.tree_size, d.tree_frontier INTO STRICT v_size, v_stack FROM compliance.drainer_state AS d;
    IF first_seq IS DISTINCT FROM v_size + 1 THEN
        RAISE EXCEPTION 'the Merkle tree holds % leaves; it cannot append seq %', v_size, first_seq
            USING ERRCODE = 'XX000';
    END IF;
    v_top := pg_catalog.cardinality(v_stack);
    -- Push each leaf on the compact range, merging once per trailing 1 bit of the size. The
    -- stack is indexed in place (v_top) so the array is never copied.
    FOREACH v_hash IN ARRAY leaf_hashes LOOP
        IF (v_size & 255) <> 255 THEN
            v_bits := v_size;
            WHILE (v_bits & 1) = 1 LOOP
                v_hash := compliance._tree_node(v_stack[v_top], v_hash);
                v_top := v_top - 1;
                v_bits := v_bits >> 1;
            END LOOP;
        ELSE
            -- This leaf closes chunk v_size >> 8: 8 merges up to its level-8 node, then one
            -- per trailing 1 bit of the chunk number; the nodes of level 8 and up are stored.
            v_bits := v_size;
            v_merges := 0;
            WHILE (v_bits & 1) = 1 LOOP
                v_hash := compliance._tree_node(v_stack[v_top], v_hash);
                v_top := v_top - 1;
                v_bits := v_bits >> 1;
                v_merges := v_merges + 1;
                IF v_merges >= 8 THEN
                    v_roots := CASE WHEN v_merges = 8 THEN v_hash ELSE v_roots || v_hash END;
                END IF;
            END LOOP;
            v_stored := v_stored + 1;
            v_chunks[v_stored] := v_size >> 8;
            v_chunk_roots[v_stored] := v_roots;
        END IF;
        v_top := v_top + 1;
        v_stack[v_top] := v_hash;
        v_size := v_size + 1;
    END LOOP;
    IF v_stored > 0 THEN
        INSERT INTO compliance.merkle_nodes (chunk, roots)
        SELECT u.chunk, u.roots FROM unnest(v_chunks, v_chunk_roots) AS u (chunk, roots);
    END IF;
    UPDATE compliance.drainer_state SET tree_size = v_size, tree_frontier = v_stack[1:v_top];
END;
$$;
COMMENT ON FUNCTION compliance._tree_append(bigint, bytea[]) IS
'Internal: (the drainer) appends the given leaf hashes from first_seq on; stores completed nodes of level >= 8.';

-- compliance._tree_catch_up(): build the tree for events chained before the tree existed
-- (or by a drainer that did not maintain it yet), from their stored columns, under the
-- drainer's lock. A no-op when the tree already covers every chained event. Returns the
-- leaves added. Touches: audit_events, drainer_state (read), as _tree_append.
CREATE OR REPLACE FUNCTION compliance._tree_catch_up()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch CONSTANT bigint := 65536;
    v_state compliance.drainer_state%ROWTYPE;
    v_from bigint;
    v_to bigint;
    v_leaves bytea[];
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('auditchain.drainer')::bigint);
    SELECT * INTO STRICT v_state FROM compliance.drainer_state;
    v_from := v_state.tree_size + 1;
    WHILE v_from <= v_state.last_seq LOOP
        v_to := least(v_from + v_batch - 1, v_state.last_seq);
        v_leaves := compliance._tree_leaves(v_from, v_to);
        IF pg_catalog.cardinality(v_leaves) <> v_to - v_from + 1 THEN
            RAISE EXCEPTION 'cannot build the Merkle tree: events missing among seq % to %', v_from, v_to
                USING ERRCODE = 'XX001', HINT = 'Run compliance.verify_chain().';
        END IF;
        PERFORM compliance._tree_append(v_from, v_leaves);
        v_from := v_to + 1;
    END LOOP;
    RETURN v_from - 1 - v_state.tree_size;
END;
$$;
COMMENT ON FUNCTION compliance._tree_catch_up() IS
'Internal: (migrate) adds to the Merkle tree every chained event it does not cover yet, from the stored events.';

-- compliance._tree_size(tree_size): resolve a caller's tree size (NULL: the whole tree),
-- raising AC070 when it is negative or beyond the events the tree covers.
-- Touches: drainer_state (read).
CREATE OR REPLACE FUNCTION compliance._tree_size(tree_size bigint)
RETURNS bigint
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_covered bigint;
BEGIN
    SELECT d.tree_size INTO STRICT v_covered FROM compliance.drainer_state AS d;
    IF _tree_size.tree_size IS NULL THEN
        RETURN v_covered;
    END IF;
    IF _tree_size.tree_size < 0 OR _tree_size.tree_size > v_covered THEN
        RAISE EXCEPTION 'tree size % is out of range: the tree holds % chained events', _tree_size.tree_size, v_covered
            USING ERRCODE = 'AC070';
    END IF;
    RETURN _tree_size.tree_size;
END;
$$;
COMMENT ON FUNCTION compliance._tree_size(bigint) IS
'Internal: a requested tree size, NULL meaning every chained event; AC070 when negative or beyond the chain.';

-- compliance.tree_root(tree_size): the RFC 6962 root of the first tree_size events
-- (NULL: every chained event; 0: SHA-256 of nothing). The head's root comes from the
-- compact range; an older size from O(log n) stored nodes and at most 255 events.
-- Touches: drainer_state, merkle_nodes, audit_events (read).
CREATE OR REPLACE FUNCTION compliance.tree_root(tree_size bigint DEFAULT NULL)
RETURNS bytea
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_size bigint := compliance._tree_size(tree_root.tree_size);
    v_state compliance.drainer_state%ROWTYPE;
BEGIN
    SELECT * INTO STRICT v_state FROM compliance.drainer_state;
    IF v_size = v_state.tree_size THEN
        RETURN compliance._tree_fold_right(v_state.tree_frontier);
    END IF;
    RETURN compliance._tree_range_hash(0, v_size);
END;
$$;
COMMENT ON FUNCTION compliance.tree_root(bigint) IS
'RFC 6962 Merkle tree root over the record digests of seq 1..tree_size (NULL: every chained event; 0: SHA-256('''')).';

-- compliance._tree_inclusion_path(index, size, chunk_lo, chunk, head_size, head): the RFC
-- 9162 section 2.1.3.1 inclusion path of leaf index in the tree of size leaves, leaf to root,
-- each hash from _tree_proof_hash (so from the leaves the caller holds in chunk, from leaf
-- chunk_lo, when they cover it). Shared by the global tree and the tenant trees. The caller
-- checks index < size. Touches: as _tree_proof_hash.
CREATE OR REPLACE FUNCTION compliance._tree_inclusion_path(
    index bigint, size bigint, chunk_lo bigint, chunk bytea[], head_size bigint, head bytea[]
)
RETURNS bytea[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lo bigint := 0;
    v_hi bigint := size;
    v_split bigint := 4611686018427387904;
    v_from bigint;
    v_to bigint;
    v_siblings bytea[] := '{}';
    v_count integer := 0;
BEGIN
    -- Walk down from the root; the sibling found at each split is the proof's next hash
    -- counted from the root, so the list is reversed at the end.
    WHILE v_hi - v_lo > 1 LOOP
        -- The split is the largest power of two below the range's size; ranges only shrink.
        WHILE v_split >= v_hi - v_lo LOOP
            v_split := v_split >> 1;
        END LOOP;
        IF index < v_lo + v_split THEN
            v_from := v_lo + v_split;
            v_to := v_hi;
            v_hi := v_lo + v_split;
        ELSE
            v_from := v_lo;
            v_to := v_lo + v_split;
            v_lo := v_lo + v_split;
        END IF;
        v_count := v_count + 1;
        v_siblings[v_count] := compliance._tree_proof_hash(v_from, v_to, chunk_lo, chunk, head_size, head);
    END LOOP;
    RETURN ARRAY(SELECT s.hash FROM unnest(v_siblings) WITH ORDINALITY AS s (hash, n) ORDER BY s.n DESC);
END;
$$;
COMMENT ON FUNCTION compliance._tree_inclusion_path(bigint, bigint, bigint, bytea[], bigint, bytea[]) IS
'Internal: RFC 9162 inclusion path (leaf to root) of leaf index in a tree of size leaves, hashes from _tree_proof_hash.';

-- compliance.inclusion_proof(seq, tree_size): the RFC 9162 section 2.1.3.1 inclusion
-- proof of leaf seq-1 in the tree of tree_size leaves (NULL: every chained event), leaf to
-- root. Raises AC070 for a bad tree size, AC071 when seq is not in 1..tree_size.
-- Touches: drainer_state, merkle_nodes, audit_events (read).
CREATE OR REPLACE FUNCTION compliance.inclusion_proof(seq bigint, tree_size bigint DEFAULT NULL)
RETURNS bytea[]
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_size bigint := compliance._tree_size(inclusion_proof.tree_size);
    v_index bigint := inclusion_proof.seq - 1;
    v_chunk_lo bigint;
    v_state compliance.drainer_state%ROWTYPE;
BEGIN
    SELECT * INTO STRICT v_state FROM compliance.drainer_state;
    IF inclusion_proof.seq IS NULL OR inclusion_proof.seq < 1 OR inclusion_proof.seq > v_size THEN
        RAISE EXCEPTION 'seq % is out of range for a tree of % events', coalesce(inclusion_proof.seq::text, 'NULL'), v_size
            USING ERRCODE = 'AC071';
    END IF;
    -- Every sibling below level 8 lies in the leaf's own chunk: hash that chunk's events once.
    v_chunk_lo := (v_index >> 8) << 8;
    RETURN compliance._tree_inclusion_path(
        v_index, v_size, v_chunk_lo, compliance._tree_leaves_checked(v_chunk_lo, least(v_chunk_lo + 256, v_size)),
        v_state.tree_size, v_state.tree_frontier
    );
END;
$$;
COMMENT ON FUNCTION compliance.inclusion_proof(bigint, bigint) IS
'RFC 9162 inclusion proof (leaf to root) of event seq in the tree of tree_size events (NULL: every chained event).';

-- compliance._tree_consistency_path(size1, size2, chunk_lo, chunk, head_size, head): the RFC
-- 9162 section 2.1.4.1 consistency path from the tree of size1 leaves to the tree of size2,
-- each hash from _tree_proof_hash (as _tree_inclusion_path). Shared by the global tree and
-- the tenant trees. The caller checks 0 < size1 <= size2. Touches: as _tree_proof_hash.
CREATE OR REPLACE FUNCTION compliance._tree_consistency_path(
    size1 bigint, size2 bigint, chunk_lo bigint, chunk bytea[], head_size bigint, head bytea[]
)
RETURNS bytea[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lo bigint := 0;
    v_hi bigint := size2;
    v_split bigint := 4611686018427387904;
    v_complete boolean := true;
    v_head bytea[] := '{}';
    v_siblings bytea[] := '{}';
    v_count integer := 0;
BEGIN
    -- SUBPROOF(m, D[lo:hi], complete) of the RFC, unrolled: each step records the hash of
    -- the half not followed; the proof is the final subtree (when it is not the whole old
    -- tree) followed by those hashes from the deepest up.
    WHILE size1 <> v_hi LOOP
        -- The split is the largest power of two below the range's size; ranges only shrink.
        WHILE v_split >= v_hi - v_lo LOOP
            v_split := v_split >> 1;
        END LOOP;
        v_count := v_count + 1;
        IF size1 - v_lo <= v_split THEN
            v_siblings[v_count] := compliance._tree_proof_hash(v_lo + v_split, v_hi, chunk_lo, chunk, head_size, head);
            v_hi := v_lo + v_split;
        ELSE
            v_siblings[v_count] := compliance._tree_proof_hash(v_lo, v_lo + v_split, chunk_lo, chunk, head_size, head);
            v_lo := v_lo + v_split;
            v_complete := false;
        END IF;
    END LOOP;
    IF NOT v_complete THEN
        v_head := ARRAY[compliance._tree_proof_hash(v_lo, v_hi, chunk_lo, chunk, head_size, head)];
    END IF;
    RETURN v_head || ARRAY(SELECT s.hash FROM unnest(v_siblings) WITH ORDINALITY AS s (hash, n) ORDER BY s.n DESC);
END;
$$;
COMMENT ON FUNCTION compliance._tree_consistency_path(bigint, bigint, bigint, bytea[], bigint, bytea[]) IS
'Internal: RFC 9162 consistency path from the tree of size1 leaves to that of size2, hashes from _tree_proof_hash.';

-- compliance._base64_hashes(hashes): a JSON array of the hashes in standard base64, as
-- checkpoints write them. Touches no table.
CREATE OR REPLACE FUNCTION compliance._base64_hashes(hashes bytea[])
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $$
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.encode(h.hash, 'base64') ORDER BY h.n), '[]'::jsonb)
      FROM unnest(hashes) WITH ORDINALITY AS h (hash, n);
$$;
COMMENT ON FUNCTION compliance._base64_hashes(bytea[]) IS 'Internal: hashes as a JSON array of base64 strings.';

-- compliance.consistency_proof(size1, size2): the RFC 9162 section 2.1.4.1 consistency
-- proof that the tree of size1 events is a prefix of the tree of size2 (NULL: every
-- chained event). Empty when size1 = size2. Raises AC070 for a bad size, AC072 for
-- size1 = 0 (a proof from the empty tree is meaningless), AC073 when size1 > size2.
-- Touches: drainer_state, merkle_nodes, audit_events (read).
CREATE OR REPLACE FUNCTION compliance.consistency_proof(size1 bigint, size2 bigint DEFAULT NULL)
RETURNS bytea[]
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_size2 bigint := compliance._tree_size(consistency_proof.size2);
    v_size1 bigint := consistency_proof.size1;
    v_state compliance.drainer_state%ROWTYPE;
    v_chunk_lo bigint;
    v_chunk bytea[] := '{}';
BEGIN
    SELECT * INTO STRICT v_state FROM compliance.drainer_state;
    IF v_size1 IS NULL OR v_size1 < 0 THEN
        RAISE EXCEPTION 'size1 % is not a tree size', coalesce(v_size1::text, 'NULL') USING ERRCODE = 'AC070';
    END IF;
    IF v_size1 = 0 THEN
        RAISE EXCEPTION 'a consistency proof from the empty tree is meaningless' USING ERRCODE = 'AC072';
    END IF;
    IF v_size1 > v_size2 THEN
        RAISE EXCEPTION 'size1 % is larger than size2 %', v_size1, v_size2 USING ERRCODE = 'AC073';
    END IF;
    -- The hashes below level 8 lie in the chunk where the old tree ends, when it ends inside
    -- one: hash that chunk's events once.
    v_chunk_lo := (v_size1 >> 8) << 8;
    IF v_size1 > v_chunk_lo THEN
        v_chunk := compliance._tree_leaves_checked(v_chunk_lo, least(v_chunk_lo + 256, v_size2));
    END IF;
    RETURN compliance._tree_consistency_path(v_size1, v_size2, v_chunk_lo, v_chunk, v_state.tree_size,
                                             v_state.tree_frontier);
END;
$$;
COMMENT ON FUNCTION compliance.consistency_proof(bigint, bigint) IS
'RFC 9162 consistency proof from the tree of size1 events to the tree of size2 (NULL: every chained event).';

-- compliance._tree_check_chunks(first_chunk, last_chunk): recompute the level-8 node of
-- each chunk from its 256 events and every higher node in its row from its two children
-- (the left one stored in an earlier row, checked before), and report the first stored
-- node that differs or is missing. No row when all agree. Shared by verify_tree and the
-- incremental verifier. Checking a node against its stored children keeps the work per
-- chunk bounded; it also means every ancestor of an altered node is reported in turn. Touches: audit_events, merkle_nodes (read).
CREATE OR REPLACE FUNCTION compliance._tree_check_chunks(first_chunk bigint, last_chunk bigint)
RETURNS TABLE (chunk bigint, problem text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_chunk bigint;
    v_leaves bytea[];
    v_roots bytea;
    v_levels integer;
    v_j integer;
    v_left bytea;
    v_hash bytea;
BEGIN
    -- Not an integer FOR loop: its variable would be an int4 shadowing the bigint.
    v_chunk := first_chunk;
    WHILE v_chunk <= last_chunk LOOP
        v_leaves := compliance._tree_leaves(v_chunk * 256 + 1, v_chunk * 256 + 256);
        IF pg_catalog.cardinality(v_leaves) <> 256 THEN
            RETURN QUERY SELECT v_chunk, pg_catalog.format('events missing among seq %s to %s under node level 8 index %s',
                                                           v_chunk * 256 + 1, v_chunk * 256 + 256, v_chunk);
            RETURN;
        END IF;
        SELECT n.roots INTO v_roots FROM compliance.merkle_nodes AS n WHERE n.chunk = v_chunk;
        IF NOT FOUND THEN
            RETURN QUERY SELECT v_chunk, pg_catalog.format('stored node level 8 index %s is missing', v_chunk);
            RETURN;
        END IF;
        -- The leaf closing chunk k completes one node per trailing 1 bit of k, above level 8.
        v_levels := 0;
        WHILE ((v_chunk >> v_levels) & 1) = 1 LOOP
            v_levels := v_levels + 1;
        END LOOP;
        IF pg_catalog.octet_length(v_roots) <> 32 * (v_levels + 1) THEN
            RETURN QUERY SELECT v_chunk, pg_catalog.format('stored nodes of chunk %s: %s bytes where %s are expected',
                                                           v_chunk, pg_catalog.octet_length(v_roots), 32 * (v_levels + 1));
            RETURN;
        END IF;
        v_hash := compliance._tree_fold(v_leaves);
        FOR v_j IN 0..v_levels LOOP
            IF v_j > 0 THEN
                v_left := compliance._tree_stored_node(7 + v_j, (v_chunk >> v_j) << 1);
                IF v_left IS NULL THEN
                    RETURN QUERY SELECT v_chunk, pg_catalog.format('stored node level %s index %s is missing',
                                                                   7 + v_j, (v_chunk >> v_j) << 1);
                    RETURN;
                END IF;
                v_hash := compliance._tree_node(v_left, pg_catalog.substr(v_roots, 32 * (v_j - 1) + 1, 32));
            END IF;
            IF pg_catalog.substr(v_roots, 32 * v_j + 1, 32) <> v_hash THEN
                RETURN QUERY SELECT v_chunk, pg_catalog.format('stored node level %s index %s differs from %s',
                                                               8 + v_j, v_chunk >> v_j,
                                                               CASE WHEN v_j = 0 THEN 'the events'
                                                                    ELSE 'the hash of its stored children' END);
                RETURN;
            END IF;
        END LOOP;
        v_chunk := v_chunk + 1;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION compliance._tree_check_chunks(bigint, bigint) IS
'Internal: checks the stored Merkle nodes of chunks [first, last] against the events; the first bad node, if any.';

-- compliance._checkpoint_tree(note): the tree size and root a checkpoint body (or a signed
-- note, whose body comes first) states, when its origin is this log's
-- (auditchain/<system_identifier>/<database>) and its lines are well formed; NULLs
-- otherwise, so that a tampered row is reported rather than raising. Touches no table.
CREATE OR REPLACE FUNCTION compliance._checkpoint_tree(note text)
RETURNS TABLE (tree_size bigint, root bytea)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lines text[] := pg_catalog.string_to_array(_checkpoint_tree.note, E'\n');
    v_origin text;
BEGIN
    SELECT 'auditchain/' || s.system_identifier::text || '/' || pg_catalog.current_database()
      INTO STRICT v_origin
      FROM pg_catalog.pg_control_system() AS s;
    IF pg_catalog.cardinality(v_lines) < 4 OR v_lines[1] IS DISTINCT FROM v_origin
       OR v_lines[2] !~ '^(0|[1-9][0-9]{0,17})$' OR v_lines[3] !~ '^[A-Za-z0-9+/]{43}=$' THEN
        RETURN QUERY SELECT NULL::bigint, NULL::bytea;
        RETURN;
    END IF;
    RETURN QUERY SELECT v_lines[2]::bigint, pg_catalog.decode(v_lines[3], 'base64');
END;
$$;
COMMENT ON FUNCTION compliance._checkpoint_tree(text) IS
'Internal: tree size and root stated by a checkpoint body or signed note of this log; NULLs when malformed or another origin.';

-- compliance._tree_recorded_roots(): every root something recorded for a tree size, which
-- verify_tree compares with the tree recomputed from the events: the drainer's head, and for
-- each anchor with a checkpoint its recorded root, its checkpoint body and its signed note
-- (NULL size and root when one is unreadable or names another log).
-- Touches: drainer_state, anchors (read).
CREATE OR REPLACE FUNCTION compliance._tree_recorded_roots()
RETURNS TABLE (tree_size bigint, root bytea, recorded_by text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.tree_size, compliance._tree_fold_right(d.tree_frontier), 'the drainer''s tree head (drainer_state)'
      FROM compliance.drainer_state AS d
    UNION ALL
    SELECT r.tree_size, r.root,
           pg_catalog.format('the %s of anchor %s (seq_to %s, cadence_id %s)', r.what, a.anchor_id, a.seq_to,
                             a.cadence_id)
      FROM compliance.anchors AS a
     CROSS JOIN LATERAL (
           SELECT a.seq_to, a.tree_root, 'tree_root'
            UNION ALL
           SELECT c.tree_size, c.root, 'checkpoint'
             FROM compliance._checkpoint_tree(a.checkpoint) AS c
            UNION ALL
           SELECT c.tree_size, c.root, 'signed_checkpoint'
             FROM compliance._checkpoint_tree(a.signed_checkpoint) AS c
            WHERE a.signed_checkpoint IS NOT NULL
       ) AS r (tree_size, root, what)
     WHERE a.checkpoint IS NOT NULL OR a.tree_root IS NOT NULL OR a.signed_checkpoint IS NOT NULL;
$$;
COMMENT ON FUNCTION compliance._tree_recorded_roots() IS
'Internal: the recorded (tree_size, root) pairs verify_tree checks: the drainer''s head, and each anchor''s checkpoint.';

-- compliance.verify_tree(): recompute the Merkle tree from the stored events and compare
-- it with every stored node, the tree size the drainer keeps, every tenant tree's head
-- (_tenant_trees_check), the newest tenant heads commitment (_tenant_heads_check) and every
-- recorded root (_tree_recorded_roots). One row: ok, leaves_checked, and the first problem,
-- naming the node (level, index), the tenant or the recorded root.
-- Touches: audit_events, merkle_nodes, drainer_state, tenant_trees, tenant_tree_pending,
-- tenant_head_history (read).
CREATE OR REPLACE FUNCTION compliance.verify_tree()
RETURNS TABLE (ok boolean, leaves_checked bigint, problem text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state compliance.drainer_state%ROWTYPE;
    v_chunks bigint;
    v_bad record;
    v_extra bigint;
    v_tail bigint;
    v_recorded record;
    v_root bytea;
    v_problem text;
BEGIN
    SELECT * INTO STRICT v_state FROM compliance.drainer_state;
    v_chunks := v_state.tree_size / 256;
    IF v_state.tree_size <> v_state.last_seq THEN
        RETURN QUERY SELECT false, 0::bigint,
            pg_catalog.format('the tree holds %s leaves but the drainer chained %s events',
                              v_state.tree_size, v_state.last_seq);
        RETURN;
    END IF;
    SELECT * INTO v_bad FROM compliance._tree_check_chunks(0, v_chunks - 1) LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT false, v_bad.chunk * 256, v_bad.problem;
        RETURN;
    END IF;
    SELECT min(n.chunk) INTO v_extra FROM compliance.merkle_nodes AS n WHERE n.chunk >= v_chunks;
    IF v_extra IS NOT NULL THEN
        RETURN QUERY SELECT false, v_chunks * 256,
            pg_catalog.format('stored node level 8 index %s lies beyond the tree of %s leaves', v_extra, v_state.tree_size);
        RETURN;
    END IF;
    SELECT pg_catalog.count(*) INTO v_tail
      FROM compliance.audit_events AS e
     WHERE e.seq BETWEEN v_chunks * 256 + 1 AND v_state.tree_size;
    IF v_tail <> v_state.tree_size - v_chunks * 256 THEN
        RETURN QUERY SELECT false, v_chunks * 256,
            pg_catalog.format('events missing among seq %s to %s', v_chunks * 256 + 1, v_state.tree_size);
        RETURN;
    END IF;
    -- Every stored node now matches the events, so roots computed from them are the
    -- recomputed tree's roots.
    FOR v_recorded IN SELECT * FROM compliance._tree_recorded_roots() AS r ORDER BY r.tree_size NULLS FIRST, r.recorded_by LOOP
        IF v_recorded.tree_size IS NULL OR v_recorded.root IS NULL THEN
            RETURN QUERY SELECT false, v_state.tree_size,
                pg_catalog.format('%s is not a checkpoint of this log''s tree (origin, size or root missing or '
                                  'malformed)', v_recorded.recorded_by);
            RETURN;
        END IF;
        IF v_recorded.tree_size > v_state.tree_size THEN
            RETURN QUERY SELECT false, v_state.tree_size,
                pg_catalog.format('%s records a tree of %s leaves but the tree holds %s',
                                  v_recorded.recorded_by, v_recorded.tree_size, v_state.tree_size);
            RETURN;
        END IF;
        v_root := compliance._tree_range_hash(0, v_recorded.tree_size);
        IF v_recorded.root IS DISTINCT FROM v_root THEN
            RETURN QUERY SELECT false, v_state.tree_size,
                pg_catalog.format('root at tree size %s recorded by %s differs from the tree recomputed from the events',
                                  v_recorded.tree_size, v_recorded.recorded_by);
            RETURN;
        END IF;
    END LOOP;
    -- Then every tenant's head against its tree recomputed from its events (a changed event
    -- is named by the global tree first).
    v_problem := coalesce(compliance._tenant_trees_check(), compliance._tenant_heads_check());
    IF v_problem IS NOT NULL THEN
        RETURN QUERY SELECT false, v_state.tree_size, v_problem;
        RETURN;
    END IF;
    RETURN QUERY SELECT true, v_state.tree_size, NULL::text;
END;
$$;
COMMENT ON FUNCTION compliance.verify_tree() IS
'Recomputes the Merkle tree from the stored events and compares every stored node, the head and every recorded root; one row naming the first problem.';

-- Events chained before the tree existed (an upgrade from a version without it) enter it
-- now, in the same migrate run that created its tables.
SELECT compliance._tree_catch_up();
