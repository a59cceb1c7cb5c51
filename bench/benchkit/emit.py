"""Case emit: compliance.emit through pgbench beside a plain single-row INSERT of the same row."""

from __future__ import annotations

import statistics

from .cluster import pgbench
from .ledger import Ledger, human
from .results import Row, Target

PAYLOAD = (
    '{"path": "/api/v1/accounts/42/documents/7", "reason": "scheduled review of the retention '
    'settings of this document", "changes": {"size": 512, "status": ["draft", "published"]}, '
    '"client_ip": "10.0.0.7", "request_id": "5d41402abc4b2a76b9719d911017c592", '
    '"user_agent": "Mozilla/5.0 (X11; Linux x86_64) auditchain-bench/1.0"}'
)

# The payload travels as a statement parameter (pgbench -D), as from an application.
EMIT_SCRIPT = """\\set i random(1, 1000000)
SELECT compliance.emit('bench.emit', 'user:' || :i::text, :payload::jsonb, 'tenant-' || (:i::int % 10));
"""

INSERT_SCRIPT = """\\set i random(1, 1000000)
INSERT INTO bench_ref.emit_plain (event_id, occurred_at, tenant_id, event_type, actor, payload)
VALUES (gen_random_uuid(), now(), 'tenant-' || (:i::int % 10), 'bench.emit', 'user:' || :i::text,
        :payload::jsonb);
"""


def run(ledger: Ledger, *, clients: int, seconds: int, rounds: int) -> Row:
    log_size = ledger.chained()
    row = Row(
        case="emit",
        variant=f"clients={clients} log={human(log_size)}",
        unit="events/s",
        reference_name="pgbench single-row INSERT into a plain copy of audit_outbox",
        targets=[Target("ratio", ">=", 0.9)],
    )
    runs: dict[str, list] = {"emit": [], "insert": []}
    scripts = {"emit": EMIT_SCRIPT, "insert": INSERT_SCRIPT}
    for round_number in range(rounds):
        # Alternate which goes first so a drift in machine load hits both alike.
        order = ("insert", "emit") if round_number % 2 == 0 else ("emit", "insert")
        for kind in order:
            ledger.conn.execute("TRUNCATE compliance.audit_outbox, bench_ref.emit_plain")
            ledger.conn.execute("CHECKPOINT")
            runs[kind].append(
                pgbench(
                    ledger.server,
                    ledger.dbname,
                    scripts[kind],
                    clients=clients,
                    seconds=seconds,
                    variables={"payload": PAYLOAD},
                )
            )
    # What was emitted here must not leak into the drain and verify cases.
    ledger.conn.execute("TRUNCATE compliance.audit_outbox, bench_ref.emit_plain")
    row.measured = statistics.median(r.tps for r in runs["emit"])
    row.reference = statistics.median(r.tps for r in runs["insert"])
    row.metrics = {
        "seconds_per_run": seconds,
        "rounds": rounds,
        "emit_tps_runs": ", ".join(f"{r.tps:.0f}" for r in runs["emit"]),
        "insert_tps_runs": ", ".join(f"{r.tps:.0f}" for r in runs["insert"]),
        "emit_latency_ms": statistics.mean(r.latency_ms for r in runs["emit"]),
        "insert_latency_ms": statistics.mean(r.latency_ms for r in runs["insert"]),
        "log_size": log_size,
    }
    return row
