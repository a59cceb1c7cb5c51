"""Connections: where the DSN comes from and how it is shown without its password."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import config
from .errors import EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError, first_line

# What the server says when it was reached but auditchain is not installed in this database,
# or this role lacks its grants: a setup problem, never evidence of tampering.
NOT_SET_UP = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedFunction,
    pg_errors.UndefinedObject,
    pg_errors.InvalidSchemaName,
    pg_errors.InsufficientPrivilege,
)
# The same at connection time, where libpq gives no SQLSTATE, only the server's FATAL text.
_REFUSED_AT_CONNECT = re.compile(
    r"FATAL:\s+(role \S+ does not exist|database \S+ does not exist|password authentication failed"
    r"|no pg_hba\.conf entry|permission denied for database)"
)


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
    """A connection, or a one-line error: EXIT_CONFIG when the server refused this role or
    database, EXIT_UNAVAILABLE when it could not be reached."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, application_name=app)
    except psycopg.OperationalError as exc:
        # libpq messages can quote the host but never the password; keep only the first line.
        reason = first_line(exc, "connection failed")
        code = EXIT_CONFIG if _REFUSED_AT_CONNECT.search(reason) else EXIT_UNAVAILABLE
        raise AuditchainError(f"cannot connect to {describe(dsn)}: {reason}", code) from None


@contextmanager
def setup_errors(dsn: str) -> Iterator[None]:
    """Around a command's database work: a missing schema, table, function or privilege
    becomes a one-line EXIT_CONFIG error, a connection lost midway EXIT_UNAVAILABLE. Other
    database errors pass through for the command to judge."""
    try:
        yield
    except NOT_SET_UP as exc:
        raise AuditchainError(
            f"{describe(dsn)} is not set up for this command: {first_line(exc)} "
            "(install with `auditchain migrate`; check the role's grants)",
            EXIT_CONFIG,
        ) from None
    except psycopg.OperationalError as exc:
        raise AuditchainError(
            f"lost the connection to {describe(dsn)}: {first_line(exc, 'connection lost')}", EXIT_UNAVAILABLE
        ) from None
