"""`auditchain status`: the on-call triage questions answered in one command.

One line per check (outbox, drainer, anchors, verification, exports, pg_cron, expected-event
monitors, watchdog heartbeat) with its state and what to look at, then the outbox depth and
drain rate of the last hour as sparklines (per-minute samples the database keeps, pg_cron job
`sample`), then the overall state. compliance.metrics()
gives the numbers and decides each one's verdict from the thresholds it reports with it
(docs/api.md, "Metrics"); a check's state is the worst verdict of its metrics. The details
(halt reason, anchor errors, stuck job ids) come from the compliance tables when the role
may read them. The heartbeat is read back from CloudWatch when --stage is given: the
datapoint the heartbeat-missing alarm evaluates. Thresholds of every check:
docs/runbook.md, "auditchain status".

Exit code: 0 healthy, 1 warning, 2 critical, 3 unknown (the database, or a check's source,
could not be read). Critical outranks unknown, which outranks warning.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from . import db
from .cliutil import add_command, add_json_flag, print_json
from .errors import AuditchainError, first_line
from .metrics import Metric, by_name, fetch
from .watchdog import (
    HEARTBEAT_CRITICAL_SECONDS,
    HEARTBEAT_METRIC,
    HEARTBEAT_WARNING_SECONDS,
    add_cloudwatch_options,
    cloudwatch_client,
    stage_dimensions,
)

OK, WARNING, CRITICAL, UNKNOWN, SKIPPED = "ok", "warning", "critical", "unknown", "skipped"
# Worst first: what decides the overall state and the exit code.
SEVERITY = [CRITICAL, UNKNOWN, WARNING, OK]
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
HEARTBEAT_LOOKBACK = timedelta(hours=3)
DETAIL_LIMIT = 5
TREND_MINUTES = 60
# Lowest to highest; the ASCII ramp where the terminal cannot print the blocks.
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_ASCII = "_.-:=+*#"


@dataclass
class Check:
    name: str
    state: str
    summary: str
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # facts for machines reading --json


def outbox_band(depth: Metric) -> str:
    """The name of the outbox depth band, from the thresholds metrics() reports with it:
    healthy up to the warning, elevated up to the alarm, concerning up to critical."""
    value = depth.value or 0
    for ceiling, band in (
        (depth.warning_above, "healthy"),
        (depth.alarm_above, "elevated"),
        (depth.critical_above, "concerning"),
    ):
        if ceiling is not None and value <= ceiling:
            return band
    return "critical"


def worst(states: list[str]) -> str:
    return next((s for s in SEVERITY if s in states), OK)


def verdict(m: dict[str, Metric], *names: str) -> str:
    """The worst of the verdicts compliance.metrics() gave these metrics."""
    return worst([m[name].verdict for name in names])


def human_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{human_age(seconds)} ago"


class Details:
    """Detail queries that need more than compliance_watchdog; hidden, not fatal, without the grant."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def rows(self, query: str, params: tuple = ()) -> list[tuple] | None:
        """The rows, or None when the role lacks the privilege; other errors propagate."""
        try:
            return self.conn.execute(query, params).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            return None

    @staticmethod
    def hidden(table: str) -> list[str]:
        return [f"details hidden: this role cannot read {table}"]


def check_outbox(m: dict[str, Metric], _: Details) -> Check:
    depth = m["outbox_depth"].value or 0
    age = m["outbox_oldest_age_seconds"].value or 0
    band = outbox_band(m["outbox_depth"])
    summary = f"depth {depth:,.0f} ({band}); oldest row waiting {human_age(age)}"
    if m["outbox_oldest_age_seconds"].verdict != OK:
        summary += " (the drainer is not draining)"
    state = verdict(m, "outbox_depth", "outbox_oldest_age_seconds")
    return Check("outbox", state, summary, data={"band": band})


def check_drainer(m: dict[str, Metric], details: Details) -> Check:
    summary = (
        f"chain length {m['chain_length'].value:,.0f}; "
        f"last batch {ago(m['drainer_last_success_age_seconds'].value)}"
    )
    state = verdict(m, "chain_length", "drainer_last_success_age_seconds", "drainer_halted")
    if not m["drainer_halted"].value:
        return Check("drainer", state, summary)
    rows = details.rows("SELECT halted_at, halted_seq, halted_reason FROM compliance.drainer_state")
    if rows is None:
        lines = Details.hidden("compliance.drainer_state")
    else:
        halted_at, seq, reason = rows[0]
        lines = [f"halted since {halted_at:%Y-%m-%d %H:%M:%S%z} at seq {seq}: {reason}"]
    return Check("drainer", state, "HALTED on an integrity failure; " + summary, lines)


