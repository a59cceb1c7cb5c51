"""Cases merkle_drain and merkle_proof: what the Merkle tree costs the drainer, and how fast
an inclusion proof comes out of a large log.

merkle_drain drains the same backlog repeatedly, each time in one transaction that is rolled
back: alternately as shipped and with compliance._tree_append replaced (inside that
transaction only) by one that just advances tree_size, so that the head check still passes.
Same rows, same batches, same commit-free ending: the ratio is the tree's share of the drain.

merkle_proof times compliance.inclusion_proof for random seqs in the whole log, one call per
round trip, beside the round trip of a primary-key read of one event; it also reports the
tree's storage per event."""

from __future__ import annotations

import random
import statistics
import time

from .drain import fresh_backlog
from .ledger import Ledger, Timing, human
from .results import Row, Target, cpu_metrics

BATCH = 5000
ROUNDS = 5

# Only what the head check needs: the tree size follows the chain, no hashing, no nodes.
NO_TREE_SQL = """
CREATE OR REPLACE FUNCTION compliance._tree_append(first_seq bigint, record_digests bytea[])
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$ UPDATE compliance.drainer_state
         SET tree_size = tree_size + pg_catalog.cardinality(record_digests) $$"""


def _drain_rolled_back(ledger: Ledger, *, without_tree: bool) -> Timing:
    """Drain the whole outbox in one transaction, timed (wall and server CPU), then roll it
    all back."""
    conn = ledger.conn
    conn.execute("BEGIN")
    try:
        if without_tree:
            conn.execute(NO_TREE_SQL)

        def drain_all() -> None:
            while ledger.scalar("SELECT compliance.drain(%s)", (BATCH,)):
                pass

        return ledger.measure(drain_all)
    finally:
        conn.execute("ROLLBACK")


def _median(timings: list[Timing]) -> Timing:
    walls = statistics.median(t.wall for t in timings)
    cpus = [t.cpu for t in timings if t.cpu is not None]
    return Timing(walls, statistics.median(cpus) if len(cpus) == len(timings) else None, None)


def run_drain(ledger: Ledger, *, log_size: int, backlog: int) -> Row:
    ledger.ensure_log(log_size)
    row = Row(
        case="merkle_drain",
        variant=f"backlog={human(backlog)} log={human(log_size)}",
        unit="events/s",
        reference_name="the same drain with the tree's maintenance replaced by a tree_size update",
        targets=[Target("ratio", ">=", 0.9)],
    )
    fresh_backlog(ledger, backlog)
    _drain_rolled_back(ledger, without_tree=True)  # warm the cache for both
    # Alternated rounds and medians: the two sides differ by a few per cent, less than the
    # noise of a single run on a shared machine (cpu_ratio, from server CPU, is steadier).
    withouts, withs = [], []
    for _ in range(ROUNDS):
        withouts.append(_drain_rolled_back(ledger, without_tree=True))
        withs.append(_drain_rolled_back(ledger, without_tree=False))
    without, with_tree = _median(withouts), _median(withs)
    ledger.conn.execute("TRUNCATE compliance.audit_outbox")
    row.measured = backlog / with_tree.wall
    row.reference = backlog / without.wall
    row.metrics = {
        "events": backlog,
        "log_size_before": log_size,
        "with_tree_seconds": with_tree.wall,
        "without_tree_seconds": without.wall,
        "rounds": ROUNDS,
        **cpu_metrics(with_tree, without, backlog),
    }
    return row


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_proof(ledger: Ledger, *, size: int, samples: int) -> Row:
    ledger.ensure_log(size)
    row = Row(
        case="merkle_proof",
        variant=f"events={human(size)}",
        unit="ms p99",
        reference_name="round trip of a primary-key read of one event",
        targets=[Target("measured", "<", 10.0)],
    )
    rng = random.Random(size)
    seqs = [rng.randint(1, size) for _ in range(samples)]
    proofs, reads = [], []
    for seq in seqs:
        start = time.perf_counter()
        ledger.scalar("SELECT compliance.inclusion_proof(%s)", (seq,))
        proofs.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        ledger.scalar("SELECT event_hash FROM compliance.audit_events WHERE seq = %s", (seq,))
        reads.append((time.perf_counter() - start) * 1000)
    stored = int(ledger.scalar("SELECT pg_total_relation_size('compliance.merkle_nodes')"))
    row.measured = _percentile(proofs, 0.99)
    row.reference = _percentile(reads, 0.99)
    row.metrics = {
        "samples": samples,
        "p50_ms": _percentile(proofs, 0.5),
        "p99_ms": row.measured,
        "max_ms": max(proofs),
        "read_p50_ms": _percentile(reads, 0.5),
        "tree_bytes": stored,
        "tree_bytes_per_event": stored / size,
    }
    return row
