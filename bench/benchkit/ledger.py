"""The bench database's ledger: realistic rows, untimed set-up, and the timed drain loop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .cluster import Server

# About 330 bytes of jsonb text per event, varied per row like real request metadata.
PAYLOAD_SQL = """jsonb_build_object(
    'request_id', md5(i::text),
    'path', '/api/v1/accounts/' || mod(i, 5000) || '/documents/' || i,
    'client_ip', '10.' || mod(i, 256) || '.' || mod(i / 256, 256) || '.7',
    'user_agent', 'Mozilla/5.0 (X11; Linux x86_64) auditchain-bench/1.0',
    'changes', jsonb_build_object('status', jsonb_build_array('draft', 'published'), 'size', mod(i, 100000)),
    'reason', 'scheduled review of the retention settings of this document')"""

FILL_SQL = sql.SQL("""
INSERT INTO {outbox} (event_id, occurred_at, tenant_id, event_type, actor, payload)
SELECT compliance._uuidv7(), now() - interval '1 second',
       CASE WHEN mod(i, 10) = 0 THEN NULL ELSE 'tenant-' || mod(i, 10) END,
       'bench.event_' || mod(i, 20), 'user:' || mod(i, 1000), {payload}
  FROM generate_series(%s::bigint, %s::bigint) AS i""")


def fill_sql(outbox: sql.Identifier) -> sql.Composed:
    """Queue events numbered %s to %s into a table shaped like audit_outbox."""
    return FILL_SQL.format(outbox=outbox, payload=sql.SQL(PAYLOAD_SQL))


FILL_OUTBOX_SQL = fill_sql(sql.Identifier("compliance", "audit_outbox"))

# A log of any size in seconds rather than minutes: what the drainer would have written for
# the same rows, computed set-based (every canonical record and its digest in one query) with
# only the chain itself walked in a loop, then one INSERT straight into audit_events and the
# drainer's head moved to the new end. Every column is a function of the event's number i, so
# the digest pass and the insert pass see the same values; event ids are time-ordered like
# UUIDv7 (48-bit milliseconds first) so that the event_id index grows at its right edge as in
# production. audit_events' guard triggers refuse UPDATE, DELETE and TRUNCATE only, so the
# INSERT needs no bypass.
APPEND_CHAIN_SQL = """
CREATE OR REPLACE FUNCTION bench_ref.append_chain(events bigint) RETURNS void
LANGUAGE plpgsql SET jit = off AS $f$
DECLARE
    v_state compliance.drainer_state%ROWTYPE;
    v_digests bytea[];
    v_tenant_keys text[];
    v_leaves bytea[];
    v_digest bytea;
    v_hash bytea;
    v_prev bytea[] := '{}';
    v_hashes bytea[] := '{}';
    v_n integer := 0;
BEGIN
    SELECT * INTO STRICT v_state FROM compliance.drainer_state;
    SELECT pg_catalog.array_agg(
               pg_catalog.sha256(compliance.event_record(
                   r.seq, r.event_id, r.occurred_at, r.recorded_at, r.tenant_id, r.event_type, r.actor,
                   compliance.payload_digest(r.payload)
               )) ORDER BY r.seq),
           pg_catalog.array_agg(coalesce(r.tenant_id, '') ORDER BY r.seq)
      INTO v_digests, v_tenant_keys
      FROM bench_ref.filler(v_state.last_seq, events) AS r;
    v_hash := v_state.last_hash;
    FOREACH v_digest IN ARRAY v_digests LOOP
        v_n := v_n + 1;
        v_prev[v_n] := v_hash;
        v_hash := pg_catalog.sha256(v_hash || v_digest);
        v_hashes[v_n] := v_hash;
    END LOOP;
    INSERT INTO compliance.audit_events
    SELECT f.seq, f.event_id, f.occurred_at, f.recorded_at, f.tenant_id, f.event_type, f.actor, f.payload,
           1, u.prev_hash, u.event_hash
      FROM bench_ref.filler(v_state.last_seq, events) AS f
      JOIN unnest(v_prev, v_hashes) WITH ORDINALITY AS u (prev_hash, event_hash, n)
        ON u.n = f.seq - v_state.last_seq;
    -- The Merkle trees follow the chain, as drain() and the next fold leave them: the head check
    -- requires the global one, the tenant heads commitment the tenant trees (folded, so that
    -- the heads stored cover what came before these events).
    v_leaves := ARRAY(SELECT compliance._tree_leaf(d.digest)
                        FROM unnest(v_digests) WITH ORDINALITY AS d (digest, n)
                       ORDER BY d.n);
    PERFORM compliance._tree_append(v_state.last_seq + 1, v_leaves);
    PERFORM compliance._tenant_trees_fold();
    PERFORM compliance._tenant_tree_append(v_tenant_keys, v_leaves);
    UPDATE compliance.drainer_state
       SET last_seq = v_state.last_seq + events, last_hash = v_hash,
           total_drained = total_drained + events, last_success_at = clock_timestamp();