def check_anchors(m: dict[str, Metric], details: Details) -> Check:
    gap = m["anchor_gap_seconds"].value or 0
    pending = m["anchors_pending"].value or 0
    retrying = m["anchors_retrying"].value or 0
    failed = m["anchors_failed"].value or 0
    summary = (
        f"gap {human_age(gap)}; last upload {ago(m['anchor_last_upload_age_seconds'].value)}; "
        f"{pending:.0f} pending ({retrying:.0f} retrying), {failed:.0f} failed"
    )
    state = verdict(
        m,
        "anchor_gap_seconds",
        "anchor_last_upload_age_seconds",
        "anchors_pending",
        "anchors_retrying",
        "anchors_failed",
    )
    lines: list[str] = []
    if retrying or failed:
        rows = details.rows(
            "SELECT anchor_id, status::text, seq_from, seq_to, attempts, last_error"
            "  FROM compliance.anchors"
            " WHERE (status = 'failed'"
            "        AND anchor_id NOT IN (SELECT anchor_id FROM compliance.anchor_failure_reviews))"
            "    OR (status = 'pending' AND last_error IS NOT NULL)"
            " ORDER BY status DESC, seq_to DESC LIMIT %s",
            (DETAIL_LIMIT,),
        )
        if rows is None:
            lines = Details.hidden("compliance.anchors")
        for anchor_id, status, seq_from, seq_to, attempts, error in rows or []:
            lines.append(
                f"anchor {anchor_id} (seq {seq_from}-{seq_to}) {status} after {attempts} attempt(s): {error}"
            )
    return Check("anchors", state, summary, lines)


def check_verification(m: dict[str, Metric], details: Details) -> Check:
    lag = m["verification_lag"].value or 0
    last_run = m["verification_last_run_age_seconds"].value
    summary = f"lag {lag:,.0f} event(s); last run {ago(last_run)}"
    state = verdict(m, "verification_lag", "verification_failed", "verification_last_run_age_seconds")
    if m["verification_failed"].value:
        rows = details.rows("SELECT first_bad_seq, problem FROM compliance.verification_state")
        lines = (
            Details.hidden("compliance.verification_state")
            if rows is None
            else [f"first bad seq {rows[0][0]}: {rows[0][1]}"]
        )
        return Check("verification", state, "chain FAILED verification; " + summary, lines)
    if m["verification_last_run_age_seconds"].verdict != OK:
        summary += " (the verifier is not running)"
    return Check("verification", state, summary)


def check_exports(m: dict[str, Metric], details: Details) -> Check:
    stuck = m["exports_stuck"].value or 0
    summary = f"{stuck:.0f} stuck (running, no progress from the runner)"
    state = verdict(m, "exports_stuck")
    if not stuck:
        return Check("exports", state, summary)
    # The stuck jobs are the running ones whose last progress is oldest: no need to know
    # here how old counts as stuck (compliance._export_stuck_after() decides).
    rows = details.rows(
        "SELECT job_id, started_at, coalesce(heartbeat_at, started_at) AS seen"
        "  FROM compliance.export_jobs"
        " WHERE status = 'running'"
        " ORDER BY seen LIMIT %s",
        (min(int(stuck), DETAIL_LIMIT),),
    )
    lines = (
        Details.hidden("compliance.export_jobs")
        if rows is None
        else [
            f"job {job} running since {started:%H:%M:%S%z}, last progress {seen:%H:%M:%S%z}"
            for job, started, seen in rows
        ]
    )
    return Check("exports", state, summary, lines)


