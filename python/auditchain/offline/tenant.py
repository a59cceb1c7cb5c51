"""Tenant-mode bundles for `auditchain verify-bundle` (docs/bundle-verification.md, "Tenant mode"):
all of one tenant's events up to a signed checkpoint, and the proofs that they are all of them.

The chain of trust, each link checked before the next is used:
  verifier key (--vkey, never from the bundle) -> signed checkpoint (size S, global root)
  -> compliance.tenant_heads event at seq c <= S, by its inclusion proof (heads root at size N < c)
  -> the tenant's head (k, root_T), by its inclusion proof in the tree of tenant heads
  -> the lines: the tenant tree rebuilt from their record digests must give root_T with k leaves.
With a "from" checkpoint the same holds at (S0, N0, k0), the frontier is the tenant tree's compact
range at k0 (it must fold to root_T0) and the lines are the tenant's events k0..k-1.

Memory stays flat: the tenant tree is rebuilt as a compact range (at most 63 hashes).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..formats import checkpoint, hashing, merkle, note, tenant_heads
from ..formats.manifest import Manifest
from ..formats.strictjson import parse_json_object
from ..formats.tenant_heads import TenantHeadError, tenant_label
from .chain import check_digest, check_event, stream_data
from .report import Report
from .sources import FolderSource, S3Source


@dataclass(frozen=True)
class Expectations:
    """What the auditor brings: the keys they trust, and how recent the checkpoint must be."""

    verifiers: Sequence[note.Verifier]
    min_tree_size: int | None = None
    not_before: datetime | None = None


@dataclass(frozen=True)
class CommittedHead:
    """What one verified checkpoint proof establishes about the tenant."""

    checkpoint: checkpoint.Checkpoint
    signed_by: tuple[str, ...]
    commitment_seq: int
    committed_at: str  # the commitment event's recorded_at
    heads: tenant_heads.HeadsCommitment
    tenant_size: int
    tenant_root: bytes


Fail = Callable[[str, str], None]


def _open_checkpoint(
    which: str, signed: str, origin: str | None, verifiers: Sequence[note.Verifier], fail: Fail
) -> tuple[checkpoint.Checkpoint, tuple[str, ...]] | None:
    try:
        cp, opened = checkpoint.open_signed(hashing.utf8(signed), verifiers)
    except hashing.FieldError:
        fail("checkpoint", f"the {which} checkpoint is malformed: it has no UTF-8 form")
        return None
    except note.BadSignature as exc:
        fail("checkpoint", f"the {which} checkpoint's signature does not verify ({exc}): it was altered")
        return None
    except note.UnverifiedNote:
        fail(
            "checkpoint",
            f"the {which} checkpoint is not signed by a trusted key (--vkey): signed by another key",
        )
        return None
    except (note.NoteError, checkpoint.CheckpointError) as exc:
        fail("checkpoint", f"the {which} checkpoint is malformed: {exc}")
        return None
    if origin is not None and cp.origin != origin:
        fail(
            "checkpoint",
            f"the {which} checkpoint is of the log {cp.origin!r}, not of this bundle's {origin!r}",
        )
        return None
    return cp, opened.verified_by


def _check_commitment(
    which: str, proof: dict[str, Any], cp: checkpoint.Checkpoint, fail: Fail
) -> tuple[int, str, tenant_heads.HeadsCommitment] | None:
    """The compliance.tenant_heads event: of its form, and a leaf of the checkpoint's tree."""
    what = f"the {which} checkpoint's tenant-heads commitment"
    try:
        event = parse_json_object(proof["line"].encode("utf-8"))
        record_sha256 = hashing.record_digest(hashing.canonical_record(event))
    except ValueError as exc:  # hashing.FieldError is a ValueError
        fail("commitment", f"{what} is not an event line: {exc}")
        return None
    seq = event["seq"]
    if event["event_type"] != tenant_heads.COMMITMENT_EVENT_TYPE or event["tenant_id"] is not None:
        fail(
            "commitment",
            f"{what} at seq {seq} is an event of type {event['event_type']!r} and tenant "
            f"{tenant_label(event['tenant_id'])}, not a {tenant_heads.COMMITMENT_EVENT_TYPE} event "
            "without a tenant",
        )
        return None
    if "payload" not in event:
        fail(
            "commitment",
            f"{what} at seq {seq} carries no payload (withheld or erased): no heads root to read",
        )
        return None
    try:
        heads = tenant_heads.parse_commitment_payload(event["payload"])
    except TenantHeadError as exc:
        fail("commitment", f"{what} at seq {seq}: {exc}")
        return None
    if seq > cp.size:
        fail("commitment", f"{what} at seq {seq} lies beyond the checkpoint's tree size {cp.size}")
        return None
    if heads.tree_size >= seq:
        fail("commitment", f"{what} at seq {seq} describes global size {heads.tree_size}, not one before it")
        return None
    try:
        hashes = tenant_heads.decode_hashes(proof["inclusion_proof"])
        merkle.verify_inclusion(merkle.leaf_hash(record_sha256), seq - 1, cp.size, hashes, cp.root)
    except (TenantHeadError, merkle.ProofError) as exc:
        fail(
            "commitment",
            f"{what} at seq {seq} is not in the signed checkpoint (its inclusion proof does not verify: "
            f"{exc}): a forged heads root or an altered commitment",
        )
        return None
    return seq, event["recorded_at"], heads


