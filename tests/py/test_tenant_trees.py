"""The per-tenant Merkle trees the drainer maintains, checked against the independent RFC 9162
reference of test_merkle_tree (hashlib only): events of skewed tenants (and without a tenant)
are drained in batches of odd sizes; each tenant's root at every size, inclusion proofs of its
events and consistency proofs between its sizes must equal the RFC's definitions over that
tenant's record digests in seq order, and verify with the RFC's algorithms.
"""

from __future__ import annotations

import random

import psycopg
import pytest

from auditchain.cli import main
from auditchain.errors import EXIT_OK
from auditchain.formats import hashing
from schemacopy import copy_schema
from test_merkle_tree import EVENTS, Tree, consistent, root_from_inclusion

BATCHES = [1, 254, 3, 511, 700, 37, 300]  # 1,806 events in all
FOLDED = 4  # the heads hold the first 769 events, 1,037 are pending
# Tenant 't0' gets about half the events, 't2', 't4', 't6', 't8' the rest unevenly, every seventh event
# has no tenant, and one tenant id carries a multibyte character and a space.
EMIT_BATCH = """
SELECT compliance.emit('test.tenant', 'actor-' || g, jsonb_build_object('g', g, 'batch', %s::int),
                       CASE WHEN g %% 7 = 0 THEN NULL
                            WHEN g %% 2 = 0 THEN 't0'
                            WHEN g %% 11 = 1 THEN 'tenant é 9'
                            ELSE 't' || (g %% 8 + 1) END)
  FROM generate_series(1, %s) AS g
"""


@pytest.fixture
def drained(conn: psycopg.Connection) -> tuple[psycopg.Connection, dict[str | None, Tree]]:
    """A database whose drainer chained sum(BATCHES) events of several tenants, one committed
    drain() per batch, the first FOLDED batches folded into the stored tenant heads and the
    rest pending; returns the connection and each tenant's reference tree."""
    for number, size in enumerate(BATCHES):
        conn.execute(EMIT_BATCH, (number, size))
        assert conn.execute("SELECT compliance.drain(%s)", (size,)).fetchone()[0] == size
        if number + 1 == FOLDED:
            folded = conn.execute("SELECT compliance._tenant_trees_fold()").fetchone()[0]
            assert folded == sum(BATCHES[:FOLDED])
    leaves: dict[str | None, list[bytes]] = {}
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        for event in cur.execute(EVENTS):
            digest = hashing.record_digest(hashing.canonical_record(event))
            assert hashing.event_hash_from_digest(bytes(event["prev_hash"]), digest) == bytes(
                event["event_hash"]
            )
            leaves.setdefault(event["tenant_id"], []).append(digest)
    return conn, {tenant: Tree(digests) for tenant, digests in leaves.items()}


def test_every_tenant_head_matches_the_rfc_root_of_its_events(drained):
    """Before the fold the heads are read through the pending batches; the fold stores the
    same heads and leaves nothing pending."""
    conn, trees = drained
    assert len(trees) == 7 and None in trees
    for fold in (False, True):
        if fold:
            assert conn.execute("SELECT compliance._tenant_trees_fold()").fetchone()[0] == sum(
                BATCHES[FOLDED:]
            )
            assert conn.execute("SELECT count(*) FROM compliance.tenant_tree_pending").fetchone()[0] == 0
            heads = dict(conn.execute("SELECT tenant_key, tree_size FROM compliance.tenant_trees").fetchall())
            assert heads == {tenant or "": len(tree.leaves) for tenant, tree in trees.items()}
        for tenant, tree in trees.items():
            size = len(tree.leaves)
            assert conn.execute("SELECT compliance.tenant_tree_root(%s)", (tenant,)).fetchone()[
                0
            ] == tree.mth(0, size), (tenant, fold)
            head_size, frontier = conn.execute(
                "SELECT * FROM compliance._tenant_head(%s)", (tenant or "",)
            ).fetchone()
            assert head_size == size and len(frontier) == bin(size).count("1"), (tenant, fold)


