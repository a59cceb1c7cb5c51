"""Crash and fault injection under load. Every scenario ends the same way: every event whose
emit committed is chained exactly once, seqs run 1..n without a gap, the outbox is empty and
verify_chain passes.

Scenarios that stop PostgreSQL or kill processes other than our own backends run on a
throwaway cluster (module fixture `scratch_cluster`), never on the shared one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import boto3
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from auditchain.cli import main
from auditchain.errors import EXIT_UNAVAILABLE
from auditchain.watchdog import DEFAULT_NAMESPACE, HEARTBEAT_METRIC
from awsfake import free_port
from clihelpers import run_cli

# Crash harness: killed servers, backends and endpoints, and pg_cron's own scheduler.
pytestmark = pytest.mark.slow

# Numbers for docs/security.md: pytest tests/py/test_security_crash.py -o log_cli=true --log-cli-level=INFO
log = logging.getLogger("security-suite")
REPO = Path(__file__).resolve().parents[2]
AUDITCHAIN = str(Path(sys.executable).with_name("auditchain"))
DRAINER_APP = "ac-crash-drainer"
RECONNECT_PAUSE = 0.05
T = TypeVar("T")
EMIT_TOKEN = "SELECT compliance.emit('crash.test', 'producer', jsonb_build_object('token', %s::bigint))"


@dataclass
class Ledger:
    """Producers and a drainer running against one database through whatever happens to it."""

    dsn: str
    producer_threads: int = 2
    batch_size: int = 500
    drainer: bool = True  # False when pg_cron is the database's drainer
    emit_pause: float = 0.0  # seconds each producer waits between events
    attempted: set[int] = field(default_factory=set)
    confirmed: set[int] = field(default_factory=set)
    drainer_interruptions: int = 0
    drainer_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._tokens = itertools.count(1)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._produce, name=f"producer-{n}", daemon=True)
            for n in range(self.producer_threads)
        ]
        if self.drainer:
            self._threads.append(threading.Thread(target=self._drain, name="drainer", daemon=True))

    def prefill(self, conn: psycopg.Connection, events: int) -> None:
        """A backlog emitted in one transaction, so that every drain batch is a long one."""
        first = next(self._tokens)
        tokens = range(first, first + events)
        self._tokens = itertools.count(first + events)
        conn.execute(
            "SELECT count(compliance.emit('crash.test', 'prefill', jsonb_build_object('token', t)))"
            " FROM generate_series(%s::bigint, %s::bigint) AS t",
            (tokens.start, tokens.stop - 1),
        )
        self.attempted.update(tokens)
        self.confirmed.update(tokens)

    def __enter__(self) -> Ledger:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), f"{thread.name} did not stop"

    def _connect(self, app: str) -> psycopg.Connection | None:
        while not self._stop.is_set():
            try:
                return psycopg.connect(self.dsn, autocommit=True, application_name=app, connect_timeout=5)
            except psycopg.OperationalError:
                time.sleep(RECONNECT_PAUSE)
        return None

    def _produce(self) -> None:
        while (conn := self._connect("ac-crash-producer")) is not None:
            with conn:
                try:
                    while not self._stop.is_set():
                        token = next(self._tokens)
                        self.attempted.add(token)
                        conn.execute(EMIT_TOKEN, (token,))
                        self.confirmed.add(token)
                        self._stop.wait(self.emit_pause)
                except psycopg.OperationalError:
                    pass  # the emit in flight may or may not have committed: it stays only attempted

    def _drain(self) -> None:
        while (conn := self._connect(DRAINER_APP)) is not None:
            with conn:
                try:
                    while not self._stop.is_set():
                        conn.execute("CALL compliance.run_drainer('1 second', %s, 0.02)", (self.batch_size,))
                except psycopg.OperationalError:
                    self.drainer_interruptions += 1
                except psycopg.Error as exc:
                    self.drainer_errors.append(f"{exc.sqlstate}: {exc}")
                    return

    def wait_for_chained(self, conn: psycopg.Connection, at_least: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while chained_count(conn) < at_least:
            assert time.monotonic() < deadline, f"fewer than {at_least} events chained after {timeout}s"
            time.sleep(0.05)


def connect_when_up(dsn: str, timeout: float = 60) -> psycopg.Connection:
    """A connection once the server accepts them again (after a restart or crash recovery)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(RECONNECT_PAUSE)


