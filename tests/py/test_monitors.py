"""Expected-event monitors end to end on a real cluster: a producer that stops goes silent
after its max_silence (SQL, metrics(), status, the CloudWatch metrics the watchdog
publishes, the alarm that watches them), events still in the outbox count while the
drainer is stopped, pausing and resuming; and the per-minute samples behind the status
sparklines."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import psycopg

from auditchain.status import sparkline
from auditchain.watchdog import DEFAULT_NAMESPACE
from test_alarms import alarms_of
from test_anchor import run_cli
from test_status import check, status
from test_watchdog import cloudwatch, metric_values, unique_stage, wait_until, watchdog_once


def monitors(conn: psycopg.Connection) -> dict[str, tuple]:
    rows = conn.execute(
        "SELECT name, last_event_at, silence_seconds, silent, paused FROM compliance.expectation_status()"
    ).fetchall()
    return {name: rest for name, *rest in rows}


def silent(conn: psycopg.Connection, name: str) -> bool:
    return monitors(conn)[name][2]


def monitor_maximum(endpoint_url: str, stage: str, metric: str, monitor: str) -> float:
    now = datetime.now(UTC)
    points = cloudwatch(endpoint_url).get_metric_statistics(
        Namespace=DEFAULT_NAMESPACE,
        MetricName=metric,
        Dimensions=[{"Name": "Stage", "Value": stage}, {"Name": "Monitor", "Value": monitor}],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    return max(p["Maximum"] for p in points)


def emit(conn: psycopg.Connection, event_type: str, count: int = 1) -> None:
    conn.execute(
        "SELECT count(compliance.emit(%s, 'svc-producer')) FROM generate_series(1, %s)", (event_type, count)
    )


def test_a_stopped_producer_is_detected_end_to_end(conn, dsn, endpoint_url, capsys):
    conn.execute("SELECT compliance.expect_events('auth', 'auth.%', '3 seconds')")
    conn.execute("SELECT compliance.expect_events('billing', 'billing.%', '1 hour')")
    emit(conn, "auth.login")
    emit(conn, "billing.charged")
    conn.execute("SELECT compliance.drain()")
    assert not silent(conn, "auth") and monitors(conn)["auth"][0] is not None
    assert check(status(capsys, dsn)[1], "monitors")["state"] == "ok"

    # The auth producer stops; billing keeps producing and the drainer keeps draining.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        emit(conn, "billing.charged")
        conn.execute("SELECT compliance.drain()")
        time.sleep(0.5)

    assert silent(conn, "auth") and not silent(conn, "billing")
    assert monitors(conn)["auth"][1] > 3
    assert metric_values(conn)["silent_producers"] == 1
    _, document = status(capsys, dsn)
    monitors_check = check(document, "monitors")
    assert monitors_check["state"] == "warning"
    assert monitors_check["data"]["silent"] == ["auth"]
    assert monitors_check["details"][0].startswith("auth (auth.%): SILENT, no event for ")

    stage = unique_stage()
    code, _, err = watchdog_once(capsys, dsn, endpoint_url, stage)
    assert code == 0, err
    assert monitor_maximum(endpoint_url, stage, "ComplianceExpectationSilent", "auth") == 1
    assert monitor_maximum(endpoint_url, stage, "ComplianceExpectationSilent", "billing") == 0
    assert monitor_maximum(endpoint_url, stage, "ComplianceExpectationSilence", "auth") > 3
    code, out, err = run_cli(
        capsys, "alarms", "install", "--stage", stage, "--endpoint-url", endpoint_url, "--dsn", dsn
    )
    assert code == 0, err
    alarm = alarms_of(endpoint_url, f"auditchain-{stage}-compliance-producer-silent-auth")[
        f"auditchain-{stage}-compliance-producer-silent-auth"
    ]
    # What moto cannot do, spelled out: the published 1 is above the alarm's threshold.
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0.0)
    aggregate = alarms_of(endpoint_url, f"auditchain-{stage}-compliance-silent-producers")
    assert [a["MetricName"] for a in aggregate.values()] == ["ComplianceSilentProducers"]

    # The producer comes back: its event counts as soon as it is emitted, before any drain.
    emit(conn, "auth.login")
    assert not silent(conn, "auth")
    assert metric_values(conn)["silent_producers"] == 0


def test_events_waiting_in_the_outbox_keep_a_monitor_quiet_while_the_drainer_is_stopped(conn):
    conn.execute("SELECT compliance.expect_events('auth', 'auth.%', '2 seconds')")
    for _ in range(6):
        emit(conn, "auth.login")
        time.sleep(0.5)
        assert not silent(conn, "auth")
    assert conn.execute("SELECT count(*) FROM compliance.audit_events").fetchone()[0] == 0
    wait_until(lambda: silent(conn, "auth"), timeout=10, what="auth to go silent once its emits stop")


def test_a_paused_monitor_is_never_silent_and_resuming_gives_it_max_silence_again(conn):
    conn.execute("SELECT compliance.expect_events('batch', 'batch.%', '2 seconds')")
    wait_until(lambda: silent(conn, "batch"), timeout=10, what="a monitor without events to go silent")

    assert conn.execute("SELECT compliance.pause_expectation('batch')").fetchone()[0] is True
    assert not silent(conn, "batch") and monitors(conn)["batch"][3] is True
    assert metric_values(conn)["silent_producers"] == 0
    assert conn.execute("SELECT compliance.resume_expectation('batch')").fetchone()[0] is True

    assert not silent(conn, "batch")
    wait_until(lambda: silent(conn, "batch"), timeout=10, what="the resumed monitor to go silent again")


def test_metrics_command_shows_each_monitor(conn, dsn, capsys):
    conn.execute("SELECT compliance.expect_events('auth', 'auth.%', '1 hour')")
    conn.execute("SELECT compliance.expect_events('batch', 'batch.%', '1 second')")
    conn.execute("UPDATE compliance.event_expectations SET watched_since = now() - interval '1 minute'")

    _, table, _ = run_cli(capsys, "metrics", "--dsn", dsn)
    _, text, _ = run_cli(capsys, "metrics", "--format", "prometheus", "--dsn", dsn)
    _, document, _ = run_cli(capsys, "metrics", "--format", "json", "--dsn", dsn)

    rows = {line.split()[0]: line.split()[-1] for line in table.split("\n\n")[1].splitlines()[1:]}
    assert rows == {"auth": "ok", "batch": "SILENT"}
    assert 'auditchain_expectation_silent{monitor="batch"} 1.0' in text
    assert 'auditchain_expectation_silent{monitor="auth"} 0.0' in text
    assert 'auditchain_expectation_max_silence_seconds{monitor="auth"} 3600.0' in text
    assert "auditchain_silent_producers 1.0" in text
    expectations = {e["name"]: e for e in json.loads(document)["expectations"]}
    assert (expectations["batch"]["silent"], expectations["auth"]["silent"]) == (True, False)


def test_activity_samples_are_one_a_minute_and_kept_a_day(conn):
    emit(conn, "test.sampled", 3)
    old = datetime.now(UTC) - timedelta(hours=25)
    conn.execute("INSERT INTO compliance.activity_samples VALUES (%s, 1, 1)", (old,))

    first = conn.execute("SELECT compliance.record_activity_sample()").fetchone()[0]
    conn.execute("SELECT compliance.drain()")
    second = conn.execute("SELECT compliance.record_activity_sample()").fetchone()[0]

    rows = conn.execute(
        "SELECT sampled_at, outbox_depth, chain_length FROM compliance.activity_samples"
    ).fetchall()
    if first == second:  # the same minute: the later call wins
        assert rows == [(second, 0, 3)]
    else:
        assert rows[-1] == (second, 0, 3)
    assert all(at > old for at, _, _ in rows), "samples older than 24 hours are pruned"


def test_status_draws_the_last_hour_as_sparklines(conn, dsn, capsys):
    now = conn.execute("SELECT date_trunc('minute', now())").fetchone()[0]
    # A drainer that stopped 20 minutes ago: the outbox grows, nothing is chained.
    for minute in range(60):
        at = now - timedelta(minutes=59 - minute)
        stopped = minute >= 40
        depth = (minute - 39) * 100 if stopped else 5
        chained = 40 * 1000 if stopped else minute * 1000
        conn.execute("INSERT INTO compliance.activity_samples VALUES (%s, %s, %s)", (at, depth, chained))

    code, out, err = run_cli(capsys, "status", "--dsn", dsn)
    _, document = status(capsys, dsn)

    depth_line = next(line for line in out.splitlines() if line.strip().startswith("outbox depth"))
    drained_line = next(line for line in out.splitlines() if line.strip().startswith("drained/min"))
    depth_spark = depth_line.split("|")[1]
    drained_spark = drained_line.split("|")[1]
    assert len(depth_spark) == len(drained_spark) == 60
    assert depth_spark[:40] == "▂" * 40 and depth_spark[-1] == "█", "a small depth is low but not zero"
    assert drained_spark[0] == " ", "no rate for the first minute: nothing to compare with"
    assert set(drained_spark[1:41]) == {"█"} and set(drained_spark[41:]) == {"▁"}
    assert depth_line.endswith("now 2,000, max 2,000")
    trend = document["trend"]
    assert trend["outbox_depth"][-1] == 2000 and trend["drained_per_minute"][-1] == 0
    assert json.dumps(trend)


def test_sparkline_scales_to_the_largest_value_and_leaves_gaps():
    assert sparkline([0, 1, 4, 8, None, 2]) == "▁▂▅█ ▃"
    assert sparkline([None, None]) == "  "
    assert sparkline([0, 0]) == "▁▁"
