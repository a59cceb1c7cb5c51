-- Per-tenant Merkle trees (docs/proofs.md "Tenant trees"): beside the global tree, one RFC
-- 6962 tree per tenant, the events without a tenant forming a tenant of their own (key ''),
-- whose leaf i is the record digest of the tenant's (i+1)-th event in seq order. Each
-- tenant's head is a compact range (tenant_trees); the drainer leaves each batch's tenant keys
-- and leaf hashes in tenant_tree_pending, in its own transaction, and _tenant_trees_fold
-- appends them to the heads once per tenant-heads commitment. Readers see the stored heads
-- extended by the pending leaves (_tenant_heads). A root at an older size and every proof are
-- recomputed from the tenant's events, which the (tenant_id, seq) index lists in order. The
-- hashing is sql/47_merkle.sql's.
SET LOCAL search_path = pg_catalog, pg_temp;

-- Before the drainer hashed each leaf once for both trees, _tree_push took record digests and
-- _tenant_tree_append re-read each event's tenant by seq; CREATE OR REPLACE cannot rename a
-- parameter, and the old _tenant_tree_append would linger beside the new one.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_proc AS p
                WHERE p.oid = pg_catalog.to_regprocedure('compliance._tree_push(bytea[], bigint, bytea[])')
                  AND 'record_digests' = ANY(p.proargnames)) THEN
        DROP FUNCTION compliance._tree_push(bytea[], bigint, bytea[]);
    END IF;
    IF pg_catalog.to_regprocedure('compliance._tenant_tree_append(bigint, bytea[])') IS NOT NULL THEN
        DROP FUNCTION compliance._tenant_tree_append(bigint, bytea[]);
    END IF;
END;
$$;

-- compliance._tree_push(frontier, size, leaf_hashes): the compact range of a tree of size
-- leaves (frontier) after appending the given leaf hashes. Called once per tenant per batch:
-- without a SET clause (which costs a configuration save and restore per call; every name
-- inside is qualified), so the drain pays little per tenant. Touches no table.
CREATE OR REPLACE FUNCTION compliance._tree_push(frontier bytea[], size bigint, leaf_hashes bytea[])
RETURNS bytea[]
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
AS $$
DECLARE
    v_stack bytea[] := frontier;
    v_top integer := pg_catalog.cardinality(frontier);
    v_size bigint := size;
    v_bits bigint;
    v_hash bytea;
BEGIN
    -- Each leaf merges once per trailing 1 bit of the size before it (as _tree_append); the
    -- stack is indexed in place so the array is never copied.
    FOREACH v_hash IN ARRAY leaf_hashes LOOP
        v_bits := v_size;
        WHILE (v_bits & 1) = 1 LOOP
            v_hash := compliance._tree_node(v_stack[v_top], v_hash);
            v_top := v_top - 1;
            v_bits := v_bits >> 1;
        END LOOP;
        v_top := v_top + 1;
        v_stack[v_top] := v_hash;
        v_size := v_size + 1;
    END LOOP;
    RETURN v_stack[1:v_top];
END;
$$;
COMMENT ON FUNCTION compliance._tree_push(bytea[], bigint, bytea[]) IS
'Internal: the compact range of a tree of size leaves after appending the given leaf hashes.';

