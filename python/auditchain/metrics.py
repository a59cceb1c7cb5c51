"""`auditchain metrics`: the rows of compliance.metrics() as a table, JSON or Prometheus text.

The metric names are the stable names of compliance.metrics() (docs/api.md, "Metrics").
Each row comes with the thresholds and the verdict (ok, warning, critical, unknown) the
database decided; nothing here re-decides them. CloudWatch gets the names in CamelCase with
the prefix Compliance and without a `_seconds` suffix (the unit travels separately):
anchor_gap_seconds -> ComplianceAnchorGap. Prometheus gets them with the prefix
auditchain_, every row a gauge: auditchain_anchor_gap_seconds.

Expected-event monitors (compliance.expectation_status()) come beside them, one series per
monitor: CloudWatch ComplianceExpectationSilence and ComplianceExpectationSilent with the
dimension Monitor=<name>, Prometheus auditchain_expectation_silence_seconds{monitor="<name>"},
auditchain_expectation_silent and auditchain_expectation_max_silence_seconds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import db
from .cliutil import add_command, print_json
from .errors import EXIT_OK, EXIT_UNAVAILABLE, AuditchainError, first_line

PROMETHEUS_PREFIX = "auditchain_"
CLOUDWATCH_PREFIX = "Compliance"
CLOUDWATCH_UNITS = {"count": "Count", "seconds": "Seconds", "boolean": "None"}


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | None  # None: not measurable now (never happened, or source unreachable)
    unit: str  # count, seconds or boolean (0/1)
    # What compliance.metrics() decided: the value is a warning above warning_above, critical
    # above critical_above, and its CloudWatch alarm fires above alarm_above (None: never).
    warning_above: float | None = None
    critical_above: float | None = None
    alarm_above: float | None = None
    verdict: str = "ok"  # ok, warning, critical or unknown

    @property
    def cloudwatch_name(self) -> str:
        base = self.name.removesuffix("_seconds")
        return CLOUDWATCH_PREFIX + "".join(part.capitalize() for part in base.split("_"))

    @property
    def cloudwatch_unit(self) -> str:
        return CLOUDWATCH_UNITS.get(self.unit, "None")

    @property
    def prometheus_name(self) -> str:
        return PROMETHEUS_PREFIX + self.name


@dataclass(frozen=True)
class Expectation:
    """One row of compliance.expectation_status(): the database decided `silent`."""

    name: str
    event_type_pattern: str
    tenant_id: str | None
    actor_pattern: str | None
    max_silence_seconds: float
    paused: bool
    last_event_at: datetime | None
    silence_seconds: float
    silent: bool


@dataclass(frozen=True)
class Reading:
    """What one look at the database gives the watchdog and the exporter."""

    metrics: list[Metric]
    expectations: list[Expectation] = field(default_factory=list)


def _rows(conn: psycopg.Connection, query: str, source: str) -> list[tuple]:
    try:
        return conn.execute(query).fetchall()
    except psycopg.Error as exc:
        raise AuditchainError(f"cannot read {source}: {first_line(exc)}", EXIT_UNAVAILABLE) from None


def fetch(conn: psycopg.Connection) -> list[Metric]:
    rows = _rows(
        conn,
        "SELECT metric, value, unit, warning_above, critical_above, alarm_above, verdict"
        "  FROM compliance.metrics()",
        "compliance.metrics()",
    )
    return [Metric(*row) for row in rows]


def fetch_expectations(conn: psycopg.Connection) -> list[Expectation]:
    rows = _rows(
        conn,
        "SELECT name, event_type_pattern, tenant_id, actor_pattern, max_silence_seconds, paused,"
        "       last_event_at, silence_seconds, silent"
        "  FROM compliance.expectation_status()",
        "compliance.expectation_status()",
    )
    return [Expectation(*row) for row in rows]


def fetch_from(dsn: str, *, app: str) -> Reading:
    """One short connection per reading: the watchdog survives database restarts between cycles."""
    with db.connect(dsn, autocommit=True, app=app) as conn:
        return Reading(fetch(conn), fetch_expectations(conn))


def by_name(metrics: list[Metric]) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


def format_value(metric: Metric) -> str:
    if metric.value is None:
        return "-"
    if metric.unit == "seconds":
        return f"{metric.value:.1f}"
    return f"{metric.value:.0f}"


# Per-monitor gauges: (name, help, value of an Expectation).
EXPECTATION_GAUGES: list[tuple[str, str, Callable[[Expectation], float]]] = [
    (
        PROMETHEUS_PREFIX + "expectation_silence_seconds",
        "seconds since the monitor's last matching event (or the start of its watch)",
        lambda e: e.silence_seconds,
    ),
    (
        PROMETHEUS_PREFIX + "expectation_max_silence_seconds",
        "the longest silence the monitor accepts",
        lambda e: e.max_silence_seconds,
    ),
    (
        PROMETHEUS_PREFIX + "expectation_silent",
        "1 while the monitor is silent for longer than its max_silence (never while paused)",
        lambda e: float(e.silent),
    ),
]


class MetricsCollector(Collector):
    """prometheus_client collector: every row of compliance.metrics() a gauge named
    auditchain_<metric>, and the EXPECTATION_GAUGES with one sample per monitor (label
    monitor), read through `read` at each collection (each scrape); a NULL value gives the
    family without a sample. Whatever `read` raises fails the whole scrape."""

    def __init__(self, read: Callable[[], Reading]):
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reading = self.read()
        for m in reading.metrics:
            family = GaugeMetricFamily(
                m.prometheus_name, f"compliance.metrics() {m.name} ({m.unit}); see docs/api.md"
            )
            if m.value is not None:
                family.add_metric([], m.value)
            yield family
        for name, text, value in EXPECTATION_GAUGES:
            family = GaugeMetricFamily(name, f"compliance.expectation_status(): {text}", labels=["monitor"])
            for e in reading.expectations:
                family.add_metric([e.name], value(e))
            yield family

    def describe(self) -> list:
        # Registering must not read the database; the names are known only at a scrape.
        return []


def prometheus_registry(read: Callable[[], Reading]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(read))
    return registry


def render_table(metrics: list[Metric]) -> str:
    width = max((len(m.name) for m in metrics), default=6)
    lines = [f"{'metric':<{width}}  {'value':>14}  {'unit':<7}  verdict"]
    lines += [f"{m.name:<{width}}  {format_value(m):>14}  {m.unit:<7}  {m.verdict}" for m in metrics]
    return "\n".join(lines) + "\n"


def render_expectations(expectations: list[Expectation]) -> str:
    """The monitors under the metrics table; nothing when there is none."""
    if not expectations:
        return ""
    width = max(len(e.name) for e in expectations)
    lines = ["", f"{'monitor':<{width}}  {'silence s':>10}  {'max s':>10}  state"]
    for e in expectations:
        state = "paused" if e.paused else "SILENT" if e.silent else "ok"
        lines.append(
            f"{e.name:<{width}}  {e.silence_seconds:>10.1f}  {e.max_silence_seconds:>10.0f}  {state}"
        )
    return "\n".join(lines) + "\n"


def as_json(metrics: list[Metric]) -> dict[str, dict[str, object]]:
    return {
        m.name: {
            "value": m.value,
            "unit": m.unit,
            "warning_above": m.warning_above,
            "critical_above": m.critical_above,
            "alarm_above": m.alarm_above,
            "verdict": m.verdict,
        }
        for m in metrics
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "metrics",
        help="print compliance.metrics() (values, thresholds, verdicts) as a table, JSON or Prometheus text",
        description=__doc__,
    )
    p.add_argument(
        "--format",
        choices=("table", "json", "prometheus"),
        default="table",
        help="output format (default: table)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    reading = fetch_from(args.dsn, app="auditchain metrics")
    if args.format == "json":
        print_json(
            {
                "database": db.describe(args.dsn),
                "metrics": as_json(reading.metrics),
                "expectations": [asdict(e) for e in reading.expectations],
            }
        )
    elif args.format == "prometheus":
        print(generate_latest(prometheus_registry(lambda: reading)).decode(), end="")
    else:
        print(render_table(reading.metrics) + render_expectations(reading.expectations), end="")
    return EXIT_OK
