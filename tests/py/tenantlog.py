"""A multi-tenant log of synthetic hash format v2 events in memory, with what the database builds
for it: per-tenant trees, the tree of tenant heads, compliance.tenant_heads commitment events,
signed checkpoints, and tenant bundles (manifest format 4, mode "tenant") written to a folder as
the export runner writes them. No database: what tenant bundles are checked against offline."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditchain import signing
from auditchain.formats import checkpoint, hashing, merkle, note, tenant_heads

SYSTEM_IDENTIFIER = "7312345678901234567"
DATABASE = "appdb"
ORIGIN = checkpoint.origin(SYSTEM_IDENTIFIER, DATABASE)
DATA = "events.ndjson.gz"
_START = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tenant_key(tenant_id: str | None) -> bytes:
    """The order of the tenant heads: tenant id bytes, the events without a tenant ('') first."""
    return b"" if tenant_id is None else tenant_id.encode("utf-8")


def encode(line: dict[str, Any]) -> bytes:
    """Compact JSON, as compliance._event_line writes a line."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _salt(seq: int, name: str) -> bytes:
    return hashlib.sha256(f"{name}-{seq}".encode()).digest()[:16]


def withheld(line: dict[str, Any]) -> dict[str, Any]:
    """A v2 line with its payload withheld: its commitment where the payload and its salt stood."""
    out: dict[str, Any] = {}
    for name, value in line.items():
        if name == "payload":
            out["payload_commitment"] = hashing.commitment(bytes.fromhex(line["payload_salt"]), value).hex()
        elif name != "payload_salt":
            out[name] = value
    return out


