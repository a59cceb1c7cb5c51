"""Shared fixtures: the make-started cluster, a migrated template database per session and
a fresh clone of it per test (pytest-postgresql's noproc fixtures)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories

from auditchain.formats import note
from auditchain.migrate import migrate
from auditchain.schema import schema_root
from awsfake import FAKE_CREDENTIALS, ThreadedServer

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "54329"))
PG_USER = os.environ.get("PGUSER", "postgres")
CRON_DB = "postgres"


def _snapshot_schema() -> Path:
    """Freeze migrations/ and sql/ for this session: the template and every test that reads
    the schema files see the same version, even while someone edits the tree."""
    snapshot = Path(tempfile.mkdtemp(prefix="auditchain-schema-"))
    for folder in ("migrations", "sql"):
        shutil.copytree(schema_root() / folder, snapshot / folder)
    os.environ["AUDITCHAIN_SCHEMA_DIR"] = str(snapshot)
    atexit.register(shutil.rmtree, snapshot, True)
    return snapshot


SCHEMA_SNAPSHOT = _snapshot_schema()


def admin_dsn(dbname: str = "postgres") -> str:
    return make_conninfo(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname)


def drop_database(name: str) -> None:
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_empty_database(name: str) -> str:
    """A new empty database of that name (dropped first if a killed run left it); its DSN."""
    drop_database(name)
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin_dsn(name)


def load_schema(
    host: str, port: int, user: str, dbname: str, password: str | None = None, **_: object
) -> None:
    """Build the session's template database; first clear what killed sessions left."""
    unschedule_jobs_of_dropped_databases()
    migrate(make_conninfo(host=host, port=port, user=user, dbname=dbname), quiet=True)


def unschedule_jobs_of_dropped_databases() -> None:
    """A session killed before its teardown leaves pg_cron jobs whose database is gone, and
    pg_cron then fails them every minute; remove them as docs/deployment.md tells operators."""
    with psycopg.connect(admin_dsn(CRON_DB), autocommit=True) as cron:
        cron.execute(
            "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE 'auditchain:%'"
            " AND split_part(jobname, ':', 2) NOT IN (SELECT datname FROM pg_database)"
        )


postgresql_noproc = factories.postgresql_noproc(
    host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=f"auditchain_test_{os.getpid()}", load=[load_schema]
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
    yield create_empty_database(name)
    drop_database(name)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[ThreadedServer]:
    """One loopback moto server for the session; fake credentials in the environment."""
    saved = {k: os.environ.get(k) for k in FAKE_CREDENTIALS}
    os.environ.update(FAKE_CREDENTIALS)
    server = ThreadedServer()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def endpoint_url(moto_server: ThreadedServer) -> str:
    return moto_server.url


@pytest.fixture
def bucket_name(request: pytest.FixtureRequest) -> str:
    """A bucket name unique to this test (not created)."""
    slug = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"ac-{slug}-{os.getpid() % 10000}"


@dataclass(frozen=True)
class SigningKey:
    path: Path
    vkey: str


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    """The checkpoint signing key of every `auditchain anchor` the tests run (AUDITCHAIN_SIGNING_KEY,
    also inherited by subprocesses); `vkey` is its verifier key."""
    path = tmp_path_factory.mktemp("signing") / "checkpoint.key"
    skey = note.generate_skey("auditchain-test")
    path.write_text(skey + "\n", encoding="ascii")
    signer = note.parse_skey(skey)
    saved = os.environ.get("AUDITCHAIN_SIGNING_KEY")
    os.environ["AUDITCHAIN_SIGNING_KEY"] = str(path)
    yield SigningKey(path, note.encode_vkey(signer.name, signer.public_key))
    if saved is None:
        os.environ.pop("AUDITCHAIN_SIGNING_KEY", None)
    else:
        os.environ["AUDITCHAIN_SIGNING_KEY"] = saved
