"""`auditchain watchdog` and `auditchain metrics` against a real database and a loopback
CloudWatch (moto server): what is published can be read back, a failed publish is never
silent, and the Prometheus endpoint serves the same numbers."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.conninfo import make_conninfo

from auditchain.errors import EXIT_UNAVAILABLE, EXIT_USAGE
from auditchain.metrics import EXPECTATION_GAUGES, Metric
from auditchain.watchdog import DEFAULT_NAMESPACE, HEARTBEAT_METRIC
from awsfake import MotoServer, free_port
from conftest import admin_dsn
from test_anchor import run_cli

REPO = Path(__file__).resolve().parents[2]


def unique_stage() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def metric_values(conn: psycopg.Connection) -> dict[str, float | None]:
    return dict(conn.execute("SELECT metric, value FROM compliance.metrics()").fetchall())


def cloudwatch(endpoint_url: str):
    return boto3.client("cloudwatch", endpoint_url=endpoint_url, region_name="us-east-1")


def statistics(endpoint_url: str, stage: str, metric_name: str) -> list[dict]:
    """Every datapoint of one metric of one stage in the last 10 minutes, per minute."""
    now = datetime.now(UTC)
    return cloudwatch(endpoint_url).get_metric_statistics(
        Namespace=DEFAULT_NAMESPACE,
        MetricName=metric_name,
        Dimensions=[{"Name": "Stage", "Value": stage}],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum", "SampleCount"],
    )["Datapoints"]


def heartbeats(endpoint_url: str, stage: str) -> float:
    return sum(d["SampleCount"] for d in statistics(endpoint_url, stage, HEARTBEAT_METRIC))


def published_names(endpoint_url: str, stage: str) -> set[str]:
    found = cloudwatch(endpoint_url).list_metrics(
        Namespace=DEFAULT_NAMESPACE, Dimensions=[{"Name": "Stage", "Value": stage}]
    )["Metrics"]
    return {m["MetricName"] for m in found}


def emit_backlog(conn: psycopg.Connection, drained: int, queued: int) -> None:
    conn.execute(
        "SELECT compliance.emit('test.watched', 'tester', jsonb_build_object('i', i))"
        " FROM generate_series(1, %s) AS i",
        (drained,),
    )
    conn.execute("SELECT compliance.drain(1000)")
    conn.execute(
        "SELECT compliance.emit('test.queued', 'tester') FROM generate_series(1, %s)",
        (queued,),
    )


def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(name="watchdog_login")
def watchdog_login_fixture(dsn: str) -> Iterator[str]:
    """A connection string for a LOGIN role whose only membership is compliance_watchdog."""
    role = f"ac_watchdog_login_{os.getpid()}"
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE compliance_watchdog").format(sql.Identifier(role))
        )
    yield make_conninfo(dsn, user=role)
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def watchdog_once(capsys, dsn: str, endpoint_url: str, stage: str) -> tuple[int, str, str]:
    return run_cli(
        capsys, "watchdog", "--once", "--stage", stage, "--endpoint-url", endpoint_url, "--dsn", dsn
    )


def test_once_publishes_heartbeat_gap_and_every_metric_readable_back(conn, dsn, endpoint_url, capsys):
    emit_backlog(conn, drained=3, queued=2)
    stage = unique_stage()
    before = metric_values(conn)

    code, _, err = watchdog_once(capsys, dsn, endpoint_url, stage)
    after = metric_values(conn)

    assert code == 0, err
    (heartbeat,) = statistics(endpoint_url, stage, HEARTBEAT_METRIC)
    assert (heartbeat["Maximum"], heartbeat["SampleCount"]) == (1.0, 1.0)
    (gap,) = statistics(endpoint_url, stage, "ComplianceAnchorGap")
    assert before["anchor_gap_seconds"] <= gap["Maximum"] <= after["anchor_gap_seconds"]
    exact = {
        "ComplianceOutboxDepth": 2.0,
        "ComplianceChainLength": 3.0,
        "ComplianceAnchorsPending": 0.0,
        "ComplianceAnchorsFailed": 0.0,
        "ComplianceDrainerHalted": 0.0,
        "ComplianceVerificationLag": 3.0,
        "ComplianceExportsStuck": 0.0,
    }
    for name, value in exact.items():
        assert [d["Maximum"] for d in statistics(endpoint_url, stage, name)] == [value], name


def test_null_metrics_are_left_out_and_the_rest_use_documented_names(conn, dsn, endpoint_url, capsys):
    stage = unique_stage()

    code, _, err = watchdog_once(capsys, dsn, endpoint_url, stage)

    assert code == 0, err
    rows = [Metric(name, value, "") for name, value in metric_values(conn).items()]
    expected = {m.cloudwatch_name for m in rows if m.value is not None} | {HEARTBEAT_METRIC}
    assert published_names(endpoint_url, stage) == expected
    # Nothing was ever uploaded, drained or verified in a fresh database: those ages are unknown.
    assert "ComplianceAnchorLastUploadAge" not in expected
    assert "ComplianceDrainerLastSuccessAge" not in expected


def test_watchdog_needs_nothing_but_the_compliance_watchdog_role(conn, watchdog_login, endpoint_url, capsys):
    emit_backlog(conn, drained=2, queued=1)
    stage = unique_stage()

    code, _, err = watchdog_once(capsys, watchdog_login, endpoint_url, stage)

    assert code == 0, err
    assert [d["Maximum"] for d in statistics(endpoint_url, stage, "ComplianceChainLength")] == [2.0]
    with psycopg.connect(watchdog_login) as login, pytest.raises(psycopg.errors.InsufficientPrivilege):
        login.execute("SELECT count(*) FROM compliance.audit_events")


def test_once_to_an_unreachable_endpoint_exits_3_and_logs_the_failure(dsn, moto_server, capsys, caplog):
    dead = f"http://127.0.0.1:{free_port()}"

    code, _, _ = watchdog_once(capsys, dsn, dead, unique_stage())

    assert code == EXIT_UNAVAILABLE
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "CloudWatch publish FAILED" in errors[0]
    assert "including the heartbeat were NOT delivered" in errors[0]


def test_no_heartbeat_when_the_database_cannot_be_read(empty_dsn, endpoint_url, capsys, caplog):
    stage = unique_stage()

    code, _, _ = watchdog_once(capsys, empty_dsn, endpoint_url, stage)

    assert code == EXIT_UNAVAILABLE
    assert any("cannot read compliance.metrics()" in r.getMessage() for r in caplog.records)
    assert published_names(endpoint_url, stage) == set()


@contextmanager
def follower(dsn: str, endpoint: str, stage: str, log_path: Path, *extra: str) -> Iterator[subprocess.Popen]:
    """`auditchain watchdog --follow --interval 1` with stderr in log_path; SIGTERM on the way out."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    argv = [
        "watchdog",
        "--follow",
        "--interval",
        "1",
        "--stage",
        stage,
        "--endpoint-url",
        endpoint,
        "--dsn",
        dsn,
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "auditchain.cli", *argv, *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