def chained_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT last_seq FROM compliance.drainer_state").fetchone()[0]


def drain_everything(conn: psycopg.Connection) -> None:
    while conn.execute("SELECT compliance.drain(5000)").fetchone()[0] > 0:
        pass


def assert_nothing_lost_or_duplicated(conn: psycopg.Connection, ledger: Ledger) -> int:
    """The invariant every scenario ends with; returns the number of events chained."""
    assert not ledger.drainer_errors, ledger.drainer_errors
    drain_everything(conn)
    assert conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0] == 0
    rows = conn.execute(
        "SELECT seq, (payload->>'token')::bigint FROM compliance.audit_events ORDER BY seq"
    ).fetchall()
    seqs = [seq for seq, _ in rows]
    # Events the system emits itself (data.export_initiated) carry no token.
    tokens = [token for _, token in rows if token is not None]
    assert seqs == list(range(1, len(rows) + 1)), "seqs must run 1..n without a gap"
    assert len(set(tokens)) == len(tokens), "an event was chained twice"
    lost = ledger.confirmed - set(tokens)
    assert not lost, f"{len(lost)} committed events were lost, e.g. {sorted(lost)[:5]}"
    assert set(tokens) <= ledger.attempted, "an event nobody emitted was chained"
    assert conn.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
    ).fetchone() == (True, len(rows), None, None)
    assert conn.execute("SELECT last_seq, halted_at FROM compliance.drainer_state").fetchone() == (
        len(rows),
        None,
    )
    # Each batch's tenant leaves commit with it, pending until the next fold: the tenant heads
    # cover the log exactly before the fold and after it.
    assert conn.execute("SELECT ok, problem FROM compliance.verify_tree()").fetchone() == (True, None)
    conn.execute("SELECT compliance._tenant_trees_fold()")
    assert conn.execute("SELECT count(*) FROM compliance.tenant_tree_pending").fetchone()[0] == 0
    assert conn.execute("SELECT ok, problem FROM compliance.verify_tree()").fetchone() == (True, None)
    return len(rows)


def drainer_backend(
    conn: psycopg.Connection, *, mid_write: bool, timeout: float = 30, not_pid: int | None = None
) -> int | None:
    """pid of the drainer's backend, once it is inside a transaction that has written (mid_write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND (NOT %s OR backend_xid IS NOT NULL) AND pid IS DISTINCT FROM %s",
            (DRAINER_APP, mid_write, not_pid),
        ).fetchone()
        if row:
            return row[0]
        time.sleep(0.002)
    return None


def test_drainer_backend_killed_repeatedly(dsn, conn):
    kills = mid_write = 0
    with Ledger(dsn) as ledger:
        ledger.wait_for_chained(conn, 200)
        for _ in range(15):
            pid = drainer_backend(conn, mid_write=True, timeout=1)
            mid_write += pid is not None
            pid = pid or drainer_backend(conn, mid_write=False)
            assert pid, "the drainer never came back"
            assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
            kills += 1
            time.sleep(0.1)
        before = chained_count(conn)
        ledger.wait_for_chained(conn, before + 100)
    assert ledger.drainer_interruptions >= kills - 1  # the last kill may race the shutdown
    chained = assert_nothing_lost_or_duplicated(conn, ledger)
    assert mid_write >= kills // 2, f"only {mid_write} of {kills} kills landed inside a drain transaction"
    log.info(
        "drainer killed %d times (%d inside a drain transaction); %d events chained",
        kills,
        mid_write,
        chained,
    )


@dataclass
class ScratchCluster:
    """A throwaway cluster of our own (scripts/pg-cluster with its own data folder and port)."""

    data: Path
    port: int
    cron_ledger: Ledger | None = None  # the database pg_cron drains (test_pg_cron_scheduler_terminated)

    def pg_cluster(self, action: str, *, check: bool = True) -> None:
        env = {**os.environ, "AUDITCHAIN_PGDATA": str(self.data), "AUDITCHAIN_PGPORT": str(self.port)}
        done = subprocess.run(
            [str(REPO / "scripts" / "pg-cluster"), action],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 or not check, f"pg-cluster {action}: {done.stdout}{done.stderr}"

    def dsn(self, dbname: str) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)

    def create_ledger(self, dbname: str) -> str:
        dsn = self.dsn(dbname)
        done = subprocess.run(
            [AUDITCHAIN, "migrate", "--create-database", "--quiet", "--dsn", dsn],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return dsn


@pytest.fixture(scope="module")
def scratch_cluster() -> Iterator[ScratchCluster]:
    # Under /tmp so that the postgres OS user (the server's, when we run as root) can reach it.
    root = Path(tempfile.mkdtemp(prefix="auditchain-crash-", dir="/tmp"))
    root.chmod(0o755)
    cluster = ScratchCluster(root / "data", free_port())
    try:
        cluster.pg_cluster("up")
        # pg_cron ticks once a minute: schedule the jobs of the pg_cron test's database now, so
        # that they have run by the time that test (the module's last) looks.
        cluster.cron_ledger = Ledger(cluster.create_ledger(CRON_WATCHED_DB), drainer=False, emit_pause=0.01)
        with psycopg.connect(cluster.cron_ledger.dsn, autocommit=True) as conn:
            cluster.cron_ledger.prefill(conn, CRON_PREFILL)
            assert conn.execute("SELECT compliance.schedule_jobs()").fetchone()[0] >= 1
        yield cluster
    finally:
        # The data is thrown away: nothing to shut down cleanly for.
        cluster.pg_cluster("stop-immediate", check=False)
        shutil.rmtree(root, ignore_errors=True)


def once_recovered(dsn: str, action: Callable[[psycopg.Connection], T], timeout: float = 60) -> T:
    """action(conn) on a server that may still be restarting or resetting after a crash."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect_when_up(dsn) as conn:
                return action(conn)
        except psycopg.OperationalError:
            # Connected in the moment before a crash reset; try again.
            if time.monotonic() > deadline:
                raise


