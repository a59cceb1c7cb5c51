"""Case emit: compliance.emit through pgbench beside a plain single-row INSERT of the same row,
and beside its floor: a bare PL/pgSQL function around that INSERT (what calling any function
for each event costs, before emit's validation, UUIDv7 and SECURITY DEFINER)."""

from __future__ import annotations

import statistics
import threading
import time

from psycopg import sql

from .cluster import PgbenchRun, pgbench
from .ledger import Ledger, human, process_cpu
from .results import CPU_RESOLUTION, Row, Target

PAYLOAD = (
    '{"path": "/api/v1/accounts/42/documents/7", "reason": "scheduled review of the retention '
    'settings of this document", "changes": {"size": 512, "status": ["draft", "published"]}, '
    '"client_ip": "10.0.0.7", "request_id": "5d41402abc4b2a76b9719d911017c592", '
    '"user_agent": "Mozilla/5.0 (X11; Linux x86_64) auditchain-bench/1.0"}'
)

# The payload travels as a statement parameter (pgbench -D), as from an application. The
# emit and floor scripts call a function with the same arguments.
CALL_SCRIPT = """\\set i random(1, 1000000)
SELECT {function}('bench.emit', 'user:' || :i::text, :payload::jsonb, 'tenant-' || (:i::int % 10));
"""

INSERT_SCRIPT = """\\set i random(1, 1000000)
INSERT INTO bench_ref.emit_plain (event_id, occurred_at, tenant_id, event_type, actor, payload)
VALUES (gen_random_uuid(), now(), 'tenant-' || (:i::int % 10), 'bench.emit', 'user:' || :i::text,
        :payload::jsonb);
"""

TABLES = {
    "emit": ("compliance", "audit_outbox"),
    "insert": ("bench_ref", "emit_plain"),
    "floor": ("bench_ref", "emit_floor"),
}
SCRIPTS = {
    "emit": CALL_SCRIPT.format(function="compliance.emit"),
    "insert": INSERT_SCRIPT,
    "floor": CALL_SCRIPT.format(function="bench_ref.emit_floor"),
}
TRUNCATE_ALL = sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(*t) for t in TABLES.values()))


def run(ledger: Ledger, *, clients: int, seconds: int, rounds: int) -> Row:
    log_size = ledger.chained()
    row = Row(
        case="emit",
        variant=f"clients={clients} log={human(log_size)}",
        unit="events/s",
        reference_name="pgbench single-row INSERT into a plain copy of audit_outbox",
        targets=[Target("ratio", ">=", 0.9)],
        floor_name="pgbench SELECT of a bare PL/pgSQL function doing the same INSERT",
    )
    runs: dict[str, list[PgbenchRun]] = {kind: [] for kind in SCRIPTS}
    cpu: dict[str, list[float]] = {kind: [] for kind in SCRIPTS}
    for round_number in range(rounds):
        # Alternate the order so a drift in machine load hits every kind alike.
        order = ("insert", "floor", "emit") if round_number % 2 == 0 else ("emit", "floor", "insert")
        for kind in order:
            ledger.conn.execute(TRUNCATE_ALL)
            ledger.conn.execute("CHECKPOINT")
            done, cpu_per_row = _sampled_run(ledger, kind, clients=clients, seconds=seconds)
            runs[kind].append(done)
            if cpu_per_row is not None:
                cpu[kind].append(cpu_per_row)
    # What was emitted here must not leak into the drain and verify cases.
    ledger.conn.execute(TRUNCATE_ALL)
    row.measured = statistics.median(r.tps for r in runs["emit"])
    row.reference = statistics.median(r.tps for r in runs["insert"])
    row.floor = statistics.median(r.tps for r in runs["floor"])
    row.metrics = {
        "seconds_per_run": seconds,
        "rounds": rounds,
        "emit_tps_runs": ", ".join(f"{r.tps:.0f}" for r in runs["emit"]),
        "insert_tps_runs": ", ".join(f"{r.tps:.0f}" for r in runs["insert"]),
        "floor_tps_runs": ", ".join(f"{r.tps:.0f}" for r in runs["floor"]),
        "emit_latency_ms": statistics.mean(r.latency_ms for r in runs["emit"]),
        "insert_latency_ms": statistics.mean(r.latency_ms for r in runs["insert"]),
        "log_size": log_size,
    }
    if cpu["emit"] and cpu["insert"]:
        emit_cpu, insert_cpu = statistics.median(cpu["emit"]), statistics.median(cpu["insert"])
        row.metrics |= {
            "cpu_us_per_event": emit_cpu * 1e6,
            "reference_cpu_us_per_event": insert_cpu * 1e6,
            "cpu_ratio": insert_cpu / emit_cpu,
        }
        if cpu["floor"]:
            row.metrics["floor_cpu_us_per_event"] = statistics.median(cpu["floor"]) * 1e6
    return row


def _sampled_run(ledger: Ledger, kind: str, *, clients: int, seconds: int) -> tuple[PgbenchRun, float | None]:
    """One pgbench run, and the server CPU its sessions spent per row written over the middle
    60% of the run (None when too little to measure)."""
    outcome: dict[str, object] = {}

    def bench() -> None:
        try:
            outcome["run"] = pgbench(
                ledger.server,
                ledger.dbname,
                SCRIPTS[kind],
                clients=clients,
                seconds=seconds,
                variables={"payload": PAYLOAD},
            )
        except Exception as exc:  # raised below, in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=bench, name=f"bench-pgbench-{kind}")
    thread.start()
    time.sleep(seconds * 0.2)
    first = _sample(ledger, TABLES[kind])
    time.sleep(seconds * 0.6)
    second = _sample(ledger, TABLES[kind])
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    spent = sum(second[0][pid] - used for pid, used in first[0].items() if pid in second[0])
    rows = second[1] - first[1]
    cpu_per_row = spent / rows if rows > 0 and spent >= CPU_RESOLUTION * 20 else None
    return outcome["run"], cpu_per_row


def _sample(ledger: Ledger, table: tuple[str, str]) -> tuple[dict[int, float], int]:
    """CPU seconds used so far by each pgbench session, and the rows in its table."""
    pids = ledger.conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgbench'"
    ).fetchall()
    used = {pid: cpu for (pid,) in pids if (cpu := process_cpu(pid)) is not None}
    count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table))
    return used, int(ledger.conn.execute(count).fetchone()[0])
