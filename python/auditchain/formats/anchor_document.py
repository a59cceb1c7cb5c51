"""The anchor document: what compliance.create_anchor() writes and `auditchain anchor` uploads
with Object Lock. Schema: schemas/anchor.schema.json; description: docs/anchoring.md.

format_version 1: the chain head (seq_to, head_hash) and the link to the previous anchor.
format_version 2: also `checkpoint`, the C2SP tlog-checkpoint body of the Merkle tree at seq_to
(which the uploader signs and uploads beside the document), and `consistency_proof`, the RFC 9162
proof from the previous anchor's tree size to this one (null for the first anchor). Readers accept
both versions: anchors written before version 2 stay valid.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from . import checkpoint, merkle, schemas
from .strictjson import parse_json_object

ANCHOR_FORMAT = "auditchain-anchor"
SCHEMA = "anchor.schema.json"


def cadence_id(system_identifier: str, database_name: str, seq_to: int, head_hash_hex: str) -> str:
    """The anchor's identity: one per database and chain head, so a re-run records nothing new."""
    fingerprint = f"auditchain-anchor:v1:{system_identifier}:{database_name}:{seq_to}:{head_hash_hex}"
    return hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()


def document_digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def parse(raw: bytes) -> dict[str, Any]:
    """The document, held to its schema and to its own arithmetic; ValueError naming the first problem."""
    document = parse_json_object(raw)
    violations = schemas.violations(SCHEMA, document)
    if violations:
        raise ValueError(f"not an {ANCHOR_FORMAT} v1 or v2 document: {violations[0][1]}")
    if document["seq_to"] - document["seq_from"] + 1 != document["event_count"]:
        raise ValueError("its seq_from, seq_to and event_count do not agree")
    if (document["seq_from"] == 1) != (document["prev_anchor_digest"] is None):
        raise ValueError("only the anchor starting at seq 1 has no prev_anchor_digest")
    database = document["database"]
    expected = cadence_id(
        database["system_identifier"], database["database_name"], document["seq_to"], document["head_hash"]
    )
    if document["cadence_id"] != expected:
        raise ValueError("its cadence_id does not match its database, seq_to and head_hash")
    if document["format_version"] >= 2:
        _check_checkpoint(document)
    return document


def _check_checkpoint(document: dict[str, Any]) -> None:
    database = document["database"]
    try:
        cp = checkpoint.parse(document["checkpoint"].encode("utf-8"))
        expected_origin = checkpoint.origin(database["system_identifier"], database["database_name"])
    except checkpoint.CheckpointError as exc:
        raise ValueError(f"its checkpoint is malformed: {exc}") from None
    if cp.origin != expected_origin:
        raise ValueError(f"its checkpoint origin {cp.origin!r} is not {expected_origin!r}")
    if cp.size != document["seq_to"]:
        raise ValueError(f"its checkpoint's tree size {cp.size} is not seq_to {document['seq_to']}")
    proof = document["consistency_proof"]
    if (proof is None) != (document["seq_from"] == 1):
        raise ValueError("only the anchor starting at seq 1 has no consistency_proof")
    if proof is not None and proof["from_tree_size"] != document["seq_from"] - 1:
        raise ValueError("its consistency_proof does not start at the previous anchor's tree size")


def checkpoint_of(document: dict[str, Any]) -> checkpoint.Checkpoint | None:
    """The checkpoint of a parsed version 2 document; None for version 1."""
    if document["format_version"] < 2:
        return None
    return checkpoint.parse(document["checkpoint"].encode("utf-8"))


def consistency_problem(previous: checkpoint.Checkpoint, document: dict[str, Any]) -> str | None:
    """Why the consistency proof of a parsed version 2 document does not show that its checkpoint
    extends `previous` (the checkpoint of the anchor before it); None when it does."""
    current = checkpoint_of(document)
    proof = document["consistency_proof"]
    if current is None or proof is None:
        return "the document carries no consistency proof"
    if proof["from_tree_size"] != previous.size:
        return (
            f"its consistency proof starts at tree size {proof['from_tree_size']}, "
            f"the previous checkpoint is of size {previous.size}"
        )
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    try:
        checkpoint.verify_consistency(previous, current, hashes)
    except merkle.ProofError as exc:
        return f"its consistency proof from tree size {previous.size} does not verify: {exc}"
    return None


def link_problem(previous_seq_to: int, previous_digest: bytes, document: dict[str, Any]) -> str | None:
    """Why `document` is not the anchor right after the one at previous_seq_to with that digest."""
    if document["seq_from"] != previous_seq_to + 1:
        return (
            f"the anchor chain has a gap: this anchor starts at seq {document['seq_from']}, "
            f"the previous one listed ends at seq {previous_seq_to} (an anchor between them is left out)"
        )
    if document["prev_anchor_digest"] != previous_digest.hex():
        return f"prev_anchor_digest is not the digest of the anchor at seq {previous_seq_to}"
    return None
