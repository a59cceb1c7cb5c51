"""`auditchain alarms install`: create or update the compliance CloudWatch alarms.

Alarms are named <prefix>-<stage>-compliance-<what> and watch the metrics that
`auditchain watchdog --stage <stage>` publishes (same namespace, dimension Stage=<stage>):

  anchor-gap                  ComplianceAnchorGap > 1800 s (two missed 15-minute anchors)
  watchdog-heartbeat-missing  no ComplianceAnchorWatchdogHeartbeat in two 5-minute periods;
                              missing data counts as breaching
  outbox-depth                ComplianceOutboxDepth > 10000
  anchor-failed               ComplianceAnchorsFailed > 0 (integrity alarm)
  exports-stuck               ComplianceExportsStuck > 0
  drainer-halted              ComplianceDrainerHalted > 0
  verification-failed         ComplianceVerificationFailed > 0
  cron-job-failures           ComplianceCronFailedRunsLastHour > 0
  cron-jobs-unscheduled       ComplianceCronJobsUnscheduled > 0
  cron-scheduler-stalled      ComplianceCronMinutelyJobsLastStartAge > 180 s (pg_cron has
                              stopped starting the once-a-minute jobs: its scheduler is dead)
  silent-producers            ComplianceSilentProducers > 0 (an expected-event monitor is
                              silent for longer than its max_silence)
  producer-silent-<monitor>   ComplianceExpectationSilent > 0 with Monitor=<monitor>: one per
                              expected-event monitor (compliance.expect_events), read from the
                              database given by --dsn (or DATABASE_URL); alarms of monitors
                              dropped since are deleted. Without a database these are
                              neither installed nor removed (the command says so).

It also puts the CloudWatch dashboard <prefix>-<stage>-compliance (outbox depth and age,
drain rate, anchor gap, heartbeat, verification lag, export jobs, silent monitors), again
only when its body differs.

The thresholds are the alarm_above column of compliance.metrics(), which the database
defines (compliance._metric_thresholds()); they are repeated in the table below so that
installing alarms needs no database connection, and a test keeps the two equal.

Every alarm evaluates 5-minute periods, the watchdog's cadence. Apart from the heartbeat,
missing data leaves an alarm INSUFFICIENT_DATA: a silent watchdog is the heartbeat
alarm's job. Installing is idempotent: an alarm that already has this configuration is
left alone, one that differs is overwritten. --dry-run prints the PutMetricAlarm requests
and the dashboard body as JSON and calls nothing. Each alarm's description points at its
docs/runbook.md section.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from . import config, db
from .cliutil import add_command, print_json
from .errors import EXIT_OK, EXIT_UNAVAILABLE, AuditchainError
from .metrics import Metric, fetch_expectations
from .watchdog import (
    HEARTBEAT_CRITICAL_SECONDS,
    HEARTBEAT_METRIC,
    MONITOR_DIMENSION,
    SILENCE_METRIC,
    SILENT_METRIC,
    add_cloudwatch_options,
    cloudwatch_client,
    monitor_dimensions,
    name_part,
    stage_dimensions,
)

PERIOD_SECONDS = 300
DEFAULT_PREFIX = "auditchain"


def published_name(sql_metric: str) -> str:
    """The CloudWatch name the watchdog publishes a compliance.metrics() row under."""
    return Metric(sql_metric, None, "").cloudwatch_name


@dataclass(frozen=True)
class AlarmSpec:
    what: str
    metric_name: str
    statistic: str
    comparison: str
    threshold: float
    summary: str
    evaluation_periods: int = 1
    treat_missing_data: str = "missing"
    sql_metric: str | None = None  # the compliance.metrics() row it watches, if any
    monitor: str | None = None  # the expected-event monitor it watches, if any
    runbook: str | None = None  # its docs/runbook.md anchor when not `what`

    def name(self, prefix: str, stage: str) -> str:
        return f"{prefix}-{stage}-compliance-{self.what}"

    def dimensions(self, stage: str) -> list[dict[str, str]]:
        return stage_dimensions(stage) if self.monitor is None else monitor_dimensions(stage, self.monitor)

    def request(self, prefix: str, stage: str, namespace: str, topics: list[str]) -> dict[str, object]:
        """The PutMetricAlarm parameters."""
        return {
            "AlarmName": self.name(prefix, stage),
            "AlarmDescription": f"{self.summary} Runbook: docs/runbook.md#{self.runbook or self.what}",
            "ActionsEnabled": bool(topics),
            "AlarmActions": topics,
            "OKActions": topics,
            "Namespace": namespace,
            "MetricName": self.metric_name,
            "Dimensions": self.dimensions(stage),
            "Statistic": self.statistic,
            "Period": PERIOD_SECONDS,
            "EvaluationPeriods": self.evaluation_periods,
            "DatapointsToAlarm": self.evaluation_periods,
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison,
            "TreatMissingData": self.treat_missing_data,
        }


def metric_alarm(what: str, sql_metric: str, alarm_above: float, summary: str) -> AlarmSpec:
    """An alarm on a compliance.metrics() row: fires when its maximum in a period exceeds
    alarm_above, that row's alarm_above in the database."""
    return AlarmSpec(
        what,
        published_name(sql_metric),
        "Maximum",
        "GreaterThanThreshold",
        alarm_above,
        summary,
        sql_metric=sql_metric,
    )


