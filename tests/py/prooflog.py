"""A log of synthetic events in memory, with the tree, signed checkpoints and receipts auditchain
produces for it: what the proof tests and the Go oracle check, without a database."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from auditchain import signing
from auditchain.formats import checkpoint, hashing, merkle, note, receipt

ORIGIN = "auditchain/7312345678901234567/appdb"


def event_line(seq: int, prev_hash: bytes) -> tuple[bytes, bytes]:
    """An event's bundle line (compact JSON, as compliance.export_lines writes it) and its chain hash."""
    event = {
        "seq": seq,
        "event_id": str(uuid.UUID(int=seq)),
        "occurred_at": f"2026-12-06T10:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq % 1000000:06d}Z",
        "recorded_at": f"2026-12-06T11:{seq // 60 % 60:02d}:{seq % 60:02d}.000001Z",
        "tenant_id": None if seq % 3 == 0 else f"tenant-{seq % 7}",
        "event_type": "invoice.paid",
        "actor": f"user-{seq % 11}é",
        "payload": json.dumps({"amount": seq, "note": "ünïcode"}, ensure_ascii=False),
    }
    record = hashing.canonical_record(event)
    chained = hashing.event_hash(prev_hash, record)
    line = {**event, "prev_hash": prev_hash.hex(), "event_hash": chained.hex()}
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode(), chained


@dataclass
class ProofLog:
    signer: note.Signer
    lines: list[bytes] = field(default_factory=list)
    leaf_hashes: list[bytes] = field(default_factory=list)

    @classmethod
    def of_size(cls, n: int, signer: note.Signer | None = None) -> ProofLog:
        log = cls(signer or note.parse_skey(note.generate_skey(ORIGIN)))
        prev = hashing.GENESIS_HASH
        for seq in range(1, n + 1):
            line, prev = event_line(seq, prev)
            log.lines.append(line)
            log.leaf_hashes.append(merkle.leaf_hash(receipt.event_leaf(json.loads(line))))
        return log

    @property
    def vkey(self) -> str:
        return note.encode_vkey(self.signer.name, self.signer.public_key)

    def root(self, size: int) -> bytes:
        return merkle.root_from_leaf_hashes(self.leaf_hashes[:size])

    def signed_checkpoint(self, size: int) -> bytes:
        return signing.sign_checkpoint(checkpoint.Checkpoint(ORIGIN, size, self.root(size)), self.signer)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(self.leaf_hashes[:size], index)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return merkle.consistency_proof(self.leaf_hashes[:size2], size1)

    def receipt(self, seq: int, size: int) -> bytes:
        index = seq - 1
        return receipt.build_receipt(
            index, self.inclusion_proof(index, size), self.signed_checkpoint(size), self.lines[index]
        )