def test_tenant_roots_at_older_sizes_match_the_rfc_definition(drained):
    conn, trees = drained
    for tenant, tree in trees.items():
        total = len(tree.leaves)
        sizes = {0, 1, 2, 3, 255, 256, 257, 511, 512, 513, total - 1, total} | set(range(0, total, 37))
        for size in sorted(s for s in sizes if 0 <= s <= total):
            got = conn.execute("SELECT compliance.tenant_tree_root(%s, %s)", (tenant, size)).fetchone()[0]
            assert got == tree.mth(0, size), (tenant, size)


def test_tenant_inclusion_proofs_match_the_rfc_definition_and_verify(drained):
    conn, trees = drained
    rng = random.Random(14)
    for tenant, tree in trees.items():
        total = len(tree.leaves)
        seqs = [
            seq
            for (seq,) in conn.execute(
                "SELECT seq FROM compliance.audit_events"
                " WHERE tenant_id IS NOT DISTINCT FROM %s ORDER BY seq",
                (tenant,),
            )
        ]
        for index in sorted({0, total - 1, total // 2, rng.randrange(total), rng.randrange(total)}):
            for size in sorted({index + 1, total, rng.randint(index + 1, total)}):
                got_tenant, leaf_index, tree_size, proof = conn.execute(
                    "SELECT * FROM compliance.tenant_inclusion_proof(%s, %s)", (seqs[index], size)
                ).fetchone()
                proof = [bytes(p) for p in proof]
                assert (got_tenant, leaf_index, tree_size) == (tenant, index, size)
                assert proof == tree.path(index, 0, size), (tenant, index, size)
                assert root_from_inclusion(index, size, tree.leaves[index], proof) == tree.mth(0, size)


def test_tenant_consistency_proofs_match_the_rfc_definition_and_verify(drained):
    conn, trees = drained
    rng = random.Random(6962)
    for tenant, tree in trees.items():
        total = len(tree.leaves)
        sizes = sorted({1, total, rng.randint(1, total), rng.randint(1, total), min(256, total)})
        for size1 in sizes:
            for size2 in (s for s in sizes if s >= size1):
                proof = conn.execute(
                    "SELECT compliance.tenant_consistency_proof(%s, %s, %s)", (tenant, size1, size2)
                ).fetchone()[0]
                proof = [bytes(p) for p in proof]
                assert proof == tree.subproof(size1, 0, size2, True), (tenant, size1, size2)
                assert consistent(size1, size2, tree.mth(0, size1), tree.mth(0, size2), proof)


def test_verify_tree_names_a_tenant_whose_head_differs(drained):
    conn, trees = drained
    assert conn.execute("SELECT ok, problem FROM compliance.verify_tree()").fetchone() == (True, None)
    conn.execute(
        "UPDATE compliance.tenant_trees SET tree_frontier[1] = sha256('forged')"
        " WHERE tenant_key = 'tenant é 9'"
    )
    ok, problem = conn.execute("SELECT ok, problem FROM compliance.verify_tree()").fetchone()
    assert not ok and problem == (
        "the stored head of tenant 'tenant é 9' differs from its tree recomputed from the events"
    )
    conn.execute("DELETE FROM compliance.tenant_trees WHERE tenant_key = ''")
    ok, problem = conn.execute("SELECT ok, problem FROM compliance.verify_tree()").fetchone()
    assert not ok and problem.startswith("the tree of tenant (none) holds ")
    assert problem.endswith(f" leaves but the tenant has {len(trees[None].leaves)} events in the tree")


def test_catch_up_rebuilds_the_tenant_trees_from_the_events(drained):
    """What migrate does for events chained before the tenant trees existed. The pending
    batches no longer continue the (emptied) stored heads: they are dropped and their leaves
    recomputed from the events."""
    conn, trees = drained
    heads = "SELECT * FROM compliance._tenant_heads(NULL) ORDER BY tenant_key"
    before = conn.execute(heads).fetchall()
    assert len(before) == len(trees)
    conn.execute("DELETE FROM compliance.tenant_trees")
    assert conn.execute("SELECT compliance._tenant_trees_catch_up()").fetchone()[0] == sum(BATCHES)
    assert conn.execute("SELECT count(*) FROM compliance.tenant_tree_pending").fetchone()[0] == 0
    assert conn.execute("SELECT * FROM compliance.tenant_trees ORDER BY tenant_key").fetchall() == before
    assert conn.execute("SELECT compliance._tenant_trees_catch_up()").fetchone()[0] == 0


def test_verify_tree_names_a_pending_batch_that_does_not_continue_the_heads(drained):
    conn, _ = drained
    conn.execute(
        "UPDATE compliance.tenant_tree_pending SET first_seq = first_seq + 1"
        " WHERE first_seq = (SELECT max(first_seq) FROM compliance.tenant_tree_pending)"
    )
    gap = sum(BATCHES[:-1]) + 2
    assert conn.execute("SELECT ok, problem FROM compliance.verify_tree()").fetchone() == (
        False,
        f"the pending tenant tree batch at seq {gap} does not continue the tenant heads",
    )
    # The fold stops at the gap, and the heads then fail to cover the log, so no commitment.
    assert conn.execute("SELECT compliance._tenant_trees_fold()").fetchone()[0] == sum(BATCHES[FOLDED:-1])
    with pytest.raises(psycopg.errors.lookup("XX001"), match="tenant heads not committed"):
        conn.execute("SELECT compliance.commit_tenant_heads()")


def head_data(tenant: str | None, size: int, root: bytes) -> bytes:
    """A tenant head's leaf data, from docs/proofs.md "The tree of tenant heads"."""
    field = "-" if tenant is None else f"{len(tenant.encode())}:{tenant}"
    return f"auditchain-tenant-head:v1\n{field}\n{size}\n".encode() + root


def test_the_tree_of_tenant_heads_commits_to_every_head_in_tenant_id_byte_order(drained):
    conn, trees = drained
    order = sorted(trees, key=lambda t: b"" if t is None else t.encode())
    heads = Tree([head_data(t, len(trees[t].leaves), trees[t].mth(0, len(trees[t].leaves))) for t in order])
    total = sum(BATCHES)
    assert conn.execute("SELECT * FROM compliance.tenant_heads_root()").fetchone() == (
        total,
        len(order),
        heads.mth(0, len(order)),
    )
    for index, tenant in enumerate(order):
        size = len(trees[tenant].leaves)
        row = conn.execute("SELECT * FROM compliance.tenant_head_proof(%s)", (tenant,)).fetchone()
        tree_size, count, root, head_index, tenant_size, tenant_root, proof = row
        assert (tree_size, count, root, head_index) == (total, len(order), heads.mth(0, len(order)), index)
        assert (tenant_size, tenant_root) == (size, trees[tenant].mth(0, size))
        proof = [bytes(p) for p in proof]
        assert len(proof) <= (len(order) - 1).bit_length()
        assert root_from_inclusion(index, len(order), heads.leaves[index], proof) == root
        # The proof does not carry over to another tenant's head at the same index.
        other = order[(index + 1) % len(order)]
        forged = head_data(other, len(trees[other].leaves), trees[other].mth(0, len(trees[other].leaves)))
        assert root_from_inclusion(index, len(order), Tree([forged]).leaves[0], proof) != root


def test_migrate_builds_the_tenant_trees_of_events_chained_before_them(drained, dsn, tmp_path, monkeypatch):
    """An upgrade from a version without tenant trees: the events are chained, tenant_trees is
    empty. The next `auditchain migrate` that applies the definitions builds every tenant's
    tree, and the drainer carries on from there."""
    conn, trees = drained
    conn.execute("DELETE FROM compliance.tenant_trees")
    schema_dir = copy_schema(tmp_path)
    (schema_dir / "sql" / "99_upgrade.sql").write_text("-- a changed definition set\n", encoding="utf-8")
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))

    assert main(["migrate", "--dsn", dsn, "--quiet"]) == EXIT_OK

    for tenant, tree in trees.items():
        root = conn.execute("SELECT compliance.tenant_tree_root(%s)", (tenant,)).fetchone()[0]
        assert root == tree.mth(0, len(tree.leaves)), tenant
    conn.execute(EMIT_BATCH, (99, 5))
    assert conn.execute("SELECT compliance.drain()").fetchone()[0] == 5
    assert conn.execute("SELECT ok, problem FROM compliance.verify_tree()").fetchone() == (True, None)


