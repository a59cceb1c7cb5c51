"""The cluster under test: where it is, a throw-away bench_* database, pgbench, the machine."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from auditchain.migrate import migrate

PGBIN = Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"))


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str

    @classmethod
    def from_env(cls) -> Server:
        return cls(
            host=os.environ.get("PGHOST", "127.0.0.1"),
            port=int(os.environ.get("PGPORT", "54329")),
            user=os.environ.get("PGUSER", "postgres"),
        )

    def dsn(self, dbname: str) -> str:
        return make_conninfo(host=self.host, port=self.port, user=self.user, dbname=dbname)

    def connect(self, dbname: str) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True, application_name="auditchain bench")


@contextmanager
def bench_database(server: Server) -> Iterator[str]:
    """A freshly migrated database named bench_<pid>, dropped (with its sessions) afterwards."""
    name = f"bench_{os.getpid()}"
    with server.connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(server.dsn(name), quiet=True)
        yield name
    finally:
        with server.connect("postgres") as admin:
            # Whatever happened, leave no pg_cron job pointing at a database about to vanish.
            admin.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE starts_with(jobname, %s)",
                (f"auditchain:{name}:",),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class PgbenchRun:
    clients: int
    seconds: float
    transactions: int
    tps: float
    latency_ms: float


def pgbench(
    server: Server,
    dbname: str,
    script: str,
    *,
    clients: int,
    seconds: int,
    rate: int | None = None,
    variables: dict[str, str] | None = None,
) -> PgbenchRun:
    """Run one pgbench script (no vacuum, prepared statements) and parse its summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="bench_") as script_file:
        script_file.write(script)
        script_file.flush()
        command = [
            str(PGBIN / "pgbench"),
            "-n",
            "-M",
            "prepared",
            "-f",
            script_file.name,
            "-c",
            str(clients),
            "-j",
            str(min(clients, os.cpu_count() or 1)),
            "-T",
            str(seconds),
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-U",
            server.user,
        ]
        if rate is not None:
            command += ["-R", str(rate)]
        for name, value in (variables or {}).items():
            command += ["-D", f"{name}={value}"]
        command.append(dbname)
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"pgbench failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return PgbenchRun(
        clients=clients,
        seconds=seconds,
        transactions=int(_field(done.stdout, r"number of transactions actually processed: (\d+)")),
        tps=float(_field(done.stdout, r"tps = ([\d.]+) \(without initial connection time\)")),
        latency_ms=float(_field(done.stdout, r"latency average = ([\d.]+) ms")),
    )


def _field(output: str, pattern: str) -> str:
    match = re.search(pattern, output)
    if match is None:
        raise RuntimeError(f"pgbench output lacks {pattern!r}:\n{output}")
    return match.group(1)


def describe_machine(conn: psycopg.Connection) -> dict[str, object]:
    """What the numbers were measured on; load average shows how shared the machine was."""
    cpu_model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        mem_kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal:")))
    settings = dict(
        conn.execute(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
            (
                [
                    "shared_buffers",
                    "synchronous_commit",
                    "fsync",
                    "wal_level",
                    "max_wal_size",
                    "max_parallel_workers_per_gather",
                    "jit",
                ],
            ),
        ).fetchall()
    )
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": conn.execute("SELECT version()").fetchone()[0],
        "pg_settings": settings,
        "load_average": list(os.getloadavg()),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_kib: int


def run_measured(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 3600) -> Finished:
    """Run a command; wall-clock seconds and the child's peak resident set size.

    The peak is the child's VmHWM, polled every 10 ms until it exits: wait4's ru_maxrss
    would also count the pages of this (large) bench process that the child had before exec."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        deadline = started + timeout
        peak_kib = 0
        while True:
            peak_kib = max(peak_kib, _peak_rss_kib(child.pid))
            pid, status, _ = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                child.wait()
                raise RuntimeError(f"{command[0]} ran longer than {timeout:.0f} s")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Finished(
            returncode=child.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            seconds=seconds,
            peak_rss_kib=peak_kib,
        )


def _peak_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    except OSError:  # exited between two polls
        return 0
