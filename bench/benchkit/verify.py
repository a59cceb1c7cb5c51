"""Case verify_chain: full in-database verification beside a bare scan hashing each payload,
and beside its floor: the same scan computing each event's hash in the chain's format (three
SHA-256 over the canonical record) with no link, seq or memory check. All three run in one
backend (no parallel worker); verify_chain is then run again with one parallel worker beside
the backend, i.e. on two cores, and the speedup of two over one is reported."""

from __future__ import annotations

from .ledger import Ledger, Timing, human
from .results import Row, Target, cpu_metrics

# sum(get_byte(...)) consumes every digest, so the hashing cannot be optimised away.
REFERENCE_SQL = """
SELECT sum(get_byte(sha256(convert_to(e.payload::text, 'UTF8')), 0))
  FROM compliance.audit_events AS e"""

FLOOR_SQL = """
SELECT sum(get_byte(compliance.event_hash(e.prev_hash, compliance._row_record(e)), 0))
  FROM compliance.audit_events AS e"""


def run(ledger: Ledger, *, size: int, rounds: int) -> Row:
    ledger.ensure_log(size)
    row = Row(
        case="verify_chain",
        variant=f"events={human(size)}",
        unit="events/s",
        reference_name="seq scan computing sha256(payload text) of every row",
        targets=[Target("ratio", ">=", 0.5), Target("two_worker_speedup", ">=", 1.6)],
        floor_name="seq scan computing every event_hash of the hash format, nothing else",
    )
    ledger.settle("compliance.audit_events")
    # The ratio compares one core with one core: reference, floor and verify_chain in one backend.
    workers(ledger, 0)
    ledger.scalar(REFERENCE_SQL)  # warm the cache for both
    verifies, references, floors, parallel = [], [], [], []
    try:
        for _ in range(rounds):
            references.append(ledger.measure(lambda: ledger.scalar(REFERENCE_SQL)))
            floors.append(ledger.measure(lambda: ledger.scalar(FLOOR_SQL)))
            verifies.append(verify_once(ledger, size))
            # Two cores: the backend and one parallel worker (the planner's choice, forced
            # neither way beyond the worker count).
            workers(ledger, 1)
            parallel.append(verify_once(ledger, size))
            workers(ledger, 0)
    finally:
        ledger.conn.execute("RESET max_parallel_workers_per_gather")
    verify, reference, floor = median(verifies), median(references), median(floors)
    two = median(parallel)
    row.measured = size / verify.wall
    row.reference = size / reference.wall
    row.floor = size / floor.wall
    row.metrics = {
        "events": size,
        "verify_seconds": verify.wall,
        "reference_seconds": reference.wall,
        "floor_seconds": floor.wall,
        "two_worker_seconds": two.wall,
        "two_worker_events_per_s": size / two.wall,
        "two_worker_speedup": verify.wall / two.wall,
        "rounds": rounds,
        **cpu_metrics(verify, reference, size),
    }
    if floor.cpu:
        row.metrics["floor_cpu_us_per_event"] = floor.cpu / row.metrics["events"] * 1e6
    return row


def workers(ledger: Ledger, count: int) -> None:
    """Parallel workers per query from now on (verify_range plans every call afresh, so the
    setting takes effect at the next call)."""
    ledger.conn.execute(f"SET max_parallel_workers_per_gather = {count:d}")


def verify_once(ledger: Ledger, size: int) -> Timing:
    """One verify_chain over the whole log; it must find the chain intact."""
    verify = ledger.measure(
        lambda: ledger.conn.execute(
            "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
        ).fetchone()
    )
    ok, checked, first_bad, problem = verify.result
    if not ok or checked != size:
        raise RuntimeError(f"verify_chain failed: checked {checked}, seq {first_bad}: {problem}")
    return verify


def median(timings: list[Timing]) -> Timing:
    """The run with the median wall time (the upper median of an even count)."""
    return sorted(timings, key=lambda t: t.wall)[len(timings) // 2]
