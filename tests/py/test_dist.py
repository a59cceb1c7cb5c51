"""One schema, three ways to reach it: the committed psql installer, the runner from scratch, and the
runner upgrading step by step. All of them must end with the same catalog and the same records."""

from __future__ import annotations

import difflib
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from auditchain.cli import main
from auditchain.migrate import SCHEDULE_HINT, migrate, render_dist
from auditchain.schema import load_definitions, load_migrations
from conftest import admin_dsn, create_empty_database, drop_database
from schemacopy import copy_schema

PGBIN = Path("/usr/lib/postgresql/15/bin")
REPO = Path(__file__).resolve().parents[2]
_counter = itertools.count()


@pytest.fixture
def new_db() -> Iterator[Callable[[], str]]:
    """A factory of empty databases, all dropped after the test."""
    names: list[str] = []

    def create() -> str:
        name = f"auditchain_dist_{os.getpid()}_{next(_counter)}"
        names.append(name)
        return create_empty_database(name)

    yield create
    for name in names:
        drop_database(name)


COMMITTED = REPO / "dist" / "auditchain.sql"


@pytest.fixture(scope="module")
def dist_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installer as `auditchain dist` (and so `make dist`) writes it from this session's schema."""
    path = tmp_path_factory.mktemp("dist") / "sub" / "auditchain.sql"
    assert main(["dist", "--output", str(path)]) == 0
    return path


