"""Case latency: emit -> chained under a steady offered load, with the drainer that production
runs (pg_cron calling compliance.run_drainer), and the outbox depth sampled throughout.

How a latency is measured: each event's payload carries the server clock when the emit
statement ran (sent_epoch). A watcher polls audit_events for new seqs every POLL_SECONDS and
evaluates clock_timestamp() per returned row, after its snapshot was taken: the row's batch
had committed by then, so observed - sent is an upper bound on emit -> chained that
overstates it by at most one poll interval plus the poll's own run time. recorded_at is not
used because it is the batch transaction's start, not its commit.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from .cluster import pgbench
from .ledger import Ledger
from .results import Row, Target

POLL_SECONDS = 0.02
DEPTH_EVERY_SECONDS = 0.1
CRON_DB = "postgres"
# pg_cron starts jobs on minute boundaries, and pg_cron 1.4 with background workers starts
# nothing while any job of the cluster is still running (citusdata/pg_cron#200).
CRON_START_TIMEOUT = 240

LOAD_SCRIPT = """SELECT compliance.emit('bench.latency', 'bench-load',
    jsonb_build_object('sent_epoch', extract(epoch FROM clock_timestamp()),
                       'reason', 'steady offered load for the emit to chained latency benchmark'),
    'tenant-1');