def check_cron(m: dict[str, Metric], details: Details) -> Check:
    failures = m["cron_failed_runs_last_hour"].value
    unscheduled = m["cron_jobs_unscheduled"].value
    last_start = m["cron_minutely_jobs_last_start_age_seconds"]
    try:
        jobs = details.rows(
            "SELECT job, scheduled AND active, failures_last_hour, last_status, last_message"
            "  FROM compliance.cron_job_health()"
        )
    except psycopg.Error as exc:
        return Check("pg_cron", UNKNOWN, f"cannot read pg_cron: {first_line(exc)}")
    if failures is None or unscheduled is None or last_start.value is None:
        return Check("pg_cron", UNKNOWN, "compliance.metrics() could not read pg_cron")
    summary = (
        f"{unscheduled:.0f} job(s) not scheduled; {failures:.0f} failed run(s) in the last hour; "
        f"minutely jobs last started {human_age(last_start.value)} ago"
    )
    state = verdict(
        m, "cron_failed_runs_last_hour", "cron_jobs_unscheduled", "cron_minutely_jobs_last_start_age_seconds"
    )
    if jobs is None:
        lines = Details.hidden("compliance.cron_job_health()")
    else:
        lines = [f"{job}: not scheduled" for job, scheduled, *_ in jobs if not scheduled]
        lines += [
            f"{job}: {count} failed run(s) in the last hour; last run {status}: {message}"
            for job, _, count, status, message in jobs
            if count
        ]
    if unscheduled:
        lines.append("to schedule them: SELECT compliance.schedule_jobs();")
    if last_start.verdict != OK:
        lines.append(
            "pg_cron has stopped starting the drain and verify jobs: is its scheduler running? "
            "(docs/runbook.md#cron-scheduler-stalled)"
        )
    return Check("pg_cron", state, summary, lines)


def check_monitors(m: dict[str, Metric], details: Details) -> Check:
    silent = m["silent_producers"].value or 0
    state = verdict(m, "silent_producers")
    rows = details.rows(
        "SELECT name, event_type_pattern, tenant_id, actor_pattern, max_silence_seconds, paused,"
        "       silence_seconds, silent"
        "  FROM compliance.expectation_status()"
    )
    if rows is None:
        return Check(
            "monitors", state, f"{silent:.0f} silent", Details.hidden("compliance.expectation_status()")
        )
    if not rows:
        return Check(
            "monitors", state, "none declared: a silent producer goes unnoticed (compliance.expect_events)"
        )
    paused = sum(1 for row in rows if row[5])
    summary = f"{len(rows)} expected-event monitor(s): {silent:.0f} silent, {paused} paused"
    names, lines = [], []
    for name, pattern, tenant, actor, max_silence, _, silence, is_silent in rows:
        if not is_silent:
            continue
        match = pattern + (f", tenant {tenant}" if tenant else "") + (f", actor {actor}" if actor else "")
        names.append(name)
        lines.append(
            f"{name} ({match}): SILENT, no event for {human_age(silence)}"
            f" (normal: at most {human_age(max_silence)})"
        )
    if lines:
        lines.append("a producer's events are missing: docs/runbook.md#silent-producers")
    return Check("monitors", state, summary, lines, data={"silent": names})


