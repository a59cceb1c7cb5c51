"""Shared fixtures: the make-started cluster, a migrated template database per session and
a fresh clone of it per test (pytest-postgresql's noproc fixtures)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories

from auditchain.migrate import migrate

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "54329"))
PG_USER = os.environ.get("PGUSER", "postgres")
CRON_DB = "postgres"


def admin_dsn(dbname: str = "postgres") -> str:
    return make_conninfo(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname)


def load_schema(host: str, port: int, user: str, dbname: str, password: str | None = None) -> None:
    migrate(make_conninfo(host=host, port=port, user=user, dbname=dbname), quiet=True)


postgresql_noproc = factories.postgresql_noproc(
    host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="auditchain_test", load=[load_schema]
)
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture
def dsn(postgresql: psycopg.Connection) -> str:
    """Connection string of this test's own freshly migrated database."""
    info = postgresql.info
    return make_conninfo(host=info.host, port=info.port, user=info.user, dbname=info.dbname)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit superuser connection to this test's database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def empty_dsn() -> Iterator[str]:
    """A database with nothing installed, dropped afterwards."""
    name = f"auditchain_empty_{os.getpid()}"
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield admin_dsn(name)
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