CRON_WATCHED_DB = "cron_watched"
CRON_PREFILL = 100


def immediate_shutdown_and_restart(cluster: ScratchCluster, _drainer_pid: int) -> None:
    cluster.pg_cluster("stop-immediate")
    cluster.pg_cluster("start")


def kill_drainer_backend(_cluster: ScratchCluster, drainer_pid: int) -> None:
    # SIGKILL of a backend makes the postmaster reset every backend and run crash recovery.
    os.kill(drainer_pid, signal.SIGKILL)


SERVER_CRASHES: dict[str, Callable[[ScratchCluster, int], None]] = {
    "immediate shutdown mid-drain, restart": immediate_shutdown_and_restart,
    "drainer backend SIGKILLed mid-drain, crash recovery": kill_drainer_backend,
}


@pytest.mark.parametrize("crash", SERVER_CRASHES.values(), ids=SERVER_CRASHES.keys())
def test_server_crash_mid_drain(scratch_cluster, crash):
    dsn = scratch_cluster.create_ledger(f"crash_{crash.__name__}")
    crashes = 0
    ledger = Ledger(dsn, batch_size=5000)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ledger.prefill(conn, 20000)
    with ledger:
        pids = [None]
        for _ in range(3):
            # A new drainer backend (not the dying one of the last crash) inside a drain transaction.
            pid = once_recovered(dsn, lambda conn: drainer_backend(conn, mid_write=True, not_pid=pids[-1]))
            assert pid, "the drainer never got inside a drain transaction"
            crash(scratch_cluster, pid)
            pids.append(pid)
            crashes += 1
        once_recovered(dsn, lambda conn: ledger.wait_for_chained(conn, chained_count(conn) + 1000))
    with connect_when_up(dsn) as conn:
        chained = assert_nothing_lost_or_duplicated(conn, ledger)
    assert ledger.drainer_interruptions >= crashes
    log.info("%s: %d crashes survived; %d events chained", crash.__name__, crashes, chained)