"""

OBSERVE_SQL = """
SELECT e.seq,
       (extract(epoch FROM clock_timestamp()) - (e.payload ->> 'sent_epoch')::numeric)::float8
  FROM compliance.audit_events AS e
 WHERE e.seq > %s
 ORDER BY e.seq"""


class Watcher(threading.Thread):
    """Polls for newly chained events and samples the outbox depth until stopped."""

    def __init__(self, ledger: Ledger):
        super().__init__(name="bench-latency-watcher", daemon=True)
        self.ledger = ledger
        self.last_seq = ledger.chained()
        self.latencies: list[float] = []
        self.depths: list[int] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            with self.ledger.server.connect(self.ledger.dbname) as conn:
                next_depth = 0.0
                while not self.stopping.is_set():
                    for seq, latency in conn.execute(OBSERVE_SQL, (self.last_seq,)).fetchall():
                        self.last_seq = seq
                        self.latencies.append(latency)
                    if time.monotonic() >= next_depth:
                        self.depths.append(
                            conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0]
                        )
                        next_depth = time.monotonic() + DEPTH_EVERY_SECONDS
                    time.sleep(POLL_SECONDS)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        if self.error is not None:
            raise RuntimeError(f"latency watcher failed: {self.error}") from self.error


@contextmanager
def cron_drainer(ledger: Ledger, timeout: float) -> Iterator[dict[str, object]]:
    """Install the production pg_cron jobs (compliance.schedule_jobs()) and wait until the
    drainer's first run has started; on exit note the drainer's runs and the longest gap
    between them, remove the jobs (compliance.unschedule_jobs() also ends their runs in
    progress) and drop their run history."""
    # A verifier that is caught up, as in a system that has been running: its first run would
    # otherwise re-hash the whole log while the load runs.
    ledger.conn.execute("SELECT compliance.verify_new_events(100000000)")
    drain_job = ledger.scalar("SELECT compliance._cron_job_prefix() || 'drain'")
    ledger.conn.execute("SELECT compliance.schedule_jobs()")
    with ledger.server.connect(CRON_DB) as cron:
        job_ids = [
            row[0]
            for row in cron.execute(
                "SELECT jobid FROM cron.job WHERE starts_with(jobname, %s)", (f"auditchain:{ledger.dbname}:",)
            )
        ]
        try:
            deadline = time.monotonic() + timeout
            while True:
                status = cron.execute(
                    "SELECT d.status FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)"
                    " WHERE j.jobname = %s ORDER BY d.runid DESC LIMIT 1",
                    (drain_job,),
                ).fetchone()
                if status and status[0] == "running":
                    break
                if status and status[0] == "failed":
                    raise RuntimeError("the pg_cron drainer run failed")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pg_cron did not start the drainer within {timeout:.0f} s")
                time.sleep(0.2)
            info: dict[str, object] = {"drainer": "pg_cron, as compliance.schedule_jobs() installs it"}
            yield info
            runs = cron.execute(
                "SELECT d.start_time, d.end_time FROM cron.job_run_details AS d"
                " JOIN cron.job AS j USING (jobid) WHERE j.jobname = %s ORDER BY d.start_time",
                (drain_job,),
            ).fetchall()
            info["drainer_runs"] = len(runs)
            gaps = [(b[0] - a[1]).total_seconds() for a, b in zip(runs, runs[1:], strict=False) if a[1]]
            info["max_gap_between_drainer_runs_s"] = max(gaps, default=0.0)
        finally:
            ledger.conn.execute("SELECT compliance.unschedule_jobs()")
            cron.execute("DELETE FROM cron.job_run_details WHERE jobid = ANY(%s)", (job_ids,))


@contextmanager
def direct_drainer(ledger: Ledger, seconds: float) -> Iterator[dict[str, object]]:
    """The same procedure pg_cron runs, called from a thread: the drainer's own latency without
    the scheduler's, and all a seconds-long smoke can use (pg_cron starts jobs on minute
    boundaries only)."""
    conn = ledger.server.connect(ledger.dbname)
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            conn.execute("CALL compliance.run_drainer(max_runtime => %s * interval '1 second')", (seconds,))
        except psycopg.errors.QueryCanceled:
            pass
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=drain, name="bench-drainer", daemon=True)
    thread.start()
    try:
        yield {"drainer": "CALL compliance.run_drainer() from one session, no scheduler"}
    finally:
        conn.cancel_safe()
        thread.join(timeout=30)
        conn.close()
    if errors:
        raise RuntimeError(f"the drainer failed: {errors[0]}") from errors[0]


def run(ledger: Ledger, *, rate: int, seconds: int, via_cron: bool) -> Row:
    row = Row(
        case="latency",
        variant=f"{rate}/s {seconds}s {'pg_cron' if via_cron else 'session'}",
        unit="s (p99)",
        reference_name="none: absolute targets",
        targets=[Target("p99_s", "<=", 2.0), Target("max_depth", "<", 100), Target("unchained", "<=", 0)],
    )
    if ledger.outbox_depth():
        raise RuntimeError("the outbox must be empty before the latency case")
    # Long enough for pg_cron to start a drainer run held back by another job (see above).
    settle_seconds = 90 if via_cron else 30
    drainer = (
        cron_drainer(ledger, timeout=CRON_START_TIMEOUT)
        if via_cron
        else direct_drainer(ledger, seconds + settle_seconds)
    )
    with drainer as info:
        watcher = Watcher(ledger)
        watcher.start()
        load = pgbench(ledger.server, ledger.dbname, LOAD_SCRIPT, clients=4, seconds=seconds, rate=rate)
        deadline = time.monotonic() + settle_seconds
        while len(watcher.latencies) < load.transactions and time.monotonic() < deadline:
            time.sleep(0.1)
        watcher.stop()
    latencies = sorted(watcher.latencies)
    if len(latencies) < 2:
        raise RuntimeError("the latency case observed fewer than two chained events")
    centiles = statistics.quantiles(latencies, n=100, method="inclusive")
    row.measured = centiles[98]
    row.metrics = {
        **info,
        "offered_rate": rate,
        "achieved_rate": load.tps,
        "emitted": load.transactions,
        "unchained": load.transactions - len(latencies),
        "p50_s": centiles[49],
        "p99_s": centiles[98],
        "max_s": latencies[-1],
        "max_depth": max(watcher.depths),
        "mean_depth": statistics.mean(watcher.depths),
        "p99_depth": statistics.quantiles(watcher.depths, n=100, method="inclusive")[98],
        "depth_samples": len(watcher.depths),
        "poll_interval_s": POLL_SECONDS,
        "emit_latency_ms": load.latency_ms,
    }
    return row