@pytest.mark.slow
def test_follow_logs_every_failed_publish_and_recovers_when_cloudwatch_returns(
    conn, dsn, moto_server, tmp_path
):
    port = free_port()
    servers = [MotoServer(port).start()]
    stage = unique_stage()
    log_path = tmp_path / "watchdog.log"
    try:
        with follower(dsn, servers[0].url, stage, log_path) as process:
            wait_until(lambda: heartbeats(servers[0].url, stage) >= 1, what="the first heartbeat")
            servers[0].stop()
            wait_until(
                lambda: log_path.read_text().count("CloudWatch publish FAILED") >= 2, what="two failures"
            )
            assert process.poll() is None, "--follow must keep going after failed publishes"
            servers.append(MotoServer(port).start())  # a new, empty CloudWatch on the same endpoint
            wait_until(lambda: heartbeats(servers[1].url, stage) >= 1, what="a heartbeat after recovery")
    finally:
        for server in servers:
            server.stop()
    log = log_path.read_text()
    assert process.returncode == 0, log
    failures = [line for line in log.splitlines() if "CloudWatch publish FAILED" in line]
    assert failures and all(" ERROR " in line for line in failures)
    assert "watchdog stopped" in log


def scraped(text: str) -> dict[str, float | None]:
    """Prometheus text parsed by prometheus_client's own parser: every family's one sample,
    None for a family without one."""
    families = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert [s.labels for s in family.samples] in ([], [{}]), family.name
        families[family.name] = family.samples[0].value if family.samples else None
    return families


def listening_addresses(port: int) -> list[str]:
    """The IPv4 addresses with a socket listening on this TCP port, from /proc/net/tcp."""
    found = []
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
            found.append(str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1])))
    return found


