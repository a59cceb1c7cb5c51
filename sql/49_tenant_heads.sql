-- The tree of tenant heads and its commitments into the global log (docs/proofs.md "Tenant
-- heads"): one leaf per tenant with events (tenant, tenant tree size, tenant root), in tenant
-- key byte order. commit_tenant_heads (pg_cron) commits the heads at the drainer's head by
-- emitting a compliance.tenant_heads event (payload: tree_size, tenants, root), which the
-- next signed checkpoint covers; the heads it committed are kept in tenant_head_history, so a proof
-- against any committed size can be given later.
SET LOCAL search_path = pg_catalog, pg_temp;

SELECT compliance._protect_table('compliance.tenant_head_history', true);

-- compliance._tenant_head_data(tenant_key, tree_size, root): leaf data of one tenant head in
-- the tree of tenant heads, as UTF-8 bytes then the 32-byte root:
-- "auditchain-tenant-head:v1\n<tenant>\n<tree_size>\n" || root, where <tenant> is "-" for the
-- events without a tenant and "<octets>:<id>" otherwise, as in the canonical record: no
-- tenant id can imitate another field, and the root has a fixed length at the end.
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance._tenant_head_data(tenant_key text, tree_size bigint, root bytea)
RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.convert_to(
    'auditchain-tenant-head:v1' || E'\n'
    || CASE WHEN tenant_key = '' THEN '-' ELSE pg_catalog.octet_length(tenant_key)::text || ':' || tenant_key END
    || E'\n' || tree_size::text || E'\n',
    'UTF8'
) || root;
COMMENT ON FUNCTION compliance._tenant_head_data(text, bigint, bytea) IS
'Internal: leaf data of a tenant head in the tree of tenant heads (tenant, tenant tree size, tenant root).';

-- compliance._tenant_head_leaves(heads_size): the leaf hashes of the tree of tenant heads in
-- tenant key byte order (the events without a tenant first), with the keys, sizes and roots
-- in the same order. heads_size NULL: the drainer's head, from the current heads
-- (_tenant_heads: one snapshot, the drainer records a batch's tenant leaves and the global
-- head in one transaction); otherwise a committed size, from each tenant's newest
-- tenant_head_history row at or below it.
-- Touches: tenant_trees, tenant_tree_pending, drainer_state, tenant_head_history (read).
CREATE OR REPLACE FUNCTION compliance._tenant_head_leaves(heads_size bigint)
RETURNS TABLE (tree_size bigint, tenant_keys text[], sizes bigint[], roots bytea[], leaves bytea[])
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH heads AS (
        SELECT t.tenant_key, t.tree_size, compliance._tree_fold_right(t.tree_frontier) AS root
          FROM compliance._tenant_heads(NULL) AS t
         WHERE _tenant_head_leaves.heads_size IS NULL
        UNION ALL
        SELECT h.tenant_key, h.tree_size, h.tree_root
          FROM compliance.tenant_trees AS t
         CROSS JOIN LATERAL (
               SELECT x.tenant_key, x.tree_size, x.tree_root
                 FROM compliance.tenant_head_history AS x
                WHERE x.tenant_key = t.tenant_key AND x.heads_size <= _tenant_head_leaves.heads_size
                ORDER BY x.heads_size DESC
                LIMIT 1
           ) AS h
         WHERE _tenant_head_leaves.heads_size IS NOT NULL
    )
    SELECT coalesce(_tenant_head_leaves.heads_size, (SELECT d.tree_size FROM compliance.drainer_state AS d)),
           coalesce(pg_catalog.array_agg(h.tenant_key ORDER BY h.tenant_key), '{}'),
           coalesce(pg_catalog.array_agg(h.tree_size ORDER BY h.tenant_key), '{}'),
           coalesce(pg_catalog.array_agg(h.root ORDER BY h.tenant_key), '{}'),
           coalesce(pg_catalog.array_agg(
               compliance._tree_leaf(compliance._tenant_head_data(h.tenant_key, h.tree_size, h.root))
               ORDER BY h.tenant_key), '{}')
      FROM heads AS h;
$$;
COMMENT ON FUNCTION compliance._tenant_head_leaves(bigint) IS
'Internal: leaf hashes of the tree of tenant heads (and keys, sizes, roots) at the drainer''s head or a committed size.';

-- compliance._tenant_heads_size(heads_size): a caller's heads size (NULL: the drainer's head),
-- AC104 unless it is a committed size (one that a compliance.tenant_heads event names).
-- Touches: tenant_head_history (read).
CREATE OR REPLACE FUNCTION compliance._tenant_heads_size(heads_size bigint)
RETURNS bigint
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF heads_size IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM compliance.tenant_head_history AS h WHERE h.heads_size = _tenant_heads_size.heads_size) THEN
        RAISE EXCEPTION 'no tenant heads were committed at tree size %', heads_size
            USING ERRCODE = 'AC104',
                  HINT = 'The committed sizes are the tree_size of the compliance.tenant_heads events.';
    END IF;
    RETURN heads_size;
