"""Helpers shared by the sub-command modules: common options and output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

_db_options = argparse.ArgumentParser(add_help=False)
_db_options.add_argument(
    "--dsn",
    help="PostgreSQL connection string (default: DATABASE_URL, then the libpq PG* variables)",
)


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    *,
    help: str,
    description: str | None = None,
    needs_db: bool = True,
) -> argparse.ArgumentParser:
    """A sub-command parser with --dsn when it talks to the database, and --help always."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description or help,
        parents=[_db_options] if needs_db else [],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(needs_db=needs_db)
    return parser


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def is_terminal() -> bool:
    return sys.stderr.isatty()