def sparkline(values: list[float | None], blocks: str = SPARK_BLOCKS) -> str:
    """One character per value, scaled to the largest; a blank where there is no sample."""
    top = max((v for v in values if v is not None), default=0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif v <= 0 or top <= 0:
            out.append(blocks[0])
        else:
            out.append(blocks[max(1, math.ceil(v / top * (len(blocks) - 1)))])
    return "".join(out)


@dataclass
class Trend:
    """The last hour minute by minute, oldest first (None: no sample that minute)."""

    minutes: list[str]
    outbox_depth: list[float | None]
    drained_per_minute: list[float | None]


def read_trend(details: Details) -> Trend | None:
    rows = details.rows(
        "SELECT h.sampled_at, h.outbox_depth, h.drained_per_minute, date_trunc('minute', now())"
        "  FROM compliance.activity_history(%s) AS h",
        (TREND_MINUTES,),
    )
    if not rows:
        return None
    now = rows[0][3]
    slots = [now - timedelta(minutes=TREND_MINUTES - 1 - i) for i in range(TREND_MINUTES)]
    depth = {at: d for at, d, _, _ in rows}
    drained = {at: n for at, _, n, _ in rows}
    return Trend(
        [f"{at:%H:%M}" for at in slots],
        [depth.get(at) for at in slots],
        [drained.get(at) for at in slots],
    )


def render_trend(trend: Trend | None) -> list[str]:
    if trend is None:
        return ["last hour: no samples yet (pg_cron job sample records one a minute)"]
    blocks = SPARK_BLOCKS
    try:
        blocks.encode(sys.stdout.encoding or "ascii")
    except UnicodeEncodeError:
        blocks = SPARK_ASCII
    lines = [f"last hour, per minute ({trend.minutes[0]}-{trend.minutes[-1]}):"]
    for label, values in (("outbox depth", trend.outbox_depth), ("drained/min", trend.drained_per_minute)):
        known = [v for v in values if v is not None]
        tail = f"now {known[-1]:,.0f}, max {max(known):,.0f}" if known else "no data"
        lines.append(f"  {label:<13}|{sparkline(values, blocks)}| {tail}")
    return lines


def check_heartbeat(args: argparse.Namespace, now: datetime) -> Check:
    if not args.stage:
        return Check("heartbeat", SKIPPED, "not checked: pass --stage to read it from CloudWatch")
    try:
        datapoints = cloudwatch_client(args).get_metric_statistics(
            Namespace=args.namespace,
            MetricName=HEARTBEAT_METRIC,
            Dimensions=stage_dimensions(args.stage),
            StartTime=now - HEARTBEAT_LOOKBACK,
            EndTime=now + timedelta(minutes=1),
            Period=60,
            Statistics=["SampleCount"],
        )["Datapoints"]
    except (AuditchainError, BotoCoreError, ClientError) as exc:
        return Check("heartbeat", UNKNOWN, f"cannot read {HEARTBEAT_METRIC} from CloudWatch: {exc}")
    where = f"{args.namespace} Stage={args.stage}"
    if not datapoints:
        return Check("heartbeat", CRITICAL, f"no heartbeat in the last 3 h ({where})")
    age = max(0.0, (now - max(d["Timestamp"] for d in datapoints)).total_seconds())
    summary = f"last heartbeat {ago(age)} ({where})"
    if age > HEARTBEAT_CRITICAL_SECONDS:
        return Check("heartbeat", CRITICAL, summary)
    return Check("heartbeat", WARNING if age > HEARTBEAT_WARNING_SECONDS else OK, summary)


DATABASE_CHECKS: list[Callable[[dict[str, Metric], Details], Check]] = [
    check_outbox,
    check_drainer,
    check_anchors,
    check_verification,
    check_exports,
    check_cron,
    check_monitors,
]


def collect(args: argparse.Namespace) -> tuple[list[Check], dict[str, Metric], Trend | None]:
    now = datetime.now(UTC)
    with db.connect(args.dsn, autocommit=True, app="auditchain status") as conn:
        metrics = by_name(fetch(conn))
        details = Details(conn)
        checks = [check(metrics, details) for check in DATABASE_CHECKS]
        trend = read_trend(details)
    checks.append(check_heartbeat(args, now))
    return checks, metrics, trend


def render_table(target: str, checks: list[Check], overall: str, trend: Trend | None = None) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"auditchain status of {target}", ""]
    lines.append(f"{'CHECK':<{width}}  {'STATE':<8}  SUMMARY")
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.state.upper():<8}  {c.summary}")
        lines += [f"{'':<{width}}  {'':<8}    {d}" for d in c.details]
    lines += ["", *render_trend(trend)]
    lines += ["", f"overall: {overall.upper()} (exit {EXIT_CODES[overall]})"]
    return "\n".join(lines) + "\n"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "status",
        help="health of the ledger for on-call triage (exit 0 healthy, 1 warning, 2 critical, 3 unknown)",
        description=__doc__,
    )
    add_json_flag(p)
    add_cloudwatch_options(p, stage_required=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = db.describe(args.dsn)
    try:
        checks, metrics, trend = collect(args)
    except AuditchainError as exc:
        if args.json:
            print_json(
                {"database": target, "overall": UNKNOWN, "exit_code": EXIT_CODES[UNKNOWN], "error": str(exc)}
            )
        print(f"auditchain status: {exc}", file=sys.stderr)
        return EXIT_CODES[UNKNOWN]
    overall = worst([c.state for c in checks])
    if args.json:
        document: dict[str, Any] = {
            "database": target,
            "overall": overall,
            "exit_code": EXIT_CODES[overall],
            "checks": [asdict(c) for c in checks],
            "metrics": {name: m.value for name, m in metrics.items()},
            "verdicts": {name: m.verdict for name, m in metrics.items()},
            "trend": None if trend is None else asdict(trend),
        }
        print_json(document)
    else:
        print(render_table(target, checks, overall, trend), end="")
    return EXIT_CODES[overall]