END;
$$;
COMMENT ON FUNCTION compliance._tenant_heads_size(bigint) IS
'Internal: a requested heads size, NULL meaning the drainer''s head; AC104 unless tenant heads were committed at it.';

-- compliance.tenant_heads_root(heads_size): the root of the RFC 6962 tree of every tenant's
-- head (leaves: _tenant_head_data of each tenant with events, in tenant id byte order, the
-- events without a tenant first), its leaf count and the global tree size it describes:
-- the drainer's head (heads_size NULL) or a committed size (AC104 otherwise).
-- Touches: tenant_trees, tenant_tree_pending, drainer_state, tenant_head_history (read).
CREATE OR REPLACE FUNCTION compliance.tenant_heads_root(heads_size bigint DEFAULT NULL)
RETURNS TABLE (tree_size bigint, tenants bigint, root bytea)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT h.tree_size, pg_catalog.cardinality(h.leaves)::bigint, compliance._tree_fold(h.leaves)
      FROM compliance._tenant_head_leaves(compliance._tenant_heads_size(tenant_heads_root.heads_size)) AS h;
$$;
COMMENT ON FUNCTION compliance.tenant_heads_root(bigint) IS
'Root of the tree of tenant heads (tenant, size, root; tenant id byte order) at the drainer''s head or a committed size, '
'with its leaf count and global size.';

-- compliance.tenant_head_proof(tenant_id, heads_size): one tenant's head (tenant tree size and
-- root) at the drainer's head (heads_size NULL) or at a committed size, its index among the
-- tenant heads and the RFC 9162 inclusion proof of its leaf in the tree of tenant heads, whose
-- root, leaf count and global tree size come with it: O(log tenants) hashes. AC100 for a bad
-- tenant id, AC103 for a tenant without chained events at that size, AC104 for a size at which
-- no heads were committed.
-- Touches: tenant_trees, tenant_tree_pending, drainer_state, tenant_head_history (read).
CREATE OR REPLACE FUNCTION compliance.tenant_head_proof(tenant_id text, heads_size bigint DEFAULT NULL)
RETURNS TABLE (
    tree_size bigint, tenants bigint, heads_root bytea, head_index bigint, tenant_tree_size bigint,
    tenant_root bytea, proof bytea[]
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key text := compliance._tenant_key(tenant_head_proof.tenant_id);
    v_heads record;
    v_position integer;
BEGIN
    SELECT * INTO STRICT v_heads
      FROM compliance._tenant_head_leaves(compliance._tenant_heads_size(tenant_head_proof.heads_size));
    v_position := pg_catalog.array_position(v_heads.tenant_keys, v_key);
    IF v_position IS NULL THEN
        RAISE EXCEPTION 'tenant % has no chained event among the first % events',
            coalesce(pg_catalog.quote_literal(tenant_head_proof.tenant_id), 'NULL'), v_heads.tree_size
            USING ERRCODE = 'AC103';
    END IF;
    RETURN QUERY SELECT v_heads.tree_size, pg_catalog.cardinality(v_heads.leaves)::bigint,
                        compliance._tree_fold(v_heads.leaves), v_position::bigint - 1, v_heads.sizes[v_position],
                        v_heads.roots[v_position],
                        compliance._tree_inclusion_path(v_position - 1, pg_catalog.cardinality(v_heads.leaves), 0,
                                                        v_heads.leaves, 0, '{}');
END;
$$;
COMMENT ON FUNCTION compliance.tenant_head_proof(text, bigint) IS
'A tenant''s head at the drainer''s head or a committed size, its index among the tenant heads and its inclusion proof '
'in the tree of tenant heads (with that root).';

-- compliance.commit_tenant_heads(): (pg_cron, every 15 minutes between two anchors) record
-- the tenant heads at the drainer's head N in tenant_head_history (the tenants whose tree grew
-- since their previous row) and queue a compliance.tenant_heads event (tenant NULL, payload
-- tree_size N, tenants, root) for the drainer to chain, so the next anchor's checkpoint
-- covers it. Nothing when the log is empty, when nothing but the previous commitment was
-- chained since it, or while that commitment still waits in the outbox (no second one queues
-- behind it), so a second run is a no-op. Returns the event's id or NULL; XX001 (the job
-- fails, and its alarm fires) when the tenant trees do not cover the log exactly. Folds the
-- pending batches into the stored heads first (_tenant_trees_fold), even when it commits
-- nothing. Touches: drainer_state (read, FOR SHARE), tenant_trees, tenant_tree_pending (as
-- _tenant_trees_fold), audit_events (read), tenant_head_history, audit_outbox (INSERT).
CREATE OR REPLACE FUNCTION compliance.commit_tenant_heads()
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_size bigint;
    v_covered bigint;
    v_last_committed bigint;
    v_last_chained bigint;
    v_heads record;
    v_event_id uuid;