END;
$f$;
"""

# Filler events take their payloads from 5,000 precomputed ones (building each payload per
# event costs more than hashing it); the rest varies per event as in FILL_OUTBOX_SQL.
FILLER_SQL = sql.SQL("""
CREATE TABLE IF NOT EXISTS bench_ref.payloads AS
SELECT i AS k, {payload} AS payload FROM generate_series(0, 4999) AS i;
ANALYZE bench_ref.payloads;
CREATE OR REPLACE FUNCTION bench_ref.filler(after_seq bigint, events bigint)
RETURNS SETOF compliance.audit_events LANGUAGE sql STABLE AS $f$
SELECT i,
       (lpad(to_hex(1767225600000 + i / 100), 12, '0') || '7' || substr(h, 1, 3) || '8'
        || substr(h, 4, 15))::uuid,
       timestamptz '2026-01-01 00:00:00+00' + i * interval '10 microseconds',
       timestamptz '2026-01-01 00:00:01+00' + i * interval '10 microseconds',
       -- Every 100th event is tenant-1pct's (the tenant_export case), the other tenth ones have none.
       CASE WHEN mod(i, 100) = 0 THEN 'tenant-1pct' WHEN mod(i, 10) = 0 THEN NULL
            ELSE 'tenant-' || mod(i, 10) END,
       'bench.event_' || mod(i, 20), 'user:' || mod(i, 1000), p.payload,
       1::smallint, NULL::bytea, NULL::bytea,
       -- Hash format v1 rows: no salts, commitments or erasure marks.
       NULL::bytea, NULL::bytea, NULL::bytea, NULL::bytea, NULL::bigint, NULL::bigint
  FROM generate_series(after_seq + 1, after_seq + events) AS i
 CROSS JOIN LATERAL (SELECT md5(i::text) AS h) AS m
  JOIN bench_ref.payloads AS p ON p.k = mod(i, 5000)
$f$;
""").format(payload=sql.SQL(PAYLOAD_SQL))

REFERENCE_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS bench_ref;
-- Same columns, defaults, identity and primary key as the outbox; no function, no checks.
CREATE TABLE IF NOT EXISTS bench_ref.emit_plain (LIKE compliance.audit_outbox INCLUDING ALL);
-- Same columns as audit_events and nothing else: no index, no constraint, no trigger.
CREATE TABLE IF NOT EXISTS bench_ref.drain_copy (LIKE compliance.audit_events);
-- The drain's floor: audit_events' indexes (seq, event_id, event_hash, BRIN recorded_at).
CREATE TABLE IF NOT EXISTS bench_ref.drain_floor (LIKE compliance.audit_events INCLUDING INDEXES);
-- The emit floor: the same INSERT inside the barest PL/pgSQL function.
CREATE TABLE IF NOT EXISTS bench_ref.emit_floor (LIKE compliance.audit_outbox INCLUDING ALL);
CREATE OR REPLACE FUNCTION bench_ref.emit_floor(
    p_event_type text, p_actor text, p_payload jsonb, p_tenant_id text
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_event_id uuid := gen_random_uuid();
BEGIN
    INSERT INTO bench_ref.emit_floor (event_id, occurred_at, tenant_id, event_type, actor, payload)
    VALUES (v_event_id, now(), p_tenant_id, p_event_type, p_actor, p_payload);
    RETURN v_event_id;
END;
$$;
"""


# Events per append_chain call: one transaction, arrays of 32-byte hashes (~16 MB each).
APPEND_CHUNK = 500_000


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float | None
    result: object