# (what, compliance.metrics() row, its alarm_above): tests/py/test_alarms.py checks these
# against the database.
ALARMS = [
    metric_alarm(
        "anchor-gap",
        "anchor_gap_seconds",
        1800,
        "An audit event has waited more than 30 minutes for a WORM anchor.",
    ),
    AlarmSpec(
        "watchdog-heartbeat-missing",
        HEARTBEAT_METRIC,
        "SampleCount",
        "LessThanThreshold",
        1,
        "No watchdog heartbeat for two 5-minute periods: the compliance metrics are not being watched.",
        evaluation_periods=HEARTBEAT_CRITICAL_SECONDS // PERIOD_SECONDS,
        treat_missing_data="breaching",
    ),
    metric_alarm(
        "outbox-depth",
        "outbox_depth",
        10000,
        "More than 10,000 audit events are waiting in the outbox: the drainer is not keeping up.",
    ),
    metric_alarm(
        "anchor-failed",
        "anchors_failed",
        0,
        "An anchor upload found different content at its key in the WORM bucket (integrity alarm).",
    ),
    metric_alarm(
        "exports-stuck",
        "exports_stuck",
        0,
        "An export job has been running for more than 15 minutes without progress from its runner.",
    ),
    metric_alarm(
        "drainer-halted",
        "drainer_halted",
        0,
        "The drainer halted on a failed chain head check; no new events are chained.",
    ),
    metric_alarm(
        "verification-failed",
        "verification_failed",
        0,
        "The incremental verifier found a hash chain that does not verify.",
    ),
    metric_alarm(
        "cron-job-failures",
        "cron_failed_runs_last_hour",
        0,
        "A pg_cron job of auditchain failed in the last hour.",
    ),
    metric_alarm(
        "cron-jobs-unscheduled",
        "cron_jobs_unscheduled",
        0,
        "A pg_cron job of auditchain is not scheduled or not active: its work (draining, anchoring, "
        "verifying, reconciling exports) has stopped.",
    ),
    metric_alarm(
        "cron-scheduler-stalled",
        "cron_minutely_jobs_last_start_age_seconds",
        180,
        "pg_cron has not started the once-a-minute drain or verify job for over 3 minutes although "
        "they are scheduled: its scheduler is not running, and nothing is chained, verified or anchored.",
    ),
    metric_alarm(
        "silent-producers",
        "silent_producers",
        0,
        "An expected-event monitor has seen no matching event for longer than its max_silence: "
        "a producer's events are missing.",
    ),
]
MONITOR_ALARM = "producer-silent-"


def monitor_alarm(monitor: str) -> AlarmSpec:
    """The alarm of one expected-event monitor: the database decides `silent` from its
    max_silence, so re-declaring a monitor needs no new alarm."""
    return AlarmSpec(
        MONITOR_ALARM + monitor,
        SILENT_METRIC,
        "Maximum",
        "GreaterThanThreshold",
        0,
        f"Expected-event monitor {monitor} has seen no matching event for longer than its max_silence.",
        monitor=monitor,
        runbook="silent-producers",
    )