def _check_head(
    which: str, proof: dict[str, Any], tenant_id: str | None, heads: tenant_heads.HeadsCommitment, fail: Fail
) -> tuple[int, bytes] | None:
    """The tenant's head (k, root_T): a leaf of the committed tree of tenant heads."""
    size, index = proof["tree_size"], proof["index"]
    try:
        root = tenant_heads.decode_hash(proof["root"])
        data = tenant_heads.head_leaf_data(tenant_id, size, root)
        hashes = tenant_heads.decode_hashes(proof["inclusion_proof"])
        merkle.verify_inclusion(merkle.leaf_hash(data), index, heads.tenants, hashes, heads.root)
    except (TenantHeadError, hashing.FieldError, merkle.ProofError) as exc:
        fail(
            "head",
            f"the head of tenant {tenant_label(tenant_id)} ({size} events) is not leaf {index} of the "
            f"{heads.tenants} tenant heads committed in the {which} checkpoint ({exc}): a head of "
            "another tenant, or an altered head",
        )
        return None
    return size, root


def _check_proof(
    which: str,
    proof: dict[str, Any],
    origin: str | None,
    tenant_id: str | None,
    verifiers: Sequence[note.Verifier],
    report: Report,
) -> CommittedHead | None:
    """One checkpoint proof, link by link; None after the first link that does not hold."""
    fail: Fail = report.fail
    opened = _open_checkpoint(which, proof["checkpoint"], origin, verifiers, fail)
    if opened is None:
        return None
    cp, signed_by = opened
    commitment = _check_commitment(which, proof["commitment"], cp, fail)
    if commitment is None:
        return None
    seq, committed_at, heads = commitment
    head = _check_head(which, proof["head"], tenant_id, heads, fail)
    if head is None:
        return None
    return CommittedHead(cp, signed_by, seq, committed_at, heads, *head)


def _check_from(
    manifest: Manifest, to: CommittedHead, since: CommittedHead, report: Report
) -> list[bytes] | None:
    """The from checkpoint against the to checkpoint; the frontier at k0 to push the lines onto."""
    tenant = manifest["tenant"]
    fail: Fail = report.fail
    s0, s = since.checkpoint.size, to.checkpoint.size
    if s0 > s:
        fail("from", f"the from checkpoint's tree size {s0} is beyond the to checkpoint's {s}")
        return None
    try:
        proof = tenant_heads.decode_hashes(tenant["consistency_proof"])
        checkpoint.verify_consistency(since.checkpoint, to.checkpoint, proof)
    except (TenantHeadError, merkle.ProofError) as exc:
        fail("consistency", f"the to checkpoint does not extend the from checkpoint ({exc})")
        return None
    if since.heads.tree_size > to.heads.tree_size or since.tenant_size > to.tenant_size:
        fail(
            "from",
            f"the from heads (global size {since.heads.tree_size}, {since.tenant_size} tenant events) are "
            f"newer than the to heads (global size {to.heads.tree_size}, {to.tenant_size} tenant events)",
        )
        return None
    try:
        frontier = tenant_heads.decode_hashes(tenant["from"]["frontier"])
        merkle.check_compact_range(frontier, since.tenant_size)
    except (TenantHeadError, merkle.ProofError) as exc:
        fail("from", f"the frontier is not a compact range at {since.tenant_size} tenant events: {exc}")
        return None
    if merkle.fold_compact_range(frontier) != since.tenant_root:
        fail(
            "from",
            f"the frontier does not fold to the tenant root at {since.tenant_size} events committed in the "
            "from checkpoint (a wrong frontier)",
        )
        return None
    try:
        proof = tenant_heads.decode_hashes(tenant["tenant_consistency_proof"])
        merkle.verify_consistency(since.tenant_size, to.tenant_size, proof, since.tenant_root, to.tenant_root)
    except (TenantHeadError, merkle.ProofError) as exc:
        fail(
            "consistency",
            f"the tenant's tree of {to.tenant_size} events does not extend its tree of {since.tenant_size} "
            f"({exc})",
        )
        return None
    return frontier


