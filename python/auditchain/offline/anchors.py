"""The anchors a bundle's manifest lists, checked against the bundle and, when the bucket can be
reached, against their WORM objects. boto3 is imported only when an object is fetched."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import AuditchainError
from ..formats import anchor_document
from ..formats.manifest import Manifest
from .chain import ChainState
from .report import AnchorResult, Report

MAX_ANCHOR_BYTES = 1024 * 1024
# An anchor object written long after its anchor was created may have been backfilled.
LATE_UPLOAD_WARNING_SECONDS = 24 * 3600


@dataclass
class FetchedAnchor:
    document: bytes
    lock_mode: str | None
    retain_until: str | None
    legal_hold: bool
    last_modified: Any


class AnchorFetcher:
    """Fetches anchor objects; a bucket that cannot be reached once is not tried again."""

    def __init__(self, client_factory: Callable[[], Any]):
        self.client_factory = client_factory
        self.client: Any = None
        self.unreachable: dict[str, str] = {}

    def fetch(self, anchor: dict[str, Any]) -> FetchedAnchor | str:
        """The object, or the reason it could not be reached. A missing object raises LookupError."""
        bucket = anchor["bucket"]
        if bucket in self.unreachable:
            return self.unreachable[bucket]
        try:
            from botocore.exceptions import BotoCoreError, ClientError

            from .. import s3
        except ImportError:
            self.unreachable[bucket] = "boto3 is not installed (pip install 'auditchain[aws]')"
            return self.unreachable[bucket]
        params = {"Bucket": bucket, "Key": anchor["key"]}
        if anchor["version_id"] is not None:
            params["VersionId"] = anchor["version_id"]
        try:
            if self.client is None:
                self.client = self.client_factory()
            response = self.client.get_object(**params)
            with response["Body"] as body:
                document = body.read(MAX_ANCHOR_BYTES + 1)
        except ClientError as exc:
            code = s3.error_code(exc)
            if code in ("NoSuchKey", "NoSuchVersion"):
                raise LookupError(f"the bucket holds no such object ({code})") from None
            self.unreachable[bucket] = f"cannot read from bucket {bucket!r}: {code or exc}"
            return self.unreachable[bucket]
        except (BotoCoreError, ValueError, AuditchainError) as exc:
            self.unreachable[bucket] = f"cannot reach bucket {bucket!r}: {exc}"
            return self.unreachable[bucket]
        retain_until = response.get("ObjectLockRetainUntilDate")
        return FetchedAnchor(
            document=document,
            lock_mode=response.get("ObjectLockMode"),
            retain_until=retain_until.isoformat() if retain_until else None,
            legal_hold=response.get("ObjectLockLegalHoldStatus") == "ON",
            last_modified=response.get("LastModified"),
        )


def _document_problems(
    fetched: FetchedAnchor,
    anchor: dict[str, Any],
    manifest: Manifest,
    bundle_hash: bytes | None,
    previous: tuple[int, bytes] | None,
    previous_document: dict[str, Any] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """What is wrong with an anchor object, measured against the manifest, the bundle and the
    anchor listed before it (for two format_version 2 documents in a row, also the consistency
    proof from the previous checkpoint), and the document as parsed. Version 1 and 2 documents
    are both read; a checkpoint's signature needs the verifier key (`auditchain verify --vkey`,
    `verify-proof`), which a bundle does not carry."""
    if len(fetched.document) > MAX_ANCHOR_BYTES:
        return [f"the object is larger than {MAX_ANCHOR_BYTES} bytes"], {}
    if anchor_document.document_digest(fetched.document) != anchor["document_digest"]:
        return ["the object's SHA-256 differs from the manifest's document_digest"], {}
    try:
        document = anchor_document.parse(fetched.document)
    except ValueError as exc:
        return [f"the object is not a valid anchor document: {exc}"], {}
    problems = []
    seq_to = anchor["seq_to"]
    if document["seq_to"] != seq_to:
        problems.append(f"the document's seq_to is {document['seq_to']}")
    head_hash = bytes.fromhex(document["head_hash"])
    if head_hash != anchor["head_hash"]:
        problems.append("the document's head_hash differs from the manifest's")
    if bundle_hash is not None and head_hash != bundle_hash:
        problems.append(f"the document's head_hash differs from the bundle's event_hash at seq {seq_to}")
    if document["database"] != manifest.database:
        problems.append("the document names another database than the manifest")
    if anchor["cadence_id"].hex() != document["cadence_id"]:
        problems.append("the manifest's cadence_id differs from the document's")
    if previous is not None and (gap := anchor_document.link_problem(*previous, document)):
        problems.append(gap)
    elif (
        previous_document is not None
        and previous_document["seq_to"] + 1 == document["seq_from"]
        and (previous_checkpoint := anchor_document.checkpoint_of(previous_document)) is not None
        and document["format_version"] >= 2
        and (inconsistent := anchor_document.consistency_problem(previous_checkpoint, document))
    ):
        problems.append(inconsistent)
    return problems, document


def check_anchors(
    manifest: Manifest,
    chain: ChainState,
    report: Report,
    fetcher: AnchorFetcher | None,
    require: bool,
) -> None:
    """Each anchor of the manifest against the bundle and, when fetcher is given, its WORM object."""

    def caveat(message: str, seq: int | None = None) -> None:
        if require:
            report.fail("anchors", message, seq=seq)
        else:
            report.warnings.append(message if seq is None else f"anchor at seq {seq}: {message}")

    if not manifest.anchors and manifest.expected_lines:
        caveat("the manifest lists no anchors: the bundle proves only its internal consistency")
    seen: set[int] = set()
    for anchor in manifest.anchors:
        seq = anchor["seq_to"]
        if seq in seen:
            report.fail("anchors", f"two anchors in the manifest at seq_to {seq}", seq=seq)
        seen.add(seq)
        if manifest["seq_from"] is None or not manifest["seq_from"] <= seq <= manifest["seq_to"]:
            report.fail("anchors", f"anchor at seq_to {seq} lies outside the bundle's range", seq=seq)

    previous: tuple[int, bytes] | None = None
    previous_document: dict[str, Any] | None = None
    for anchor in sorted(manifest.anchors, key=lambda a: a["seq_to"]):
        seq = anchor["seq_to"]
        # Documents link through the manifest's digests, which each fetched object must match.
        listed_before, previous = previous, (seq, anchor["document_digest"])
        bundle_hash = chain.hashes_at.get(seq)
        if bundle_hash is not None and bundle_hash != anchor["head_hash"]:
            report.fail(
                "anchors", "the manifest's head_hash differs from the bundle's event_hash here", seq=seq
            )
        where = f"s3://{anchor['bucket']}/{anchor['key']}"
        if anchor["version_id"] is not None:
            where += f" (version {anchor['version_id']})"
        result = AnchorResult(seq_to=seq, location=where, status="skipped", detail="--no-anchors")
        report.anchors.append(result)
        if fetcher is None:
            continue
        try:
            fetched = fetcher.fetch(anchor)
        except LookupError as exc:
            result.status, result.detail = "failed", str(exc)
            report.fail("anchors", f"{where}: {exc}", seq=seq)
            continue
        if isinstance(fetched, str):
            result.status, result.detail = "unreachable", fetched
            caveat(f"not checked: {fetched}", seq)
            continue
        result.lock_mode, result.retain_until = fetched.lock_mode, fetched.retain_until
        problems, document = _document_problems(
            fetched, anchor, manifest, bundle_hash, listed_before, previous_document
        )
        previous_document = document or None
        if problems:
            result.status, result.detail = "failed", "; ".join(problems)
            for problem in problems:
                report.fail("anchors", f"{where}: {problem}", seq=seq)
            continue
        result.status = "verified"
        if fetched.lock_mode is None and not fetched.legal_hold:
            caveat(
                "S3 reports no Object Lock retention or legal hold on the anchor object: it is not WORM "
                "(or you lack s3:GetObjectRetention and s3:GetObjectLegalHold, without which S3 hides them)",
                seq,
            )
        if anchor["version_id"] is None:
            report.warnings.append(
                f"anchor at seq {seq}: the manifest has no version_id; the latest version was read"
            )
        _warn_if_late(document, fetched, report, seq)
    _check_binding(chain, report, caveat)


def _check_binding(chain: ChainState, report: Report, caveat: Callable[[str], None]) -> None:
    """How many matched events are bound to a verified anchor at or after them by an unbroken run of
    lines whose hashes all verify."""
    bound_per_segment: dict[int, int] = {}
    for result in report.anchors:
        if result.status == "verified" and result.seq_to in chain.bindings:
            segment, matched_before = chain.bindings[result.seq_to]
            bound_per_segment[segment] = max(bound_per_segment.get(segment, 0), matched_before)
    report.anchored = sum(bound_per_segment.values())
    unbound = report.matched - report.anchored
    if unbound and any(result.status == "verified" for result in report.anchors):
        caveat(
            f"{unbound} of {report.matched} matched events are not bound by hash to a verified anchor "
            "(they lie after the last verified anchor, or a line that does not verify lies between them "
            "and it): for these the bundle proves only its internal consistency"
        )


def _warn_if_late(document: dict[str, Any], fetched: FetchedAnchor, report: Report, seq: int) -> None:
    try:
        created = datetime.fromisoformat(document["created_at"])
        late = (fetched.last_modified - created).total_seconds()
    except (KeyError, TypeError, ValueError):
        return
    if late > LATE_UPLOAD_WARNING_SECONDS:
        report.warnings.append(
            f"anchor at seq {seq}: the object was written {late / 3600:.1f} hours "
            "after the anchor was created"
        )