def normalised_dump(dsn: str) -> list[str]:
    """pg_dump --schema-only without what differs between two equal databases: SQL comment lines,
    session SETs, the \\restrict key of recent pg_dump releases, and blank lines."""
    out = subprocess.run(
        [PGBIN / "pg_dump", "--schema-only", "-d", dsn], check=True, capture_output=True, text=True
    ).stdout
    return [
        line
        for line in out.splitlines()
        if line.strip()
        and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config(", "\\restrict", "\\unrestrict"))
    ]


def records(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute(
            "SELECT filename, kind, checksum FROM compliance.schema_migrations ORDER BY filename"
        ).fetchall()


def psql_install(path: Path, dsn: str) -> subprocess.CompletedProcess[str]:
    """psql -v ON_ERROR_STOP=1 -f PATH, as docs/migrations.md tells a DBA (-X: no ~/.psqlrc)."""
    return subprocess.run(
        [PGBIN / "psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(path), "-d", dsn],
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_same(a: list[str], b: list[str]) -> None:
    """Equal lists, with a readable diff when they are not."""
    if a != b:
        diff = "\n".join(difflib.unified_diff(a, b, "first", "second", lineterm="", n=2))
        pytest.fail(f"catalogs differ:\n{diff[:6000]}")


def test_the_committed_installer_is_generated_from_the_sources():
    """dist/auditchain.sql is what a DBA with only psql downloads: it must be today's schema."""
    assert COMMITTED.read_text(encoding="utf-8") == render_dist(), (
        "dist/auditchain.sql differs from migrations/ and sql/: run `make dist` and commit the result"
    )


def test_dist_writes_the_installer(dist_file):
    text = dist_file.read_text(encoding="utf-8")
    assert text == render_dist()
    assert "psql -v ON_ERROR_STOP=1 -f" in text.splitlines()[1]
    for item in load_migrations() + load_definitions():
        assert f"('{item.name}', '{item.kind}', '{item.checksum}')" in text


def test_psql_install_is_quiet_and_ends_with_the_schedule_jobs_hint(dist_file, new_db):
    """A DBA sees no NOTICEs or query results, only the one thing left to do."""
    target = new_db()

    proc = psql_install(dist_file, target)

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == f"auditchain installed. {SCHEDULE_HINT}\n"
    assert "SELECT compliance.schedule_jobs();" in SCHEDULE_HINT
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        scheduled = c.execute(
            "SELECT count(*) FROM cron.job WHERE starts_with(jobname, %s)",
            (f"auditchain:{psycopg.conninfo.conninfo_to_dict(target)['dbname']}:",),
        ).fetchone()[0]
    assert scheduled == 0, "installing must not schedule jobs: that is schedule_jobs()'s decision"


def test_dist_install_and_runner_install_have_identical_catalogs(dist_file, new_db):
    by_psql, by_runner = new_db(), new_db()

    proc = psql_install(dist_file, by_psql)
    assert proc.returncode == 0, proc.stderr
    migrate(by_runner, quiet=True)

    dump = normalised_dump(by_psql)
    assert "CREATE SCHEMA compliance;" in dump  # the comparison is not vacuous
    assert_same(dump, normalised_dump(by_runner))
    assert records(by_psql) == records(by_runner)
    assert {r[0] for r in records(by_psql)} == {f.name for f in load_migrations() + load_definitions()}

    # A DBA who installed with psql can switch to the runner: it finds nothing to do.
    assert migrate(by_psql, quiet=True).is_noop


def test_dist_install_is_all_or_nothing(dist_file, new_db, tmp_path):
    """The installer is one transaction: an error just before its COMMIT leaves the database untouched."""
    target = new_db()
    before = normalised_dump(target)
    broken = tmp_path / "broken.sql"
    text = dist_file.read_text(encoding="utf-8")
    assert text.count("\nCOMMIT;\n") == 1
    broken.write_text(
        text.replace("\nCOMMIT;\n", "\nSELECT 1/0 AS installer_fails_at_the_end;\nCOMMIT;\n"),
        encoding="utf-8",
    )

    proc = psql_install(broken, target)

    assert proc.returncode != 0
    assert "division by zero" in proc.stderr
    assert normalised_dump(target) == before
    with psycopg.connect(target, autocommit=True) as c:
        assert c.execute("SELECT to_regnamespace('compliance')").fetchone()[0] is None


def test_built_from_scratch_equals_upgraded_step_by_step(tmp_path, new_db, monkeypatch):
    full = copy_schema(tmp_path, "full")
    migrations = sorted((full / "migrations").glob("*.sql"))
    from_scratch, stepwise = new_db(), new_db()

    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(full))
    migrate(from_scratch, quiet=True)

    # One release per migration: each stage adds the next migration and applies it alone.
    stage = tmp_path / "stage"
    (stage / "migrations").mkdir(parents=True)
    (stage / "sql").mkdir()
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(stage))
    for path in migrations:
        shutil.copy2(path, stage / "migrations" / path.name)
        plan = migrate(stepwise, quiet=True)
        assert [m.name for m in plan.pending_migrations] == [path.name]
    # The release that brings the definitions.
    shutil.rmtree(stage / "sql")
    shutil.copytree(full / "sql", stage / "sql")
    plan = migrate(stepwise, quiet=True)
    assert plan.pending_migrations == [] and (plan.reapply_definitions or not plan.definitions)

    assert_same(normalised_dump(from_scratch), normalised_dump(stepwise))
    assert records(from_scratch) == records(stepwise)


def test_reapplying_every_definition_leaves_the_catalog_unchanged(tmp_path, new_db, monkeypatch):
    """A release that changes one sql/ file re-applies all of them on top of the previous ones;
    definitions must be idempotent (CREATE OR REPLACE, DROP ... IF EXISTS, grants) so that the
    result equals a fresh install of the same files."""
    schema_dir = copy_schema(tmp_path)
    definitions = sorted((schema_dir / "sql").glob("*.sql"))
    assert definitions
    fresh, reapplied = new_db(), new_db()
    monkeypatch.setenv("AUDITCHAIN_SCHEMA_DIR", str(schema_dir))
    migrate(reapplied, quiet=True)

    for path in definitions:  # a harmless edit changes every checksum
        path.write_text(path.read_text(encoding="utf-8") + "\n-- re-applied\n", encoding="utf-8")
    plan = migrate(reapplied, quiet=True)
    assert plan.reapply_definitions
    migrate(fresh, quiet=True)

    assert_same(normalised_dump(fresh), normalised_dump(reapplied))
    assert records(fresh) == records(reapplied)
