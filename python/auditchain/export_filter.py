"""Export filters read offline, for `auditchain verify-bundle`.

The database defines a filter twice in sql/70_exports.sql: its form
(compliance.validate_export_filter, AC030) and which events it selects
(compliance.export_filter_matches). This module holds a bundle's manifest to the same
rules, so that a manifest whose filter no export could have had is refused, and a matched
line that its filter does not select is named. docs/exports.md ("Filters") is the user's
description of both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from .hashing import parse_export_timestamp

ALLOWED_KEYS = ("from", "to", "tenant_id", "tenant_ids", "event_types", "actor", "withhold_payloads")
# The SQL regex, in ASCII: PostgreSQL's \d matches ASCII digits only in the project's locales.
_FILTER_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:Z|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
# PostgreSQL's [[:cntrl:]] holds these in every locale (some locales add C1 controls and
# U+2028/9): refusing only these never refuses a filter the database accepted.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_US_PER_SECOND = 1_000_000


class FilterError(ValueError):
    """A filter that compliance.validate_export_filter would refuse; the message says why."""


@dataclass(frozen=True)
class ExportFilter:
    """A validated filter. Bounds are epoch microseconds; tenants joins tenant_id and tenant_ids."""

    from_us: int | None = None
    to_us: int | None = None
    tenants: frozenset[str] | None = None
    event_types: frozenset[str] | None = None
    actor: str | None = None
    withhold_payloads: bool = False

    @property
    def selects_every_event(self) -> bool:
        return (self.from_us, self.to_us, self.tenants, self.event_types, self.actor) == (None,) * 5

    def mismatches(self, event: dict[str, Any]) -> list[str]:
        """Why a matched line, whose fields are of their v1 form, is not selected by this
        filter (empty when it is), by compliance.export_filter_matches' rule."""
        reasons = []
        occurred_us = parse_export_timestamp(event["occurred_at"])
        if self.from_us is not None and occurred_us < self.from_us:
            reasons.append("occurred_at is before the filter's from")
        if self.to_us is not None and occurred_us >= self.to_us:
            reasons.append("occurred_at is not before the filter's to")
        if self.tenants is not None and event["tenant_id"] not in self.tenants:
            reasons.append(f"tenant_id {event['tenant_id']!r} is not a tenant the filter selects")
        if self.event_types is not None and event["event_type"] not in self.event_types:
            reasons.append(f"event_type {event['event_type']!r} is not one the filter selects")
        if self.actor is not None and event["actor"] != self.actor:
            reasons.append("actor is not the filter's actor")
        return reasons


def _text_ok(value: Any, max_length: int) -> bool:
    """compliance.export_filter_text_ok: a string of 1..max_length characters, no control characters."""
    return isinstance(value, str) and 1 <= len(value) <= max_length and not _CONTROL.search(value)


def filter_timestamp_us(text: str) -> int | None:
    """Epoch microseconds of a filter bound as PostgreSQL reads it as timestamptz, or None when
    PostgreSQL refuses it. Like PostgreSQL, accepts 24:00:00 (the next midnight) and a leap
    second :60 (the next minute), and offsets up to ±15:59."""
    match = _FILTER_TIMESTAMP.fullmatch(text)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    fraction = int((match[7] or "").ljust(6, "0"))
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    offset_hours, offset_minutes = int(match[9] or 0), int(match[10] or 0)
    if minute > 59 or offset_hours > 15 or offset_minutes > 59:
        return None
    if hour > 24 or (hour == 24 and (minute, second, fraction) != (0, 0, 0)):
        return None
    if second > 60 or (second == 60 and fraction):
        return None
    offset = (offset_hours * 60 + offset_minutes) * 60 * (-1 if match[8] == "-" else 1)
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds * _US_PER_SECOND + fraction


def _bound(value: Any, key: str) -> int:
    microseconds = filter_timestamp_us(value) if isinstance(value, str) else None
    if microseconds is None:
        raise FilterError(f'"{key}" must be an ISO-8601 timestamp with a time zone, not {value!r}')
    return microseconds


def _string_set(value: Any, key: str, element_ok: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise FilterError(f'"{key}" must be a non-empty array of strings, not {value!r}')
    for element in value:
        if not element_ok(element):
            raise FilterError(f'"{key}" holds {element!r}, which is not allowed there')
    return frozenset(value)


def parse_filter(value: Any) -> ExportFilter:
    """The filter, checked by compliance.validate_export_filter's rules; FilterError otherwise."""
    if not isinstance(value, dict):
        raise FilterError("it is not a JSON object")
    for key in sorted(value):
        if key not in ALLOWED_KEYS:
            raise FilterError(f'unknown key "{key}"')
    from_us = _bound(value["from"], "from") if "from" in value else None
    to_us = _bound(value["to"], "to") if "to" in value else None
    if from_us is not None and to_us is not None and from_us >= to_us:
        raise FilterError('"from" must be before "to"')
    if "tenant_id" in value and "tenant_ids" in value:
        raise FilterError('give "tenant_id" or "tenant_ids", not both')
    tenants = None
    if "tenant_id" in value:
        if not _text_ok(value["tenant_id"], 128):
            raise FilterError(f'"tenant_id" must be a string of 1-128 characters, not {value["tenant_id"]!r}')
        tenants = frozenset([value["tenant_id"]])
    if "tenant_ids" in value:
        tenants = _string_set(value["tenant_ids"], "tenant_ids", lambda t: _text_ok(t, 128))
    event_types = None
    if "event_types" in value:
        event_types = _string_set(
            value["event_types"],
            "event_types",
            lambda t: isinstance(t, str) and 3 <= len(t) <= 128 and bool(_EVENT_TYPE.fullmatch(t)),
        )
    actor = value.get("actor")
    # btrim() without characters trims spaces only.
    if "actor" in value and (not _text_ok(actor, 256) or not actor.strip(" ")):
        raise FilterError(f'"actor" must be a non-blank string of at most 256 characters, not {actor!r}')
    withhold = value.get("withhold_payloads", False)
    if type(withhold) is not bool:
        raise FilterError(f'"withhold_payloads" must be true or false, not {withhold!r}')
    return ExportFilter(from_us, to_us, tenants, event_types, actor, withhold)