BEGIN
    -- One committer at a time (create_anchor's lock).
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('auditchain.anchor')::bigint);
    -- The drained batches enter the stored heads here, once per commitment rather than once
    -- per batch; the fold holds the drainer's lock to the end of the transaction.
    PERFORM compliance._tenant_trees_fold();
    SELECT d.tree_size INTO STRICT v_size FROM compliance.drainer_state AS d FOR SHARE;
    SELECT pg_catalog.max(h.heads_size) INTO v_last_committed FROM compliance.tenant_head_history AS h;
    SELECT pg_catalog.max(e.seq) INTO v_last_chained
      FROM compliance.audit_events AS e
     WHERE e.event_type = 'compliance.tenant_heads';
    -- The last commitment is chained once its seq passed the size it committed.
    IF v_size = 0 OR v_size <= coalesce(v_last_chained, 0)
       OR coalesce(v_last_chained, 0) <= coalesce(v_last_committed, 0) AND v_last_committed IS NOT NULL THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(pg_catalog.sum(t.tree_size), 0) INTO v_covered FROM compliance.tenant_trees AS t;
    IF v_covered <> v_size THEN
        -- Never commit heads that disagree with the log; failing the job raises the cron alarm
        -- (anchors are a job of their own and go on).
        RAISE EXCEPTION 'tenant heads not committed: the tenant trees cover % events, the log has %', v_covered, v_size
            USING ERRCODE = 'XX001', HINT = 'Run compliance.verify_tree(); see docs/runbook.md "pg_cron jobs failing or missing".';
    END IF;

    INSERT INTO compliance.tenant_head_history (tenant_key, heads_size, tree_size, tree_root)
    SELECT t.tenant_key, v_size, t.tree_size, compliance._tree_fold_right(t.tree_frontier)
      FROM compliance.tenant_trees AS t
     WHERE t.tree_size > coalesce((
               SELECT h.tree_size
                 FROM compliance.tenant_head_history AS h
                WHERE h.tenant_key = t.tenant_key
                ORDER BY h.heads_size DESC
                LIMIT 1
           ), 0);
    SELECT * INTO STRICT v_heads FROM compliance._tenant_head_leaves(v_size);

    v_event_id := compliance._uuidv7();
    INSERT INTO compliance.audit_outbox (event_id, occurred_at, tenant_id, event_type, actor, payload)
    VALUES (v_event_id, pg_catalog.now(), NULL, 'compliance.tenant_heads', 'compliance.commit_tenant_heads',
            pg_catalog.jsonb_build_object(
                'tree_size', v_size,
                'tenants', pg_catalog.cardinality(v_heads.leaves),
                'root', pg_catalog.encode(compliance._tree_fold(v_heads.leaves), 'hex')
            ));
    RETURN v_event_id;
