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

The thresholds are the alarm_above column of compliance.metrics(), which the database
defines (compliance._metric_thresholds()); they are repeated in the table below so that
installing alarms needs no database connection, and a test keeps the two equal.

Every alarm evaluates 5-minute periods, the watchdog's cadence. Apart from the heartbeat,
missing data leaves an alarm INSUFFICIENT_DATA: a silent watchdog is the heartbeat
alarm's job. Installing is idempotent: an alarm that already has this configuration is
left alone, one that differs is overwritten. --dry-run prints the PutMetricAlarm requests
as JSON and calls nothing. Each alarm's description points at its docs/runbook.md section.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from .cliutil import add_command, print_json
from .errors import EXIT_OK, EXIT_UNAVAILABLE, AuditchainError
from .metrics import Metric
from .watchdog import (
    HEARTBEAT_CRITICAL_SECONDS,
    HEARTBEAT_METRIC,
    add_cloudwatch_options,
    cloudwatch_client,
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

    def name(self, prefix: str, stage: str) -> str:
        return f"{prefix}-{stage}-compliance-{self.what}"

    def request(self, prefix: str, stage: str, namespace: str, topics: list[str]) -> dict[str, object]:
        """The PutMetricAlarm parameters."""
        return {
            "AlarmName": self.name(prefix, stage),
            "AlarmDescription": f"{self.summary} Runbook: docs/runbook.md#{self.what}",
            "ActionsEnabled": bool(topics),
            "AlarmActions": topics,
            "OKActions": topics,
            "Namespace": namespace,
            "MetricName": self.metric_name,
            "Dimensions": stage_dimensions(stage),
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
]


def requests(args: argparse.Namespace) -> list[dict[str, object]]:
    topics = list(args.sns_topic_arn or [])
    return [spec.request(args.prefix, args.stage, args.namespace, topics) for spec in ALARMS]


def differs(existing: dict[str, object], wanted: dict[str, object]) -> bool:
    return any(existing.get(key) != value for key, value in wanted.items())


def install(client, wanted: list[dict[str, object]]) -> list[tuple[str, str]]:
    """Puts every alarm that is missing or differs; returns (created|updated|unchanged, name)."""
    names = [str(w["AlarmName"]) for w in wanted]
    try:
        found = client.describe_alarms(AlarmNames=names, AlarmTypes=["MetricAlarm"])["MetricAlarms"]
        existing = {a["AlarmName"]: a for a in found}
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
        "--dry-run", action="store_true", help="print the PutMetricAlarm requests as JSON; change nothing"
    )
    install_parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    wanted = requests(args)
    if args.dry_run:
        print_json(wanted)
        return EXIT_OK
    for outcome, name in install(cloudwatch_client(args), wanted):
        print(f"{outcome:<9} {name}")
    return EXIT_OK
