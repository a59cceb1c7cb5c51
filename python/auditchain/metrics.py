"""`auditchain metrics`: the rows of compliance.metrics() as a table, JSON or Prometheus text.

The metric names are the stable names of compliance.metrics() (docs/api.md, "Metrics").
CloudWatch gets them in CamelCase with the prefix Compliance and without a `_seconds`
suffix (the unit travels separately): anchor_gap_seconds -> ComplianceAnchorGap.
Prometheus gets them with the prefix auditchain_: auditchain_anchor_gap_seconds.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import psycopg

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


def fetch(conn: psycopg.Connection) -> list[Metric]:
    try:
        rows = conn.execute("SELECT metric, value, unit FROM compliance.metrics()").fetchall()
    except psycopg.Error as exc:
        raise AuditchainError(
            f"cannot read compliance.metrics(): {first_line(exc)}", EXIT_UNAVAILABLE
        ) from None
    return [Metric(name, value, unit) for name, value, unit in rows]


def fetch_from(dsn: str, *, app: str) -> list[Metric]:
    """One short connection per reading: the watchdog survives database restarts between cycles."""
    with db.connect(dsn, autocommit=True, app=app) as conn:
        return fetch(conn)


def by_name(metrics: list[Metric]) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


def format_value(metric: Metric) -> str:
    if metric.value is None:
        return "-"
    if metric.unit == "seconds":
        return f"{metric.value:.1f}"
    return f"{metric.value:.0f}"


def render_prometheus(metrics: list[Metric]) -> str:
    """Prometheus text exposition format 0.0.4: every metric a gauge; no sample when NULL."""
    lines = []
    for m in metrics:
        lines.append(f"# HELP {m.prometheus_name} compliance.metrics() {m.name} ({m.unit}); see docs/api.md")
        lines.append(f"# TYPE {m.prometheus_name} gauge")
        if m.value is not None:
            lines.append(f"{m.prometheus_name} {float(m.value)!r}")
    return "\n".join(lines) + "\n"


def render_table(metrics: list[Metric]) -> str:
    width = max((len(m.name) for m in metrics), default=6)
    lines = [f"{'metric':<{width}}  {'value':>14}  unit"]
    lines += [f"{m.name:<{width}}  {format_value(m):>14}  {m.unit}" for m in metrics]
    return "\n".join(lines) + "\n"


def as_json(metrics: list[Metric]) -> dict[str, dict[str, object]]:
    return {m.name: {"value": m.value, "unit": m.unit} for m in metrics}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "metrics",
        help="print compliance.metrics() as a table, JSON or Prometheus text",
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
    metrics = fetch_from(args.dsn, app="auditchain metrics")
    if args.format == "json":
        print_json({"database": db.describe(args.dsn), "metrics": as_json(metrics)})
    elif args.format == "prometheus":
        print(render_prometheus(metrics), end="")
    else:
        print(render_table(metrics), end="")
    return EXIT_OK