# The drainer's tree helpers as an earlier version defined them: record digests in, and the
# tenant append reading each event's tenant back by seq. Their bodies fail, so a stand-in that
# survived the upgrade would show.
EARLIER_HELPERS = """
DROP FUNCTION compliance._tree_append(bigint, bytea[]);
DROP FUNCTION compliance._tree_push(bytea[], bigint, bytea[]);
DROP FUNCTION compliance._tenant_tree_append(text[], bytea[]);
CREATE FUNCTION compliance._tree_append(first_seq bigint, record_digests bytea[]) RETURNS void
    LANGUAGE sql AS $$ SELECT 1 / 0 $$;
CREATE FUNCTION compliance._tree_push(frontier bytea[], size bigint, record_digests bytea[]) RETURNS bytea[]
    LANGUAGE sql AS $$ SELECT ARRAY[(1 / 0)::text::bytea] $$;
CREATE FUNCTION compliance._tenant_tree_append(first_seq bigint, record_digests bytea[]) RETURNS void
    LANGUAGE sql AS $$ SELECT 1 / 0 $$;
"""


def test_migrate_replaces_the_tree_helpers_that_took_record_digests(drained, dsn, tmp_path, monkeypatch):
    """An upgrade from the version whose tree helpers took record digests: `auditchain migrate`
    replaces them (a parameter cannot be renamed in place), and the drainer extends both the
    global and the tenant trees as before."""
    conn, trees = drained
    conn.execute(EARLIER_HELPERS)
    schema_dir = copy_schema(tmp_path)
    (schema_dir / "sql" / "99_upgrade.sql").write_text("-- a changed definition set\n", encoding="utf-8")
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))

    assert main(["migrate", "--dsn", dsn, "--quiet"]) == EXIT_OK

    helpers = conn.execute(
        """SELECT p.oid::regprocedure::text, p.proargnames FROM pg_proc AS p
            WHERE p.pronamespace = 'compliance'::regnamespace
              AND p.proname IN ('_tree_append', '_tree_push', '_tenant_tree_append')
            ORDER BY 1"""
    ).fetchall()
    assert helpers == [
        ("compliance._tenant_tree_append(text[],bytea[])", ["tenant_keys", "leaf_hashes"]),
        ("compliance._tree_append(bigint,bytea[])", ["first_seq", "leaf_hashes"]),
        ("compliance._tree_push(bytea[],bigint,bytea[])", ["frontier", "size", "leaf_hashes"]),
    ]
    conn.execute(EMIT_BATCH, (99, 5))
    assert conn.execute("SELECT compliance.drain()").fetchone()[0] == 5
    assert conn.execute("SELECT ok, problem FROM compliance.verify_tree()").fetchone() == (True, None)


