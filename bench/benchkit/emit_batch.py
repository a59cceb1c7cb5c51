"""Case emit_batch: compliance.emit_batch with n events per call beside one multi-row INSERT
of the same n rows into a plain copy of audit_outbox (one parameter per column and row), and
beside its floor: the same INSERT fed from the same JSON array (jsonb_array_elements, no
validation, no function). All prepared, one call per transaction, from this session;
alternated, medians of the rounds. Wall time includes the client's work on the parameters;
the server CPU per event is reported beside it."""

from __future__ import annotations

import json

from psycopg import sql

from .emit import PAYLOAD
from .ledger import Ledger, Timing
from .results import Row, Target, cpu_metrics
from .verify import median


def run(ledger: Ledger, *, per_call: int, rounds: int, events: int) -> Row:
    """events: per round and kind, in calls of per_call events."""
    row = Row(
        case="emit_batch",
        variant=f"events_per_call={per_call}",
        unit="events/s",
        reference_name="one multi-row INSERT of the same rows into a plain copy of audit_outbox",
        targets=[Target("ratio", ">=", 0.9)],
        floor_name="INSERT ... SELECT from jsonb_array_elements of the same array into the plain copy",
    )
    calls = max(1, events // per_call)
    payload = json.loads(PAYLOAD)
    batch = [
        {
            "event_type": "bench.emit",
            "actor": f"user:{i}",
            "payload": payload,
            "tenant_id": f"tenant-{i % 10}",
        }
        for i in range(per_call)
    ]
    batch_json = json.dumps(batch)
    insert = sql.SQL(
        "INSERT INTO bench_ref.emit_plain (event_id, occurred_at, tenant_id, event_type, actor, payload)"
        " VALUES {}"
    ).format(sql.SQL(", ").join(sql.SQL("(gen_random_uuid(), now(), %s, %s, %s, %s::jsonb)") for _ in batch))
    insert_params = [v for e in batch for v in (e["tenant_id"], e["event_type"], e["actor"], PAYLOAD)]

    from_array = (
        "INSERT INTO bench_ref.emit_plain (event_id, occurred_at, tenant_id, event_type, actor, payload)"
        " SELECT gen_random_uuid(), now(), e ->> 'tenant_id', e ->> 'event_type', e ->> 'actor',"
        "        e -> 'payload'"
        "   FROM jsonb_array_elements(%s::jsonb) AS e"
    )

    def floor_calls() -> None:
        for _ in range(calls):
            ledger.conn.execute(from_array, (batch_json,), prepare=True)

    def batch_calls() -> None:
        for _ in range(calls):
            ledger.conn.execute("SELECT compliance.emit_batch(%s::jsonb)", (batch_json,), prepare=True)

    def insert_calls() -> None:
        for _ in range(calls):
            ledger.conn.execute(insert, insert_params, prepare=True)

    kinds = {"emit_batch": batch_calls, "insert": insert_calls, "floor": floor_calls}
    timings: dict[str, list[Timing]] = {kind: [] for kind in kinds}
    for round_number in range(rounds):
        order = (
            ("insert", "floor", "emit_batch") if round_number % 2 == 0 else ("emit_batch", "floor", "insert")
        )
        for kind in order:
            ledger.conn.execute("TRUNCATE compliance.audit_outbox, bench_ref.emit_plain")
            ledger.conn.execute("CHECKPOINT")
            timings[kind].append(ledger.measure(kinds[kind]))
    ledger.conn.execute("TRUNCATE compliance.audit_outbox, bench_ref.emit_plain")
    events_per_round = calls * per_call
    measured, reference, floor = (median(timings[kind]) for kind in ("emit_batch", "insert", "floor"))
    row.measured = events_per_round / measured.wall
    row.reference = events_per_round / reference.wall
    row.floor = events_per_round / floor.wall
    row.metrics = {
        "events_per_round": events_per_round,
        "calls_per_round": calls,
        "rounds": rounds,
        "emit_batch_seconds_runs": ", ".join(f"{t.wall:.3f}" for t in timings["emit_batch"]),
        "insert_seconds_runs": ", ".join(f"{t.wall:.3f}" for t in timings["insert"]),
        "floor_seconds_runs": ", ".join(f"{t.wall:.3f}" for t in timings["floor"]),
        **cpu_metrics(measured, reference, events_per_round),
    }
    if floor.cpu:
        row.metrics["floor_cpu_us_per_event"] = floor.cpu / events_per_round * 1e6
    return row
