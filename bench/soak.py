"""auditchain soak: producers at a steady rate for minutes, pg_cron draining, and for part of
the run a transaction that holds back the xmin horizon (as a long report query or a
forgotten idle-in-transaction session would), so that VACUUM cannot remove the outbox's
dead rows. Prints drain rate, outbox depth and dead tuples over time, then checks that
every event was chained and the chain verifies.

    make soak                                   3 minutes, 500 events/s, xmin held 30%-60%
    python bench/soak.py --duration 1800 --rate 1000 --hold 0.2:0.8 --json soak.json

It creates a database bench_<pid> on the cluster named by PGHOST/PGPORT/PGUSER (default
127.0.0.1:54329, postgres), migrates it, schedules its pg_cron jobs, and drops it at the end.
Not part of CI. See docs/security.md ("Soak").
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass

import psycopg
from psycopg.types.json import Jsonb

from benchkit.cluster import Server, bench_database

# Dead and live tuples are counted in the table itself (pgstattuple): the statistics
# collector hears of the drainer's deletes only when its minute-long run_drainer call ends.
SAMPLE_SQL = """
SELECT (SELECT last_seq FROM compliance.drainer_state),
       (SELECT value FROM compliance.metrics() WHERE metric = 'outbox_depth')::bigint,
       (SELECT value FROM compliance.metrics() WHERE metric = 'outbox_oldest_age_seconds'),
       t.dead_tuple_count, t.tuple_count, s.autovacuum_count,
       pg_total_relation_size('compliance.audit_outbox'),
       (SELECT max(age(backend_xmin)) FROM pg_stat_activity WHERE datname = current_database())
  FROM pgstattuple('compliance.audit_outbox') AS t,
       pg_stat_user_tables AS s
 WHERE s.relid = 'compliance.audit_outbox'::regclass