def read_monitors(args: argparse.Namespace) -> list[str] | None:
    """The monitor names from the database, or None when no database was given."""
    dsn = args.dsn or config.env("DATABASE_URL")
    if dsn is None:
        return None
    with db.connect(db.resolve_dsn(dsn), autocommit=True, app="auditchain alarms") as conn:
        return [e.name for e in fetch_expectations(conn)]


def specs(monitors: list[str] | None) -> list[AlarmSpec]:
    return ALARMS + [monitor_alarm(name) for name in monitors or []]


def requests(args: argparse.Namespace, monitors: list[str] | None = None) -> list[dict[str, object]]:
    topics = list(args.sns_topic_arn or [])
    return [spec.request(args.prefix, args.stage, args.namespace, topics) for spec in specs(monitors)]


def dashboard_name(args: argparse.Namespace) -> str:
    return f"{args.prefix}-{args.stage}-compliance"


def dashboard_body(args: argparse.Namespace) -> dict[str, object]:
    """The CloudWatch dashboard: one graph per question on-call asks, on the watchdog's
    metrics. The monitors' graph SEARCHes the Monitor dimension, so it needs no update when
    monitors come and go."""
    ns, stage = args.namespace, args.stage
    region = args.region or boto3.session.Session().region_name or "us-east-1"

    def metric(name: str, label: str, **extra: object) -> list[object]:
        return [ns, name, "Stage", stage, {"label": label, "stat": "Maximum", **extra}]

    def graph(title: str, metrics: list[list[object]], x: int, y: int, width: int = 12) -> dict[str, object]:
        properties = {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "period": 300,
            "metrics": metrics,
        }
        return {"type": "metric", "x": x, "y": y, "width": width, "height": 6, "properties": properties}

    search = (
        f'SEARCH(\'{{{ns},{MONITOR_DIMENSION},Stage}} MetricName="{SILENCE_METRIC}" Stage="{stage}"\', '
        "'Maximum', 300)"
    )
    widgets = [
        graph(
            "Outbox depth and oldest row age",
            [
                metric(published_name("outbox_depth"), "outbox depth"),
                metric(published_name("outbox_oldest_age_seconds"), "oldest row age (s)", yAxis="right"),
            ],
            0,
            0,
        ),
        graph(
            "Drain rate (events chained per minute)",
            [
                metric(published_name("chain_length"), "chain length", id="chain", visible=False),
                [{"expression": "RATE(chain) * 60", "label": "chained per minute", "id": "rate"}],
            ],
            12,
            0,
        ),
        graph("Anchor gap (s)", [metric(published_name("anchor_gap_seconds"), "anchor gap")], 0, 6),
        graph(
            "Watchdog heartbeat",
            [[ns, HEARTBEAT_METRIC, "Stage", stage, {"label": "heartbeats", "stat": "SampleCount"}]],
            12,
            6,
        ),
        graph(
            "Verification lag (events)",
            [metric(published_name("verification_lag"), "verification lag")],
            0,
            12,
        ),
        graph("Export jobs stuck", [metric(published_name("exports_stuck"), "exports stuck")], 12, 12),
        graph(
            "Silent expected-event monitors",
            [
                metric(published_name("silent_producers"), "silent monitors"),
                [{"expression": search, "label": "", "id": "silence", "yAxis": "right"}],
            ],
            0,
            18,
            24,
        ),
    ]
    return {"widgets": widgets}


