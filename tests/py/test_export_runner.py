"""`auditchain export request` and `auditchain export run` against a real database and a loopback
S3 (moto server): what a bundle holds, what happens when S3 fails, when two runners race,
when a claim is re-delivered, when a runner is killed, and how much memory a runner needs."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from auditchain import s3
from auditchain.cli import main
from auditchain.errors import EXIT_USAGE
from auditchain.formats import hashing, schemas
from auditchain.offline.bundle import verify_bundle
from auditchain.offline.chain import EXCLUDED_FIELDS, FULL_EVENT_FIELDS
from awsfake import MotoServer, free_port
from clihelpers import run_cli

RUNNER_APP = "auditchain export run"
# Runs the CLI in a child process and reports that process's peak resident set size on stderr.
PEAK_RSS_WRAPPER = (
    "import sys\n"
    "from auditchain.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0]\n"
    "print('PEAK_RSS_KB', peak.split()[1], file=sys.stderr)\n"
    "sys.exit(code)\n"
)


# ---------------------------------------------------------------------------- helpers


def chain_events(
    conn: psycopg.Connection, count: int, *, tenant: str | None = "acme", note: str = ""
) -> None:
    """Emit `count` events in one statement and drain them into the chain."""
    conn.execute(
        "SELECT count(compliance.emit('user.login', 'actor-' || (g %% 5),"
        " jsonb_build_object('n', g, 'note', %s::text, 'r', md5(g::text)), %s))"
        " FROM generate_series(1, %s) AS g",
        (note, tenant, count),
    )
    while conn.execute("SELECT compliance.drain(50000)").fetchone()[0]:
        pass


def request(
    conn: psycopg.Connection, export_filter: dict[str, Any], who: str = "auditor@example.com"
) -> uuid.UUID:
    return conn.execute(
        "SELECT compliance.request_export(%s::jsonb, %s)", (json.dumps(export_filter), who)
    ).fetchone()[0]


def job_row(conn: psycopg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    return conn.execute(
        "SELECT to_jsonb(j) FROM compliance.export_jobs AS j WHERE job_id = %s", (job_id,)
    ).fetchone()[0]


def runner_args(dsn: str, endpoint: str, bucket: str, *mode: str) -> list[str]:
    return ["export", "run", "--dsn", dsn, *mode, "--bucket", bucket, "--endpoint-url", endpoint]


def spawn(*argv: str, code: str | None = None) -> subprocess.Popen[str]:
    """The CLI in a child process, as an operator or a scheduler starts it."""
    command = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "auditchain.cli", *argv]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_on_terminal(*argv: str, timeout: float) -> tuple[int, str, str]:
    """The CLI with stderr on a pseudo-terminal, as an operator runs it: (exit code, stdout, terminal)."""
    main_fd, terminal_fd = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "auditchain.cli", *argv], stdout=subprocess.PIPE, stderr=terminal_fd, text=True
    )
    os.close(terminal_fd)
    shown: list[bytes] = []

    def read_terminal() -> None:
        # Linux reports EIO on the main side once the child has closed the terminal.
        with contextlib.suppress(OSError):
            while chunk := os.read(main_fd, 4096):
                shown.append(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    out, _ = process.communicate(timeout=timeout)
    reader.join(timeout=30)
    os.close(main_fd)
    return process.returncode, out, b"".join(shown).decode(errors="replace")


def read_bundle(client: Any, bucket: str, prefix: str) -> tuple[dict[str, Any], bytes]:
    manifest = json.loads(client.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
    data = client.get_object(Bucket=bucket, Key=prefix + "events.ndjson.gz")["Body"].read()
    return manifest, data


def keys_under(client: Any, bucket: str, prefix: str = "") -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


RUNNER_CONNECTIONS = (
    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
)


def runner_waits_for_a_lock(conn: psycopg.Connection) -> bool:
    return conn.execute(RUNNER_CONNECTIONS + " AND wait_event_type = 'Lock')", (RUNNER_APP,)).fetchone()[0]


def runner_streams_lines(conn: psycopg.Connection) -> bool:
    return conn.execute(
        RUNNER_CONNECTIONS + " AND state = 'active' AND query LIKE '%%compliance.export_lines(%%')",
        (RUNNER_APP,),
    ).fetchone()[0]


@pytest.fixture
def client(endpoint_url: str) -> Any:
    return s3.make_client(endpoint_url)


@pytest.fixture
def bucket(client: Any, bucket_name: str) -> str:
    """A fresh bucket (bucket_name alone repeats across parametrized cases of one test)."""
    name = f"{bucket_name}-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def exporter_dsn(dsn: str) -> Iterator[str]:
    """A login role that is only a member of compliance_exporter, as production runs the runner."""
    role = f"ac_exporter_{os.getpid()}"
    drop_role = sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role))
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(drop_role)
        create = sql.SQL("CREATE ROLE {} LOGIN IN ROLE compliance_exporter")
        admin.execute(create.format(sql.Identifier(role)))
    yield make_conninfo(dsn, user=role)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        admin.execute(drop_role)


# ---------------------------------------------------------------------------- bundles


@pytest.mark.parametrize("withhold", [False, True], ids=["payloads", "withheld"])
def test_bundle_holds_the_range_and_matches_its_manifest(
    conn, exporter_dsn, endpoint_url, client, bucket, capsys, withhold
):
    chain_events(conn, 60, tenant="acme", note='é "quoted" \\ and\nnewline')
    chain_events(conn, 40, tenant="beta")
    chain_events(conn, 30, tenant="acme")
    job_id = request(conn, {"tenant_id": "acme", "withhold_payloads": withhold})

    code, out, err = run_cli(capsys, *runner_args(exporter_dsn, endpoint_url, bucket, "--job", str(job_id)))
    assert code == 0, err
    prefix = f"exports/{job_id}/"
    assert f"export job {job_id} completed: 130 lines (90 matched)" in out
    assert "lines/s" not in err, "no progress display when stderr is not a terminal"
    assert keys_under(client, bucket) == [prefix + "events.ndjson.gz", prefix + "manifest.json"]

    manifest, data = read_bundle(client, bucket, prefix)
    job = job_row(conn, job_id)
    assert schemas.violations("export-manifest.schema.json", manifest) == [], "the published schema holds"
    assert manifest["filter"] == {"tenant_id": "acme", "withhold_payloads": withhold}
    assert manifest["data_sha256"] == hashlib.sha256(data).hexdigest() == job["data_sha256"][2:]
    assert manifest["data_bytes"] == len(data) == job["data_bytes"]
    assert (job["status"], job["output_bucket"], job["output_prefix"]) == ("completed", bucket, prefix)
    assert (manifest["seq_from"], manifest["seq_to"], manifest["line_count"], manifest["matched_count"]) == (
        1,
        130,
        130,
        90,
    )
    assert (job["seq_from"], job["seq_to"], job["row_count"], job["matched_count"]) == (1, 130, 130, 90)
    assert manifest["format"] == "auditchain-export"
    assert (manifest["format_version"], manifest["hash_version"], manifest["mode"]) == (4, 2, "range")
    assert manifest["job_id"] == str(job_id)
    assert manifest["filter"] == {"tenant_id": "acme", "withhold_payloads": withhold}
    assert manifest["withheld_payloads"] is withhold
    assert manifest["range_prev_hash"] == "00" * 32
    assert manifest["anchors"] == []

    lines = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 131))
    events = {
        row[0]: row
        for row in conn.execute(
            """SELECT seq, tenant_id, payload::text, event_hash, sha256(compliance._row_record(e))
                 FROM compliance.audit_events AS e"""
        )
    }
    prev = bytes(32)
    for line in lines:
        seq = line["seq"]
        assert bytes.fromhex(line["prev_hash"]) == prev, seq
        if events[seq][1] == "beta":
            assert set(line) == EXCLUDED_FIELDS and line["excluded"] is True, seq
            record_sha256 = bytes(events[seq][4])
            assert line["record_sha256"] == record_sha256.hex(), seq
            assert hashing.event_hash_from_digest(prev, record_sha256).hex() == line["event_hash"], seq
        else:
            payload_keys = {"payload_commitment"} if withhold else {"payload", "payload_salt"}
            assert set(line) == FULL_EVENT_FIELDS | {"hash_version", "actor_salt"} | payload_keys, seq
            assert hashing.event_hash(prev, hashing.canonical_record(line)).hex() == line["event_hash"], seq
        if not withhold and "payload" in line:
            assert line["payload"] == events[seq][2]
        assert line["event_hash"] == bytes(events[seq][3]).hex()
        prev = bytes.fromhex(line["event_hash"])

    report = verify_bundle(f"s3://{bucket}/{prefix}", endpoint_url=endpoint_url)
    assert report.ok, report.failures


def test_manifest_lists_the_uploaded_anchors_that_cover_the_range(conn, dsn, endpoint_url, client, capsys):
    worm = f"ac-anchors-{os.getpid() % 10000}-{uuid.uuid4().hex[:8]}"
    bucket_options = ["--bucket", worm, "--endpoint-url", endpoint_url]
    assert main(["bucket", "create", *bucket_options]) == 0
    chain_events(conn, 20, tenant="acme")
    conn.execute("SELECT compliance.create_anchor()")
    chain_events(conn, 10, tenant="beta")
    conn.execute("SELECT compliance.create_anchor()")
    chain_events(conn, 5, tenant="beta")
    assert main(["anchor", "--dsn", dsn, "--once", *bucket_options]) == 0
    job_id = request(conn, {"tenant_id": "acme", "from": "2000-01-01T00:00:00Z"})

    code, _, err = run_cli(
        capsys, *runner_args(dsn, endpoint_url, worm, "--prefix", "audits/2026", "--job", str(job_id))
    )
    assert code == 0, err
    prefix = f"audits/2026/{job_id}/"
    manifest, _ = read_bundle(client, worm, prefix)
    anchors = conn.execute(
        "SELECT cadence_id, seq_to, encode(head_hash, 'hex'), encode(document_digest, 'hex'), bucket,"
        " object_key, version_id FROM compliance.anchors WHERE status = 'uploaded' ORDER BY seq_to"
    ).fetchall()
    assert [a[1] for a in anchors] == [20, 30]
    # Matches end at seq 20, which an uploaded anchor covers: the range ends there, not at 30.
    assert (manifest["seq_from"], manifest["seq_to"], manifest["matched_count"]) == (1, 20, 20)
    assert manifest["anchors"] == [
        {
            "cadence_id": a[0],
            "seq_to": a[1],
            "head_hash": a[2],
            "document_digest": a[3],
            "bucket": a[4],
            "key": a[5],
            "version_id": a[6],
        }
        for a in anchors[:1]
    ]

    report = verify_bundle(f"s3://{worm}/{prefix}", endpoint_url=endpoint_url, anchors="require")
    assert report.ok, report.failures


def test_a_filter_that_matches_nothing_still_writes_a_bundle(conn, dsn, endpoint_url, client, bucket, capsys):
    chain_events(conn, 10)
    job_id = request(conn, {"actor": "nobody"})
    code, _, err = run_cli(capsys, *runner_args(dsn, endpoint_url, bucket, "--once", "--json"))
    assert code == 0, err
    manifest, data = read_bundle(client, bucket, f"exports/{job_id}/")
    assert gzip.decompress(data) == b""
    assert (manifest["seq_from"], manifest["seq_to"], manifest["line_count"], manifest["matched_count"]) == (
        None,
        None,
        0,
        0,
    )
    assert manifest["data_sha256"] == hashlib.sha256(data).hexdigest()
    assert job_row(conn, job_id)["status"] == "completed"


# ---------------------------------------------------------------------------- requests


def test_request_prints_the_job_id_and_audits_the_request(conn, dsn, capsys):
    code, out, err = run_cli(
        capsys,
        "export",
        "request",
        "--dsn",
        dsn,
        "--filter",
        '{"tenant_ids": ["acme", "beta"]}',
        "--requested-by",
        "auditor@example.com",
        "--json",
    )
    assert code == 0, err
    job_id = uuid.UUID(json.loads(out)["job_id"])
    assert job_row(conn, job_id)["status"] == "queued"
    event = conn.execute(
        "SELECT event_type, actor, payload FROM compliance.audit_outbox AS o"
        " JOIN compliance.export_jobs AS j ON j.request_event_id = o.event_id WHERE j.job_id = %s",
        (job_id,),
    ).fetchone()
    assert event == (
        "data.export_initiated",
        "auditor@example.com",
        {"job_id": str(job_id), "mode": "range", "filter": {"tenant_ids": ["acme", "beta"]}},
    )

    code, out, _ = run_cli(
        capsys, "export", "request", "--dsn", dsn, "--filter", "{}", "--requested-by", "me"
    )
    assert code == 0 and uuid.UUID(out.strip()).version == 7


@pytest.mark.parametrize(
    ("filter_text", "message"),
    [
        ('{"tenant": "acme"}', 'invalid export filter: unknown key "tenant"'),
        ('{"from": "last week"}', '"from" must be an ISO-8601 timestamp with a time zone'),
        ('{"event_types": "user.login"}', '"event_types" must be a non-empty array of strings'),
        ('{"tenant_id": "acme"', "--filter is not valid JSON"),
    ],
)
def test_a_bad_filter_is_refused_and_leaves_nothing_behind(conn, dsn, capsys, filter_text, message):
    code, out, err = run_cli(
        capsys, "export", "request", "--dsn", dsn, "--filter", filter_text, "--requested-by", "me"
    )
    assert (code, out) == (EXIT_USAGE, "")
    assert message in err
    assert conn.execute("SELECT count(*) FROM compliance.export_jobs").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0] == 0


# ---------------------------------------------------------------------------- business failures


def test_a_missing_bucket_fails_the_job(conn, dsn, endpoint_url, bucket_name, capsys):
    job_id = request(conn, {})
    code, _, _ = run_cli(capsys, *runner_args(dsn, endpoint_url, bucket_name, "--job", str(job_id)))
    assert code == 1
    job = job_row(conn, job_id)
    assert job["status"] == "failed"
    assert job["job_error"].startswith("NoSuchBucket")
    assert job["completed_at"] is not None


def test_an_unreachable_endpoint_fails_the_job(conn, dsn, bucket_name, capsys):
    job_id = request(conn, {})
    code, out, _ = run_cli(
        capsys, *runner_args(dsn, f"http://127.0.0.1:{free_port()}", bucket_name, "--once", "--json")
    )
    assert code == 1
    assert json.loads(out)["status"] == "failed"
    job = job_row(conn, job_id)
    assert job["status"] == "failed" and "EndpointConnectionError" in job["job_error"]


def test_an_endpoint_that_dies_during_the_upload_fails_the_job(conn, dsn, bucket_name):
    server = MotoServer().start()
    try:
        s3.make_client(server.url).create_bucket(Bucket=bucket_name)
        chain_events(conn, 200)
        job_id = request(conn, {})
        # Hold the runner between starting the multipart upload and streaming: the plan waits for this lock.
        with psycopg.connect(dsn) as blocker:
            blocker.execute("LOCK TABLE compliance.audit_events IN ACCESS EXCLUSIVE MODE")
            runner = spawn(*runner_args(dsn, server.url, bucket_name, "--job", str(job_id)))
            wait_for(
                lambda: runner_waits_for_a_lock(conn),
                60,
                "the runner to wait for the lock",
            )
            server.stop()
            blocker.rollback()
        _, err = runner.communicate(timeout=120)
    finally:
        server.stop()
    assert runner.returncode == 1, err
    job = job_row(conn, job_id)
    assert job["status"] == "failed" and "EndpointConnectionError" in job["job_error"], job


# ---------------------------------------------------------------------------- concurrency and crashes


def test_two_runners_race_for_one_job_and_exactly_one_runs_it(conn, dsn, endpoint_url, client, bucket):
    chain_events(conn, 500)
    job_id = request(conn, {})
    runners = [spawn(*runner_args(dsn, endpoint_url, bucket, "--job", str(job_id))) for _ in range(2)]
    results = [runner.communicate(timeout=120) + (runner.returncode,) for runner in runners]
    assert [code for _, _, code in results] == [0, 0], results
    outs = sorted(out for out, _, _ in results)
    assert outs[0].startswith(f"export job {job_id} completed: 500 lines")
    assert (
        outs[1]
        == f"export job {job_id} is not queued (claimed by another runner or finished); nothing to do\n"
    )
    assert keys_under(client, bucket) == [
        f"exports/{job_id}/events.ndjson.gz",
        f"exports/{job_id}/manifest.json",
    ]
    assert job_row(conn, job_id)["status"] == "completed"

    second_job = request(conn, {"tenant_id": "acme"})
    runners = [spawn(*runner_args(dsn, endpoint_url, bucket, "--once")) for _ in range(2)]
    outs = sorted(runner.communicate(timeout=120)[0] for runner in runners)
    assert outs[0].startswith(f"export job {second_job} completed")
    assert outs[1] == "no export job is queued\n"


def test_follow_runs_jobs_as_they_arrive_and_ctrl_c_fails_the_job_in_progress(
    conn, dsn, endpoint_url, bucket
):
    chain_events(conn, 100)
    runner = spawn(*runner_args(dsn, endpoint_url, bucket, "--follow", "--poll-interval", "0.1"))
    try:
        first, second = request(conn, {}), request(conn, {"tenant_id": "acme"})
        wait_for(lambda: job_row(conn, second)["status"] == "completed", 60, "the runner to run both jobs")
        with psycopg.connect(dsn) as blocker:
            blocker.execute("LOCK TABLE compliance.audit_events IN ACCESS EXCLUSIVE MODE")
            third = request(conn, {})
            wait_for(
                lambda: job_row(conn, third)["status"] == "running", 60, "the runner to claim the third job"
            )
            wait_for(lambda: runner_waits_for_a_lock(conn), 60, "the runner to read")
            runner.send_signal(signal.SIGINT)
            _, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert runner.returncode == 130, err
    assert job_row(conn, first)["completed_at"] <= job_row(conn, second)["started_at"], (
        "jobs run in request order"
    )
    job = job_row(conn, third)
    assert (job["status"], job["job_error"]) == (
        "failed",
        "interrupted: the runner was stopped by its operator",
    )


def test_a_redelivered_claim_of_a_completed_job_changes_nothing(
    conn, dsn, endpoint_url, client, bucket, capsys
):
    chain_events(conn, 50)
    job_id = request(conn, {})
    assert run_cli(capsys, *runner_args(dsn, endpoint_url, bucket, "--job", str(job_id)))[0] == 0
    before = job_row(conn, job_id)
    objects_before = client.list_objects_v2(Bucket=bucket)["Contents"]
    outbox_before = conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0]

    code, out, _ = run_cli(capsys, *runner_args(dsn, endpoint_url, bucket, "--job", str(job_id), "--json"))
    assert (code, json.loads(out)) == (0, {"job_id": str(job_id), "status": "skipped"})
    assert job_row(conn, job_id) == before
    assert client.list_objects_v2(Bucket=bucket)["Contents"] == objects_before
    assert conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0] == outbox_before


def test_an_unknown_job_is_a_usage_error(dsn, endpoint_url, bucket, capsys):
    code, _, err = run_cli(capsys, *runner_args(dsn, endpoint_url, bucket, "--job", str(uuid.uuid4())))
    assert code == EXIT_USAGE and "does not exist" in err


@pytest.mark.slow
def test_a_killed_runner_leaves_the_job_running_until_reconciled_then_a_fresh_request_completes(
    conn, dsn, endpoint_url, client, bucket
):
    chain_events(conn, 120_000)
    export_filter = {"tenant_id": "acme"}
    job_id = request(conn, export_filter)
    runner = spawn(*runner_args(dsn, endpoint_url, bucket, "--job", str(job_id)))
    try:
        wait_for(lambda: runner_streams_lines(conn), 60, "the runner to stream")
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=30)
    assert runner.returncode == -signal.SIGKILL
    assert job_row(conn, job_id)["status"] == "running"
    assert keys_under(client, bucket) == [], "a killed runner must not leave a bundle"

    time.sleep(1.1)
    assert conn.execute("SELECT compliance.reconcile_exports('1 second')").fetchone()[0] == 1
    job = job_row(conn, job_id)
    assert job["status"] == "failed"
    assert job["job_error"].startswith("reconciled: running since ")

    retry = request(conn, export_filter)
    code, out, terminal = run_on_terminal(
        *runner_args(dsn, endpoint_url, bucket, "--job", str(retry)), timeout=300
    )
    assert code == 0, terminal
    assert out.startswith(f"export job {retry} completed: 120,000 lines (120,000 matched)")
    assert f"export {retry}: " in terminal and "/120k" in terminal and " lines/s" in terminal, (
        "an operator at a terminal sees the progress"
    )
    manifest, data = read_bundle(client, bucket, f"exports/{retry}/")
    assert manifest["data_sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_runner_memory_stays_flat_from_10k_to_200k_events_large_payloads_included(
    conn, dsn, endpoint_url, client, bucket
):
    chain_events(conn, 10_000, tenant="small")
    chain_events(conn, 189_700, tenant="big")
    # 300 payloads of 192 kB (random hex, near the 256 KiB limit) right after small events.
    conn.execute(
        "SELECT count(compliance.emit('blob.stored', 'archiver', jsonb_build_object('blob', (SELECT"
        " string_agg(md5(g::text || ':' || i::text), '') FROM generate_series(1, 6000) AS i)), 'big'))"
        " FROM generate_series(1, 300) AS g"
    )
    conn.execute("SELECT compliance.drain(1000)")

    def peak_rss_kb(export_filter: dict[str, Any], lines: int) -> int:
        job_id = request(conn, export_filter)
        runner = spawn(*runner_args(dsn, endpoint_url, bucket, "--job", str(job_id)), code=PEAK_RSS_WRAPPER)
        out, err = runner.communicate(timeout=600)
        assert runner.returncode == 0, err
        assert f"completed: {lines:,} lines" in out
        manifest, data = read_bundle(client, bucket, f"exports/{job_id}/")
        assert manifest["data_sha256"] == hashlib.sha256(data).hexdigest()
        print(out.strip())
        return int(err.split("PEAK_RSS_KB ")[1].split()[0])

    small = peak_rss_kb({"tenant_id": "small"}, 10_000)
    large = peak_rss_kb({}, 200_000)
    print(f"peak RSS: {small} kB for 10,000 lines, {large} kB for 200,000 lines")
    assert large - small < 30 * 1024
