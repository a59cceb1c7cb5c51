"""`auditchain events`: the newest chained events, or one event, with their hashes in hex.

  auditchain events tail [-n N] [--tenant T] [--json]   the last N events (default 10), oldest first
  auditchain events show (SEQ | EVENT_ID) [--json]      one event, every field

Reads compliance.audit_events_hex (compliance_auditor may; so may the owner): prev_hash and
event_hash as 64 lower-case hex characters, as bundles and docs/hash-format.md print them.
Only chained events are there: an event still in the outbox appears once the drainer has
chained it (within a minute while the drain job runs).

Exit codes: 0 when shown; `tail` with no matching event prints nothing (--json: []) and
exits 0. 64 for a malformed argument, and for `show` of a seq or event id no chained event
has (nothing was found, which is not evidence of tampering). 69 when the database cannot be
reached; 78 when the schema is not installed or this role may not read the view.

Text output escapes control characters in event fields (\\n, \\x1b, ...): events come from
producers, and a terminal must not interpret them. --json prints them as JSON strings.
"""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import db
from .cliutil import add_command, add_json_flag, print_json
from .errors import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError, first_line

DEFAULT_COUNT = 10
MAX_COUNT = 10_000
MAX_SEQ = 2**63 - 1
COLUMNS = (
    "seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload, hash_version,"
    " prev_hash, event_hash"
)


def count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: a whole number from 1 to {MAX_COUNT:,}")
    return n


def event_key(text: str) -> tuple[str, int | uuid.UUID]:
    """('seq', n) for a positive integer, ('event_id', uuid) for a UUID; usage error otherwise."""
    if text.isascii() and text.isdigit():
        seq = int(text)
        if 1 <= seq <= MAX_SEQ:
            return "seq", seq
    else:
        try:
            return "event_id", uuid.UUID(text)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(
        f"invalid event {text!r}: a seq (a whole number from 1) or an event id (a UUID)"
    )


def query(dsn: str, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with db.connect(dsn, autocommit=True, app="auditchain events") as conn:
        try:
            return conn.cursor(row_factory=dict_row).execute(statement, params).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            raise AuditchainError(
                "compliance.audit_events_hex does not exist in this database: run auditchain migrate",
                EXIT_CONFIG,
            ) from None
        except psycopg.errors.InsufficientPrivilege:
            raise AuditchainError(
                "this role may not read compliance.audit_events_hex: connect as a compliance_auditor member",
                EXIT_CONFIG,
            ) from None
        except psycopg.Error as exc:
            raise AuditchainError(f"cannot read events: {first_line(exc)}", EXIT_UNAVAILABLE) from None


def tail(dsn: str, n: int, tenant: str | None) -> list[dict[str, Any]]:
    # Walks the primary key down from the chain head; with --tenant until n events of it.
    return query(
        dsn,
        f"SELECT {COLUMNS} FROM ("  # noqa: S608 (a constant column list)
        f"  SELECT {COLUMNS} FROM compliance.audit_events_hex"
        "    WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s"
        "    ORDER BY seq DESC LIMIT %(n)s"
        ") AS newest ORDER BY seq",
        {"tenant": tenant, "n": n},
    )


def show(dsn: str, key: tuple[str, int | uuid.UUID]) -> dict[str, Any]:
    column, value = key
    statement = (
        f"SELECT {COLUMNS} FROM compliance.audit_events_hex WHERE seq = %(value)s"  # noqa: S608
        if column == "seq"
        else f"SELECT {COLUMNS} FROM compliance.audit_events_hex WHERE event_id = %(value)s"  # noqa: S608
    )
    rows = query(dsn, statement, {"value": value})
    if not rows:
        where = f"seq {value}" if column == "seq" else f"event_id {value}"
        raise AuditchainError(
            f"no event with {where} (an event still in the outbox is shown once it is chained)", EXIT_USAGE
        )
    return rows[0]


def as_json(event: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value.isoformat() if isinstance(value, datetime) else str(value) if key == "event_id" else value
        for key, value in event.items()
    }


def safe(text: str) -> str:
    """Control characters escaped, so that event content cannot drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


# What stands for a value compliance.erase removed (docs/erasure.md).
ERASED = "(erased)"


def utc(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def render_tail(events: list[dict[str, Any]]) -> str:
    lines = [
        f"{e['seq']}  {utc(e['recorded_at'])}  {safe(e['tenant_id'] or '-')}  {safe(e['event_type'])}  "
        f"{safe(e['actor']) if e['actor'] is not None else ERASED}  {e['event_hash']}"
        for e in events
    ]
    return "".join(line + "\n" for line in lines)


def render_event(e: dict[str, Any]) -> str:
    fields = [
        ("seq", str(e["seq"])),
        ("event_id", str(e["event_id"])),
        ("occurred_at", utc(e["occurred_at"])),
        ("recorded_at", utc(e["recorded_at"])),
        ("tenant_id", safe(e["tenant_id"] or "-")),
        ("event_type", safe(e["event_type"])),
        ("actor", safe(e["actor"]) if e["actor"] is not None else ERASED),
        ("hash_version", str(e["hash_version"])),
        ("prev_hash", e["prev_hash"]),
        ("event_hash", e["event_hash"]),
        (
            "payload",
            safe(json.dumps(e["payload"], ensure_ascii=False, sort_keys=True))
            if e["payload"] is not None
            else ERASED,
        ),
    ]
    return "".join(f"{name:<13} {value}\n" for name, value in fields)


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "events",
        help="show the newest events or one event, with hex hashes (for on-call)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = group.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    tail_parser = add_command(
        actions,
        "tail",
        help="the last N chained events, oldest first",
        description="The last N chained events, oldest first: seq, recorded_at, tenant, type, actor, "
        "event_hash. Prints nothing and exits 0 when no event matches.",
    )
    tail_parser.add_argument(
        "-n",
        type=count,
        default=DEFAULT_COUNT,
        metavar="N",
        help=f"how many events (default {DEFAULT_COUNT}, at most {MAX_COUNT:,})",
    )
    tail_parser.add_argument("--tenant", help="only this tenant's events")
    add_json_flag(tail_parser)
    tail_parser.set_defaults(func=run_tail)
    show_parser = add_command(
        actions,
        "show",
        help="one event by seq or event id, every field",
        description="One chained event by seq or event id, every field, hashes in hex. "
        "Exits 64 when no chained event has it.",
    )
    show_parser.add_argument("event", type=event_key, metavar="SEQ|EVENT_ID", help="a seq or an event id")
    add_json_flag(show_parser)
    show_parser.set_defaults(func=run_show)


def run_tail(args: argparse.Namespace) -> int:
    events = tail(args.dsn, args.n, args.tenant)
    if args.json:
        print_json([as_json(e) for e in events])
    else:
        print(render_tail(events), end="")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    event = show(args.dsn, args.event)
    if args.json:
        print_json(as_json(event))
    else:
        print(render_event(event), end="")
    return EXIT_OK