@dataclass
class Ledger:
    """An autocommit connection to the bench database and the set-up it needs."""

    server: Server
    dbname: str
    conn: psycopg.Connection
    filled: int = 0

    @classmethod
    def open(cls, server: Server, dbname: str) -> Ledger:
        conn = server.connect(dbname)
        conn.execute(REFERENCE_SCHEMA_SQL)
        conn.execute(FILLER_SQL)
        conn.execute(APPEND_CHAIN_SQL)
        return cls(server, dbname, conn)

    def scalar(self, query: str, params: tuple = ()) -> object:
        return self.conn.execute(query, params).fetchone()[0]

    def chained(self) -> int:
        return int(self.scalar("SELECT last_seq FROM compliance.drainer_state"))

    def outbox_depth(self) -> int:
        return int(self.scalar("SELECT count(*) FROM compliance.audit_outbox"))

    def fill_outbox(self, count: int) -> None:
        """Queue count events with one INSERT ... SELECT (set-up, never timed)."""
        self.conn.execute(FILL_OUTBOX_SQL, (self.filled + 1, self.filled + count))
        self.filled += count

    def settle(self, *tables: str) -> None:
        """VACUUM ANALYZE then CHECKPOINT, so that what follows starts from the same clean state
        (hint bits set, visibility map current, no dirty buffers left by the set-up)."""
        for table in tables:
            self.conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(*table.split("."))))
        self.conn.execute("CHECKPOINT")

    def drain_all(self) -> int:
        """Chain the whole outbox the way pg_cron does: CALL compliance.run_drainer() with its
        default batch size and a zero max_runtime, so each call is one batch and one COMMIT.
        Returns the number of batches."""
        target = self.chained() + self.outbox_depth()
        batches = 0
        last = self.chained()
        while last < target:
            self.conn.execute("CALL compliance.run_drainer(max_runtime => interval '0')")
            batches += 1
            now = self.chained()
            if now == last:
                raise RuntimeError(f"the drainer stopped moving rows at seq {now}, short of {target}")
            last = now
        return batches

    def ensure_log(self, size: int) -> None:
        """Grow audit_events to at least size events (untimed), a chain verify_chain accepts,
        written set-based in chunks (bench_ref.append_chain) rather than through the drainer.
        Some cases leave a few events behind (an export request, an erasure event, the
        monitors' arrivals): a log a handful of events longer measures the same."""
        if self.outbox_depth():
            raise RuntimeError("the outbox must be empty before the log is grown")
        current = self.chained()
        while current < size:
            chunk = min(APPEND_CHUNK, size - current)
            self.conn.execute("SELECT bench_ref.append_chain(%s)", (chunk,))
            current += chunk

    def reconnect(self, wait: float = 120) -> None:
        """A fresh session after a failure (other work on a shared machine may restart the
        cluster): retried until the server accepts connections again."""
        self.conn.close()
        deadline = time.monotonic() + wait
        while True:
            try:
                self.conn = self.server.connect(self.dbname)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def close(self) -> None:
        self.conn.close()

    def measure(self, action: Callable[[], object]) -> Timing:
        """Run action; its wall-clock seconds and this session's server CPU seconds."""
        cpu_before = self.backend_cpu()
        started = time.perf_counter()
        result = action()
        wall = time.perf_counter() - started
        cpu_after = self.backend_cpu()
        cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        return Timing(wall, cpu, result)

    def measure_rolled_back(
        self, action: Callable[[], object], setup: Callable[[], object] | None = None
    ) -> Timing:
        """measure(action) inside one transaction that is then rolled back, after setup (untimed,
        in the same transaction: a variant to compare, a copy to work on)."""
        self.conn.execute("BEGIN")
        try:
            if setup is not None:
                setup()
            return self.measure(action)
        finally:
            self.conn.execute("ROLLBACK")

    def backend_cpu(self) -> float | None:
        return process_cpu(self.conn.info.backend_pid)


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a server process has used so far, or None when it is gone or
    the server is not on this machine. Less disturbed by other load than wall time."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def human(count: int) -> str:
    """200000 -> 200k, 1000001 -> 1M (three significant digits; the metrics keep exact counts)."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)
