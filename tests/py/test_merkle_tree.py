"""The Merkle tree the drainer maintains, checked against an independent RFC 9162
implementation written here with hashlib only: events are drained in batches of odd sizes
(so batches end on and across 256-leaf chunk boundaries), then tree_root at many sizes, and
inclusion and consistency proofs at many (index, size) pairs, must equal what the RFC's
definitions give over the record digests the chain committed to, and must verify with the
RFC's verification algorithms.
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

import psycopg
import pytest

from auditchain.cli import main
from auditchain.formats import hashing
from schemacopy import copy_schema

BATCHES = [1, 254, 1, 256, 257, 3, 511, 700, 1023, 37, 300]  # 3,343 events in all
EMIT_BATCH = """
SELECT compliance.emit('test.merkle', 'actor-' || g, jsonb_build_object('g', g, 'batch', %s::int),
                       CASE WHEN g %% 3 = 0 THEN NULL ELSE 'tenant-' || (g %% 5) END)
  FROM generate_series(1, %s) AS g
"""
EVENTS = """
SELECT seq, event_id::text AS event_id,
       to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at,
       tenant_id, event_type, actor, payload::text AS payload, prev_hash, event_hash, hash_version,
       encode(actor_salt, 'hex') AS actor_salt, encode(payload_salt, 'hex') AS payload_salt
  FROM compliance.audit_events ORDER BY seq
"""


# ---- RFC 9162 section 2.1, from its definitions (independent of the SQL) ----


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Tree:
    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = [leaf_hash(d) for d in leaves]
        self.mth = lru_cache(maxsize=None)(self._mth)

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.leaves[lo]
        k = split(n)
        return node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        """PATH(m, D[lo:hi]) of RFC 9162 2.1.3.1, m relative to lo."""
        n = hi - lo
        if n == 1:
            return []
        k = split(n)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        """SUBPROOF(m, D[lo:hi], b) of RFC 9162 2.1.4.1, m relative to lo."""
        n = hi - lo
        if m == n:
            return [] if complete else [self.mth(lo, hi)]
        k = split(n)
        if m <= k:
            return self.subproof(m, lo, lo + k, complete) + [self.mth(lo + k, hi)]
        return self.subproof(m - k, lo + k, hi, False) + [self.mth(lo, lo + k)]


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes | None:
    """RFC 9162 2.1.3.2 verification: the root the proof leads to, or None if malformed."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def consistent(size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2 verification."""
    if size1 == size2:
        return not proof and root1 == root2
    if not proof:
        return False
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is the first node
        proof = [root1, *proof]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


def test_the_reference_reproduces_the_rfc6962_vectors():
    inputs = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    tree = Tree([bytes.fromhex(x) for x in inputs])
    assert tree.mth(0, 8).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert tree.mth(0, 0) == hashlib.sha256(b"").digest()


# ---- the database ----


def chained_digests(conn: psycopg.Connection) -> list[bytes]:
    """The record digest of every chained event, from its columns through auditchain.hashing,
    each checked against the chain link that committed to it."""
    digests = []
    prev = hashing.GENESIS_HASH
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        for row in cur.execute(EVENTS):
            # The fields of its export line: v1 events have no salts.
            event = {name: value for name, value in row.items() if not name.endswith("_salt") or value}
            digest = hashing.record_digest(hashing.canonical_record(event))
            assert bytes(event["prev_hash"]) == prev
            assert hashing.event_hash_from_digest(prev, digest) == bytes(event["event_hash"]), event["seq"]
            prev = bytes(event["event_hash"])
            digests.append(digest)
    return digests


@pytest.fixture
def drained(conn: psycopg.Connection) -> tuple[psycopg.Connection, Tree, list[int]]:
    """A database whose drainer chained sum(BATCHES) events, one drain() call per batch, each
    committed; returns the connection, the reference tree and the size after each batch."""
    boundaries = []
    for number, size in enumerate(BATCHES):
        conn.execute(EMIT_BATCH, (number, size))
        assert conn.execute("SELECT compliance.drain(%s)", (size,)).fetchone()[0] == size
        boundaries.append(conn.execute("SELECT tree_size FROM compliance.drainer_state").fetchone()[0])
    return conn, Tree(chained_digests(conn)), boundaries


