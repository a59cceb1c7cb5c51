"""`auditchain drift-check`: does the target database hold what the migrations declare?

A migration declares what it creates with lines `-- creates: <name>`:
  one part     <schema> or <role>
  two parts    <schema>.<relation|index|view|sequence|type|function|procedure>
  three parts  <schema>.<table>.<trigger>
and a later migration that drops one of them declares `-- drops: <name>`: from then on the
object must be absent.
The check also fails on an applied migration whose file changed, on a migration not yet
applied, and on definitions (sql/) that changed since they were last applied.
"""

from __future__ import annotations

import argparse

import psycopg

from . import db
from .cliutil import add_command
from .errors import EXIT_FAILED, EXIT_OK
from .migrate import make_plan
from .schema import load_migrations

EXISTS_SQL = {
    1: """SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(a)s)
              OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(a)s)""",
    2: """SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = %(a)s AND c.relname = %(b)s)
              OR EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                          WHERE n.nspname = %(a)s AND t.typname = %(b)s)
              OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                          WHERE n.nspname = %(a)s AND p.proname = %(b)s)""",
    3: """SELECT EXISTS (SELECT 1 FROM pg_trigger t
                           JOIN pg_class c ON c.oid = t.tgrelid
                           JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = %(a)s AND c.relname = %(b)s AND t.tgname = %(c)s)""",
}


def object_exists(conn: psycopg.Connection, name: str) -> bool:
    parts = name.split(".")
    if len(parts) not in EXISTS_SQL:
        return False
    params = dict(zip("abc", parts, strict=False))
    return bool(conn.execute(EXISTS_SQL[len(parts)], params).fetchone()[0])


def drift_problems(conn: psycopg.Connection, target: str) -> list[str]:
    plan = make_plan(conn)
    problems = [
        f"ERROR: applied migration {n} was edited after it was applied on {target}" for n in plan.edited
    ]
    problems += [
        f"ERROR: applied migration {n} is missing from migrations/ but recorded on {target}"
        for n in plan.missing_files
    ]
    problems += [f"ERROR: migration {m.name} is not applied on {target}" for m in plan.pending_migrations]
    if plan.reapply_definitions:
        problems.append(f"ERROR: definitions in sql/ changed since they were applied on {target}")
    # Walk the migrations in order: a later `-- drops:` retires an earlier `-- creates:`.
    expected: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for migration in load_migrations():
        for name in migration.declared_objects:
            expected[name] = migration.name
            dropped.pop(name, None)
        for name in migration.dropped_objects:
            expected.pop(name, None)
            dropped[name] = migration.name
    for name, migration_name in expected.items():
        if not object_exists(conn, name):
            problems.append(
                f"ERROR: migration {migration_name} declares -- creates: {name} "
                f"but the object is missing on {target}"
            )
    for name, migration_name in dropped.items():
        if object_exists(conn, name):
            problems.append(
                f"ERROR: migration {migration_name} declares -- drops: {name} "
                f"but the object is still present on {target}"
            )
    return problems


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "drift-check",
        help="fail when the database lacks what the migrations declare",
        description=__doc__,
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = db.describe(args.dsn)
    with db.connect(args.dsn, autocommit=True, app="auditchain drift-check") as conn:
        problems = drift_problems(conn, target)
    for line in problems:
        print(line)
    if problems:
        return EXIT_FAILED
    print(f"OK: every declared object is present and every migration applied on {target}")
    return EXIT_OK