def _check_staleness(to: CommittedHead, expect: Expectations, fail: Fail) -> None:
    if expect.min_tree_size is not None and to.checkpoint.size < expect.min_tree_size:
        fail(
            "stale",
            f"the checkpoint has tree size {to.checkpoint.size}, below --min-tree-size "
            f"{expect.min_tree_size}: a stale checkpoint",
        )
    if expect.not_before is not None:
        committed = hashing.parse_export_timestamp(to.committed_at)
        if committed < hashing.epoch_us(expect.not_before):
            fail(
                "stale",
                f"the tenant heads were committed at {to.committed_at}, before --not-before "
                f"{expect.not_before.isoformat()}: a stale checkpoint",
            )


@dataclass
class _Walk:
    """What the line walk carries from line to line: the tenant tree rebuilt so far."""

    frontier: list[bytes]
    size: int
    rebuilt: bool = True  # every line gave its record digest
    prev_seq: int = 0  # seq 0 stands for the genesis: seq 1's prev_hash is 32 zero bytes
    prev_event_hash: bytes = hashing.GENESIS_HASH
    first_seq: int | None = None


def _check_tenant_line(
    number: int,
    raw: bytes,
    manifest: Manifest,
    report: Report,
    walk: _Walk,
    seq_bounds: tuple[int, int] | None,
) -> None:
    tenant_id = manifest["tenant"]["tenant_id"]
    try:
        event = parse_json_object(raw)
    except ValueError as exc:
        report.fail("line", str(exc), line=number)
        walk.rebuilt = False
        return
    seq = event.get("seq")
    if type(seq) is not int or seq < 1:
        report.fail("line", f"seq {seq!r} is not a positive integer", line=number)
        walk.rebuilt = False
        return
    fail: Fail = functools.partial(report.fail, seq=seq, line=number)
    if "excluded" in event:
        fail("line", "an excluded line: a tenant bundle holds the tenant's events and nothing of others")
        walk.rebuilt = False
        return
    try:
        prev_hash = hashing.parse_hex_digest(event.get("prev_hash"))
        event_hash = hashing.parse_hex_digest(event.get("event_hash"))
    except hashing.FieldError as exc:
        fail("line", f"prev_hash or event_hash {exc}")
        walk.rebuilt = False
        return
    record_sha256, _ = check_event(event, prev_hash, event_hash, manifest, report, fail)
    if "tenant_id" in event and event["tenant_id"] != tenant_id:
        fail(
            "tenant",
            f"an event of tenant {tenant_label(event['tenant_id'])} in the bundle of tenant "
            f"{tenant_label(tenant_id)}: an event of another tenant was added",
        )
    if seq <= walk.prev_seq:
        fail("order", f"seq {seq} follows seq {walk.prev_seq}: lines are out of order or repeated")
    elif seq == walk.prev_seq + 1 and prev_hash != walk.prev_event_hash:
        fail(
            "link",
            f"prev_hash is not the event_hash of seq {walk.prev_seq}, the line before (one was altered)",
        )
    if seq_bounds is not None and not seq_bounds[0] < seq <= seq_bounds[1]:
        low, high = seq_bounds
        fail(
            "range",
            f"seq {seq} is not in the global seqs {low + 1}..{high} the committed tenant heads cover",
        )
    walk.first_seq = walk.first_seq or seq
    if seq > walk.prev_seq:
        walk.prev_seq, walk.prev_event_hash = seq, event_hash
    if record_sha256 is None:
        walk.rebuilt = False
    else:
        walk.size = merkle.compact_range_push(walk.frontier, walk.size, merkle.leaf_hash(record_sha256))


def _check_completeness(report: Report, walk: _Walk, to: CommittedHead, k0: int) -> None:
    expected, lines = to.tenant_size - k0, report.lines
    since = f" after its first {k0}" if k0 else ""
    if lines < expected:
        missing = expected - lines
        fail_text = "one is missing" if missing == 1 else f"{missing} are missing"
        report.fail("completeness", f"{lines} of the tenant's {expected} events{since}: {fail_text}")
    elif lines > expected:
        report.fail(
            "completeness",
            f"{lines} lines, but the tenant has {expected} events{since}: {lines - expected} too many",
        )
    if walk.rebuilt and merkle.fold_compact_range(walk.frontier) != to.tenant_root:
        report.fail(
            "completeness",
            f"the events do not rebuild the tenant root committed in the checkpoint ({to.tenant_size} events "
            f"up to global seq {to.heads.tree_size}): an event is missing, added, reordered or altered",
        )


