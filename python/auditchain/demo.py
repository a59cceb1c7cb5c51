"""`make demo`: auditchain end to end on this machine.

Starts a loopback S3/CloudWatch endpoint (moto server), installs the schema, schedules the
pg_cron jobs, runs concurrent producers for about a minute, then anchors, publishes
metrics, exports, verifies offline and against the bucket, and prints `auditchain status`.
Every step is a real command a user could type; the demo stops at the first failure.

Every run starts from scratch: it empties the endpoint and recreates the demo database, because
moto keeps its objects in memory only, and anchors recorded in a database whose objects the
endpoint forgot would (rightly) fail verification. The environment the commands use is written
to RUN_DIR/demo.env, for `source .run/demo.env` afterwards.

`python -m auditchain.demo --down` stops the endpoint and unschedules the demo's jobs.
Development tooling: needs the `dev` extra (moto[server]).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import loopback, signing
from .formats import note

CRON_DB = "postgres"  # cron.database_name of the project-local cluster (scripts/pg-cluster)
EVENT_TYPES = [
    "auth.login_succeeded",
    "auth.login_failed",
    "auth.mfa_enrolled",
    "data.record_viewed",
    "data.record_updated",
    "data.export_requested",
    "admin.role_granted",
    "admin.user_suspended",
    "billing.invoice_issued",
    "api.key_rotated",
]
TENANTS = ["acme", "globex", "initech", "umbrella", "hooli", None]


class DemoFailed(Exception):
    pass


@dataclass
class Options:
    dsn: str
    endpoint_url: str
    moto_port: int
    bucket: str
    stage: str
    producers: int
    rate: float
    duration: float
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)


def say(message: str) -> None:
    print(f"\n\033[1m==> {message}\033[0m" if sys.stdout.isatty() else f"\n==> {message}", flush=True)


def run_cli(opts: Options, *args: str, capture: bool = False, ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run one `auditchain` command as a user would, echoing it first."""
    command = [str(Path(sys.executable).with_name("auditchain")), *args]
    print("$ auditchain " + " ".join(shlex.quote(a) for a in args), flush=True)
    result = subprocess.run(command, env=opts.env, text=True, capture_output=capture, timeout=300)
    if capture:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    if result.returncode not in ok_codes:
        raise DemoFailed(f"`auditchain {args[0]}` exited with {result.returncode}")
    return result.stdout if capture else ""


def start_moto(port: int, run_dir: Path) -> str:
    """An empty endpoint at the port: the previous demo's, reset, or a new detached one."""
    url = loopback.url_of(port)
    hint = "; choose another port with `make demo MOTO_PORT=<port>` (python -m auditchain.demo --moto-port)"
    if loopback.is_moto(url):
        if _our_moto_pid(run_dir) is None:
            raise DemoFailed(f"port {port} is in use by a moto server this demo did not start{hint}")
        loopback.reset(url)
        print(f"emptied the loopback S3/CloudWatch endpoint the previous demo left at {url}")
        return url
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "moto.log", "ab") as log:
        try:
            process = loopback.start_process(port, log=log, detach=True, hint=hint)
        except loopback.EndpointError as exc:
            raise DemoFailed(f"{exc} (log: {run_dir / 'moto.log'})") from None
    (run_dir / "moto.pid").write_text(str(process.pid))
    print(f"started a loopback S3/CloudWatch endpoint (moto server) at {url}")
    return url


