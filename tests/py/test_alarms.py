"""`auditchain alarms install` against a loopback CloudWatch: the documented alarms, created
once, left alone when unchanged, updated when the configuration changes, and watching
metrics the watchdog really publishes; one alarm per expected-event monitor of the database
given; the CloudWatch dashboard."""

from __future__ import annotations

import json

import boto3
import pytest

from auditchain.alarms import ALARMS
from auditchain.errors import EXIT_UNAVAILABLE, EXIT_USAGE
from awsfake import free_port
from test_anchor import run_cli
from test_watchdog import cloudwatch, published_names, unique_stage, watchdog_once

DOCUMENTED = {
    # what: (metric, statistic, comparison, threshold, evaluation periods, missing data)
    "anchor-gap": ("ComplianceAnchorGap", "Maximum", "GreaterThanThreshold", 1800.0, 1, "missing"),
    "watchdog-heartbeat-missing": (
        "ComplianceAnchorWatchdogHeartbeat",
        "SampleCount",
        "LessThanThreshold",
        1.0,
        2,
        "breaching",
    ),
    "outbox-depth": ("ComplianceOutboxDepth", "Maximum", "GreaterThanThreshold", 10000.0, 1, "missing"),
    "anchor-failed": (
        "ComplianceAnchorsFailed",
        "Maximum",
        "GreaterThanThreshold",
        0.0,
        1,
        "missing",
    ),
    "exports-stuck": (
        "ComplianceExportsStuck",
        "Maximum",
        "GreaterThanThreshold",
        0.0,
        1,
        "missing",
    ),
    "drainer-halted": (
        "ComplianceDrainerHalted",
        "Maximum",
        "GreaterThanThreshold",
        0.0,
        1,
        "missing",
    ),
    "verification-failed": (
        "ComplianceVerificationFailed",
        "Maximum",
        "GreaterThanThreshold",
        0.0,
        1,
        "missing",
    ),
    "cron-job-failures": (
        "ComplianceCronFailedRunsLastHour",
        "Maximum",
        "GreaterThanThreshold",
        0.0,
        1,
        "missing",
    ),
    "cron-jobs-unscheduled": (
        "ComplianceCronJobsUnscheduled",
        "Maximum",
        "GreaterThanThreshold",
        0.0,
        1,
        "missing",
    ),
    "cron-scheduler-stalled": (
        "ComplianceCronMinutelyJobsLastStartAge",
        "Maximum",
        "GreaterThanThreshold",
        180.0,
        1,
        "missing",
    ),
    "silent-producers": (
        "ComplianceSilentProducers",
        "Maximum",
        "GreaterThanThreshold",
        0.0,
        1,
        "missing",
    ),
}


def alarms_of(endpoint_url: str, prefix: str) -> dict[str, dict]:
    client = boto3.client("cloudwatch", endpoint_url=endpoint_url, region_name="us-east-1")
    found = client.describe_alarms(AlarmNamePrefix=prefix)["MetricAlarms"]
    return {a["AlarmName"]: a for a in found}


def install(capsys, endpoint_url: str, stage: str, *extra: str) -> tuple[int, str, str]:
    return run_cli(capsys, "alarms", "install", "--stage", stage, "--endpoint-url", endpoint_url, *extra)


def test_install_creates_the_documented_alarms(endpoint_url, capsys):
    stage = unique_stage()

    code, out, err = install(capsys, endpoint_url, stage)

    assert code == 0, err
    assert "per-monitor producer-silent alarms are neither installed nor removed" in err
    prefix = f"auditchain-{stage}-compliance-"
    assert out.splitlines() == [f"created   {prefix}{what}" for what in DOCUMENTED] + [
        f"created   dashboard auditchain-{stage}-compliance"
    ]
    alarms = alarms_of(endpoint_url, prefix)
    assert set(alarms) == {prefix + what for what in DOCUMENTED}
    for what, (metric, statistic, comparison, threshold, periods, missing) in DOCUMENTED.items():
        alarm = alarms[prefix + what]
        assert (
            alarm["Namespace"],
            alarm["MetricName"],
            alarm["Dimensions"],
            alarm["Statistic"],
            alarm["ComparisonOperator"],
            alarm["Threshold"],
            alarm["Period"],
            alarm["EvaluationPeriods"],
            alarm["DatapointsToAlarm"],
            alarm["TreatMissingData"],
        ) == (
            "Auditchain/Compliance",
            metric,
            [{"Name": "Stage", "Value": stage}],
            statistic,
            comparison,
            threshold,
            300,
            periods,
            periods,
            missing,
        ), what
        assert alarm["AlarmDescription"].endswith(f"Runbook: docs/runbook.md#{what}")