END;
$$;
COMMENT ON FUNCTION compliance.commit_tenant_heads() IS
'pg_cron, every 15 minutes: records the tenant heads at the drainer''s head and queues a compliance.tenant_heads event '
'committing them; returns its event_id, or NULL when there is nothing new.';

-- compliance._tenant_heads_commitment(tree_size): the newest compliance.tenant_heads event
-- among the first tree_size events (the one a checkpoint of that size covers), or no row.
-- Touches: audit_events (read, through its partial index).
CREATE OR REPLACE FUNCTION compliance._tenant_heads_commitment(tree_size bigint)
RETURNS SETOF compliance.audit_events
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.*
      FROM compliance.audit_events AS e
     WHERE e.event_type = 'compliance.tenant_heads' AND e.seq <= _tenant_heads_commitment.tree_size
     ORDER BY e.seq DESC
     LIMIT 1;
$$;
COMMENT ON FUNCTION compliance._tenant_heads_commitment(bigint) IS
'Internal: the newest compliance.tenant_heads event among the first tree_size events.';

-- compliance._tenant_heads_check(): the newest chained commitment against the heads recorded
-- for its size: its payload must name that size, the number of heads and their root. The
-- first problem, or NULL. Used by verify_tree. Touches: audit_events, tenant_head_history,
-- tenant_trees (read).
CREATE OR REPLACE FUNCTION compliance._tenant_heads_check()
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_commitment compliance.audit_events%ROWTYPE;
    v_size bigint;
    v_heads record;
BEGIN
    SELECT * INTO v_commitment FROM compliance._tenant_heads_commitment(9223372036854775807);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_size := (v_commitment.payload ->> 'tree_size')::bigint;
    IF v_size IS NULL OR v_size >= v_commitment.seq
       OR NOT EXISTS (SELECT 1 FROM compliance.tenant_head_history AS h WHERE h.heads_size = v_size) THEN
        RETURN pg_catalog.format('the tenant heads commitment at seq %s names size %s, at which no heads were recorded',
                                 v_commitment.seq, coalesce(v_size::text, 'NULL'));
    END IF;
    SELECT * INTO STRICT v_heads FROM compliance._tenant_head_leaves(v_size);
    IF (v_commitment.payload ->> 'tenants')::bigint IS DISTINCT FROM pg_catalog.cardinality(v_heads.leaves)
       OR v_commitment.payload ->> 'root' IS DISTINCT FROM pg_catalog.encode(compliance._tree_fold(v_heads.leaves), 'hex') THEN
        RETURN pg_catalog.format('the tenant heads commitment at seq %s differs from the heads recorded at size %s',
                                 v_commitment.seq, v_size);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION compliance._tenant_heads_check() IS
'Internal: the newest tenant heads commitment against the heads recorded for its size; the problem or NULL.';

-- compliance._tree_compact_range(leaf_hashes): the compact range of the tree over these leaf
-- hashes: the roots of its perfect subtrees from the left, one per set bit of its size,
-- largest first. What a verifier extends with later leaves to recompute a later root.
-- Touches no table.
CREATE OR REPLACE FUNCTION compliance._tree_compact_range(leaf_hashes bytea[])
RETURNS bytea[]
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_size bigint := coalesce(pg_catalog.cardinality(leaf_hashes), 0);
    v_start bigint := 1;
    v_width bigint;
    v_range bytea[] := '{}';
BEGIN
    FOR v_bit IN REVERSE 62..0 LOOP
        v_width := 1::bigint << v_bit;
        IF (v_size & v_width) <> 0 THEN
            v_range := v_range || compliance._tree_fold(leaf_hashes[v_start:v_start + v_width - 1]);
            v_start := v_start + v_width;
        END IF;
    END LOOP;
    RETURN v_range;
END;
$$;
COMMENT ON FUNCTION compliance._tree_compact_range(bytea[]) IS
'Internal: the compact range (roots of the perfect subtrees, largest first) of the tree over these leaf hashes.';
