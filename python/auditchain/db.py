"""Connections: where the DSN comes from and how it is shown without its password."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import config
from .errors import EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError, first_line


def resolve_dsn(dsn: str | None) -> str:
    """--dsn wins, then DATABASE_URL; an empty conninfo lets libpq read the PG* variables."""
    chosen = dsn or config.env("DATABASE_URL") or ""
    try:
        conninfo_to_dict(chosen)
    except (psycopg.ProgrammingError, UnicodeError):
        # libpq's parse error quotes the whole string, password included: never repeat it.
        raise AuditchainError(
            "invalid connection string: expected key=value pairs or a postgresql:// URI in UTF-8 "
            "(libpq's message is not shown because it may contain the password)",
            EXIT_USAGE,
        ) from None
    return chosen


def describe(dsn: str) -> str:
    """A readable name for the target database that never contains the password."""
    params = conninfo_to_dict(dsn)
    host = params.get("host") or config.pg_env("PGHOST") or "localhost"
    port = params.get("port") or config.pg_env("PGPORT") or "5432"
    user = params.get("user") or config.pg_env("PGUSER") or ""
    dbname = params.get("dbname") or config.pg_env("PGDATABASE") or user or "postgres"
    who = f"{user}@" if user else ""
    return f"postgresql://{who}{host}:{port}/{dbname}"


def with_dbname(dsn: str, dbname: str) -> str:
    """The same connection parameters pointed at another database."""
    return make_conninfo(dsn, dbname=dbname)


def connect(dsn: str, *, autocommit: bool = False, app: str = "auditchain") -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, autocommit=autocommit, application_name=app)
    except psycopg.OperationalError as exc:
        # libpq messages can quote the host but never the password; keep only the first line.
        reason = first_line(exc, "connection failed")
        raise AuditchainError(f"cannot connect to {describe(dsn)}: {reason}", EXIT_UNAVAILABLE) from None