def put_dashboard(client, name: str, body: dict[str, object]) -> str:
    """created, updated or unchanged."""
    text = json.dumps(body, sort_keys=True)
    try:
        try:
            current = json.loads(client.get_dashboard(DashboardName=name)["DashboardBody"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "ResourceNotFound",
                "ResourceNotFoundException",
            ):
                raise
            current = None
        if current == body:
            return "unchanged"
        client.put_dashboard(DashboardName=name, DashboardBody=text)
    except (BotoCoreError, ClientError) as exc:
        raise AuditchainError(f"CloudWatch dashboard installation failed: {exc}", EXIT_UNAVAILABLE) from None
    return "created" if current is None else "updated"


def remove_stale_monitor_alarms(
    client, prefix: str, wanted: list[dict[str, object]]
) -> list[tuple[str, str]]:
    """Deletes the per-monitor alarms of monitors that no longer exist."""
    keep = {str(w["AlarmName"]) for w in wanted}
    try:
        pages = client.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"]
        )
        stale = [a["AlarmName"] for page in pages for a in page["MetricAlarms"] if a["AlarmName"] not in keep]
        for start in range(0, len(stale), 100):
            client.delete_alarms(AlarmNames=stale[start : start + 100])
    except (BotoCoreError, ClientError) as exc:
        raise AuditchainError(f"CloudWatch alarm removal failed: {exc}", EXIT_UNAVAILABLE) from None
    return [("deleted", name) for name in stale]


def differs(existing: dict[str, object], wanted: dict[str, object]) -> bool:
    return any(existing.get(key) != value for key, value in wanted.items())


def install(client, wanted: list[dict[str, object]]) -> list[tuple[str, str]]:
    """Puts every alarm that is missing or differs; returns (created|updated|unchanged, name)."""
    names = [str(w["AlarmName"]) for w in wanted]
    try:
        # DescribeAlarms takes at most 100 names per call.
        existing = {
            a["AlarmName"]: a
            for start in range(0, len(names), 100)
            for a in client.describe_alarms(
                AlarmNames=names[start : start + 100], AlarmTypes=["MetricAlarm"]
            )["MetricAlarms"]
        }
        outcome = []
        for request in wanted:
            current = existing.get(str(request["AlarmName"]))
            if current is not None and not differs(current, request):
                outcome.append(("unchanged", str(request["AlarmName"])))
                continue
            client.put_metric_alarm(**request)
            outcome.append(("created" if current is None else "updated", str(request["AlarmName"])))
    except (BotoCoreError, ClientError) as exc:
        raise AuditchainError(f"CloudWatch alarm installation failed: {exc}", EXIT_UNAVAILABLE) from None
    return outcome


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "alarms",
        help="manage the compliance CloudWatch alarms",
        description=__doc__,
        needs_db=False,
    )
    actions = p.add_subparsers(dest="alarms_command", metavar="ACTION", required=True)
    install_parser = actions.add_parser(
        "install",
        help="create or update the alarms for one stage (idempotent)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_cloudwatch_options(install_parser, stage_required=True)
    install_parser.add_argument(
        "--prefix",
        type=name_part,
        default=DEFAULT_PREFIX,
        help=f"first part of every alarm name (default: {DEFAULT_PREFIX})",
    )
    install_parser.add_argument(
        "--sns-topic-arn",
        action="append",
        metavar="ARN",
        help="notify this SNS topic on ALARM and OK (repeatable; default: no actions)",
    )
    install_parser.add_argument(
        "--dsn",
        help="database whose expected-event monitors get an alarm each (default: DATABASE_URL; "
        "without either, per-monitor alarms are left as they are)",
    )
    install_parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the PutMetricAlarm requests and the dashboard as JSON; change nothing",
    )
    install_parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    monitors = read_monitors(args)
    if monitors is None:
        print(
            "auditchain alarms: no --dsn or DATABASE_URL: per-monitor producer-silent alarms are neither "
            "installed nor removed (the silent-producers alarm covers every monitor)",
            file=sys.stderr,
        )
    wanted = requests(args, monitors)
    body = dashboard_body(args)
    if args.dry_run:
        print_json(
            {"alarms": wanted, "dashboard": {"DashboardName": dashboard_name(args), "DashboardBody": body}}
        )
        return EXIT_OK
    client = cloudwatch_client(args)
    outcomes = install(client, wanted)
    if monitors is not None:
        prefix = monitor_alarm("").name(args.prefix, args.stage)
        outcomes += remove_stale_monitor_alarms(client, prefix, wanted)
    for outcome, name in outcomes:
        print(f"{outcome:<9} {name}")
    print(f"{put_dashboard(client, dashboard_name(args), body):<9} dashboard {dashboard_name(args)}")
    return EXIT_OK