def test_install_is_idempotent_and_updates_what_changed(endpoint_url, capsys):
    stage = unique_stage()
    prefix = f"auditchain-{stage}-compliance-"
    install(capsys, endpoint_url, stage)

    code, out, _ = install(capsys, endpoint_url, stage)
    assert code == 0
    dashboard = f"dashboard auditchain-{stage}-compliance"
    assert out.splitlines() == [f"unchanged {prefix}{what}" for what in DOCUMENTED] + [
        f"unchanged {dashboard}"
    ]
    assert len(alarms_of(endpoint_url, prefix)) == len(DOCUMENTED)

    topic = "arn:aws:sns:us-east-1:123456789012:oncall"
    code, out, _ = install(capsys, endpoint_url, stage, "--sns-topic-arn", topic)
    assert code == 0
    assert out.splitlines() == [f"updated   {prefix}{what}" for what in DOCUMENTED] + [
        f"unchanged {dashboard}"
    ]
    alarms = alarms_of(endpoint_url, prefix)
    assert len(alarms) == len(DOCUMENTED)
    assert all(a["AlarmActions"] == [topic] and a["OKActions"] == [topic] for a in alarms.values())
    assert all(a["ActionsEnabled"] for a in alarms.values())


def test_custom_prefix_and_namespace(endpoint_url, capsys):
    stage = unique_stage()

    code, _, err = install(capsys, endpoint_url, stage, "--prefix", "acme", "--namespace", "Acme/Audit")

    assert code == 0, err
    alarms = alarms_of(endpoint_url, f"acme-{stage}-compliance-")
    assert len(alarms) == len(DOCUMENTED)
    assert {a["Namespace"] for a in alarms.values()} == {"Acme/Audit"}


def test_every_alarm_watches_a_metric_the_watchdog_publishes(conn, dsn, endpoint_url, capsys):
    conn.execute("SELECT compliance.emit('test.alarmed', 'tester')")
    conn.execute("SELECT compliance.drain()")
    stage = unique_stage()
    code, _, err = watchdog_once(capsys, dsn, endpoint_url, stage)
    assert code == 0, err

    code, out, _ = run_cli(capsys, "alarms", "install", "--stage", stage, "--dry-run")

    watched = {request["MetricName"] for request in json.loads(out)["alarms"]}
    # The cron metrics are published only where pg_cron can be read; this cluster has it.
    assert watched <= published_names(endpoint_url, stage)


def test_alarm_thresholds_are_the_alarm_above_of_compliance_metrics(conn):
    """The alarms are installed without a database, from ALARMS; the database defines the
    thresholds (metrics().alarm_above). Every metric with one has exactly one alarm firing
    above exactly that value, and no alarm watches a metric the database gives none."""
    alarm_above = {
        metric: threshold
        for metric, threshold in conn.execute("SELECT metric, alarm_above FROM compliance.metrics()")
        if threshold is not None
    }
    on_metrics = [spec for spec in ALARMS if spec.sql_metric is not None]

    assert {spec.sql_metric: spec.threshold for spec in on_metrics} == alarm_above
    assert len(on_metrics) == len(alarm_above)
    assert {spec.comparison for spec in on_metrics} == {"GreaterThanThreshold"}
    assert [spec.what for spec in ALARMS if spec.sql_metric is None] == ["watchdog-heartbeat-missing"]


def test_dry_run_prints_the_requests_and_calls_nothing(capsys):
    dead = f"http://127.0.0.1:{free_port()}"

    code, out, err = run_cli(
        capsys,
        "alarms",
        "install",
        "--stage",
        "prod",
        "--dry-run",
        "--endpoint-url",
        dead,
        "--prefix",
        "acme",
    )

    assert code == 0, err
    assert "no --dsn or DATABASE_URL" in err
    document = json.loads(out)
    requests = document["alarms"]
    assert [r["AlarmName"] for r in requests] == [f"acme-prod-compliance-{what}" for what in DOCUMENTED]
    assert document["dashboard"]["DashboardName"] == "acme-prod-compliance"
    heartbeat = requests[1]
    assert heartbeat["TreatMissingData"] == "breaching"
    assert (heartbeat["EvaluationPeriods"], heartbeat["Period"]) == (2, 300)
    assert all(r["ActionsEnabled"] is False and r["AlarmActions"] == [] for r in requests)


def test_unreachable_endpoint_exits_3(moto_server, capsys):
    dead = f"http://127.0.0.1:{free_port()}"

    code, _, err = install(capsys, dead, "prod")

    assert code == EXIT_UNAVAILABLE
    assert err.splitlines()[-1].startswith(
        "auditchain alarms: CloudWatch alarm installation failed: Could not connect"
    )


@pytest.mark.parametrize("bad", ["", "prod east", "-prod", "x" * 65])
def test_stage_and_prefix_are_plain_names(bad, capsys):
    for option in ("--stage", "--prefix"):
        argv = ["alarms", "install", "--dry-run", "--stage", "prod", "--prefix", "acme"]
        argv[argv.index(option) + 1] = bad
        with pytest.raises(SystemExit) as usage:
            run_cli(capsys, *argv)
        assert usage.value.code == EXIT_USAGE


