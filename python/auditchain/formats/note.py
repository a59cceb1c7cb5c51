"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, as Go's golang.org/x/mod/sumdb/note
reads and writes them.

    <text ending in a newline>
    <blank line>
    — <key name> base64(key ID[4] || signature)

Keys travel in the note formats: the verifier key (vkey) `<name>+<hex key ID>+base64(0x01 || public
key)` is public and one line; the signer key (skey) `PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 ||
32-byte seed)` is secret. The key ID is SHA-256(name || 0x0A || 0x01 || public key)[:4].
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = 0x01
SKEY_PREFIX = "PRIVATE+KEY+"
SIGNATURE_PREFIX = "— "  # em dash, space
# Go's note.Open refuses more; the spec asks verifiers to accept at least 16.
MAX_SIGNATURES = 100

_HEX_ID = re.compile(r"[0-9a-f]{8}")


class NoteError(ValueError):
    """A key or a note that cannot be used; the message is one line naming why."""


class MalformedNote(NoteError):
    pass


class BadSignature(NoteError):
    """A signature by a known key that does not verify: the note was altered or signed by another key."""


class UnverifiedNote(NoteError):
    """No signature by any of the trusted keys."""


def valid_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces or '+' (they are the first field of a vkey)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def _require_name(name: str) -> None:
    if not valid_name(name):
        raise NoteError(f"invalid key name {name!r}: it must be non-empty, without spaces or '+'")


def key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4]: the 4 bytes that open every signature."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def encode_vkey(name: str, public_key: bytes) -> str:
    _require_name(name)
    if len(public_key) != 32:
        raise NoteError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
    b64 = base64.b64encode(bytes([ALG_ED25519]) + public_key).decode("ascii")
    return f"{name}+{key_id(name, public_key).hex()}+{b64}"


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _split_key(text: str, what: str) -> tuple[str, bytes, bytes]:
    """name, key ID and decoded key material of `name+hex+b64` (the part after PRIVATE+KEY+ for skeys)."""
    parts = text.split("+", 2)  # base64 may contain "+": only the first two separate fields
    if len(parts) != 3:
        raise NoteError(f"malformed {what}: expected <name>+<key id>+<base64 key>")
    name, hex_id, b64 = parts
    if not valid_name(name):
        raise NoteError(f"malformed {what}: invalid key name")
    if not _HEX_ID.fullmatch(hex_id):
        raise NoteError(f"malformed {what}: key id is not 8 lower-case hex digits")
    try:
        material = _b64decode(b64)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError(f"malformed {what}: key is not base64") from None
    if len(material) != 33 or material[0] != ALG_ED25519:
        raise NoteError(f"malformed {what}: not an Ed25519 key (algorithm 0x01, 32 bytes)")
    return name, bytes.fromhex(hex_id), material[1:]


@dataclass(frozen=True)
class Verifier:
    """A trusted public key: it verifies signatures that carry its name and key ID."""

    name: str
    key_id: bytes
    public_key: bytes

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @property
    def vkey(self) -> str:
        return encode_vkey(self.name, self.public_key)


def parse_vkey(text: str) -> Verifier:
    """A Verifier from its one-line vkey; NoteError naming the problem (a wrong key ID too)."""
    name, kid, public_key = _split_key(text.strip(), "verifier key")
    if key_id(name, public_key) != kid:
        raise NoteError("malformed verifier key: the key id does not match the name and key")
    return Verifier(name, kid, public_key)


