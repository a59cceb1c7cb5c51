"""Case monitors: the server CPU of checking 100 expected-event monitors
(compliance.expectation_status(), then metrics(), which counts the silent ones) over a
large log with a second's worth of arrivals (1,000 events) waiting in the outbox and a
fifth of the monitors silent (those look at the outbox), beside the scan the high-water
marks avoid: each monitor's newest matching event looked up in audit_events. Also
measured: what the drainer pays per batch for the marks (compliance._advance_expectations
over a 1,000-event batch, every mark due)."""

from __future__ import annotations

import statistics
import time

from .ledger import Ledger, human
from .results import Row, Target

# What expectation_status() would be without high-water marks: per monitor, its newest
# matching event found in the log.
SCAN_SQL = """
SELECT x.name,
       (SELECT max(e.recorded_at) FROM compliance.audit_events AS e
         WHERE e.event_type LIKE x.event_type_pattern
           AND (x.tenant_id IS NULL OR e.tenant_id = x.tenant_id)
           AND (x.actor_pattern IS NULL OR e.actor LIKE x.actor_pattern))
  FROM compliance.event_expectations AS x"""


def declare(ledger: Ledger, count: int) -> None:
    """count monitors on the bench's event types (bench.event_0..19, tenant-0..9, user:0..999):
    four in five watch events that arrive, in varied shapes; one in five watch a type nobody
    emits and are silent."""
    for i in range(count):
        if i % 5 == 4:
            args = (f"silent-{i}", f"bench.never_{i}", "1 second", None, None)
        else:
            # A tenant the type's events carry (the bench ties tenant-k to bench.event_k, k+10).
            tenant = f"tenant-{i % 10}" if i % 3 == 0 and i % 10 else None
            actor = f"user:{i % 10}%" if i % 3 == 1 else None
            args = (f"watch-{i}", f"bench.event_{i % 20}", "1 hour", tenant, actor)
        ledger.conn.execute("SELECT compliance.expect_events(%s, %s, %s::interval, %s, %s)", args)
    # Watched for two hours already: the silent ones are silent now.
    ledger.conn.execute("UPDATE compliance.event_expectations SET watched_since = now() - interval '2 hours'")


def timed_ms(ledger: Ledger, query: str, params: tuple = ()) -> float:
    started = time.perf_counter()
    ledger.conn.execute(query, params).fetchall()
    return (time.perf_counter() - started) * 1000


def run(ledger: Ledger, *, log_size: int, monitors: int = 100, rate: int = 1000, calls: int = 100) -> Row:
    ledger.ensure_log(log_size)
    row = Row(
        case="monitors",
        variant=f"monitors={monitors} log={human(log_size)} outbox={human(rate)}",
        unit="ms CPU",
        reference_name="each monitor's newest matching event looked up in audit_events (no high-water mark)",
        targets=[Target("measured", "<=", 10), Target("advance_ms_per_batch", "<=", 20)],
    )
    declare(ledger, monitors)
    try:
        # One second of arrivals chained: every matching mark moves (reset first, so the
        # timed call really updates them rather than skipping marks less than a second old).
        first = ledger.chained() + 1
        ledger.fill_outbox(rate)
        ledger.drain_all()
        last = ledger.chained()
        ledger.conn.execute("UPDATE compliance.event_expectations SET last_event_at = NULL, last_seq = NULL")
        advance = timed_ms(ledger, "SELECT compliance._advance_expectations(%s, %s)", (first, last))
        moved = ledger.scalar("SELECT count(*) FROM compliance.event_expectations WHERE last_seq IS NOT NULL")

        # The next second's arrivals wait in the outbox while the monitors are checked.
        ledger.fill_outbox(rate)
        status = [timed_ms(ledger, "SELECT * FROM compliance.expectation_status()") for _ in range(calls)]
        both = [
            timed_ms(ledger, "SELECT * FROM compliance.expectation_status()")
            + timed_ms(ledger, "SELECT * FROM compliance.metrics()")
            for _ in range(calls)
        ]
        # Server CPU per call as well: steadier than wall time on a shared machine.
        cpu = ledger.measure(
            lambda: [
                ledger.conn.execute("SELECT * FROM compliance.expectation_status()").fetchall()
                for _ in range(calls)
            ]
        ).cpu
        silent = ledger.scalar("SELECT count(*) FROM compliance.expectation_status() WHERE silent")
        scan = ledger.measure(lambda: ledger.conn.execute(SCAN_SQL).fetchall())
    finally:
        ledger.drain_all()
        ledger.conn.execute("DELETE FROM compliance.event_expectations")
    # Server CPU: wall time on a shared machine mostly measures the neighbours.
    row.measured = cpu * 1000 / calls if cpu else statistics.median(status)
    row.reference = scan.cpu * 1000 if scan.cpu else scan.wall * 1000
    row.metrics = {
        "monitors": monitors,
        "silent_monitors": int(silent),
        "log_size": ledger.chained(),
        "outbox_rows": rate,
        "status_ms_median": statistics.median(status),
        "status_ms_max": max(status),
        "status_cpu_ms_per_call": None if cpu is None else cpu * 1000 / calls,
        "status_and_metrics_ms_median": statistics.median(both),
        "advance_ms_per_batch": advance,
        "advance_batch_rows": last - first + 1,
        "marks_moved": int(moved),
        "scan_ms": scan.wall * 1000,
        "scan_cpu_ms": None if scan.cpu is None else scan.cpu * 1000,
    }
    return row
