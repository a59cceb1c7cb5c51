"""The anchor document (format_version 1): what compliance.create_anchor() writes and
`auditchain anchor` uploads with Object Lock. Schema: schemas/anchor.schema.json;
description: docs/anchoring.md.
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import schemas
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
        raise ValueError(f"not an {ANCHOR_FORMAT} v1 document: {violations[0][1]}")
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
    return document


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
