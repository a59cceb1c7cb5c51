"""`auditchain migrate` and `auditchain dist`: install or upgrade the schema.

One runner at a time per database (a session advisory lock); each migration in its own
transaction, recorded with its checksum; an edited applied migration stops everything
before anything is applied.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from . import db
from .cliutil import add_command
from .errors import EXIT_OK, AuditchainError
from .schema import SchemaFile, load_definitions, load_migrations

# Any constant works as long as every runner uses the same one: it serialises runners per database.
MIGRATION_LOCK_KEY = 0x6175646974636861  # "auditcha"

RECORD_SQL = """
INSERT INTO compliance.schema_migrations (filename, kind, checksum)
VALUES (%s, %s, %s)
ON CONFLICT (filename) DO UPDATE
   SET checksum = EXCLUDED.checksum, applied_at = now(), applied_by = current_user
"""


@dataclass
class Plan:
    pending_migrations: list[SchemaFile] = field(default_factory=list)
    definitions: list[SchemaFile] = field(default_factory=list)
    reapply_definitions: bool = False
    removed_definitions: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)

    @property
    def is_noop(self) -> bool:
        return not self.pending_migrations and not self.reapply_definitions


def applied_checksums(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    """filename -> (kind, checksum) of what the database has recorded; empty on a new database."""
    exists = conn.execute("SELECT to_regclass('compliance.schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return {}
    rows = conn.execute("SELECT filename, kind, checksum FROM compliance.schema_migrations").fetchall()
    return {name: (kind, checksum) for name, kind, checksum in rows}


def make_plan(conn: psycopg.Connection) -> Plan:
    migrations = load_migrations()
    definitions = load_definitions()
    recorded = applied_checksums(conn)
    plan = Plan(definitions=definitions)
    on_disk = {m.name: m for m in migrations}
    for name, (kind, checksum) in sorted(recorded.items()):
        if kind != "migration":
            continue
        if name not in on_disk:
            plan.missing_files.append(name)
        elif on_disk[name].checksum != checksum:
            plan.edited.append(name)
    plan.pending_migrations = [m for m in migrations if m.name not in recorded]
    recorded_defs = {n: c for n, (k, c) in recorded.items() if k == "definition"}
    current_defs = {d.name: d.checksum for d in definitions}
    plan.removed_definitions = sorted(set(recorded_defs) - set(current_defs))
    plan.reapply_definitions = recorded_defs != current_defs
    return plan


def apply(conn: psycopg.Connection, plan: Plan, log) -> None:
    for migration in plan.pending_migrations:
        log(f"applying migration {migration.name}")
        with conn.transaction():
            try:
                conn.execute(migration.text)
            except psycopg.Error as exc:
                raise AuditchainError(
                    f"migration {migration.name} failed and was rolled back: {exc}"
                ) from None
            conn.execute(RECORD_SQL, (migration.name, migration.kind, migration.checksum))
    if plan.reapply_definitions:
        log(f"applying {len(plan.definitions)} definition files from sql/")
        with conn.transaction():
            for definition in plan.definitions:
                try:
                    conn.execute(definition.text)
                except psycopg.Error as exc:
                    raise AuditchainError(
                        f"definition {definition.name} failed; no file in sql/ was applied: {exc}"
                    ) from None
                conn.execute(RECORD_SQL, (definition.name, definition.kind, definition.checksum))
            if plan.removed_definitions:
                conn.execute(
                    "DELETE FROM compliance.schema_migrations"
                    " WHERE kind = 'definition' AND filename = ANY(%s)",
                    (plan.removed_definitions,),
                )


def ensure_database(dsn: str) -> None:
    """CREATE DATABASE for --create-database, through the maintenance database."""
    target = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
    if not target:
        raise AuditchainError("--create-database needs a dbname in the connection string")
    with db.connect(db.with_dbname(dsn, "postgres"), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,)).fetchone()
        if not found:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))


def migrate(dsn: str, *, dry_run: bool = False, quiet: bool = False) -> Plan:
    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    with db.connect(dsn, autocommit=True, app="auditchain migrate") as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            plan = make_plan(conn)
            if plan.edited or plan.missing_files:
                problems = [f"applied migration {n} was edited after it was applied" for n in plan.edited]
                problems += [f"applied migration {n} is missing from migrations/" for n in plan.missing_files]
                raise AuditchainError(
                    "refusing to migrate "
                    + db.describe(dsn)
                    + ":\n  "
                    + "\n  ".join(problems)
                    + "\nnothing was applied; restore the file or write a new migration instead"
                )
            if dry_run:
                for m in plan.pending_migrations:
                    print(f"would apply migration {m.name}")
                if plan.reapply_definitions:
                    print(f"would apply {len(plan.definitions)} definition files from sql/")
                if plan.is_noop:
                    print("nothing to do")
                return plan
            if plan.is_noop:
                log(f"{db.describe(dsn)} is up to date")
                return plan
            apply(conn, plan, log)
            log(f"{db.describe(dsn)} is up to date")
            return plan
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


SCHEDULE_HINT = "pg_cron jobs start only after: SELECT compliance.schedule_jobs();"


def render_dist() -> str:
    """One psql script that installs everything and records it as the runner would. The repository
    commits its output as dist/auditchain.sql (`make dist`), for DBAs who have only psql."""
    parts = [
        "-- auditchain: plain-SQL installer generated by `make dist` from migrations/ and sql/.",
        "-- Run with: psql -v ON_ERROR_STOP=1 -f auditchain.sql -d <database>",
        "-- It is equivalent to `auditchain migrate` on an empty database, and all or nothing.",
        "-- pg_cron jobs start only after the schema owner runs: SELECT compliance.schedule_jobs();",
        "",
        "\\set ON_ERROR_STOP on",
        "\\set QUIET on",
        "-- The migrations' SELECT protect_table(...) results are not for the reader; errors still",
        "-- reach stderr.",
        "\\o /dev/null",
        "BEGIN;",
        "",
    ]
    files = load_migrations() + load_definitions()
    for item in files:
        parts.append(f"-- ==== {item.kind}: {item.name}")
        parts.append(item.text.rstrip())
        # Safe to inline: names match MIGRATION_NAME/DEFINITION_NAME and the checksum is hex.
        values = ", ".join(f"'{v}'" for v in (item.name, item.kind, item.checksum))
        record = f"INSERT INTO compliance.schema_migrations (filename, kind, checksum) VALUES ({values});"  # noqa: S608
        parts.append(record)
        parts.append("")
    parts.append("COMMIT;")
    parts.append("\\o")
    parts.append(f"\\echo 'auditchain installed. {SCHEDULE_HINT}'")
    return "\n".join(parts) + "\n"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "migrate", help="install or upgrade the schema", description=__doc__)
    p.add_argument("--dry-run", action="store_true", help="list what would run and change nothing")
    p.add_argument("--create-database", action="store_true", help="create the database first when missing")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    p.set_defaults(func=_run_migrate)

    d = add_command(subparsers, "dist", help="write one plain SQL installer for psql", needs_db=False)
    d.add_argument("--output", type=Path, required=True, help="file to write")
    d.set_defaults(func=_run_dist)


def _run_migrate(args: argparse.Namespace) -> int:
    if args.create_database:
        ensure_database(args.dsn)
    migrate(args.dsn, dry_run=args.dry_run, quiet=args.quiet)
    return EXIT_OK


def _run_dist(args: argparse.Namespace) -> int:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render_dist(), encoding="utf-8")
    return EXIT_OK