def monitor_alarms(endpoint_url: str, stage: str) -> dict[str, dict]:
    return alarms_of(endpoint_url, f"auditchain-{stage}-compliance-producer-silent-")


def test_one_alarm_per_monitor_of_the_database_and_none_left_for_dropped_ones(
    conn, dsn, endpoint_url, capsys
):
    conn.execute("SELECT compliance.expect_events('auth', 'auth.%', '10 minutes')")
    conn.execute("SELECT compliance.expect_events('billing', 'billing.%', '1 hour', 'tenant-1')")
    stage = unique_stage()

    code, out, err = install(capsys, endpoint_url, stage, "--dsn", dsn)

    assert code == 0, err
    alarms = monitor_alarms(endpoint_url, stage)
    assert set(alarms) == {f"auditchain-{stage}-compliance-producer-silent-{m}" for m in ("auth", "billing")}
    auth = alarms[f"auditchain-{stage}-compliance-producer-silent-auth"]
    assert (
        auth["MetricName"],
        auth["Dimensions"],
        auth["Statistic"],
        auth["ComparisonOperator"],
        auth["Threshold"],
        auth["Period"],
    ) == (
        "ComplianceExpectationSilent",
        [{"Name": "Stage", "Value": stage}, {"Name": "Monitor", "Value": "auth"}],
        "Maximum",
        "GreaterThanThreshold",
        0.0,
        300,
    )
    assert auth["AlarmDescription"].endswith("Runbook: docs/runbook.md#silent-producers")

    conn.execute("SELECT compliance.drop_expectation('billing')")
    code, out, err = install(capsys, endpoint_url, stage, "--dsn", dsn)

    assert code == 0, err
    assert f"deleted   auditchain-{stage}-compliance-producer-silent-billing" in out.splitlines()
    assert set(monitor_alarms(endpoint_url, stage)) == {f"auditchain-{stage}-compliance-producer-silent-auth"}
    assert len(alarms_of(endpoint_url, f"auditchain-{stage}-compliance-")) == len(DOCUMENTED) + 1


def test_monitor_alarms_watch_what_the_watchdog_publishes(conn, dsn, endpoint_url, capsys):
    conn.execute("SELECT compliance.expect_events('auth', 'auth.%', '10 minutes')")
    stage = unique_stage()
    code, _, err = watchdog_once(capsys, dsn, endpoint_url, stage)
    assert code == 0, err

    code, out, err = run_cli(capsys, "alarms", "install", "--stage", stage, "--dry-run", "--dsn", dsn)

    assert code == 0, err
    requests = [r for r in json.loads(out)["alarms"] if r["AlarmName"].endswith("producer-silent-auth")]
    assert len(requests) == 1
    published = cloudwatch(endpoint_url).list_metrics(
        Namespace="Auditchain/Compliance",
        MetricName=requests[0]["MetricName"],
        Dimensions=requests[0]["Dimensions"],
    )["Metrics"]
    assert len(published) == 1


def test_dashboard_is_stored_once_and_graphs_published_metrics(conn, dsn, endpoint_url, capsys):
    conn.execute("SELECT compliance.emit('test.dashboard', 'tester')")
    conn.execute("SELECT compliance.drain()")
    stage = unique_stage()
    code, _, err = watchdog_once(capsys, dsn, endpoint_url, stage)
    assert code == 0, err
    install(capsys, endpoint_url, stage, "--region", "eu-west-1")

    regional = boto3.client("cloudwatch", endpoint_url=endpoint_url, region_name="eu-west-1")
    stored = regional.get_dashboard(DashboardName=dashboard_name_of(stage))
    body = json.loads(stored["DashboardBody"])
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert titles == [
        "Outbox depth and oldest row age",
        "Drain rate (events chained per minute)",
        "Anchor gap (s)",
        "Watchdog heartbeat",
        "Verification lag (events)",
        "Export jobs stuck",
        "Silent expected-event monitors",
    ]
    graphed = {m[1] for w in body["widgets"] for m in w["properties"]["metrics"] if isinstance(m[0], str)}
    assert graphed <= published_names(endpoint_url, stage)
    assert {w["properties"]["region"] for w in body["widgets"]} == {"eu-west-1"}

    code, out, _ = install(capsys, endpoint_url, stage, "--region", "eu-west-1")
    assert out.splitlines()[-1] == f"unchanged dashboard {dashboard_name_of(stage)}"
    code, out, _ = install(capsys, endpoint_url, stage, "--region", "eu-west-1", "--namespace", "Acme/Audit")
    assert out.splitlines()[-1] == f"updated   dashboard {dashboard_name_of(stage)}"
    body = json.loads(regional.get_dashboard(DashboardName=dashboard_name_of(stage))["DashboardBody"])
    assert body["widgets"][0]["properties"]["metrics"][0][0] == "Acme/Audit"


def dashboard_name_of(stage: str) -> str:
    return f"auditchain-{stage}-compliance"
