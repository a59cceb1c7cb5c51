"""Case verify_chain: full in-database verification beside a bare scan hashing each payload."""

from __future__ import annotations

import statistics
import time

from .ledger import Ledger, human
from .results import Row, Target

# sum(get_byte(...)) consumes every digest, so the hashing cannot be optimised away.
REFERENCE_SQL = """
SELECT sum(get_byte(sha256(convert_to(e.payload::text, 'UTF8')), 0))
  FROM compliance.audit_events AS e"""


def run(ledger: Ledger, *, size: int, rounds: int) -> Row:
    ledger.ensure_log(size)
    row = Row(
        case="verify_chain",
        variant=f"events={human(size)}",
        unit="events/s",
        reference_name="seq scan computing sha256(payload text) of every row",
        targets=[Target("ratio", ">=", 0.5)],
    )
    ledger.settle("compliance.audit_events")
    # verify_chain is one backend walking the chain in order; give the reference one backend too.
    ledger.conn.execute("SET max_parallel_workers_per_gather = 0")
    ledger.scalar(REFERENCE_SQL)  # warm the cache for both
    verify_times, reference_times = [], []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            ledger.scalar(REFERENCE_SQL)
            reference_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            ok, checked, first_bad, problem = ledger.conn.execute(
                "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
            ).fetchone()
            verify_times.append(time.perf_counter() - started)
            if not ok or checked != size:
                raise RuntimeError(f"verify_chain failed: checked {checked}, seq {first_bad}: {problem}")
    finally:
        ledger.conn.execute("RESET max_parallel_workers_per_gather")
    row.measured = size / statistics.median(verify_times)
    row.reference = size / statistics.median(reference_times)
    row.metrics = {
        "events": size,
        "verify_seconds": statistics.median(verify_times),
        "reference_seconds": statistics.median(reference_times),
        "rounds": rounds,
    }
    return row