class Signer(Protocol):
    """Anything that signs note text: a local key or a key held by a KMS."""

    @property
    def name(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class LocalSigner:
    """An Ed25519 signer from a skey. Its repr never shows the key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey):
        _require_name(name)
        self._name = name
        self._key = private_key
        self._public = private_key.public_key().public_bytes_raw()

    @property
    def name(self) -> str:
        return self._name

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"LocalSigner({self._name!r})"


def parse_skey(text: str) -> LocalSigner:
    """A LocalSigner from a PRIVATE+KEY+... line. Errors never quote the key."""
    text = text.strip()
    if not text.startswith(SKEY_PREFIX):
        raise NoteError("malformed signer key: it does not start with PRIVATE+KEY+")
    name, kid, seed = _split_key(text[len(SKEY_PREFIX) :], "signer key")
    signer = LocalSigner(name, Ed25519PrivateKey.from_private_bytes(seed))
    if key_id(name, signer.public_key) != kid:
        raise NoteError("malformed signer key: the key id does not match the name and key")
    return signer


def generate_skey(name: str) -> str:
    """A new random Ed25519 signer key in the skey format."""
    _require_name(name)
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    public = key.public_key().public_bytes_raw()
    b64 = base64.b64encode(bytes([ALG_ED25519]) + seed).decode("ascii")
    return f"{SKEY_PREFIX}{name}+{key_id(name, public).hex()}+{b64}"


def _check_text(data: bytes) -> None:
    """Signed notes are UTF-8 without ASCII control characters other than newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNote("malformed note: not valid UTF-8") from None
    if any(c < " " and c != "\n" for c in text):
        raise MalformedNote("malformed note: control character")


def sign(text: bytes, signers: Sequence[Signer]) -> bytes:
    """The signed note: text (which must end in a newline), a blank line, one line per signer."""
    if not text.endswith(b"\n"):
        raise MalformedNote("malformed note: the text does not end in a newline")
    _check_text(text)
    lines = []
    seen = set()
    for signer in signers:
        kid = key_id(signer.name, signer.public_key)
        if (signer.name, kid) in seen:
            raise NoteError(f"duplicate signer {signer.name}")
        seen.add((signer.name, kid))
        signature = signer.sign(text)
        # A KMS answer that does not verify must not become a published signature.
        if not Verifier(signer.name, kid, signer.public_key).verify(text, signature):
            raise NoteError(f"signer {signer.name} returned a signature that does not verify")
        b64 = base64.b64encode(kid + signature).decode("ascii")
        lines.append(f"{SIGNATURE_PREFIX}{signer.name} {b64}\n".encode())
    if not lines:
        raise NoteError("no signer")
    return text + b"\n" + b"".join(lines)


@dataclass(frozen=True)
class OpenedNote:
    text: bytes
    verified_by: tuple[str, ...]  # vkeys of the trusted keys whose signatures verified
    unverified: tuple[str, ...]  # signature lines from keys not trusted here, ignored


def open_note(note: bytes, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Check a signed note against trusted keys as Go's note.Open does: signatures from unknown keys
    are ignored, a known key's failed signature rejects the note, and at least one must verify."""
    _check_text(note)
    split = note.rfind(b"\n\n")
    if split < 0:
        raise MalformedNote("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith(b"\n"):
        raise MalformedNote("malformed note: no signature lines, or the last one does not end in a newline")
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[str] = []
    unverified: list[str] = []
    lines = block.decode("utf-8").split("\n")[:-1]
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"malformed note: more than {MAX_SIGNATURES} signatures")
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise MalformedNote("malformed note: a signature line does not start with '— '")
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        try:
            raw = _b64decode(b64)
        except (binascii.Error, UnicodeEncodeError):
            raw = b""
        if not valid_name(name) or len(raw) < 5:
            raise MalformedNote(f"malformed note: unreadable signature line for {name!r}")
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            if line not in unverified:
                unverified.append(line)
            continue
        if verifier.vkey in verified:
            continue
        if not verifier.verify(text, raw[4:]):
            raise BadSignature(f"invalid signature for key {name}+{raw[:4].hex()}")
        verified.append(verifier.vkey)
    if not verified:
        raise UnverifiedNote("no signature by a trusted key (signed by another key?)")
    return OpenedNote(text, tuple(verified), tuple(unverified))
