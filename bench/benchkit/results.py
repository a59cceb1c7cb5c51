"""One row per measurement: the figure, its physical reference, the ratio, the targets."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ledger import Timing

# /proc reports CPU time in clock ticks (10 ms): too coarse for the smoke's tiny runs.
CPU_RESOLUTION = 0.01
_COMPARE = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class Target:
    metric: str
    op: str
    value: float

    def describe(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclass
class Row:
    """A measured figure beside its reference; metrics holds the absolute numbers.

    floor, where a case has one, is the same work stripped down to what the design itself
    imposes (a function call for emit; the row lock, delete and indexes for drain; the hash
    format for verify_chain), measured in the same run: floor / reference is the most any
    implementation of the design could reach, measured / floor what our code makes of it."""

    case: str
    variant: str
    unit: str
    reference_name: str
    targets: list[Target] = field(default_factory=list)
    measured: float | None = None
    reference: float | None = None
    metrics: dict[str, float | int | str] = field(default_factory=dict)
    floor_name: str | None = None
    floor: float | None = None
    skipped: str | None = None
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.measured is None or not self.reference:
            return None
        return self.measured / self.reference

    @property
    def floor_ratio(self) -> float | None:
        if self.floor is None or not self.reference:
            return None
        return self.floor / self.reference

    def values(self) -> dict[str, float | int | str | None]:
        return {**self.metrics, "measured": self.measured, "reference": self.reference, "ratio": self.ratio}

    def verdicts(self) -> list[dict[str, object]]:
        values = self.values()
        out = []
        for target in self.targets:
            actual = values.get(target.metric)
            met = None if actual is None else bool(_COMPARE[target.op](actual, target.value))
            out.append({"metric": target.metric, "op": target.op, "value": target.value, "met": met})
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "case": self.case,
            "variant": self.variant,
            "unit": self.unit,
            "measured": self.measured,
            "reference_name": self.reference_name,
            "reference": self.reference,
            "ratio": self.ratio,
            "floor_name": self.floor_name,
            "floor": self.floor,
            "floor_ratio": self.floor_ratio,
            "metrics": self.metrics,
            "targets": self.verdicts(),
            "skipped": self.skipped,
            "error": self.error,
        }


def cpu_metrics(measured: Timing, reference: Timing, events: int) -> dict[str, float]:
    """Server CPU per event of both sides and their ratio: steadier than wall time when other
    work shares the machine (empty when the server runs elsewhere)."""
    if not measured.cpu or not reference.cpu or reference.cpu < CPU_RESOLUTION * 20:
        return {}
    return {
        "cpu_us_per_event": measured.cpu / events * 1e6,
        "reference_cpu_us_per_event": reference.cpu / events * 1e6,
        "cpu_ratio": reference.cpu / measured.cpu,
    }


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_table(rows: list[Row]) -> str:
    header = ("case", "variant", "measured", "reference", "ratio", "floor ratio", "unit", "targets")
    lines = [header]
    for row in rows:
        if row.skipped or row.error:
            state = "skipped" if row.skipped else "ERROR"
            lines.append((row.case, row.variant, state, "", "", "", "", row.skipped or row.error or ""))
            continue
        verdicts = ", ".join(
            f"{t.describe()} {'ok' if v['met'] else 'MISSED'}"
            for t, v in zip(row.targets, row.verdicts(), strict=True)
        )
        ratio, floor_ratio = (("-" if r is None else f"{r:.2f}") for r in (row.ratio, row.floor_ratio))
        lines.append(
            (
                row.case,
                row.variant,
                _number(row.measured),
                _number(row.reference),
                ratio,
                floor_ratio,
                row.unit,
                verdicts,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text.rstrip() for text in rendered)


def write_json(path: Path, document: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