def _check_line_counts(manifest: Manifest, report: Report, walk: _Walk) -> None:
    if manifest["line_count"] != report.lines:
        report.fail(
            "manifest", f"line_count is {manifest['line_count']} but the data holds {report.lines} lines"
        )
    last = walk.prev_seq or None
    if (manifest["seq_from"], manifest["seq_to"]) != (walk.first_seq, last):
        report.fail(
            "manifest",
            f"seq_from..seq_to is {manifest['seq_from']}..{manifest['seq_to']} but the lines run "
            f"{walk.first_seq}..{last}",
        )


def _summary(manifest: Manifest, to: CommittedHead | None, since: CommittedHead | None) -> dict[str, Any]:
    tenant = manifest["tenant"]
    summary: dict[str, Any] = {"tenant_id": tenant["tenant_id"]}
    if to is not None:
        summary |= {
            "complete_up_to_seq": to.heads.tree_size,
            "tenant_tree_size": to.tenant_size,
            "tenant_root": base64.b64encode(to.tenant_root).decode("ascii"),
            "tenants": to.heads.tenants,
            "checkpoint_origin": to.checkpoint.origin,
            "checkpoint_size": to.checkpoint.size,
            "committed_at": to.committed_at,
            "commitment_seq": to.commitment_seq,
            "signed_by": list(to.signed_by),
        }
    if since is not None:
        summary["from"] = {
            "checkpoint_size": since.checkpoint.size,
            "after_seq": since.heads.tree_size,
            "tenant_tree_size": since.tenant_size,
            "committed_at": since.committed_at,
        }
    return summary


def check_tenant(
    source: FolderSource | S3Source, manifest: Manifest, report: Report, expect: Expectations, progress: bool
) -> None:
    """Verify a tenant-mode bundle: its checkpoint proofs, then its lines in one pass."""
    tenant = manifest["tenant"]
    tenant_id = tenant["tenant_id"]
    try:
        origin: str | None = checkpoint.origin(
            manifest.database["system_identifier"], manifest.database["database_name"]
        )
    except checkpoint.CheckpointError as exc:
        report.fail("manifest", f"the manifest's database names no checkpoint origin: {exc}")
        origin = None
    to = _check_proof("to", tenant["to"], origin, tenant_id, expect.verifiers, report)
    if to is not None:
        if to.checkpoint.size != manifest["filter"]["to_checkpoint"]:
            report.fail(
                "checkpoint",
                f"the to checkpoint has tree size {to.checkpoint.size}; the filter asks for "
                f"to_checkpoint {manifest['filter']['to_checkpoint']}",
            )
        _check_staleness(to, expect, report.fail)
    since = frontier = None
    if "from" in tenant:
        since = _check_proof("from", tenant["from"], origin, tenant_id, expect.verifiers, report)
        if since is not None and since.checkpoint.size != manifest["filter"].get("from_checkpoint"):
            report.fail(
                "checkpoint",
                f"the from checkpoint has tree size {since.checkpoint.size}; the filter asks for "
                f"from_checkpoint {manifest['filter'].get('from_checkpoint')}",
            )
        if to is not None and since is not None:
            frontier = _check_from(manifest, to, since, report)
    # The lines are checked against the committed head only when every proof up to it held.
    proven = to if "from" not in tenant or frontier is not None else None
    k0 = since.tenant_size if since is not None else 0
    # The lines extend the tenant's tree at k0: the verified frontier, or the empty tree without a
    # from checkpoint. When a from proof failed they are still read and re-hashed, never compared.
    walk = _Walk(frontier=list(frontier or []), size=k0 if frontier is not None else 0)
    seq_bounds = None
    if proven is not None:
        seq_bounds = (since.heads.tree_size if since is not None else 0, proven.heads.tree_size)

    def check_line(number: int, raw: bytes) -> bool:
        _check_tenant_line(number, raw, manifest, report, walk, seq_bounds)
        return True

    reader = stream_data(source, manifest, report, progress, check_line)
    if proven is not None:
        _check_completeness(report, walk, proven, k0)
    _check_line_counts(manifest, report, walk)
    check_digest(reader, manifest, report)
    report.tenant = _summary(manifest, to, since)
