"""Cases merkle_drain and merkle_proof: what the Merkle tree costs the drainer, and how fast
an inclusion proof comes out of a large log.

merkle_drain drains the same backlog repeatedly, each time in one transaction that is rolled
back: alternately as shipped and with compliance._tree_append replaced (inside that
transaction only) by one that just advances tree_size, so that the head check still passes.
Same rows, same batches, same commit-free ending: the ratio is the tree's share of the drain.

merkle_proof times compliance.inclusion_proof for random seqs in the whole log, one call per
round trip, beside the round trip of a primary-key read of one event; it also reports the
tree's storage per event.

receipt_verify verifies receipts for random events of the log offline (signature, record digest,
inclusion proof), beside the bare SHA-256 computations those receipts need."""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import time

from auditchain import signing
from auditchain.formats import checkpoint, hashing, note, receipt

from .drain import fresh_backlog
from .ledger import Ledger, Timing, human
from .results import Row, Target, cpu_metrics

BATCH = 5000
ROUNDS = 5

# Only what the head check needs: the tree size follows the chain, no hashing, no nodes.
NO_TREE_SQL = """
CREATE OR REPLACE FUNCTION compliance._tree_append(first_seq bigint, leaf_hashes bytea[])
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$ UPDATE compliance.drainer_state
         SET tree_size = tree_size + pg_catalog.cardinality(leaf_hashes) $$"""


def drain_rolled_back(ledger: Ledger, replacement_sql: str | None = None) -> Timing:
    """Drain the whole outbox in one transaction, timed (wall and server CPU), then roll it
    all back; replacement_sql, run first in the same transaction, swaps in the variant of
    drain() being compared (rolled back with the rest)."""

    def drain_all() -> None:
        while ledger.scalar("SELECT compliance.drain(%s)", (BATCH,)):
            pass

    swap = None if replacement_sql is None else (lambda: ledger.conn.execute(replacement_sql))
    return ledger.measure_rolled_back(drain_all, swap)


def median_timing(timings: list[Timing]) -> Timing:
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
    drain_rolled_back(ledger, NO_TREE_SQL)  # warm the cache for both
    # Alternated rounds and medians: the two sides differ by a few per cent, less than the
    # noise of a single run on a shared machine (cpu_ratio, from server CPU, is steadier).
    withouts, withs = [], []
    for _ in range(ROUNDS):
        withouts.append(drain_rolled_back(ledger, NO_TREE_SQL))
        withs.append(drain_rolled_back(ledger))
    without, with_tree = median_timing(withouts), median_timing(withs)
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


def _receipts(ledger: Ledger, size: int, seqs: list[int]) -> tuple[list[bytes], note.Verifier]:
    """Receipts (C2SP tlog-proof) for these seqs against a checkpoint of the tree at `size`, signed
    here with a throw-away key: what `auditchain prove` hands out, from the same SQL."""
    signer = note.parse_skey(note.generate_skey("auditchain-bench"))
    origin = str(
        ledger.scalar(
            "SELECT 'auditchain/' || system_identifier || '/' || current_database() FROM pg_control_system()"
        )
    )
    root = bytes(ledger.scalar("SELECT compliance.tree_root(%s)", (size,)))
    signed = signing.sign_checkpoint(checkpoint.Checkpoint(origin, size, root), signer)
    out = []
    for seq in seqs:
        proof, line = ledger.conn.execute(
            "SELECT compliance.inclusion_proof(e.seq, %s), compliance._event_line(e, false)"
            " FROM compliance.audit_events AS e WHERE e.seq = %s",
            (size, seq),
        ).fetchone()
        out.append(receipt.build_receipt(seq - 1, [bytes(h) for h in proof], signed, line.encode()))
    return out, note.parse_vkey(note.encode_vkey(signer.name, signer.public_key))


def _bare_sha256_inputs(data: bytes) -> list[bytes]:
    """The inputs of every SHA-256 a receipt's verification needs: the payload digest, the record
    digest, the leaf hash and one node hash per proof line (the Ed25519 check aside)."""
    parsed = receipt.parse_receipt(data)
    event = json.loads(parsed.extra)
    record = hashing.canonical_record(event)
    return [
        hashing.utf8(event["payload"]),
        record,
        b"\x00" + hashing.record_digest(record),
        *(b"\x01" + h + h for h in parsed.proof),
    ]


def run_receipt(ledger: Ledger, *, size: int, samples: int) -> Row:
    """Offline receipt verification (formats.receipt.verify_receipt, what `verify-proof` runs)
    per second, against the bare SHA-256 computations the same receipts need."""
    ledger.ensure_log(size)
    row = Row(
        case="receipt_verify",
        variant=f"events={human(size)}",
        unit="receipts/s",
        reference_name="the bare SHA-256 computations of each receipt (payload, record, leaf, proof nodes)",
    )
    rng = random.Random(size + 1)
    receipts, verifier = _receipts(ledger, size, [rng.randint(1, size) for _ in range(samples)])
    inputs = [_bare_sha256_inputs(data) for data in receipts]
    start = time.perf_counter()
    for data in receipts:
        receipt.verify_receipt(data, [verifier])
    verify_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for hashes in inputs:
        for data in hashes:
            hashlib.sha256(data).digest()
    bare_seconds = time.perf_counter() - start
    # Where the time goes: the signed note's check (Ed25519, parsing) on its own.
    start = time.perf_counter()
    for data in receipts:
        checkpoint.open_signed(data.partition(b"\n\n")[2], [verifier])
    note_seconds = time.perf_counter() - start
    hashes_per_receipt = sum(len(h) for h in inputs) / len(inputs)
    row.measured = len(receipts) / verify_seconds
    row.reference = len(receipts) / bare_seconds
    row.metrics = {
        "samples": len(receipts),
        "sha256_per_receipt": hashes_per_receipt,
        "receipt_bytes_mean": sum(len(r) for r in receipts) / len(receipts),
        "verify_us_per_receipt": verify_seconds / len(receipts) * 1e6,
        "bare_sha256_us_per_receipt": bare_seconds / len(receipts) * 1e6,
        "signed_note_us_per_receipt": note_seconds / len(receipts) * 1e6,
    }
    return row