-- compliance._tenant_tree_append(tenant_keys, leaf_hashes): extend each tenant's stored head
-- by its leaves among the given ones (events in seq order, following those the heads cover:
-- tenant_keys[i] is the tenant key of the event whose leaf hash is leaf_hashes[i]): one
-- statement whatever the number of tenants, one row written per tenant among them. Called by
-- _tenant_trees_fold with the pending batches, by _tenant_trees_catch_up with leaves
-- recomputed from the events. Touches: tenant_trees (UPDATE, INSERT).
CREATE OR REPLACE FUNCTION compliance._tenant_tree_append(tenant_keys text[], leaf_hashes bytea[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH batch AS (
        SELECT u.tenant_key COLLATE "C" AS tenant_key, pg_catalog.array_agg(u.leaf ORDER BY u.n) AS leaves
          FROM unnest(tenant_keys, leaf_hashes) WITH ORDINALITY AS u (tenant_key, leaf, n)
         GROUP BY 1
    ), grown AS (
        UPDATE compliance.tenant_trees AS t
           SET tree_size = t.tree_size + pg_catalog.cardinality(b.leaves),
               tree_frontier = compliance._tree_push(t.tree_frontier, t.tree_size, b.leaves)
          FROM batch AS b
         WHERE t.tenant_key = b.tenant_key
        RETURNING t.tenant_key
    )
    INSERT INTO compliance.tenant_trees (tenant_key, tree_size, tree_frontier)
    SELECT b.tenant_key, pg_catalog.cardinality(b.leaves), compliance._tree_push('{}', 0, b.leaves)
      FROM batch AS b
     WHERE b.tenant_key NOT IN (SELECT g.tenant_key FROM grown AS g);
$$;
COMMENT ON FUNCTION compliance._tenant_tree_append(text[], bytea[]) IS
'Internal: appends each leaf hash to the stored head of the tenant key at the same position.';

-- compliance._tenant_tree_pending_gap(): the first_seq of the first pending batch that does
-- not continue the stored heads (the heads cover the first sum(tree_size) events, each batch
-- continues the one before), or NULL when every batch does. Touches: tenant_trees,
-- tenant_tree_pending (read).
CREATE OR REPLACE FUNCTION compliance._tenant_tree_pending_gap()
RETURNS bigint
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.min(g.first_seq)
      FROM (SELECT p.first_seq,
                   (SELECT coalesce(pg_catalog.sum(t.tree_size), 0) FROM compliance.tenant_trees AS t) + 1
                   + coalesce(pg_catalog.sum(pg_catalog.cardinality(p.leaf_hashes))
                                  OVER (ORDER BY p.first_seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                   AS expected
              FROM compliance.tenant_tree_pending AS p) AS g
     WHERE g.first_seq <> g.expected;
$$;
COMMENT ON FUNCTION compliance._tenant_tree_pending_gap() IS
'Internal: first_seq of the first pending batch that does not continue the stored tenant heads, or NULL.';

-- compliance._tenant_trees_fold(): append the pending batches to the stored heads in seq
-- order and delete them, under the drainer's lock so that no batch commits meanwhile: one
-- _tenant_tree_append per 262,144 events or so (grouped by tenant: one row written per tenant
-- with events among them), so that the memory a fold needs stays bounded however long the
-- drainer ran since the last one. A batch after a gap (see _tenant_tree_pending_gap) stays:
-- the heads then fail to cover the log, which commit_tenant_heads and verify_tree report, and
-- _tenant_trees_catch_up repairs. Returns the leaves folded.
-- Touches: tenant_tree_pending (DELETE), tenant_trees, as _tenant_tree_append.
CREATE OR REPLACE FUNCTION compliance._tenant_trees_fold()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_chunk CONSTANT bigint := 262144;
    v_gap bigint;
    v_from bigint;
    v_end bigint;
    v_keys text[];
    v_leaves bytea[];
    v_folded bigint := 0;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('auditchain.drainer')::bigint);
    v_gap := coalesce(compliance._tenant_tree_pending_gap(), 9223372036854775807);
    SELECT pg_catalog.min(p.first_seq), pg_catalog.max(p.first_seq) + 1 INTO v_from, v_end
      FROM compliance.tenant_tree_pending AS p
     WHERE p.first_seq < v_gap;
    -- Batches continue one another, so a range of first_seq holds about a range of events.
    WHILE v_from < v_end LOOP
        WITH folded AS (
            DELETE FROM compliance.tenant_tree_pending AS p
             WHERE p.first_seq >= v_from AND p.first_seq < least(v_from + v_chunk, v_end)
            RETURNING p.first_seq, p.tenant_keys, p.leaf_hashes
        )
        SELECT pg_catalog.array_agg(u.tenant_key ORDER BY f.first_seq, u.n),
               pg_catalog.array_agg(u.leaf ORDER BY f.first_seq, u.n)
          INTO v_keys, v_leaves
          FROM folded AS f
         CROSS JOIN LATERAL unnest(f.tenant_keys, f.leaf_hashes) WITH ORDINALITY AS u (tenant_key, leaf, n);
        IF v_leaves IS NOT NULL THEN
            PERFORM compliance._tenant_tree_append(v_keys, v_leaves);
            v_folded := v_folded + pg_catalog.cardinality(v_leaves);
        END IF;
        v_from := v_from + v_chunk;
    END LOOP;
    RETURN v_folded;
END;
$$;
COMMENT ON FUNCTION compliance._tenant_trees_fold() IS
'Internal: appends the pending drained batches to the stored tenant heads, in seq order, and deletes them.';

-- compliance._tenant_trees_catch_up(): fold the pending batches, then add to the stored heads
-- every event of the global tree they do not cover yet (events chained before the tenant
-- trees existed, accepted by acknowledge_integrity_failure, or after a gap among the pending
-- batches, which are dropped: their leaves are recomputed here from the stored events), under
-- the drainer's lock. Returns the leaves added from the events. Touches: tenant_trees,
-- tenant_tree_pending (DELETE), audit_events, drainer_state (read).
CREATE OR REPLACE FUNCTION compliance._tenant_trees_catch_up()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch CONSTANT bigint := 65536;
    v_covered bigint;
    v_last bigint;
    v_from bigint;
    v_to bigint;
    v_keys text[];
    v_leaves bytea[];
BEGIN
    PERFORM compliance._tenant_trees_fold();
    DELETE FROM compliance.tenant_tree_pending;
    SELECT coalesce(pg_catalog.sum(t.tree_size), 0) INTO v_covered FROM compliance.tenant_trees AS t;
    SELECT d.tree_size INTO STRICT v_last FROM compliance.drainer_state AS d;
    v_from := v_covered + 1;
    WHILE v_from <= v_last LOOP
        v_to := least(v_from + v_batch - 1, v_last);
        SELECT pg_catalog.array_agg(coalesce(e.tenant_id, '') ORDER BY e.seq),
               pg_catalog.array_agg(compliance._tree_leaf(pg_catalog.sha256(compliance._row_record(e))) ORDER BY e.seq)
          INTO v_keys, v_leaves
          FROM compliance.audit_events AS e
         WHERE e.seq BETWEEN v_from AND v_to;
        IF coalesce(pg_catalog.cardinality(v_leaves), 0) <> v_to - v_from + 1 THEN
            RAISE EXCEPTION 'cannot build the tenant trees: events missing among seq % to %', v_from, v_to
                USING ERRCODE = 'XX001', HINT = 'Run compliance.verify_chain().';
        END IF;
        PERFORM compliance._tenant_tree_append(v_keys, v_leaves);
        v_from := v_to + 1;
    END LOOP;
    RETURN v_from - 1 - v_covered;
END;
$$;
COMMENT ON FUNCTION compliance._tenant_trees_catch_up() IS
'Internal: (migrate) folds the pending batches and adds to the tenant trees every event of the global tree they do not '
'cover yet.';

-- compliance._tenant_key(tenant_id): the tenant_trees key of a caller's tenant id ('' for
-- NULL, the events without a tenant), raising AC100 for a string that cannot be a tenant id
-- (emit's rule: 1-128 characters without control characters). Touches no table.
CREATE OR REPLACE FUNCTION compliance._tenant_key(tenant_id text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tenant_id IS NULL THEN
        RETURN '';
    END IF;
    IF pg_catalog.length(tenant_id) NOT BETWEEN 1 AND 128 OR tenant_id ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid tenant_id: 1-128 characters without control characters, or NULL'
            USING ERRCODE = 'AC100';
    END IF;
    RETURN tenant_id;
END;
$$;
COMMENT ON FUNCTION compliance._tenant_key(text) IS
'Internal: tenant_trees key of a tenant id ('''' for NULL); AC100 when it cannot be a tenant id.';

-- compliance._tenant_leaves(tenant_key, max_leaves): the leaf hashes of the tenant's first
-- max_leaves events in seq order, recomputed from their columns (one index range scan).
-- Touches: audit_events (read).
CREATE OR REPLACE FUNCTION compliance._tenant_leaves(tenant_key text, max_leaves bigint)
RETURNS bytea[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Two queries rather than IS NOT DISTINCT FROM, which no index serves.
    IF tenant_key = '' THEN
        RETURN ARRAY(SELECT compliance._tree_leaf(pg_catalog.sha256(compliance._row_record(e)))
                       FROM compliance.audit_events AS e
                      WHERE e.tenant_id IS NULL
                      ORDER BY e.seq
                      LIMIT max_leaves);
    END IF;
    RETURN ARRAY(SELECT compliance._tree_leaf(pg_catalog.sha256(compliance._row_record(e)))
                   FROM compliance.audit_events AS e
                  WHERE e.tenant_id = tenant_key
                  ORDER BY e.seq
                  LIMIT max_leaves);
END;
$$;
COMMENT ON FUNCTION compliance._tenant_leaves(text, bigint) IS
'Internal: leaf hashes of a tenant''s first max_leaves events, recomputed from the stored events in seq order.';

-- compliance._tenant_heads(tenant): the current head (size and compact range) of one tenant
-- key's tree, or of every tenant's with events when tenant is NULL: the stored head extended
-- by the tenant's pending leaves in seq order, computed without writing (a fold would give
-- the same). Touches: tenant_trees, tenant_tree_pending (read).
CREATE OR REPLACE FUNCTION compliance._tenant_heads(tenant text)
RETURNS TABLE (tenant_key text, tree_size bigint, tree_frontier bytea[])
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH stored AS (
        SELECT t.tenant_key, t.tree_size, t.tree_frontier
          FROM compliance.tenant_trees AS t
         WHERE _tenant_heads.tenant IS NULL OR t.tenant_key = _tenant_heads.tenant
    ), pending AS (
        SELECT u.tenant_key COLLATE "C" AS tenant_key, pg_catalog.array_agg(u.leaf ORDER BY p.first_seq, u.n) AS leaves
          FROM compliance.tenant_tree_pending AS p
         CROSS JOIN LATERAL unnest(p.tenant_keys, p.leaf_hashes) WITH ORDINALITY AS u (tenant_key, leaf, n)
         WHERE _tenant_heads.tenant IS NULL OR u.tenant_key = _tenant_heads.tenant
         GROUP BY 1
    )
    SELECT coalesce(s.tenant_key, p.tenant_key),
           coalesce(s.tree_size, 0) + coalesce(pg_catalog.cardinality(p.leaves), 0),
           CASE WHEN p.leaves IS NULL THEN s.tree_frontier
                ELSE compliance._tree_push(coalesce(s.tree_frontier, '{}'), coalesce(s.tree_size, 0), p.leaves) END
      FROM stored AS s
      FULL JOIN pending AS p ON p.tenant_key = s.tenant_key;
$$;
COMMENT ON FUNCTION compliance._tenant_heads(text) IS
'Internal: current head (stored head extended by the pending leaves) of one tenant key''s tree, or of every tenant''s '
'when NULL.';

-- compliance._tenant_head(tenant_key): the tenant tree's current head (size and compact
-- range, see _tenant_heads); size 0 and no hash for a tenant without events.
-- Touches: tenant_trees, tenant_tree_pending (read).
CREATE OR REPLACE FUNCTION compliance._tenant_head(tenant_key text)
RETURNS TABLE (tree_size bigint, tree_frontier bytea[])
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(pg_catalog.max(h.tree_size), 0), coalesce(pg_catalog.max(h.tree_frontier), '{}')
      FROM compliance._tenant_heads(_tenant_head.tenant_key) AS h;
$$;
COMMENT ON FUNCTION compliance._tenant_head(text) IS
'Internal: size and compact range of a tenant tree''s current head; 0 and none for a tenant without events.';

-- compliance._tenant_tree_size(head_size, tree_size): a caller's tenant tree size (NULL: the
-- head), AC101 when negative or beyond the tenant's chained events. Touches no table.
CREATE OR REPLACE FUNCTION compliance._tenant_tree_size(head_size bigint, tree_size bigint)
RETURNS bigint
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tree_size IS NULL THEN
        RETURN head_size;
    END IF;
    IF tree_size < 0 OR tree_size > head_size THEN
        RAISE EXCEPTION 'tenant tree size % is out of range: the tenant has % chained events', tree_size, head_size
            USING ERRCODE = 'AC101';
    END IF;
    RETURN tree_size;
END;
$$;
COMMENT ON FUNCTION compliance._tenant_tree_size(bigint, bigint) IS
'Internal: a requested tenant tree size, NULL meaning the head; AC101 when negative or beyond the tenant''s events.';

-- compliance.tenant_tree_root(tenant_id, tree_size): the RFC 6962 root of the tree of the
-- tenant's first tree_size events (tenant_id NULL: the events without a tenant; tree_size
-- NULL: all its chained events; 0: SHA-256 of nothing). The head's root comes from the
-- compact range, an older one is recomputed from the tenant's events. AC100 for a string
-- that cannot be a tenant id, AC101 for a bad size.
-- Touches: tenant_trees, tenant_tree_pending, audit_events (read).
CREATE OR REPLACE FUNCTION compliance.tenant_tree_root(tenant_id text, tree_size bigint DEFAULT NULL)
RETURNS bytea
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key text := compliance._tenant_key(tenant_tree_root.tenant_id);
    v_head record;
    v_size bigint;
BEGIN
    SELECT * INTO STRICT v_head FROM compliance._tenant_head(v_key);
    v_size := compliance._tenant_tree_size(v_head.tree_size, tenant_tree_root.tree_size);
    IF v_size = v_head.tree_size THEN
        RETURN compliance._tree_fold_right(v_head.tree_frontier);
    END IF;
    RETURN compliance._tree_fold(compliance._tenant_leaves(v_key, v_size));
END;
$$;
COMMENT ON FUNCTION compliance.tenant_tree_root(text, bigint) IS
'RFC 6962 root of a tenant''s tree over its first tree_size events (tenant_id NULL: events without a tenant; tree_size NULL: all).';

-- compliance.tenant_inclusion_proof(seq, tree_size): the RFC 9162 inclusion proof of event
-- seq in its tenant's tree of tree_size leaves (NULL: all the tenant's chained events), leaf
-- to root, with the tenant and the event's leaf index in that tree. AC101 for a bad tree
-- size, AC102 when seq is not a chained event or lies beyond tree_size.
-- Touches: audit_events, tenant_trees, tenant_tree_pending (read).
CREATE OR REPLACE FUNCTION compliance.tenant_inclusion_proof(seq bigint, tree_size bigint DEFAULT NULL)
RETURNS TABLE (tenant_id text, leaf_index bigint, tenant_tree_size bigint, proof bytea[])
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tenant text;
    v_key text;
    v_head record;
    v_size bigint;
    v_index bigint;
    v_leaves bytea[];
BEGIN
    SELECT e.tenant_id INTO v_tenant
      FROM compliance.audit_events AS e, compliance.drainer_state AS d
     WHERE e.seq = tenant_inclusion_proof.seq AND e.seq <= d.tree_size;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'seq % is not a chained event', coalesce(tenant_inclusion_proof.seq::text, 'NULL')
            USING ERRCODE = 'AC102';
    END IF;
    v_key := coalesce(v_tenant, '');
    SELECT * INTO STRICT v_head FROM compliance._tenant_head(v_key);
    v_size := compliance._tenant_tree_size(v_head.tree_size, tenant_inclusion_proof.tree_size);
    v_leaves := compliance._tenant_leaves(v_key, v_size);
    IF v_tenant IS NULL THEN
        SELECT pg_catalog.count(*) INTO v_index
          FROM compliance.audit_events AS e
         WHERE e.tenant_id IS NULL AND e.seq < tenant_inclusion_proof.seq;
    ELSE
        SELECT pg_catalog.count(*) INTO v_index
          FROM compliance.audit_events AS e
         WHERE e.tenant_id = v_tenant AND e.seq < tenant_inclusion_proof.seq;
    END IF;
    IF v_index >= v_size THEN
        RAISE EXCEPTION 'seq % is leaf % of its tenant''s tree, beyond tree size %', tenant_inclusion_proof.seq,
            v_index, v_size
            USING ERRCODE = 'AC102';
    END IF;
    -- Every leaf is in hand: _tree_proof_hash folds each sibling from them.
    RETURN QUERY SELECT v_tenant, v_index, v_size,
                        compliance._tree_inclusion_path(v_index, v_size, 0, v_leaves, 0, '{}');
END;
$$;
COMMENT ON FUNCTION compliance.tenant_inclusion_proof(bigint, bigint) IS
'RFC 9162 inclusion proof (leaf to root) of event seq in its tenant''s tree of tree_size leaves (NULL: all), with the tenant and leaf index.';

-- compliance.tenant_consistency_proof(tenant_id, size1, size2): the RFC 9162 consistency
-- proof that the tenant's tree of size1 events is a prefix of its tree of size2 (NULL: all
-- its chained events). Empty when size1 = size2. AC100 for a bad tenant id, AC101 for a bad
-- size, and as consistency_proof AC072 for size1 = 0 and AC073 when size1 > size2.
-- Touches: tenant_trees, tenant_tree_pending, audit_events (read).
CREATE OR REPLACE FUNCTION compliance.tenant_consistency_proof(tenant_id text, size1 bigint, size2 bigint DEFAULT NULL)
RETURNS bytea[]
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key text := compliance._tenant_key(tenant_consistency_proof.tenant_id);
    v_head record;
    v_size2 bigint;
BEGIN
    SELECT * INTO STRICT v_head FROM compliance._tenant_head(v_key);
    v_size2 := compliance._tenant_tree_size(v_head.tree_size, tenant_consistency_proof.size2);
    IF size1 IS NULL OR size1 < 0 THEN
        RAISE EXCEPTION 'size1 % is not a tree size', coalesce(size1::text, 'NULL') USING ERRCODE = 'AC101';
    END IF;
    IF size1 = 0 THEN
        RAISE EXCEPTION 'a consistency proof from the empty tree is meaningless' USING ERRCODE = 'AC072';
    END IF;
    IF size1 > v_size2 THEN
        RAISE EXCEPTION 'size1 % is larger than size2 %', size1, v_size2 USING ERRCODE = 'AC073';
    END IF;
    RETURN compliance._tree_consistency_path(size1, v_size2, 0, compliance._tenant_leaves(v_key, v_size2), 0, '{}');
END;
$$;
COMMENT ON FUNCTION compliance.tenant_consistency_proof(text, bigint, bigint) IS
'RFC 9162 consistency proof between a tenant''s trees of size1 and size2 events (size2 NULL: all its chained events).';

-- compliance._tenant_trees_check(): recompute every tenant's tree from the stored events and
-- compare it with its current head (stored head and pending leaves); the first problem,
-- naming the tenant, or NULL. So the heads together cover exactly the global tree; then
-- checks that the pending batches continue the stored heads. Used by verify_tree.
-- Touches: audit_events, tenant_trees, tenant_tree_pending, drainer_state (read).
CREATE OR REPLACE FUNCTION compliance._tenant_trees_check()
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tree_size bigint;
    v_gap bigint := compliance._tenant_tree_pending_gap();
    v_tenant record;
    v_leaves bytea[];
BEGIN
    SELECT d.tree_size INTO STRICT v_tree_size FROM compliance.drainer_state AS d;
    FOR v_tenant IN
        SELECT coalesce(c.tenant_key, t.tenant_key) AS tenant_key, coalesce(c.events, 0) AS events,
               coalesce(t.tree_size, 0) AS tree_size, t.tree_frontier
          FROM (SELECT coalesce(e.tenant_id, '') COLLATE "C" AS tenant_key, pg_catalog.count(*) AS events
                  FROM compliance.audit_events AS e
                 WHERE e.seq <= v_tree_size
                 GROUP BY 1) AS c
          FULL JOIN compliance._tenant_heads(NULL) AS t ON t.tenant_key = c.tenant_key
         ORDER BY 1
    LOOP
        IF v_tenant.events <> v_tenant.tree_size THEN
            RETURN pg_catalog.format('the tree of tenant %s holds %s leaves but the tenant has %s events in the tree',
                                     CASE WHEN v_tenant.tenant_key = '' THEN '(none)'
                                          ELSE pg_catalog.quote_literal(v_tenant.tenant_key) END,
                                     v_tenant.tree_size, v_tenant.events);
        END IF;
        v_leaves := compliance._tenant_leaves(v_tenant.tenant_key, v_tenant.tree_size);
        IF compliance._tree_fold(v_leaves) IS DISTINCT FROM compliance._tree_fold_right(v_tenant.tree_frontier)
           OR pg_catalog.cardinality(v_tenant.tree_frontier)
              <> pg_catalog.bit_count(v_tenant.tree_size::bit(64)) THEN
            RETURN pg_catalog.format('the stored head of tenant %s differs from its tree recomputed from the events',
                                     CASE WHEN v_tenant.tenant_key = '' THEN '(none)'
                                          ELSE pg_catalog.quote_literal(v_tenant.tenant_key) END);
        END IF;
    END LOOP;
    -- Right heads, but batches the fold would stop at.
    IF v_gap IS NOT NULL THEN
        RETURN pg_catalog.format('the pending tenant tree batch at seq %s does not continue the tenant heads', v_gap);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION compliance._tenant_trees_check() IS
'Internal: the first tenant tree whose current head differs from the tree recomputed from the events, or NULL.';

-- Events chained before the tenant trees existed enter them now, in the same migrate run
-- that created their table.
SELECT compliance._tenant_trees_catch_up();
