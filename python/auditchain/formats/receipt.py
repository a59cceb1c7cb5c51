"""Receipts: one event's proof of inclusion in a signed checkpoint, in the C2SP tlog-proof@v1 format
(c2sp.org/tlog-proof), verifiable offline with the log's verifier key.

    c2sp.org/tlog-proof@v1
    extra <base64 of the event's line>
    index <seq - 1>
    <inclusion proof: one base64 SHA-256 hash per line, the leaf's sibling first>
    <blank line>
    <signed checkpoint, verbatim>

The event travels in the `extra` line, which the format reserves for "additional data necessary to
reconstruct the record hash": it is the event's line as an export bundle carries it (compact JSON;
the payload as its exact jsonb text, or payload_sha256 when withheld). The extra data is not
authenticated by itself and is not trusted: the verifier recomputes the event's record digest from
it (auditchain.hashing), takes SHA-256(0x00 || digest) as the leaf hash, and only an inclusion proof
from that leaf to the signed root accepts it. A changed field changes the digest and fails the proof.
Fields the record does not contain (prev_hash, event_hash) are not covered by the receipt.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import checkpoint, hashing, merkle, note
from .strictjson import parse_json_object

HEADER = "c2sp.org/tlog-proof@v1"
_INDEX = re.compile(r"index (0|[1-9][0-9]{0,18})")
_HASH_LINE = re.compile(r"[A-Za-z0-9+/]{43}=")
# A proof for any tree of fewer than 2**63 leaves has at most 63 hashes.
MAX_PROOF_HASHES = 63


class ReceiptError(ValueError):
    """A receipt that does not verify or cannot be read; the message is one line naming the failure."""


@dataclass(frozen=True)
class Receipt:
    index: int
    proof: tuple[bytes, ...]
    signed_checkpoint: bytes
    extra: bytes | None


def build_receipt(
    index: int, proof_hashes: Sequence[bytes], signed_checkpoint: bytes, event_line: bytes
) -> bytes:
    """The receipt for the event at leaf `index` (seq - 1) whose bundle line is `event_line`, with
    the inclusion proof for the size of `signed_checkpoint`. Nothing is verified here: verify_receipt
    does that, and a caller that just built a receipt should run it before handing it out."""
    if index < 0:
        raise ReceiptError("index must not be negative")
    if b"\n" in event_line:
        raise ReceiptError("the event line contains a newline")
    for i, h in enumerate(proof_hashes):
        if len(h) != merkle.HASH_SIZE:
            raise ReceiptError(f"proof hash {i} is {len(h)} bytes, not {merkle.HASH_SIZE}")
    lines = [HEADER, "extra " + base64.b64encode(event_line).decode("ascii"), f"index {index}"]
    lines += [base64.b64encode(h).decode("ascii") for h in proof_hashes]
    return ("\n".join(lines) + "\n\n").encode("ascii") + signed_checkpoint


def parse_receipt(data: bytes) -> Receipt:
    """The parts of a receipt, without checking any of them; ReceiptError if it is malformed or cut."""
    head, sep, signed = data.partition(b"\n\n")
    if not sep:
        raise ReceiptError("receipt is truncated: no blank line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise ReceiptError("receipt is malformed: non-ASCII text before the checkpoint") from None
    if lines[0] != HEADER:
        raise ReceiptError(f"receipt is malformed: the first line is not {HEADER}")
    rest = lines[1:]
    extra = None
    if rest and rest[0].startswith("extra "):
        try:
            extra = base64.b64decode(rest[0][len("extra ") :], validate=True)
        except binascii.Error:
            raise ReceiptError("receipt is malformed: the extra line is not base64") from None
        rest = rest[1:]
    if not rest or not _INDEX.fullmatch(rest[0]):
        raise ReceiptError("receipt is malformed: no 'index N' line")
    index = int(rest[0][len("index ") :])
    hashes = rest[1:]
    if len(hashes) > MAX_PROOF_HASHES:
        raise ReceiptError(f"receipt is malformed: more than {MAX_PROOF_HASHES} proof hashes")
    for i, line in enumerate(hashes):
        if not _HASH_LINE.fullmatch(line):
            raise ReceiptError(f"receipt is malformed: proof line {i + 1} is not a base64 SHA-256 hash")
    proof = tuple(base64.b64decode(line) for line in hashes)
    if not signed:
        raise ReceiptError("receipt is truncated: no checkpoint after the proof")
    return Receipt(index, proof, signed, extra)


def event_leaf(event: dict[str, Any]) -> bytes:
    """The leaf data of an event: its record digest, the SHA-256 of its canonical record."""
    return hashing.record_digest(hashing.canonical_record(event))


@dataclass(frozen=True)
class VerifiedReceipt:
    event: dict[str, Any]
    index: int
    checkpoint: checkpoint.Checkpoint
    record_sha256: bytes
    signed_by: tuple[str, ...]


def verify_receipt(
    data: bytes, verifiers: Iterable[note.Verifier], origin: str | None = None
) -> VerifiedReceipt:
    """Check a receipt: the checkpoint is signed by a trusted key (and has `origin`, when given), the
    event's record digest is the leaf at `index`, index = seq - 1, and the inclusion proof leads from
    that leaf to the signed root. ReceiptError naming the first failure."""
    receipt = parse_receipt(data)
    try:
        cp, opened = checkpoint.open_signed(receipt.signed_checkpoint, verifiers)
    except note.BadSignature as exc:
        raise ReceiptError(
            f"checkpoint signature does not verify ({exc}): the checkpoint was altered"
        ) from None
    except note.UnverifiedNote:
        raise ReceiptError("checkpoint is not signed by the trusted key") from None
    except (note.NoteError, checkpoint.CheckpointError) as exc:
        raise ReceiptError(f"checkpoint is malformed: {exc}") from None
    if origin is not None and cp.origin != origin:
        raise ReceiptError(f"checkpoint origin {cp.origin!r} is not the expected {origin!r}")
    if receipt.extra is None:
        raise ReceiptError("receipt carries no event (no extra line)")
    try:
        event = parse_json_object(receipt.extra)
        leaf = event_leaf(event)
    except ValueError as exc:  # hashing.FieldError is a ValueError
        raise ReceiptError(f"event is malformed: {exc}") from None
    if event["seq"] != receipt.index + 1:
        raise ReceiptError(f"event seq {event['seq']} does not match the receipt's index {receipt.index}")
    if receipt.index >= cp.size:
        raise ReceiptError(f"index {receipt.index} is beyond the checkpoint's tree size {cp.size}")
    try:
        merkle.verify_inclusion(merkle.leaf_hash(leaf), receipt.index, cp.size, receipt.proof, cp.root)
    except merkle.ProofError as exc:
        raise ReceiptError(f"inclusion proof does not verify: {exc}") from None
    return VerifiedReceipt(event, receipt.index, cp, leaf, opened.verified_by)