@dataclass
class TenantLog:
    signer: note.Signer
    events: list[dict[str, Any]] = field(default_factory=list)  # full lines, seq order
    leaf_hashes: list[bytes] = field(default_factory=list)
    commitments: list[int] = field(default_factory=list)  # seqs of compliance.tenant_heads events

    @classmethod
    def create(cls, signer: note.Signer | None = None) -> TenantLog:
        return cls(signer or note.parse_skey(note.generate_skey(ORIGIN)))

    @property
    def vkey(self) -> str:
        return note.encode_vkey(self.signer.name, self.signer.public_key)

    @property
    def size(self) -> int:
        return len(self.events)

    def append(self, tenant_id: str | None, event_type: str, actor: str, payload: str) -> dict[str, Any]:
        seq = self.size + 1
        prev = bytes.fromhex(self.events[-1]["event_hash"]) if self.events else hashing.GENESIS_HASH
        line: dict[str, Any] = {
            "seq": seq,
            "hash_version": 2,
            "event_id": str(uuid.UUID(int=seq)),
            "occurred_at": iso(_START + timedelta(seconds=seq, microseconds=seq % 997)),
            "recorded_at": iso(_START + timedelta(seconds=seq, microseconds=500000)),
            "tenant_id": tenant_id,
            "event_type": event_type,
            "actor": actor,
            "actor_salt": _salt(seq, "actor").hex(),
            "payload": payload,
            "payload_salt": _salt(seq, "payload").hex(),
        }
        digest = hashing.record_digest(hashing.canonical_record(line))
        line |= {"prev_hash": prev.hex(), "event_hash": hashing.event_hash_from_digest(prev, digest).hex()}
        self.events.append(line)
        self.leaf_hashes.append(merkle.leaf_hash(digest))
        return line

    def emit(self, tenant_id: str | None, n: int) -> dict[str, Any]:
        """An ordinary event; its type and actor name it alone, so that a test can look for them."""
        payload = json.dumps({"note": f"ünï {n}", "amount": n}, ensure_ascii=False)
        return self.append(tenant_id, f"invoice.paid_{n}", f"user-{n}@example.com", payload)

    def commit_heads(self) -> dict[str, Any]:
        """What compliance.commit_tenant_heads emits: the heads root at the current size, as an event."""
        size = self.size
        heads = self.heads(size)
        payload = {
            "root": merkle.root_from_leaf_hashes(heads).hex(),
            "tenants": len(heads),
            "tree_size": size,
        }
        line = self.append(
            None, tenant_heads.COMMITMENT_EVENT_TYPE, tenant_heads.COMMITMENT_ACTOR, json.dumps(payload)
        )
        self.commitments.append(line["seq"])
        return line

    # ------------------------------------------------------------------ trees

    def tenants(self, size: int) -> list[str | None]:
        """The tenants with events among the first `size`, in the order of the tenant heads."""
        seen = {e["tenant_id"] for e in self.events[:size]}
        return sorted(seen, key=tenant_key)

    def tenant_leaves(self, tenant_id: str | None, size: int) -> list[bytes]:
        """Leaf hashes of the tenant's tree over its events among the first `size` of the log."""
        return [
            h
            for e, h in zip(self.events[:size], self.leaf_hashes, strict=False)
            if e["tenant_id"] == tenant_id
        ]

    def tenant_lines(self, tenant_id: str | None, size: int) -> list[dict[str, Any]]:
        return [e for e in self.events[:size] if e["tenant_id"] == tenant_id]

    def head(self, tenant_id: str | None, size: int) -> tuple[int, bytes]:
        leaves = self.tenant_leaves(tenant_id, size)
        return len(leaves), merkle.root_from_leaf_hashes(leaves)

    def heads(self, size: int) -> list[bytes]:
        """Leaf hashes of the tree of tenant heads at global size `size`."""
        return [
            merkle.leaf_hash(tenant_heads.head_leaf_data(t, *self.head(t, size))) for t in self.tenants(size)
        ]

    def root(self, size: int) -> bytes:
        return merkle.root_from_leaf_hashes(self.leaf_hashes[:size])

    def signed_checkpoint(self, size: int, signer: note.Signer | None = None) -> bytes:
        cp = checkpoint.Checkpoint(ORIGIN, size, self.root(size))
        return signing.sign_checkpoint(cp, signer or self.signer)

    # ------------------------------------------------------------------ bundles

    def commitment_at(self, size: int) -> dict[str, Any]:
        """The newest compliance.tenant_heads event a checkpoint of `size` covers."""
        seq = max(s for s in self.commitments if s <= size)
        return self.events[seq - 1]

    def checkpoint_proof(self, tenant_id: str | None, size: int) -> dict[str, Any]:
        commitment = self.commitment_at(size)
        described = json.loads(commitment["payload"])["tree_size"]
        heads = self.heads(described)
        index = self.tenants(described).index(tenant_id)
        k, root = self.head(tenant_id, described)
        return {
            "checkpoint": self.signed_checkpoint(size).decode("utf-8"),
            "commitment": {
                "line": encode(commitment).decode("utf-8"),
                "inclusion_proof": [
                    b64(h) for h in merkle.inclusion_proof(self.leaf_hashes[:size], commitment["seq"] - 1)
                ],
            },
            "head": {
                "tree_size": k,
                "root": b64(root),
                "index": index,
                "inclusion_proof": [b64(h) for h in merkle.inclusion_proof(heads, index)],
            },
        }

    def frontier(self, tenant_id: str | None, described: int) -> list[bytes]:
        frontier: list[bytes] = []
        size = 0
        for leaf in self.tenant_leaves(tenant_id, described):
            size = merkle.compact_range_push(frontier, size, leaf)
        return frontier

    def tenant_bundle(
        self, tenant_id: str | None, to: int, since: int | None = None, *, withhold: bool = False
    ) -> tuple[dict[str, Any], list[bytes]]:
        """The manifest (without data_sha256/data_bytes) and the lines of a tenant bundle."""
        n = json.loads(self.commitment_at(to)["payload"])["tree_size"]
        export_filter: dict[str, Any] = {"tenant_id": tenant_id, "to_checkpoint": to}
        section: dict[str, Any] = {"tenant_id": tenant_id, "to": self.checkpoint_proof(tenant_id, to)}
        k = len(self.tenant_leaves(tenant_id, n))
        k0 = 0
        if since is not None:
            n0 = json.loads(self.commitment_at(since)["payload"])["tree_size"]
            k0 = len(self.tenant_leaves(tenant_id, n0))
            export_filter["from_checkpoint"] = since
            section["from"] = self.checkpoint_proof(tenant_id, since) | {
                "frontier": [b64(h) for h in self.frontier(tenant_id, n0)]
            }
            section["consistency_proof"] = [
                b64(h) for h in merkle.consistency_proof(self.leaf_hashes[:to], since)
            ]
            leaves = self.tenant_leaves(tenant_id, n)
            section["tenant_consistency_proof"] = (
                [] if k0 == k else [b64(h) for h in merkle.consistency_proof(leaves, k0)]
            )
        export_filter["withhold_payloads"] = withhold
        selected = self.tenant_lines(tenant_id, n)[k0:k]
        lines = [encode(withheld(e) if withhold else e) for e in selected]
        manifest = {
            "format": "auditchain-export",
            "format_version": 4,
            "hash_version": 2,
            "mode": "tenant",
            "job_id": "0190f5b2-0000-7000-8000-000000000004",
            "requested_by": "auditor@example.com",
            "created_at": "2026-12-06T12:00:00.000000Z",
            "filter": export_filter,
            "seq_from": selected[0]["seq"] if selected else None,
            "seq_to": selected[-1]["seq"] if selected else None,
            "line_count": len(lines),
            "matched_count": len(lines),
            "withheld_payloads": withhold,
            "data_object": DATA,
            "database": {"system_identifier": SYSTEM_IDENTIFIER, "database_name": DATABASE},
            "tenant": section,
        }
        return manifest, lines


def write_folder(folder: Path, manifest: dict[str, Any], lines: list[bytes]) -> Path:
    """A folder bundle: the gzip data object, and manifest.json sealed with its digest and size."""
    folder.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(b"".join(line + b"\n" for line in lines), 6)
    (folder / DATA).write_bytes(data)
    sealed = manifest | {"data_sha256": hashlib.sha256(data).hexdigest(), "data_bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(sealed, indent=2, ensure_ascii=False), encoding="utf-8")
    return folder
