"""Hash formats v1 and v2 (docs/hash-format.md) in pure Python, for verifying exported
events offline.

It must produce, byte for byte, what compliance.event_record, compliance.event_record_v2,
compliance.commitment and compliance.event_hash produce in the database (sql/20_hash.sql);
tests/py/test_hashing.py holds both to the documented known-answer vectors and to each other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")
HASH_VERSIONS = (1, 2)
RECORD_TAGS = {1: b"auditchain:v1", 2: b"auditchain:v2"}
GENESIS_HASH = bytes(32)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
# One event has exactly one textual form in a bundle: UTC, six fractional digits, "Z";
# lower-case hex; lower-case hyphenated UUIDs. Other spellings are refused, not guessed at.
_EXPORT_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_HEX_SALT = re.compile(r"[0-9a-f]{32}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class FieldError(ValueError):
    """An exported field that cannot be part of a record; the message starts with its name."""


def epoch_us(moment: datetime) -> int:
    """Microseconds since 1970-01-01T00:00:00Z of an aware datetime (exact integer arithmetic)."""
    if moment.tzinfo is None:
        raise FieldError("has no time zone")
    return (moment - _EPOCH) // _ONE_MICROSECOND


def parse_export_timestamp(value: Any) -> int:
    """Epoch microseconds of an exported timestamp such as 2024-05-01T12:00:00.000000Z."""
    if not isinstance(value, str) or not _EXPORT_TIMESTAMP.fullmatch(value):
        raise FieldError("is not a timestamp of the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        return epoch_us(datetime.fromisoformat(value))
    except ValueError:
        raise FieldError("is not a valid date and time") from None


def parse_hex_digest(value: Any) -> bytes:
    """32 bytes from 64 lower-case hex digits."""
    if not isinstance(value, str) or not _HEX_DIGEST.fullmatch(value):
        raise FieldError("is not 64 lower-case hex digits")
    return bytes.fromhex(value)


def parse_hex_salt(value: Any) -> bytes:
    """A v2 salt: 16 bytes from 32 lower-case hex digits."""
    if not isinstance(value, str) or not _HEX_SALT.fullmatch(value):
        raise FieldError("is not 32 lower-case hex digits")
    return bytes.fromhex(value)


def _event_id(value: Any) -> bytes:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise FieldError("is not a lower-case hyphenated UUID")
    return value.encode("ascii")


def _seq(value: Any) -> bytes:
    if type(value) is not int or value < 1:  # bool is an int subclass: refused on purpose
        raise FieldError("is not a positive integer")
    return b"%d" % value


def _timestamp(value: Any) -> bytes:
    return b"%d" % parse_export_timestamp(value)


def utf8(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (JSON "\ud800") have no UTF-8 form; PostgreSQL never exports them.
        raise FieldError("contains characters with no UTF-8 encoding") from None


def payload_digest(payload_text: str) -> bytes:
    """SHA-256 of the payload's canonical text (PostgreSQL's jsonb output), UTF-8 encoded."""
    return hashlib.sha256(utf8(payload_text)).digest()


def _payload_text(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("is not a string (the jsonb text of the payload)")
    utf8(value)
    return value


def _payload(value: Any) -> bytes:
    return payload_digest(_payload_text(value))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("is not a string")
    utf8(value)
    return value


def _length_prefixed(value: Any) -> bytes:
    """<octet length>:<UTF-8 text>, so that no text can imitate a line break or another field."""
    raw = utf8(_text(value))
    return b"%d:%s" % (len(raw), raw)


def _tenant(value: Any) -> bytes:
    return b"-" if value is None else _length_prefixed(value)


def _field(event: dict, name: str, encode: Callable[[Any], T]) -> T:
    try:
        return encode(event[name])
    except KeyError:
        raise FieldError(f"{name}: missing") from None
    except FieldError as exc:
        raise FieldError(f"{name}: {exc}") from None


def commitment(salt: bytes, value: str) -> bytes:
    """The v2 commitment to a payload text or an actor: SHA-256(salt || UTF-8 value)."""
    return hashlib.sha256(salt + utf8(value)).digest()


def hash_version(event: dict) -> int:
    """The line's hash_version: absent means 1 (every line before format v2 had none)."""
    version = event.get("hash_version", 1)
    if type(version) is not int or version not in HASH_VERSIONS:
        raise FieldError(f"hash_version: {version!r} is not one of {', '.join(map(str, HASH_VERSIONS))}")
    return version


def _committed(event: dict, name: str, encode: Callable[[Any], str]) -> bytes:
    """A v2 field's commitment: from the value and its salt ("<name>_salt"), or, once erased or
    withheld, as carried in "<name>_commitment"."""
    if name in event:
        salt = _field(event, f"{name}_salt", parse_hex_salt)
        return commitment(salt, _field(event, name, encode))
    return _field(event, f"{name}_commitment", parse_hex_digest)


def canonical_record(event: dict) -> bytes:
    """The canonical record of an exported event: its hashed fields, one per line.

    v1 (no "hash_version"): "payload" is the exact jsonb text; a withheld payload carries its
    digest in "payload_sha256" instead, which enters the record unchanged. v2
    ("hash_version": 2): the actor and the payload enter through their salted commitments,
    computed from "actor"/"actor_salt" and "payload"/"payload_salt", or carried as
    "actor_commitment"/"payload_commitment" for an erased or withheld value.

    Raises FieldError naming the first field that is missing or not of its form.
    """
    version = hash_version(event)
    if version == 1:
        if "payload" in event:
            digest = _field(event, "payload", _payload)
        else:
            digest = _field(event, "payload_sha256", parse_hex_digest)
        actor = _field(event, "actor", _length_prefixed)
    else:
        digest = _committed(event, "payload", _payload_text)
        actor = _committed(event, "actor", _text).hex().encode("ascii")
    return b"\n".join(
        (
            RECORD_TAGS[version],
            _field(event, "seq", _seq),
            _field(event, "event_id", _event_id),
            _field(event, "occurred_at", _timestamp),
            _field(event, "recorded_at", _timestamp),
            _field(event, "tenant_id", _tenant),
            _field(event, "event_type", _length_prefixed),
            actor,
            digest.hex().encode("ascii"),
        )
    )


def record_digest(record: bytes) -> bytes:
    """SHA-256 of a canonical record: what an excluded line of a bundle carries as record_sha256."""
    return hashlib.sha256(record).digest()


def event_hash_from_digest(prev_hash: bytes, record_sha256: bytes) -> bytes:
    """One link of the chain from the record's digest: SHA-256(prev_hash || record_sha256)."""
    return hashlib.sha256(prev_hash + record_sha256).digest()


def event_hash(prev_hash: bytes, record: bytes) -> bytes:
    """One link of the chain from the record itself: SHA-256(prev_hash || SHA-256(record))."""
    return event_hash_from_digest(prev_hash, record_digest(record))
