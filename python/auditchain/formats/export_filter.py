"""The export filter as a bundle's manifest records it, for `auditchain verify-bundle`.

The database owns the filter's rules (sql/70_exports.sql): compliance._validate_export_filter
decides what a filter may be, and compliance.normalize_export_filter writes it into the
manifest (format_version 2) in one canonical form: instants as compliance._iso_utc text,
sorted lists, withhold_payloads always present. Its shape is published in
schemas/export-manifest.schema.json. So this module re-decides nothing: it compares an
exported event's values with the manifest's, and canonical instants compare as text.

Version 1 manifests recorded the filter as it was requested; their bounds are brought to
the canonical form here with the standard library's ISO-8601 reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class FilterError(ValueError):
    """A filter that no export could have; the message says why."""


@dataclass(frozen=True)
class ExportFilter:
    """A manifest's filter. Bounds are canonical instants; tenants joins tenant_id and tenant_ids."""

    from_instant: str | None = None
    to_instant: str | None = None
    tenants: frozenset[str] | None = None
    event_types: frozenset[str] | None = None
    actor: str | None = None
    withhold_payloads: bool = False

    @property
    def selects_every_event(self) -> bool:
        selectors = (self.from_instant, self.to_instant, self.tenants, self.event_types, self.actor)
        return selectors == (None,) * 5

    def mismatches(self, event: dict[str, Any]) -> list[str]:
        """Why an exported event (its fields already checked as hash format fields) is not
        selected by this filter, by compliance._export_filter_matches' rule; empty when it is."""
        reasons = []
        if self.from_instant is not None and event["occurred_at"] < self.from_instant:
            reasons.append("occurred_at is before the filter's from")
        if self.to_instant is not None and event["occurred_at"] >= self.to_instant:
            reasons.append("occurred_at is not before the filter's to")
        if self.tenants is not None and event["tenant_id"] not in self.tenants:
            reasons.append(f"tenant_id {event['tenant_id']!r} is not a tenant the filter selects")
        if self.event_types is not None and event["event_type"] not in self.event_types:
            reasons.append(f"event_type {event['event_type']!r} is not one the filter selects")
        # An erased actor (hash format v2) matches no actor filter, as NULL in the database.
        if self.actor is not None and event.get("actor") != self.actor:
            reasons.append("actor is not the filter's actor")
        return reasons


def canonical_instant(text: str) -> str:
    """A version 1 filter bound (ISO-8601 with an offset) as a canonical instant."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{text!r} is not an ISO-8601 timestamp this verifier reads") from None
    if moment.tzinfo is None:
        raise FilterError(f"{text!r} has no time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_manifest(value: dict[str, Any], format_version: int) -> ExportFilter:
    """The filter of a manifest that already satisfied the published schema."""
    bounds = [value.get("from"), value.get("to")]
    if format_version == 1:
        bounds = [None if bound is None else canonical_instant(bound) for bound in bounds]
    else:
        for key in ("tenant_ids", "event_types"):
            if key in value and value[key] != sorted(value[key]):
                raise FilterError(f'"{key}" is not sorted, as the database writes it')
    if None not in bounds and bounds[0] >= bounds[1]:
        raise FilterError('"from" is not before "to"')
    tenants = value.get("tenant_ids", [value["tenant_id"]] if "tenant_id" in value else None)
    event_types = value.get("event_types")
    return ExportFilter(
        from_instant=bounds[0],
        to_instant=bounds[1],
        tenants=None if tenants is None else frozenset(tenants),
        event_types=None if event_types is None else frozenset(event_types),
        actor=value.get("actor"),
        withhold_payloads=value.get("withhold_payloads", False),
    )
