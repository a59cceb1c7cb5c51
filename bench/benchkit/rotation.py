"""Case rotation: a measured prototype of a rotating outbox (pgq-style), not production code.

Producers would insert into the current of two outbox tables; the drainer switches the
pointer, takes the old table ACCESS EXCLUSIVE (waiting out producers still inserting into
it), chains every row in outbox order exactly as compliance.drain does (canonical record,
hash loop in PL/pgSQL, one INSERT) and TRUNCATEs the table instead of deleting row by row.
Measured on the same backlog beside the drain case's reference (INSERT ... SELECT hashed
once into a plain table) and beside the same design's floor (that INSERT into a table with
audit_events' indexes, then TRUNCATE), so its ratio can be set beside the delete design's."""

from __future__ import annotations

from psycopg import sql

from .drain import HASHED_COPY_SQL
from .ledger import Ledger, fill_sql, human
from .results import Row, Target, cpu_metrics

PROTOTYPE_SQL = """
CREATE TABLE IF NOT EXISTS bench_ref.rotation_outbox (LIKE compliance.audit_outbox INCLUDING ALL);
CREATE TABLE IF NOT EXISTS bench_ref.rotation_events (LIKE compliance.audit_events INCLUDING INDEXES);
CREATE OR REPLACE FUNCTION bench_ref.rotation_drain(last_seq bigint, last_hash bytea) RETURNS integer
LANGUAGE plpgsql SET jit = off AS $f$
DECLARE
    v_recorded_at timestamptz := clock_timestamp();
    v_records bytea[];
    v_record bytea;
    v_prev bytea[] := '{}';
    v_hashes bytea[] := '{}';
    v_hash bytea := last_hash;
    v_n integer := 0;
    v_moved integer;
BEGIN
    -- Every producer that still inserts into the old table finishes first; none starts after.
    LOCK TABLE bench_ref.rotation_outbox IN ACCESS EXCLUSIVE MODE;
    SELECT array_agg(compliance.event_record(last_seq + b.position, b.event_id, b.occurred_at, v_recorded_at,
                                             b.tenant_id, b.event_type, b.actor,
                                             compliance.payload_digest(b.payload)) ORDER BY b.position)
      INTO v_records
      FROM (SELECT o.*, row_number() OVER (ORDER BY o.outbox_id) AS position
              FROM bench_ref.rotation_outbox AS o) AS b;
    FOREACH v_record IN ARRAY v_records LOOP
        v_n := v_n + 1;
        v_prev[v_n] := v_hash;
        v_hash := compliance.event_hash(v_hash, v_record);
        v_hashes[v_n] := v_hash;
    END LOOP;
    INSERT INTO bench_ref.rotation_events
    SELECT last_seq + u.position, b.event_id, b.occurred_at, v_recorded_at, b.tenant_id, b.event_type,
           b.actor, b.payload, 1, u.prev_hash, u.event_hash
      FROM (SELECT o.*, row_number() OVER (ORDER BY o.outbox_id) AS position
              FROM bench_ref.rotation_outbox AS o) AS b
      JOIN unnest(v_prev, v_hashes) WITH ORDINALITY AS u (prev_hash, event_hash, position)
        ON u.position = b.position;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    TRUNCATE bench_ref.rotation_outbox;
    RETURN v_moved;
END;
$f$;
"""

OUTBOX = sql.Identifier("bench_ref", "rotation_outbox")
FILL_SQL = fill_sql(OUTBOX)
REFERENCE_SQL = HASHED_COPY_SQL.format(table=sql.Identifier("bench_ref", "drain_copy"), rows=OUTBOX)
FLOOR_SQL = HASHED_COPY_SQL.format(table=sql.Identifier("bench_ref", "drain_floor"), rows=OUTBOX)
GENESIS = "\\x" + "00" * 32


def run(ledger: Ledger, *, backlog: int) -> Row:
    row = Row(
        case="rotation",
        variant=f"prototype backlog={human(backlog)}",
        unit="events/s",
        reference_name="INSERT ... SELECT sha256(row text) of the same rows into a plain table",
        targets=[Target("ratio", ">=", 0.6)],
        floor_name="INSERT ... SELECT hashed once into a table with audit_events' indexes, then TRUNCATE",
    )
    ledger.conn.execute(PROTOTYPE_SQL)
    ledger.conn.execute("TRUNCATE bench_ref.drain_copy, bench_ref.drain_floor, bench_ref.rotation_events")

    def fresh() -> None:
        ledger.conn.execute("TRUNCATE bench_ref.rotation_outbox")
        ledger.settle("bench_ref.rotation_outbox")
        ledger.conn.execute(FILL_SQL, (1, backlog))
        ledger.conn.execute("ANALYZE bench_ref.rotation_outbox")
        ledger.scalar("SELECT count(*) FROM bench_ref.rotation_outbox")  # hint bits set before timing

    fresh()
    reference = ledger.measure(lambda: ledger.conn.execute(REFERENCE_SQL))

    def floor_statement() -> None:
        with ledger.conn.transaction():
            ledger.conn.execute(FLOOR_SQL)
            ledger.conn.execute("TRUNCATE bench_ref.rotation_outbox")

    fresh()
    floor = ledger.measure(floor_statement)
    ledger.conn.execute("TRUNCATE bench_ref.drain_copy, bench_ref.drain_floor")
    fresh()
    drained = ledger.measure(
        lambda: ledger.scalar("SELECT bench_ref.rotation_drain(0, %s::bytea)", (GENESIS,))
    )
    if drained.result != backlog:
        raise RuntimeError(f"the prototype moved {drained.result} of {backlog} rows")
    ledger.conn.execute("TRUNCATE bench_ref.rotation_events")
    row.measured = backlog / drained.wall
    row.reference = backlog / reference.wall
    row.floor = backlog / floor.wall
    row.metrics = {
        "events": backlog,
        "prototype_seconds": drained.wall,
        "reference_seconds": reference.wall,
        "floor_seconds": floor.wall,
        **cpu_metrics(drained, reference, backlog),
    }
    if floor.cpu:
        row.metrics["floor_cpu_us_per_event"] = floor.cpu / row.metrics["events"] * 1e6
    return row