"""


@dataclass
class Sample:
    seconds: float
    emitted: int
    chained: int
    drain_rate: float  # events chained per second since the previous sample
    outbox_depth: int
    outbox_oldest_age: float
    outbox_dead_tuples: int
    outbox_live_tuples: int
    outbox_autovacuums: int
    outbox_bytes: int
    oldest_xmin_age: int  # transactions the oldest snapshot in this database holds back
    xmin_held: bool


class Producers:
    """Threads emitting at a combined steady rate, one event per transaction like an application."""

    def __init__(self, dsn: str, rate: float, threads: int):
        self.dsn, self.interval = dsn, threads / rate
        self.emitted = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, number: int) -> None:
        payload = {
            "path": f"/api/v1/accounts/{number}/documents",
            "client_ip": f"10.0.0.{number}",
            "reason": "scheduled review of the retention settings of this document",
            "changes": {"status": ["draft", "published"], "size": 512},
        }
        with psycopg.connect(self.dsn, autocommit=True, application_name="auditchain soak producer") as conn:
            due = time.monotonic()
            while not self._stop.is_set():
                try:
                    conn.execute(
                        "SELECT compliance.emit('soak.event', %s, %s, %s)",
                        (f"user:{number}", Jsonb(payload), f"tenant-{number % 4}"),
                    )
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
                    return
                with self._lock:
                    self.emitted += 1
                due += self.interval
                self._stop.wait(max(0.0, due - time.monotonic()))


class XminHolder:
    """A REPEATABLE READ transaction whose snapshot pins the xmin horizon while it is open."""

    def __init__(self, dsn: str):
        self.conn = psycopg.connect(dsn, application_name="auditchain soak xmin holder")

    def hold(self) -> None:
        self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        self.conn.execute("SELECT count(*) FROM compliance.audit_events")  # takes the snapshot

    def release(self) -> None:
        self.conn.rollback()


def wait_for_first_cron_drain(conn: psycopg.Connection, timeout: float = 90) -> None:
    """pg_cron starts jobs on minute boundaries: start the clock once the drainer runs."""
    conn.execute("SELECT compliance.emit('soak.start', 'soak')")
    deadline = time.monotonic() + timeout
    print("waiting for pg_cron's first drainer run (up to a minute) ...", file=sys.stderr)
    while conn.execute("SELECT last_seq FROM compliance.drainer_state").fetchone()[0] == 0:
        if time.monotonic() > deadline:
            raise SystemExit("pg_cron did not drain within 90 s: is the cluster's pg_cron running?")
        time.sleep(0.5)


def parse_hold(text: str) -> tuple[float, float]:
    start, _, end = text.partition(":")
    try:
        begin, finish = float(start), float(end)
    except ValueError:
        raise argparse.ArgumentTypeError("expected FROM:TO as fractions of the run, e.g. 0.3:0.6") from None
    if not 0 <= begin < finish <= 1:
        raise argparse.ArgumentTypeError("FROM:TO must satisfy 0 <= FROM < TO <= 1")
    return begin, finish


def print_header() -> None:
    print(
        f"{'t (s)':>6} {'emitted':>9} {'chained':>9} {'drain/s':>8} {'outbox':>8} {'oldest':>7} "
        f"{'dead tup':>9} {'live tup':>9} {'autovac':>7} {'outbox MB':>9} {'xmin age':>9}  xmin"
    )


def print_sample(s: Sample) -> None:
    print(
        f"{s.seconds:6.0f} {s.emitted:9,d} {s.chained:9,d} {s.drain_rate:8,.0f} {s.outbox_depth:8,d} "
        f"{s.outbox_oldest_age:6.1f}s {s.outbox_dead_tuples:9,d} {s.outbox_live_tuples:9,d} "
        f"{s.outbox_autovacuums:7d} {s.outbox_bytes / 1e6:9.1f} {s.oldest_xmin_age:9,d}  "
        f"{'HELD' if s.xmin_held else ''}",
        flush=True,
    )


def soak(dsn: str, args: argparse.Namespace) -> list[Sample]:
    monitor = psycopg.connect(dsn, autocommit=True, application_name="auditchain soak monitor")
    monitor.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    monitor.execute("SELECT compliance.schedule_jobs()")
    wait_for_first_cron_drain(monitor)
    holder = XminHolder(dsn)
    producers = Producers(dsn, args.rate, args.producers)
    hold_from, hold_to = (fraction * args.duration for fraction in args.hold)
    samples: list[Sample] = []
    held = False
    started = time.monotonic()
    producers.start()
    last_chained, last_at = (
        monitor.execute("SELECT last_seq FROM compliance.drainer_state").fetchone()[0],
        started,
    )
    print_header()
    try:
        while (elapsed := time.monotonic() - started) < args.duration:
            if not held and hold_from <= elapsed < hold_to:
                holder.hold()
                held = True
            elif held and elapsed >= hold_to:
                holder.release()
                held = False
            time.sleep(min(args.interval, max(0.0, args.duration - elapsed)))
            now = time.monotonic()
            chained, depth, oldest, dead, live, autovacuums, size, xmin_age = monitor.execute(
                SAMPLE_SQL
            ).fetchone()
            sample = Sample(
                seconds=now - started,
                emitted=producers.emitted,
                chained=chained,
                drain_rate=(chained - last_chained) / (now - last_at),
                outbox_depth=depth,
                outbox_oldest_age=oldest or 0.0,
                outbox_dead_tuples=dead,
                outbox_live_tuples=live,
                outbox_autovacuums=autovacuums,
                outbox_bytes=size,
                oldest_xmin_age=xmin_age or 0,
                xmin_held=held,
            )
            last_chained, last_at = chained, now
            samples.append(sample)
            print_sample(sample)
    finally:
        producers.stop()
        holder.release()
    if producers.errors:
        raise SystemExit(f"a producer failed: {producers.errors[0]}")
    finish(monitor, producers.emitted)
    return samples


def finish(conn: psycopg.Connection, emitted: int) -> None:
    """Stop pg_cron, chain what is left, and check nothing was lost and the chain verifies."""
    conn.execute("SELECT compliance.unschedule_jobs()")
    while conn.execute("SELECT compliance.drain(10000)").fetchone()[0]:
        pass
    chained = conn.execute(
        "SELECT count(*) FROM compliance.audit_events WHERE event_type = 'soak.event'"
    ).fetchone()[0]
    ok, checked, first_bad, problem = conn.execute("SELECT * FROM compliance.verify_chain()").fetchone()
    verdict = "OK" if ok else "FAILED"
    print(f"\nemitted {emitted:,d}, chained {chained:,d}; verify_chain: {verdict} ({checked:,d} events)")
    if chained != emitted or not ok:
        raise SystemExit(
            f"soak FAILED: {emitted - chained} events missing; first bad seq {first_bad}: {problem}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=180, help="seconds of load (default: 180)")
    parser.add_argument(
        "--rate", type=float, default=500, help="events per second, all producers (default: 500)"
    )
    parser.add_argument("--producers", type=int, default=4, help="producer connections (default: 4)")
    parser.add_argument(
        "--hold",
        type=parse_hold,
        default=(0.3, 0.6),
        metavar="FROM:TO",
        help="hold back xmin during this part of the run, as fractions (default: 0.3:0.6)",
    )
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples (default: 10)")
    parser.add_argument("--json", metavar="FILE", help="also write the samples to FILE as JSON")
    args = parser.parse_args()
    if args.rate <= 0 or args.producers < 1 or args.duration <= 0 or args.interval <= 0:
        parser.error("--rate, --producers, --duration and --interval must be positive")

    server = Server.from_env()
    with bench_database(server) as dbname:
        print(
            f"soak on {server.host}:{server.port}/{dbname}: {args.rate:g} events/s from {args.producers} "
            f"producers for {args.duration:g} s, xmin held from {args.hold[0]:.0%} to {args.hold[1]:.0%}",
            file=sys.stderr,
        )
        samples = soak(server.dsn(dbname), args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(s) for s in samples], out, indent=2)


if __name__ == "__main__":
    main()