def _our_moto_pid(run_dir: Path) -> int | None:
    """The pid of the endpoint a previous demo started, if that process still runs."""
    try:
        pid = int((run_dir / "moto.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def stop_moto(run_dir: Path) -> None:
    pid = _our_moto_pid(run_dir)
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        print("stopped the loopback S3/CloudWatch endpoint")
    (run_dir / "moto.pid").unlink(missing_ok=True)


def recreate_database(dsn: str) -> None:
    """Drop the demo database (after unscheduling its pg_cron jobs) so that the run starts empty."""
    params = conninfo_to_dict(dsn)
    name = params["dbname"]
    with psycopg.connect(make_conninfo(dsn, dbname=CRON_DB), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            admin.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE starts_with(jobname, %s)",
                (f"auditchain:{name}:",),
            )
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            print(f"dropped the previous demo's database {name}")


def environment(opts: Options) -> dict[str, str]:
    """What every command of the demo, and every command a user types after it, needs."""
    params = conninfo_to_dict(opts.dsn)
    return {
        "DATABASE_URL": f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}",
        "AWS_ENDPOINT_URL": opts.endpoint_url,
        "AUDITCHAIN_BUCKET": opts.bucket,
        **loopback.FAKE_CREDENTIALS,
    }


def write_env_file(path: Path, env: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `make demo`: the loopback endpoint's fake credentials, not secrets."]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def producer(opts: Options, seed: int, stop: threading.Event, counter: list[int], errors: list[str]) -> None:
    rng = random.Random(seed)
    interval = opts.producers / opts.rate
    next_at = time.monotonic()
    try:
        with psycopg.connect(opts.dsn, autocommit=True, application_name="auditchain demo producer") as conn:
            while not stop.is_set():
                event_type = rng.choice(EVENT_TYPES)
                conn.execute(
                    "SELECT compliance.emit(%s, %s, %s::jsonb, %s)",
                    (
                        event_type,
                        f"user-{rng.randrange(500)}@example.com",
                        json.dumps(
                            {
                                "request_id": f"{seed}-{counter[0]}",
                                "ip": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}",
                                "resource": f"/records/{rng.randrange(10_000)}",
                                "ok": rng.random() > 0.05,
                            }
                        ),
                        rng.choice(TENANTS),
                    ),
                )
                counter[0] += 1
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    except psycopg.Error as exc:
        errors.append(str(exc))


def wait_for_drainer(opts: Options) -> None:
    """pg_cron starts jobs on minute boundaries; the first drainer run may be up to a minute away."""
    say("Wait for pg_cron to start the drainer (it ticks on minute boundaries)")
    started = time.monotonic()
    with psycopg.connect(opts.dsn, autocommit=True) as conn:
        while not conn.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                               WHERE datname = current_database()
                                 AND query LIKE 'CALL compliance.run_drainer%')"""
        ).fetchone()[0]:
            if time.monotonic() - started > 75:
                raise DemoFailed("pg_cron did not start the drainer within 75 s; see cron.job_run_details")
            time.sleep(0.5)
    print(f"  drainer running (waited {time.monotonic() - started:.0f} s)")


def wait_until_chained(conn: psycopg.Connection, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0] > 0:
        if time.monotonic() > deadline:
            raise DemoFailed(
                f"the outbox did not drain within {timeout:.0f} s: is pg_cron running the drainer?"
            )
        time.sleep(0.2)


def run_workload(opts: Options) -> dict[str, float]:
    say(
        f"{opts.producers} producers emit about {opts.rate:.0f} events/s for {opts.duration:.0f} s; "
        "pg_cron drains"
    )
    stop = threading.Event()
    counters = [[0] for _ in range(opts.producers)]
    errors: list[str] = []
    threads = [
        threading.Thread(target=producer, args=(opts, i, stop, counters[i], errors), daemon=True)
        for i in range(opts.producers)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    with psycopg.connect(opts.dsn, autocommit=True) as conn:
        while time.monotonic() - started < opts.duration and not errors:
            time.sleep(min(5.0, opts.duration / 4))
            emitted = sum(c[0] for c in counters)
            depth, chained = conn.execute(
                "SELECT (SELECT count(*) FROM compliance.audit_outbox), last_seq "
                "FROM compliance.drainer_state"
            ).fetchone()
            print(
                f"  {time.monotonic() - started:5.1f}s  emitted {emitted:>7}  chained {chained:>7}  "
                f"outbox depth {depth}",
                flush=True,
            )
        stop.set()
        for t in threads:
            t.join(timeout=10)
        if errors:
            raise DemoFailed(f"a producer failed: {errors[0]}")
        emitted = sum(c[0] for c in counters)
        elapsed = time.monotonic() - started
        wait_until_chained(conn)
        p50, p99 = conn.execute(
            """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)
                 FROM (SELECT extract(epoch FROM recorded_at - occurred_at) AS lag
                         FROM compliance.audit_events) AS l"""
        ).fetchone()
    print(f"  emitted {emitted} events in {elapsed:.1f} s ({emitted / elapsed:.0f}/s); all chained")
    return {"emitted": emitted, "rate": emitted / elapsed, "p50": p50 or 0.0, "p99": p99 or 0.0}


def request_acme_export(opts: Options, mode: str) -> str:
    """The auditor's request for tenant acme's events in this export mode; the job id."""
    out = run_cli(
        opts,
        "export",
        "request",
        "--mode",
        mode,
        "--filter",
        json.dumps({"tenant_id": "acme"}),
        "--requested-by",
        "demo-auditor",
        capture=True,
    )
    return out.strip().splitlines()[-1]


def demo(opts: Options) -> None:
    say("Loopback AWS endpoint")
    start_moto(opts.moto_port, opts.run_dir)

    say("Install the schema and schedule the pg_cron jobs")
    recreate_database(opts.dsn)
    run_cli(opts, "migrate", "--create-database")
    with psycopg.connect(opts.dsn, autocommit=True) as conn:
        conn.execute("SELECT compliance.schedule_jobs()")
        for (name,) in conn.execute("SELECT jobname FROM compliance.cron_jobs() ORDER BY 1").fetchall():
            print(f"  scheduled {name}")
    run_cli(opts, "drift-check")

    say("A WORM bucket for anchors and exports (S3 Object Lock)")
    run_cli(opts, "bucket", "create", "--bucket", opts.bucket, ok_codes=(0,))
    run_cli(opts, "bucket", "check", "--bucket", opts.bucket)

    wait_for_drainer(opts)
    stats = run_workload(opts)

    say("An auditor asks for one tenant's events (the request is itself an audit event)")
    job_id = request_acme_export(opts, "range")
    with psycopg.connect(opts.dsn, autocommit=True) as conn:
        wait_until_chained(conn)

    say("Anchor the chain head to S3 (pg_cron does this every 15 minutes)")
    with psycopg.connect(opts.dsn, autocommit=True) as conn:
        cadence = conn.execute("SELECT compliance.create_anchor()").fetchone()[0]
        print(f"  pending anchor {cadence}")
    signing_key = opts.run_dir / "checkpoint.key"  # one checkpoint signing key per run folder, kept
    if not signing_key.exists():
        run_cli(opts, "key", "generate", "--name", "auditchain-demo", "--out", str(signing_key), capture=True)
    run_cli(opts, "anchor", "--once", "--bucket", opts.bucket, "--signing-key", str(signing_key))

    say("Publish metrics (CloudWatch on the loopback endpoint)")
    run_cli(opts, "watchdog", "--once", "--stage", opts.stage)

    say("Run the export: streamed to S3 as gzip NDJSON, then verified offline against the anchor")
    run_cli(opts, "export", "run", "--job", job_id, "--bucket", opts.bucket)
    run_cli(opts, "verify-bundle", "--require-anchors", f"s3://{opts.bucket}/exports/{job_id}/")

    say("The same tenant as a tenant bundle: its events only, proved against the signed checkpoint")
    with psycopg.connect(opts.dsn, autocommit=True) as conn:
        # What the tenant-heads and anchor jobs do on their schedule: commit every tenant's
        # head into the log, then anchor (and sign) a checkpoint that covers the commitment.
        conn.execute("SELECT compliance.commit_tenant_heads()")
        wait_until_chained(conn)
        conn.execute("SELECT compliance.create_anchor()")
    run_cli(opts, "anchor", "--once", "--bucket", opts.bucket, "--signing-key", str(signing_key))
    tenant_job = request_acme_export(opts, "tenant")
    run_cli(opts, "export", "run", "--job", tenant_job, "--bucket", opts.bucket)
    signer = signing.load_key_file(signing_key)
    # The auditor trusts the log's verifier key, never a key found in the bundle.
    run_cli(
        opts,
        "verify-bundle",
        f"s3://{opts.bucket}/exports/{tenant_job}/",
        "--vkey",
        note.encode_vkey(signer.name, signer.public_key),
    )

    say("Verify the chain in the database and against the anchors in the bucket")
    run_cli(opts, "verify", "--bucket", opts.bucket)

    say("On-call view")
    run_cli(opts, "status", "--stage", opts.stage, ok_codes=(0, 1))

    with psycopg.connect(opts.dsn, autocommit=True) as conn:
        anchors = conn.execute(
            "SELECT count(*) FROM compliance.anchors WHERE status = 'uploaded'"
        ).fetchone()[0]
        chain = conn.execute("SELECT last_seq FROM compliance.drainer_state").fetchone()[0]
    say("Summary")
    print(
        f"  events emitted: {stats['emitted']} at {stats['rate']:.0f}/s by {opts.producers} producers\n"
        f"  chain length: {chain} (includes the export's own audit event)\n"
        f"  emit -> chained latency: p50 {stats['p50']:.2f} s, p99 {stats['p99']:.2f} s\n"
        f"  anchors uploaded with Object Lock: {anchors}\n"
        f"  export {job_id} (range mode) verified offline against its anchors\n"
        f"  export {tenant_job} (tenant mode) verified offline with the verifier key only\n"
    )
    print("Next, try (the environment is in " + str(opts.run_dir / "demo.env") + "):")
    print(f"  source {opts.run_dir / 'demo.env'}")
    print("  source .venv/bin/activate      # puts auditchain on PATH")
    print("  auditchain status --stage demo")
    print("  auditchain verify")
    for query in (
        "SELECT * FROM compliance.verify_chain()",
        "SELECT * FROM compliance.metrics()",
        "SELECT anchor_id, seq_to, status, anchored_at FROM compliance.anchors ORDER BY anchor_id DESC",
    ):
        print(f'  psql "$DATABASE_URL" -c "{query}"')
    print("  make demo-down      stops the endpoint and the cluster")


def unschedule(dsn: str) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT compliance.unschedule_jobs()")
            print("unscheduled the demo's pg_cron jobs")
    except psycopg.Error:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m auditchain.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--database", default="auditchain")
    parser.add_argument("--host", default=os.environ.get("PGHOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PGPORT", "54329")))
    parser.add_argument(
        "--moto-port", type=int, default=int(os.environ.get("MOTO_PORT", "54330")), help="(make: MOTO_PORT)"
    )
    parser.add_argument("--bucket", default="auditchain-demo-anchors")
    parser.add_argument("--producers", type=int, default=6)
    parser.add_argument("--rate", type=float, default=800.0, help="offered events/s across all producers")
    parser.add_argument("--duration", type=float, default=50.0, help="seconds of producer load")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(".run"),
        help="where demo.env and the endpoint's log live",
    )
    parser.add_argument("--down", action="store_true", help="stop what the demo started")
    args = parser.parse_args(argv)
    dsn = make_conninfo(host=args.host, port=args.port, user="postgres", dbname=args.database)
    if args.down:
        unschedule(dsn)
        stop_moto(args.run_dir)
        return 0
    opts = Options(
        dsn=dsn,
        endpoint_url=loopback.url_of(args.moto_port),
        moto_port=args.moto_port,
        bucket=args.bucket,
        stage="demo",
        producers=args.producers,
        rate=args.rate,
        duration=args.duration,
        run_dir=args.run_dir,
    )
    exported = environment(opts)
    opts.env = {**os.environ, **exported}
    write_env_file(opts.run_dir / "demo.env", exported)
    print(f"Environment used by every command below (source {opts.run_dir / 'demo.env'} to reuse it):")
    for key, value in exported.items():
        print(f"  {key}={value}")
    started = time.monotonic()
    try:
        demo(opts)
    except (DemoFailed, psycopg.Error, subprocess.TimeoutExpired) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