def interesting_sizes(total: int, boundaries: list[int], count: int) -> list[int]:
    edges = {
        0,
        1,
        2,
        3,
        7,
        8,
        255,
        256,
        257,
        511,
        512,
        513,
        767,
        768,
        1023,
        1024,
        1025,
        2047,
        2048,
        2049,
        total,
    }
    rng = random.Random(6962)
    sample = {rng.randint(1, total) for _ in range(count)}
    return sorted(s for s in edges | set(boundaries) | sample if 0 <= s <= total)


def test_tree_root_matches_the_rfc_definition_at_many_sizes(drained):
    conn, tree, boundaries = drained
    total = sum(BATCHES)
    assert len(tree.leaves) == total
    assert conn.execute("SELECT compliance.tree_root()").fetchone()[0] == tree.mth(0, total)
    for size in interesting_sizes(total, boundaries, 120):
        got = conn.execute("SELECT compliance.tree_root(%s)", (size,)).fetchone()[0]
        assert got == tree.mth(0, size), size


def test_the_head_root_from_the_compact_range_equals_the_recomputed_one(drained):
    conn, tree, _ = drained
    total = sum(BATCHES)
    frontier, size = conn.execute("SELECT tree_frontier, tree_size FROM compliance.drainer_state").fetchone()
    assert size == total
    assert len(frontier) == bin(total).count("1")
    assert conn.execute("SELECT compliance._tree_range_hash(0, %s)", (total,)).fetchone()[0] == tree.mth(
        0, total
    )


