"""Tenant heads (docs/proofs.md "Tenant trees"): the leaf data of one tenant's head in the tree of
tenant heads, and the compliance.tenant_heads event that commits that tree's root into the global
log, so that a signed checkpoint covering the event covers every tenant's head.

    head leaf data = utf8("auditchain-tenant-head:v1\\n" + T + "\\n" + str(k) + "\\n") || root_T
    T = "-" for the events without a tenant, else "<octets>:<tenant id>" (as in the canonical record)

The hashing is formats/merkle.py's; this module must produce, byte for byte, what
compliance._tenant_head_data produces in the database.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from . import hashing
from .merkle import HASH_SIZE
from .strictjson import parse_json_object

HEAD_TAG = b"auditchain-tenant-head:v1"
COMMITMENT_EVENT_TYPE = "compliance.tenant_heads"
COMMITMENT_ACTOR = "compliance.create_anchor"
_COMMITMENT_FIELDS = frozenset({"tree_size", "tenants", "root"})
_BASE64_HASH = re.compile(r"[A-Za-z0-9+/]{43}=")


class TenantHeadError(ValueError):
    """A tenant head or a heads commitment that is not of its form; one line naming why."""


def tenant_label(tenant_id: str | None) -> str:
    """How reports name a tenant: its id quoted, or "(none)" for the events without a tenant."""
    return "(none)" if tenant_id is None else repr(tenant_id)


def head_leaf_data(tenant_id: str | None, size: int, root: bytes) -> bytes:
    """The leaf data of a tenant's head: tenant, tenant tree size k (never 0: only tenants with
    events have a head) and the tenant tree's root."""
    if size < 1:
        raise TenantHeadError(f"a tenant head has at least one event, not {size}")
    if len(root) != HASH_SIZE:
        raise TenantHeadError(f"a tenant root is {HASH_SIZE} bytes, not {len(root)}")
    if tenant_id is None:
        tenant = b"-"
    else:
        raw = hashing.utf8(tenant_id)
        tenant = b"%d:%s" % (len(raw), raw)
    return b"%s\n%s\n%d\n%s" % (HEAD_TAG, tenant, size, root)


def decode_hash(text: Any) -> bytes:
    """32 bytes from their standard base64 form (as checkpoints write roots); canonical only."""
    if not isinstance(text, str) or not _BASE64_HASH.fullmatch(text):
        raise TenantHeadError("is not the base64 form of 32 bytes")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise TenantHeadError("is not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise TenantHeadError("is not in canonical base64")
    return raw


def decode_hashes(values: Any) -> list[bytes]:
    if not isinstance(values, list):
        raise TenantHeadError("is not a list of hashes")
    hashes = []
    for i, value in enumerate(values):
        try:
            hashes.append(decode_hash(value))
        except TenantHeadError as exc:
            raise TenantHeadError(f"hash {i} {exc}") from None
    return hashes


@dataclass(frozen=True)
class HeadsCommitment:
    """What a compliance.tenant_heads event says: at global tree size tree_size, the tree of
    tenant heads had `tenants` leaves and this root."""

    tree_size: int
    tenants: int
    root: bytes


def parse_commitment_payload(payload_text: str) -> HeadsCommitment:
    """The commitment in a compliance.tenant_heads event's payload (its exact jsonb text): exactly
    {"tree_size": int, "tenants": int, "root": 64 lower-case hex}."""
    try:
        payload = parse_json_object(hashing.utf8(payload_text))
    except ValueError as exc:
        raise TenantHeadError(f"the payload is not a JSON object: {exc}") from None
    if set(payload) != _COMMITMENT_FIELDS:
        raise TenantHeadError(
            f"the payload has the fields {sorted(payload)}, not exactly {sorted(_COMMITMENT_FIELDS)}"
        )
    for name in ("tree_size", "tenants"):
        value = payload[name]
        if type(value) is not int or value < 0:  # bool is an int subclass: refused on purpose
            raise TenantHeadError(f"the payload's {name} is {value!r}, not a count")
    try:
        root = hashing.parse_hex_digest(payload["root"])
    except hashing.FieldError as exc:
        raise TenantHeadError(f"the payload's root {exc}") from None
    return HeadsCommitment(payload["tree_size"], payload["tenants"], root)