def expected_families(conn: psycopg.Connection) -> dict[str, float | None]:
    """Every compliance.metrics() row, and the per-monitor families (no sample without a monitor)."""
    families = {f"auditchain_{name}": value for name, value in metric_values(conn).items()}
    return families | {name: None for name, _, _ in EXPECTATION_GAUGES}


def test_follow_serves_prometheus_on_loopback(conn, dsn, endpoint_url, tmp_path):
    emit_backlog(conn, drained=4, queued=1)
    port = free_port()
    log_path = tmp_path / "watchdog.log"
    with follower(dsn, endpoint_url, unique_stage(), log_path, "--prometheus-port", str(port)):
        wait_until(lambda: "serving Prometheus metrics" in log_path.read_text(), what="the endpoint")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            content_type = response.headers["Content-Type"]
            body = response.read().decode()
        emit_backlog(conn, drained=0, queued=2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            second = scraped(response.read().decode())
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
        missing.value.close()
    assert f"serving Prometheus metrics on http://127.0.0.1:{port}/metrics" in log_path.read_text()
    assert content_type.startswith("text/plain; version=0.0.4")
    first = scraped(body)
    assert (first["auditchain_chain_length"], first["auditchain_outbox_depth"]) == (4.0, 1.0)
    assert set(first) == set(expected_families(conn))
    assert second["auditchain_outbox_depth"] == 2.0, "each scrape reads compliance.metrics() afresh"
    assert missing.value.code == 404


def test_prometheus_endpoint_binds_loopback_and_answers_503_without_the_database(
    empty_dsn, endpoint_url, tmp_path
):
    port = free_port()
    log_path = tmp_path / "watchdog.log"
    with follower(empty_dsn, endpoint_url, unique_stage(), log_path, "--prometheus-port", str(port)):
        wait_until(lambda: "serving Prometheus metrics" in log_path.read_text(), what="the endpoint")
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
        reason = failed.value.read().decode()
        failed.value.close()
        listening = listening_addresses(port)
    assert failed.value.code == 503
    assert reason.startswith("cannot read compliance.metrics(): ")
    assert len(reason.splitlines()) == 1
    assert listening == ["127.0.0.1"], "bound to loopback only"
    assert "Prometheus scrape failed: cannot read compliance.metrics()" in log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def test_prometheus_port_needs_follow(dsn, capsys):
    code, _, err = run_cli(
        capsys, "watchdog", "--once", "--stage", "dev", "--prometheus-port", "9", "--dsn", dsn
    )
    assert (code, err.strip()) == (EXIT_USAGE, "auditchain watchdog: --prometheus-port needs --follow")


def test_stage_must_be_a_plain_name(dsn, capsys):
    with pytest.raises(SystemExit) as usage:
        run_cli(capsys, "watchdog", "--once", "--stage", "prod east", "--dsn", dsn)
    assert usage.value.code == EXIT_USAGE
    assert "invalid value 'prod east'" in capsys.readouterr().err


def test_metrics_command_prints_prometheus_text_with_the_database_values(conn, dsn, capsys):
    emit_backlog(conn, drained=2, queued=3)

    code, out, err = run_cli(capsys, "metrics", "--format", "prometheus", "--dsn", dsn)

    assert code == 0, err
    families = scraped(out)
    expected = expected_families(conn)
    assert set(families) == set(expected)
    assert {n for n, v in families.items() if v is None} == {n for n, v in expected.items() if v is None}
    assert (families["auditchain_outbox_depth"], families["auditchain_chain_length"]) == (3.0, 2.0)
    assert families["auditchain_anchor_last_upload_age_seconds"] is None
    assert "# TYPE auditchain_anchor_last_upload_age_seconds gauge" in out


def test_metrics_command_json_and_table(conn, dsn, capsys):
    emit_backlog(conn, drained=0, queued=7)

    code, out, _ = run_cli(capsys, "metrics", "--format", "json", "--dsn", dsn)
    document = json.loads(out)
    assert code == 0
    assert document["metrics"]["outbox_depth"] == {
        "value": 7.0,
        "unit": "count",
        "warning_above": 99.0,
        "critical_above": 100000.0,
        "alarm_above": 10000.0,
        "verdict": "ok",
    }
    assert document["metrics"]["anchor_last_upload_age_seconds"]["value"] is None

    code, out, _ = run_cli(capsys, "metrics", "--dsn", dsn)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["metric", "value", "unit", "verdict"]
    assert lines[1].split() == ["outbox_depth", "7", "count", "ok"]
    assert len(lines) == 1 + len(document["metrics"])
