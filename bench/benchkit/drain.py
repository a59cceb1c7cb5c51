"""Case drain: chaining a backlog with one drainer beside an INSERT ... SELECT that hashes
the same rows into a plain table."""

from __future__ import annotations

from .ledger import Ledger, human
from .results import Row, Target, cpu_metrics

# One SHA-256 over each row's full text (every column, the payload included), copied into a
# table shaped like audit_events with no index, constraint or trigger.
REFERENCE_SQL = """
INSERT INTO bench_ref.drain_copy
       (seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload,
        hash_version, prev_hash, event_hash)
SELECT o.outbox_id, o.event_id, o.occurred_at, now(), o.tenant_id, o.event_type, o.actor, o.payload,
       1, '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea,
       sha256(convert_to(o::text, 'UTF8'))
  FROM compliance.audit_outbox AS o
 ORDER BY o.outbox_id"""


def run(ledger: Ledger, *, log_size: int, backlog: int) -> Row:
    ledger.ensure_log(log_size)
    row = Row(
        case="drain",
        variant=f"backlog={human(backlog)} log={human(log_size)}",
        unit="events/s",
        reference_name="INSERT ... SELECT sha256(row text) of the same rows into a plain table",
        targets=[Target("measured", ">=", 30_000), Target("ratio", ">=", 0.5)],
    )
    ledger.conn.execute("TRUNCATE bench_ref.drain_copy")
    # Checkpoint before the backlog is written, not after: a checkpoint between emit and drain
    # would make the drain, and only the drain, pay a full-page image for every outbox page
    # it locks and deletes, which a drainer that follows its producers closely rarely does.
    ledger.settle("compliance.audit_outbox", "compliance.audit_events")
    ledger.fill_outbox(backlog)
    ledger.conn.execute("ANALYZE compliance.audit_outbox")
    ledger.scalar("SELECT count(*) FROM compliance.audit_outbox")  # hint bits set for both

    reference = ledger.measure(lambda: ledger.conn.execute(REFERENCE_SQL))
    # TRUNCATE drops the copy's buffers unwritten, so the drain does not flush them.
    ledger.conn.execute("TRUNCATE bench_ref.drain_copy")

    drain = ledger.measure(ledger.drain_all)
    if ledger.outbox_depth() != 0:
        raise RuntimeError("the drain left rows in the outbox")
    row.measured = backlog / drain.wall
    row.reference = backlog / reference.wall
    row.metrics = {
        "events": backlog,
        "log_size_before": log_size,
        "drain_seconds": drain.wall,
        "batches": drain.result,
        "reference_seconds": reference.wall,
        **cpu_metrics(drain, reference, backlog),
    }
    return row
