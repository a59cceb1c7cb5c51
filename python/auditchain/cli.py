"""The `auditchain` command line: one sub-command per module, loaded only when it runs.

Only the module of the command being run is imported, so `verify-bundle` and `verify-proof`
start without the database driver or the AWS SDK, and run where neither is installed.
Configuration from the environment is read in config.py; exit codes are in errors.py.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing

from . import __version__
from .errors import EXIT_CONFIG, EXIT_USAGE, AuditchainError

# Command name -> (module that registers it, one-line help shown by `auditchain --help`).
COMMANDS = {
    "migrate": ("auditchain.migrate", "install or upgrade the schema"),
    "dist": ("auditchain.migrate", "write one plain SQL installer for psql"),
    "drift-check": ("auditchain.drift", "compare the database's schema with this version's files"),
    "status": ("auditchain.status", "on-call triage: health of every part, as monitoring exit codes"),
    "metrics": ("auditchain.metrics", "print compliance.metrics()"),
    "watchdog": ("auditchain.watchdog", "publish metrics to CloudWatch and serve Prometheus"),
    "alarms": ("auditchain.alarms", "install the CloudWatch alarms"),
    "anchor": ("auditchain.anchor", "upload pending anchors to the WORM bucket"),
    "bucket": ("auditchain.bucket", "check or set up the anchor bucket's Object Lock"),
    "verify": ("auditchain.verify", "verify the chain in SQL and every anchor in the bucket"),
    "export": ("auditchain.export", "request export jobs and run them into S3 bundles"),
    "events": ("auditchain.events", "on-call: the newest events, or one event, with hex hashes"),
    "verify-bundle": ("auditchain.offline.bundle", "verify an export bundle offline (no database needed)"),
    "verify-proof": (
        "auditchain.offline.proof",
        "verify an event receipt offline with the log's verifier key",
    ),
    "key": ("auditchain.keys", "create a checkpoint signing key, print a verifier key"),
    "prove": ("auditchain.prove", "write an event's receipt against its newest signed checkpoint"),
}
# Which extra of the package brings a missing third-party module.
EXTRAS = {"psycopg": "db", "boto3": "aws", "botocore": "aws", "prometheus_client": "db"}


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which `status` uses for CRITICAL: exit EXIT_USAGE instead.
    Sub-command parsers inherit this class (add_subparsers uses the parent's class)."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _register(module_name: str, subparsers: argparse._SubParsersAction) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        raise AuditchainError(
            f"this command needs {top}, which is not installed: pip install 'auditchain[{EXTRAS[top]}]'",
            EXIT_CONFIG,
        ) from None
    module.register(subparsers)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with `command` fully registered and the others as names only; with no
    command, every command fully registered (for tools and tests that walk them all)."""
    parser = Parser(
        prog="auditchain",
        description="Tamper-evident compliance audit log in PostgreSQL: migrations, anchoring, "
        "metrics, exports and verification. Exit codes: docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"auditchain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # A module may register several commands (migrate and dist): register the wanted modules
    # first, then a name-only entry for every command none of them registered.
    for module_name in dict.fromkeys(m for name, (m, _) in COMMANDS.items() if command in (None, name)):
        _register(module_name, subparsers)
    for name, (_, help_text) in COMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_of(argv: list[str]) -> str | None:
    return next((arg for arg in argv if arg in COMMANDS), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser(_command_of(argv) or "")
    except AuditchainError as exc:
        print(f"auditchain: {exc}", file=sys.stderr)
        return exc.exit_code
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
            from . import db

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