class CuttableEndpoint:
    """A loopback TCP proxy in front of a moto server that dies at a chosen request.

    Clients see the endpoint vanish (connections cut, new ones refused) exactly where a
    request or its response is in flight, while what already reached S3 stays there, which
    restarting moto itself (it keeps everything in memory) would not allow.
    """

    def __init__(self, upstream_url: str):
        self.upstream = ("127.0.0.1", int(upstream_url.rsplit(":", 1)[1]))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dead = threading.Event()
        self._trap: tuple[re.Pattern[bytes], str] | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> CuttableEndpoint:
        self.dead.clear()
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    def die_at(self, request_line: str, *, after_request_reached_s3: bool) -> None:
        """Die when a request whose first line matches arrives: before forwarding it, or once
        S3 has it, before its response reaches the client."""
        self._trap = (
            re.compile(request_line.encode()),
            "response" if after_request_reached_s3 else "request",
        )

    def kill(self) -> None:
        self.dead.set()
        self._trap = None
        with self._lock:
            for sock in [self._listener, *self._sockets]:
                if sock is None:
                    continue
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self.dead.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets.update((client, server))
            drop_response = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, drop_response), daemon=True).start()
            threading.Thread(
                target=self._responses, args=(server, client, drop_response), daemon=True
            ).start()

    def _requests(self, client: socket.socket, server: socket.socket, drop_response: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                trap = self._trap
                # botocore sends each request's head in one write, so a request starts a chunk.
                if trap and trap[0].match(data):
                    if trap[1] == "request":
                        self.kill()
                        return
                    drop_response.set()
                server.sendall(data)

    def _responses(
        self, server: socket.socket, client: socket.socket, drop_response: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if drop_response.is_set() and not data.startswith(b"HTTP/1.1 100"):
                    self.kill()  # S3 has done it; the client never hears so
                    return
                client.sendall(data)


@pytest.fixture
def aws_endpoint(moto_server) -> Iterator[CuttableEndpoint]:
    endpoint = CuttableEndpoint(moto_server.url).start()
    yield endpoint
    endpoint.kill()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`auditchain ARGV` in-process; the exit code and stdout."""
    code, out, _ = run_cli(capsys, *argv)
    return code, out


def new_bucket(moto_server) -> str:
    name = f"ac-crash-{uuid.uuid4().hex[:12]}"
    assert main(["bucket", "create", "--bucket", name, "--endpoint-url", moto_server.url]) == 0
    return name


def test_aws_endpoint_dies_mid_anchor_upload(dsn, conn, moto_server, aws_endpoint, capsys, signing_key):
    bucket = new_bucket(moto_server)
    s3 = boto3.client("s3", endpoint_url=moto_server.url)
    anchor = ("anchor", "--once", "--dsn", dsn, "--bucket", bucket, "--endpoint-url", aws_endpoint.url)
    outages = 0
    with Ledger(dsn) as ledger:
        # Each of the two writes (the signed checkpoint, then the document), lost on its way or
        # after S3 stored it.
        cuts = [(folder, reached_s3) for folder in ("checkpoints", "anchors") for reached_s3 in (False, True)]
        for folder, reached_s3 in cuts:
            ledger.wait_for_chained(conn, chained_count(conn) + 200)
            assert conn.execute("SELECT compliance.create_anchor()").fetchone()[0]
            aws_endpoint.die_at(rf"PUT /[^ ]*{folder}/", after_request_reached_s3=reached_s3)
            assert cli(capsys, *anchor)[0] == EXIT_UNAVAILABLE, "a transient failure exits EXIT_UNAVAILABLE"
            assert aws_endpoint.dead.is_set()
            outages += 1
            pending = conn.execute(
                "SELECT count(*) FROM compliance.anchors WHERE status = 'pending' AND last_error IS NOT NULL"
            ).fetchone()[0]
            assert pending >= 1, "the anchor stays pending with its error"
            aws_endpoint.start()
        ledger.wait_for_chained(conn, chained_count(conn) + 200)
        assert cli(capsys, *anchor)[0] == 0
    chained = assert_nothing_lost_or_duplicated(conn, ledger)
    assert conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'uploaded') FROM compliance.anchors"
    ).fetchone() == (len(cuts), len(cuts))
    versions = s3.list_object_versions(Bucket=bucket)
    assert sorted(v["Key"].split("/")[0] for v in versions["Versions"]) == ["anchors"] * len(cuts) + [
        "checkpoints"
    ] * len(cuts), "one document and one signed checkpoint per anchor, none written twice"
    assert "DeleteMarkers" not in versions
    code, out = cli(
        capsys,
        "verify",
        "--json",
        "--require-signatures",
        "--vkey",
        signing_key.vkey,
        "--dsn",
        dsn,
        "--bucket",
        bucket,
        "--endpoint-url",
        moto_server.url,
    )
    assert code == 0, out
    log.info("anchor uploads survived %d endpoint deaths; %d events chained", outages, chained)


EXPORT_CUTS = {
    "data part upload, request lost": (r"PUT /[^ ]*events\.ndjson\.gz\?[^ ]*partNumber=", False),
    "multipart completion, response lost": (r"POST /[^ ]*events\.ndjson\.gz\?uploadId=", True),
    "manifest upload, request lost": (r"PUT /[^ ]*manifest\.json", False),
    "manifest upload, response lost": (r"PUT /[^ ]*manifest\.json", True),
}


@pytest.mark.parametrize(("request_line", "reached_s3"), EXPORT_CUTS.values(), ids=EXPORT_CUTS.keys())
def test_aws_endpoint_dies_mid_export(dsn, conn, moto_server, aws_endpoint, capsys, request_line, reached_s3):
    bucket = new_bucket(moto_server)
    s3 = boto3.client("s3", endpoint_url=moto_server.url)
    run = (
        "export",
        "run",
        "--once",
        "--json",
        "--dsn",
        dsn,
        "--bucket",
        bucket,
        "--endpoint-url",
        aws_endpoint.url,
    )
    with Ledger(dsn) as ledger:
        ledger.wait_for_chained(conn, 500)
        failed_job = conn.execute("SELECT compliance.request_export('{}', 'auditor@example.com')").fetchone()[
            0
        ]
        aws_endpoint.die_at(request_line, after_request_reached_s3=reached_s3)
        code, out = cli(capsys, *run)
        assert (code, json.loads(out)["status"]) == (1, "failed"), out
        assert aws_endpoint.dead.is_set()
        aws_endpoint.start()
        job = conn.execute("SELECT compliance.request_export('{}', 'auditor@example.com')").fetchone()[0]
        code, out = cli(capsys, *run)
        assert (code, json.loads(out)["status"]) == (0, "completed"), out
    status, job_error = conn.execute(
        "SELECT status, job_error FROM compliance.export_jobs WHERE job_id = %s", (failed_job,)
    ).fetchone()
    assert status == "failed" and job_error, "the interrupted job is failed with the reason"
    chained = assert_nothing_lost_or_duplicated(conn, ledger)
    code, out = cli(
        capsys, "verify-bundle", "--json", "--endpoint-url", moto_server.url, f"s3://{bucket}/exports/{job}/"
    )
    assert code == 0, out
    log.info("export survived the endpoint dying at %r; %d events chained", request_line, chained)
    # The retried job wrote its own folder; whatever the failed one left never overwrote it.
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert {f"exports/{job}/manifest.json", f"exports/{job}/events.ndjson.gz"} <= keys


def test_cloudwatch_endpoint_down_for_the_watchdog(dsn, conn, moto_server, aws_endpoint, capsys, caplog):
    stage = f"t{uuid.uuid4().hex[:10]}"
    watchdog = ("watchdog", "--once", "--dsn", dsn, "--stage", stage, "--endpoint-url", aws_endpoint.url)
    with Ledger(dsn) as ledger:
        ledger.wait_for_chained(conn, 200)
        aws_endpoint.die_at(r"POST / ", after_request_reached_s3=False)  # PutMetricData
        assert cli(capsys, *watchdog)[0] == EXIT_UNAVAILABLE, "a lost publish exits EXIT_UNAVAILABLE"
        assert aws_endpoint.dead.is_set()
        assert any("CloudWatch publish FAILED" in r.getMessage() for r in caplog.records)
        # The ledger does not depend on CloudWatch: events keep being chained meanwhile.
        ledger.wait_for_chained(conn, chained_count(conn) + 200)
        aws_endpoint.start()
        assert cli(capsys, *watchdog)[0] == 0
    chained = assert_nothing_lost_or_duplicated(conn, ledger)
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_server.url)
    heartbeats = cloudwatch.get_metric_statistics(
        Namespace=DEFAULT_NAMESPACE,
        MetricName=HEARTBEAT_METRIC,
        Dimensions=[{"Name": "Stage", "Value": stage}],
        StartTime=datetime.now(UTC) - timedelta(minutes=10),
        EndTime=datetime.now(UTC) + timedelta(minutes=1),
        Period=60,
        Statistics=["Sum"],
    )["Datapoints"]
    assert sum(d["Sum"] for d in heartbeats) == 1, "exactly the heartbeat of the cycle that got through"
    log.info("watchdog survived CloudWatch dying mid-publish; %d events chained", chained)


def metrics_of(conn: psycopg.Connection) -> dict[str, float | None]:
    return dict(conn.execute("SELECT metric, value FROM compliance.metrics()").fetchall())


def test_pg_cron_scheduler_terminated(scratch_cluster, capsys):
    """Last in the module: pg_cron has been draining this database since the module started."""
    ledger = scratch_cluster.cron_ledger
    cron_db = scratch_cluster.dsn("postgres")
    with connect_when_up(ledger.dsn) as conn, connect_when_up(cron_db) as cron:
        deadline = time.monotonic() + 75
        while chained_count(conn) < CRON_PREFILL:  # pg_cron, the only drainer here, works
            assert time.monotonic() < deadline, "pg_cron never drained the prefilled events"
            time.sleep(0.5)

        # Away from a minute boundary, where a job session may still be connecting.
        second = conn.execute("SELECT extract(second FROM clock_timestamp())").fetchone()[0]
        if not 5 <= second <= 50:
            time.sleep(float((65 - second) % 60))
        # The scheduler, and the job runs it started (background workers, or libpq sessions
        # named pg_cron): a run_drainer in progress would otherwise drain for another minute.
        killed = conn.execute(
            "SELECT array_agg(backend_type) FROM (SELECT backend_type, pg_terminate_backend(pid)"
            " FROM pg_stat_activity WHERE backend_type IN ('pg_cron launcher', 'pg_cron')"
            " OR application_name = 'pg_cron') AS t"
        ).fetchone()[0]
        assert "pg_cron launcher" in killed
        killed_at, killed_clock = time.monotonic(), conn.execute("SELECT clock_timestamp()").fetchone()[0]
        chained_at_kill = chained_count(conn)

        with ledger:  # producers keep emitting; nobody drains
            # Past the next minute boundary, when a live scheduler starts every job.
            wait = conn.execute("SELECT 65 - extract(epoch FROM clock_timestamp())::numeric % 60").fetchone()[
                0
            ]
            time.sleep(float(wait))
            elapsed = time.monotonic() - killed_at
            assert not conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'"
            ).fetchall(), "a terminated pg_cron scheduler does not come back by itself"
            started = cron.execute(
                "SELECT count(*) FROM cron.job_run_details WHERE start_time > %s", (killed_clock,)
            ).fetchone()[0]
            assert started == 0, "no job started after the scheduler was terminated"
            assert chained_count(conn) == chained_at_kill, "nothing was drained"

            # How auditchain shows it: the outbox fills and ages, the last drain and the last
            # verification run recede.
            metrics = metrics_of(conn)
            waiting = conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0]
            assert 0 < metrics["outbox_depth"] <= waiting
            assert metrics["outbox_oldest_age_seconds"] > 5
            assert metrics["drainer_last_success_age_seconds"] >= elapsed - 1
            assert metrics["verification_last_run_age_seconds"] >= elapsed - 1
            code, out = cli(capsys, "status", "--json", "--dsn", ledger.dsn)
            checks = {c["name"]: c for c in json.loads(out)["checks"]}
            assert "oldest row waiting" in checks["outbox"]["summary"]
            assert re.search(r"last batch \d+ (s|min) ago", checks["drainer"]["summary"]), checks["drainer"]

    # A restart brings the scheduler back.
    scratch_cluster.pg_cluster("stop-immediate")
    scratch_cluster.pg_cluster("start")
    with connect_when_up(ledger.dsn) as conn:
        deadline = time.monotonic() + 10
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'"
        ).fetchone():
            assert time.monotonic() < deadline, "the scheduler did not start with the server"
            time.sleep(0.2)
        chained = assert_nothing_lost_or_duplicated(conn, ledger)
    log.info(
        "pg_cron scheduler down for %.0f s, nothing drained meanwhile; %d events chained", elapsed, chained
    )
