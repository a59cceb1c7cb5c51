"""The `auditchain` command line: one sub-command per module, configuration read once at start."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing

from . import __version__, db
from .errors import EXIT_USAGE, AuditchainError

# Each module adds its own sub-commands with register(subparsers).
COMMAND_MODULES = [
    "migrate",
    "drift",
    "metrics",
    "watchdog",
    "alarms",
    "status",
    "bundle",
    "anchor",
    "bucket",
    "verify",
    "export",
    "events",
]


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which `status` uses for CRITICAL: exit EXIT_USAGE instead.
    Sub-command parsers inherit this class (add_subparsers uses the parent's class)."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="auditchain",
        description="Tamper-evident compliance audit log in PostgreSQL: migrations, anchoring, "
        "metrics, exports and verification.",
    )
    parser.add_argument("--version", action="version", version=f"auditchain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"auditchain.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # boto's wire-level debug output can carry signed headers; keep it quiet even with -v.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if getattr(args, "needs_db", False):
            args.dsn = db.resolve_dsn(args.dsn)
        return args.func(args)
    except AuditchainError as exc:
        print(f"auditchain {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
