"""`auditchain verify-bundle`: check an export bundle offline, without the database.

A bundle (docs/bundle-verification.md) is a folder or S3 prefix holding manifest.json and the
data object it names. The manifest is held to its published schema (formats/manifest.py). A range
bundle's data object is streamed once through the chain walk (chain.py), and the anchors the
manifest lists are checked against the bundle and their WORM objects (anchors.py). A tenant
bundle's proofs are checked against the signed checkpoint and its lines rebuild the tenant's
tree (tenant.py); it needs the log's verifier key (--vkey).

Exit codes (docs/cli.md): 0 every check passed, 1 a check failed, 64 the bundle is unusable
(no manifest, unreadable, a format this verifier does not read), 69 S3 unreachable for the
bundle itself. Anchors that cannot be fetched are a warning, or a failure with --require-anchors.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ..cliutil import add_command, add_json_flag, is_terminal, print_json
from ..config import add_endpoint_options
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AuditchainError
from ..formats import manifest as manifest_format
from .anchors import AnchorFetcher, check_anchors
from .chain import check_data
from .report import Report
from .sources import FolderSource, S3Source, UnusableBundle
from .tenant import Expectations, check_tenant
from .vkeys import add_vkey_option, read_verifiers

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
REPORTED_MANIFEST_FIELDS = (
    "job_id",
    "created_at",
    "requested_by",
    "filter",
    "seq_from",
    "seq_to",
    "line_count",
    "matched_count",
    "withheld_payloads",
    "range_prev_hash",
    "database",
    "mode",
)
NOT_FOR_RANGE = (
    "--vkey, --min-tree-size and --not-before do not apply to a range bundle "
    "(it carries no checkpoint; its anchors are checked against WORM)"
)


def verify_bundle(
    location: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    anchors: str = "check",
    progress: bool = False,
    expect: Expectations | None = None,
) -> Report:
    """Verify the bundle at a folder or s3://bucket/prefix. anchors is "check", "skip" or
    "require"; expect holds the trusted keys and freshness a tenant bundle is held to.
    Raises UnusableBundle (EXIT_USAGE) or BundleUnavailable (EXIT_UNAVAILABLE)."""
    started = time.monotonic()
    report = Report(location=location)
    client: list[Any] = []

    def s3_client() -> Any:
        from .. import s3

        if not client:
            client.append(s3.make_client(endpoint_url, region))
        return client[0]

    if location.startswith("s3://"):
        try:
            source: FolderSource | S3Source = S3Source(location, s3_client())
        except ValueError as exc:  # botocore refuses a malformed endpoint URL with ValueError
            raise UnusableBundle(f"cannot use S3 endpoint {endpoint_url!r}: {exc}") from None
    else:
        path = Path(location)
        is_manifest = path.name == manifest_format.MANIFEST_NAME and path.is_file()
        source = FolderSource(path.parent if is_manifest else path)
        if not source.folder.is_dir():
            raise UnusableBundle(f"{location} is not a folder (a bundle is a folder or s3://bucket/prefix)")
    report.location = source.location

    try:
        manifest, problems = manifest_format.load(
            source.read_small(manifest_format.MANIFEST_NAME, MAX_MANIFEST_BYTES)
        )
    except manifest_format.UnusableManifest as exc:
        raise UnusableBundle(str(exc)) from None
    for problem in problems:
        report.fail("manifest", problem)
    report.manifest = {
        name: manifest[name].hex() if isinstance(manifest[name], bytes) else manifest[name]
        for name in REPORTED_MANIFEST_FIELDS
        if name in manifest.fields
    }
    if manifest.mode == manifest_format.TENANT:
        if expect is None or not expect.verifiers:
            raise UnusableBundle(
                "a tenant bundle is proved by a signed checkpoint: pass --vkey with the log's verifier key"
            )
        if anchors == "require":
            report.notes.append("--require-anchors does not apply to a tenant bundle (it lists no anchors)")
        check_tenant(source, manifest, report, expect, progress)
    else:
        if expect is not None and (expect.verifiers or expect.min_tree_size is not None or expect.not_before):
            report.notes.append(NOT_FOR_RANGE)
        chain = check_data(source, manifest, report, progress)
        fetcher = None if anchors == "skip" else AnchorFetcher(s3_client)
        check_anchors(manifest, chain, report, fetcher, require=anchors == "require")
    report.seconds = time.monotonic() - started
    return report


def _not_before(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise AuditchainError(f"--not-before {text!r} is not an ISO-8601 date and time", EXIT_USAGE) from None
    if moment.tzinfo is None:
        raise AuditchainError(f"--not-before {text!r} has no time zone (add Z or an offset)", EXIT_USAGE)
    return moment


def run(args: argparse.Namespace) -> int:
    anchors = "skip" if args.no_anchors else "require" if args.require_anchors else "check"
    try:
        if args.min_tree_size is not None and args.min_tree_size < 0:
            raise AuditchainError("--min-tree-size must not be negative", EXIT_USAGE)
        expect = Expectations(
            verifiers=read_verifiers(args.vkey) if args.vkey else [],
            min_tree_size=args.min_tree_size,
            not_before=_not_before(args.not_before),
        )
        report = verify_bundle(
            args.bundle,
            endpoint_url=args.endpoint_url,
            region=args.region,
            anchors=anchors,
            progress=is_terminal(),
            expect=expect,
        )
    except AuditchainError as exc:
        if args.json:
            print_json({"bundle": args.bundle, "ok": False, "exit_code": exc.exit_code, "error": str(exc)})
        raise
    if args.json:
        print_json(report.as_json())
    else:
        report.print_text()
    return EXIT_OK if report.ok else EXIT_FAILED


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "verify-bundle",
        help="verify an export bundle offline (no database needed)",
        description=(
            "Verify an export bundle (a folder or s3://bucket/prefix holding manifest.json and\n"
            "events.ndjson.gz) without the database: the manifest against its published schema,\n"
            "the data object's digest, every line's place in the chain, every line's hash re-derived\n"
            "(exported events from their fields, excluded ones from their record's digest), every\n"
            "exported event against the manifest's filter, and the anchors that cover the range\n"
            "against their WORM objects when the bucket can be reached.\n\n"
            'A tenant bundle (manifest mode "tenant") is checked against its signed checkpoint with\n'
            "the verifier key given by --vkey (required): the tenant-heads commitment and the tenant's\n"
            "head proved into it, every line re-hashed, and the tenant's tree rebuilt from the lines:\n"
            "all of the tenant's events up to the global seq the heads describe, none of another's.\n\n"
            "exit codes: 0 all checks passed, 1 a check failed, 64 unusable bundle or arguments,\n"
            "69 S3 unreachable for the bundle itself. See docs/bundle-verification.md."
        ),
        needs_db=False,
    )
    parser.add_argument("bundle", metavar="PATH-or-S3-URL", help="bundle folder, or s3://bucket/prefix")
    add_endpoint_options(parser)
    add_json_flag(parser)
    anchors = parser.add_mutually_exclusive_group()
    anchors.add_argument("--no-anchors", action="store_true", help="do not fetch anchor objects from S3")
    anchors.add_argument(
        "--require-anchors",
        action="store_true",
        help="fail unless every anchor is fetched, matches and is under Object Lock",
    )
    add_vkey_option(parser, required=False, applies_to="; needed for a tenant bundle")
    parser.add_argument(
        "--min-tree-size",
        type=int,
        metavar="N",
        help="tenant bundle: fail when its checkpoint's tree size is below N (a stale checkpoint)",
    )
    parser.add_argument(
        "--not-before",
        metavar="TIME",
        help="tenant bundle: fail when its tenant heads were committed before TIME "
        "(ISO-8601 with a zone, e.g. 2026-12-01T00:00:00Z)",
    )
    parser.set_defaults(func=run)