def test_a_fold_of_many_batches_stores_the_heads_readers_saw(conn):
    """Three pending batches of 140,000 events, more than one fold step: the fold stores
    exactly the heads that were read through the pending rows before it, whose roots are those
    of each tenant's leaves. The batches are made up (a tenant trees unit test: no events)."""
    conn.execute(
        """INSERT INTO compliance.tenant_tree_pending (first_seq, tenant_keys, leaf_hashes)
           SELECT b * 140000 + 1,
                  array_agg(CASE WHEN i % 3 = 0 THEN '' ELSE 't' || (i % 2) END ORDER BY i),
                  array_agg(sha256(int8send(i)) ORDER BY i)
             FROM generate_series(0, 419999) AS i, LATERAL (SELECT i / 140000 AS b) AS x
            GROUP BY b"""
    )
    heads = "SELECT * FROM compliance._tenant_heads(NULL) ORDER BY tenant_key"
    read = conn.execute(heads).fetchall()
    assert [(key, size) for key, size, _ in read] == [("", 140000), ("t0", 140000), ("t1", 140000)]
    assert conn.execute("SELECT compliance._tenant_trees_fold()").fetchone()[0] == 420000
    assert conn.execute("SELECT count(*) FROM compliance.tenant_tree_pending").fetchone()[0] == 0
    assert conn.execute("SELECT * FROM compliance.tenant_trees ORDER BY tenant_key").fetchall() == read
    for key, _, frontier in read:
        root = conn.execute(
            """SELECT compliance._tree_fold(array_agg(sha256(int8send(i)) ORDER BY i))
                 FROM generate_series(0, 419999) AS i
                WHERE CASE WHEN i %% 3 = 0 THEN '' ELSE 't' || (i %% 2) END = %s""",
            (key,),
        ).fetchone()[0]
        assert conn.execute("SELECT compliance._tree_fold_right(%s)", (frontier,)).fetchone()[0] == root, key
