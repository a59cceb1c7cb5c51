"""C2SP tlog-checkpoint bodies (c2sp.org/tlog-checkpoint): the note text a log signs.

    auditchain/<system_identifier>/<database>
    <tree size, decimal>
    <base64 root hash>

auditchain writes no extension lines (monitors cannot audit them), and refuses to read any: a
checkpoint with more lines than these three is not one of ours. The origin names one log: the
PostgreSQL cluster (its system identifier, from pg_control_system()) and the database in it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from . import merkle, note
from .merkle import HASH_SIZE

ORIGIN_PREFIX = "auditchain/"
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_SYSTEM_IDENTIFIER = re.compile(r"[1-9][0-9]{0,19}")
_BASE64_ROOT = re.compile(r"[A-Za-z0-9+/]{43}=")


class CheckpointError(ValueError):
    """A checkpoint body that is not a well-formed auditchain checkpoint; one line naming why."""


def origin(system_identifier: int | str, database: str) -> str:
    """`auditchain/<system_identifier>/<database>`: unique per cluster and database. The database name
    must be usable in a note key name: no Unicode spaces, no '+', no control characters."""
    sysid = str(system_identifier)
    if not _SYSTEM_IDENTIFIER.fullmatch(sysid):
        raise CheckpointError(f"system identifier {sysid!r} is not a positive decimal number")
    name = f"{ORIGIN_PREFIX}{sysid}/{database}"
    if not database or not _usable_name(name):
        raise CheckpointError(
            f"database name {database!r} cannot be part of a checkpoint origin "
            "(it must be non-empty, without spaces, '+' or control characters)"
        )
    return name


def _usable_name(text: str) -> bool:
    return note.valid_name(text) and not any(c < " " for c in text)


def check_origin(text: str) -> None:
    if not _usable_name(text):
        raise CheckpointError(
            f"origin {text!r} is not a valid log name (no spaces, '+' or control characters)"
        )


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        """The note text: three lines, each ending in a newline."""
        check_origin(self.origin)
        if not 0 <= self.size < 2**63:
            raise CheckpointError(f"tree size {self.size} is out of range")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root is {len(self.root)} bytes, not {HASH_SIZE}")
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n".encode()


def parse(body: bytes) -> Checkpoint:
    """A Checkpoint from a note text (already verified: never read an unverified checkpoint)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("checkpoint is not valid UTF-8") from None
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(f"checkpoint has {len(lines)} lines, expected origin, size and root")
    if len(lines) > 3:
        raise CheckpointError("checkpoint has extension lines, which auditchain never writes")
    origin_line, size_line, root_line = lines
    # Any non-empty origin is a valid checkpoint (Go's sumdb uses "go.sum database tree"); only the
    # ones auditchain writes follow the no-space, no-'+' rule, and --origin pins the expected one.
    if not origin_line:
        raise CheckpointError("checkpoint has an empty origin line")
    if not _SIZE.fullmatch(size_line) or int(size_line) >= 2**63:
        raise CheckpointError(f"tree size {size_line!r} is not a decimal number without leading zeroes")
    if not _BASE64_ROOT.fullmatch(root_line):
        raise CheckpointError("root is not the base64 form of 32 bytes")
    try:
        root = base64.b64decode(root_line, validate=True)
    except binascii.Error:
        raise CheckpointError("root is not base64") from None
    if base64.b64encode(root).decode("ascii") != root_line:
        raise CheckpointError("root is not in canonical base64")
    return Checkpoint(origin_line, int(size_line), root)


def open_signed(signed: bytes, verifiers: Iterable[note.Verifier]) -> tuple[Checkpoint, note.OpenedNote]:
    """Verify a signed checkpoint against trusted keys, then read it. NoteError or CheckpointError."""
    opened = note.open_note(signed, verifiers)
    return parse(opened.text), opened


def verify_consistency(old: Checkpoint, new: Checkpoint, proof: list[bytes]) -> None:
    """Raise merkle.ProofError unless `new` extends `old`: same log, and the consistency proof shows
    old's tree is a prefix of new's. What `auditchain verify` checks between consecutive anchors."""
    if old.origin != new.origin:
        raise merkle.ProofError(f"checkpoints of two logs: {old.origin!r} and {new.origin!r}")
    merkle.verify_consistency(old.size, new.size, proof, old.root, new.root)