def test_inclusion_proofs_match_the_rfc_definition_and_verify(drained):
    conn, tree, boundaries = drained
    total = sum(BATCHES)
    rng = random.Random(9162)
    pairs = []
    for size in interesting_sizes(total, boundaries, 40):
        if size == 0:
            continue
        indexes = {0, size - 1, size // 2, rng.randrange(size), rng.randrange(size)}
        pairs += [(index, size) for index in sorted(indexes)]
    for index, size in pairs:
        proof = conn.execute("SELECT compliance.inclusion_proof(%s, %s)", (index + 1, size)).fetchone()[0]
        proof = [bytes(p) for p in proof]
        assert proof == tree.path(index, 0, size), (index, size)
        assert root_from_inclusion(index, size, tree.leaves[index], proof) == tree.mth(0, size)
    head = conn.execute("SELECT compliance.inclusion_proof(%s)", (total,)).fetchone()[0]
    assert [bytes(p) for p in head] == tree.path(total - 1, 0, total)


def test_consistency_proofs_match_the_rfc_definition_and_verify(drained):
    conn, tree, boundaries = drained
    total = sum(BATCHES)
    sizes = [s for s in interesting_sizes(total, boundaries, 30) if s > 0]
    rng = random.Random(2)
    pairs = [(a, b) for a in sizes for b in sizes if a <= b]
    pairs = sorted(rng.sample(pairs, 250)) + [
        (a, b) for a, b in zip(boundaries, boundaries[1:], strict=False)
    ]
    for size1, size2 in pairs:
        proof = conn.execute("SELECT compliance.consistency_proof(%s, %s)", (size1, size2)).fetchone()[0]
        proof = [bytes(p) for p in proof]
        assert proof == tree.subproof(size1, 0, size2, True), (size1, size2)
        assert consistent(size1, size2, tree.mth(0, size1), tree.mth(0, size2), proof), (size1, size2)
    head = conn.execute("SELECT compliance.consistency_proof(%s)", (boundaries[0],)).fetchone()[0]
    assert [bytes(p) for p in head] == tree.subproof(boundaries[0], 0, total, True)


def test_the_stored_nodes_and_verify_tree_agree_with_the_reference(drained):
    conn, tree, _ = drained
    total = sum(BATCHES)
    rows = conn.execute("SELECT chunk, roots FROM compliance.merkle_nodes ORDER BY chunk").fetchall()
    assert [chunk for chunk, _ in rows] == list(range(total // 256))
    for chunk, roots in rows:
        roots = bytes(roots)
        level = 8
        while roots:
            index = chunk >> (level - 8)
            assert roots[:32] == tree.mth(index << level, (index + 1) << level), (level, index)
            roots = roots[32:]
            level += 1
    assert conn.execute("SELECT ok, leaves_checked, problem FROM compliance.verify_tree()").fetchone() == (
        True,
        total,
        None,
    )
    assert conn.execute("SELECT compliance.verify_new_events()").fetchone()[0] == total
    assert conn.execute("SELECT last_ok, problem FROM compliance.verification_state").fetchone() == (
        True,
        None,
    )


def test_run_drainer_maintains_the_tree_across_committed_batches(conn):
    conn.execute(
        "SELECT compliance.emit('test.merkle', 'actor-' || g, jsonb_build_object('g', g)) "
        "FROM generate_series(1, 1500) AS g"
    )
    conn.execute("CALL compliance.run_drainer('0 seconds', 333, 0)")
    conn.execute("CALL compliance.run_drainer('1 second', 333, 0)")
    size = conn.execute("SELECT tree_size FROM compliance.drainer_state").fetchone()[0]
    assert size == 1500
    tree = Tree(chained_digests(conn))
    assert conn.execute("SELECT compliance.tree_root()").fetchone()[0] == tree.mth(0, 1500)


def test_migrate_builds_the_tree_of_events_chained_before_it(conn, dsn, tmp_path, monkeypatch):
    """An upgrade from a version without the tree: the events are chained, the tree is empty.
    The next `auditchain migrate` that applies the definitions builds it, to what the drainer
    would have built, and the drainer carries on."""
    conn.execute(EMIT_BATCH, (0, 700))
    conn.execute("SELECT compliance.drain(400), compliance.drain(400)")
    built_root = conn.execute("SELECT compliance.tree_root()").fetchone()[0]
    built_nodes = conn.execute(
        "SELECT array_agg(roots ORDER BY chunk) FROM compliance.merkle_nodes"
    ).fetchone()[0]
    with conn.transaction():
        conn.execute("ALTER TABLE compliance.merkle_nodes DISABLE TRIGGER forbid_truncate")
        conn.execute("TRUNCATE compliance.merkle_nodes")
        conn.execute("ALTER TABLE compliance.merkle_nodes ENABLE ALWAYS TRIGGER forbid_truncate")
        conn.execute("UPDATE compliance.drainer_state SET tree_size = 0, tree_frontier = '{}'")
    schema_dir = copy_schema(tmp_path)
    (schema_dir / "sql" / "99_upgrade.sql").write_text("-- a changed definition set\n", encoding="utf-8")
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))

    assert main(["migrate", "--dsn", dsn, "--quiet"]) == 0

    assert conn.execute("SELECT tree_size FROM compliance.drainer_state").fetchone()[0] == 700
    assert conn.execute("SELECT compliance.tree_root()").fetchone()[0] == built_root
    assert conn.execute("SELECT array_agg(roots ORDER BY chunk) FROM compliance.merkle_nodes").fetchone()[
        0
    ] == (built_nodes)
    conn.execute(EMIT_BATCH, (1, 5))
    assert conn.execute("SELECT compliance.drain()").fetchone()[0] == 5
    assert conn.execute("SELECT ok, leaves_checked FROM compliance.verify_tree()").fetchone() == (True, 705)
    assert conn.execute("SELECT compliance.tree_root()").fetchone()[0] == Tree(chained_digests(conn)).mth(
        0, 705
    )
