"""Case drain: chaining a backlog with one drainer beside an INSERT ... SELECT that hashes
the same rows into a plain table, and beside its floor: the same rows deleted from the outbox
and inserted, hashed once, into a table with audit_events' indexes, in one statement. Run into
logs of several sizes, each later run's cost per event is compared with the run into an empty
log: it must not grow with the log."""

from __future__ import annotations

from psycopg import sql

from .ledger import Ledger, human
from .results import Row, Target, cpu_metrics

# The rows of {rows}, in order, one SHA-256 over each row's full text (every column, the
# payload included), into {table}, shaped like audit_events.
HASHED_COPY_SQL = sql.SQL("""
INSERT INTO {table}
       (seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload,
        hash_version, prev_hash, event_hash)
SELECT r.outbox_id, r.event_id, r.occurred_at, now(), r.tenant_id, r.event_type, r.actor, r.payload,
       1, '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea,
       sha256(convert_to(r::text, 'UTF8'))
  FROM {rows} AS r
 ORDER BY r.outbox_id""")

# Copied into a table with no index, constraint or trigger.
REFERENCE_SQL = HASHED_COPY_SQL.format(
    table=sql.Identifier("bench_ref", "drain_copy"), rows=sql.Identifier("compliance", "audit_outbox")
)

# What the design imposes on any drainer, with none of our code: the outbox DELETE and
# audit_events' indexes (the B-trees on seq and event_id, the BRIN on recorded_at).
FLOOR_SQL = sql.SQL("""
WITH moved AS (
    DELETE FROM compliance.audit_outbox AS o RETURNING o.*
)""") + HASHED_COPY_SQL.format(table=sql.Identifier("bench_ref", "drain_floor"), rows=sql.Identifier("moved"))


def run(ledger: Ledger, *, log_size: int, backlog: int, baseline: Row | None = None) -> Row:
    """baseline: the drain into an empty log, whose cost per event this one must stay within
    10 % of (wall time and server CPU are both reported; the CPU is the steadier)."""
    ledger.ensure_log(log_size)
    row = Row(
        case="drain",
        variant=f"backlog={human(backlog)} log={human(log_size)}",
        unit="events/s",
        reference_name="INSERT ... SELECT sha256(row text) of the same rows into a plain table",
        targets=[Target("measured", ">=", 30_000), Target("ratio", ">=", 0.55)],
        floor_name="one statement: delete, insert hashed once into a table with audit_events' indexes",
    )
    ledger.conn.execute("TRUNCATE bench_ref.drain_copy, bench_ref.drain_floor")
    fresh_backlog(ledger, backlog)
    reference = ledger.measure(lambda: ledger.conn.execute(REFERENCE_SQL))
    floor = ledger.measure(lambda: ledger.conn.execute(FLOOR_SQL))
    if ledger.outbox_depth() != 0:
        raise RuntimeError("the floor statement left rows in the outbox")
    # TRUNCATE drops the copies' buffers unwritten, so the drain does not flush them.
    ledger.conn.execute("TRUNCATE bench_ref.drain_copy, bench_ref.drain_floor")

    fresh_backlog(ledger, backlog)
    drain = ledger.measure(ledger.drain_all)
    if ledger.outbox_depth() != 0:
        raise RuntimeError("the drain left rows in the outbox")
    row.measured = backlog / drain.wall
    row.reference = backlog / reference.wall
    row.floor = backlog / floor.wall
    row.metrics = {
        "events": backlog,
        "log_size_before": log_size,
        "drain_seconds": drain.wall,
        "batches": drain.result,
        "reference_seconds": reference.wall,
        "floor_seconds": floor.wall,
        **cpu_metrics(drain, reference, backlog),
    }
    if floor.cpu:
        row.metrics["floor_cpu_us_per_event"] = floor.cpu / row.metrics["events"] * 1e6
    if baseline is not None and baseline.measured:
        row.metrics["seconds_per_event_vs_empty_log"] = baseline.measured / row.measured
        before, now = baseline.metrics.get("cpu_us_per_event"), row.metrics.get("cpu_us_per_event")
        if before and now:
            row.metrics["cpu_per_event_vs_empty_log"] = float(now) / float(before)
            row.targets.append(Target("cpu_per_event_vs_empty_log", "<=", 1.1))
    return row


def fresh_backlog(ledger: Ledger, backlog: int) -> None:
    """Write a backlog into a settled outbox. The checkpoint comes before the backlog is
    written, not after: one between emit and drain would make the drain, and only the drain,
    pay a full-page image for every outbox page it deletes from, which a drainer that
    follows its producers closely rarely does."""
    ledger.settle("compliance.audit_outbox", "compliance.audit_events")
    ledger.fill_outbox(backlog)
    ledger.conn.execute("ANALYZE compliance.audit_outbox")
    ledger.scalar("SELECT count(*) FROM compliance.audit_outbox")  # hint bits set before timing
