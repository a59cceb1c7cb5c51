"""Strict JSON for documents an auditor's verifier reads: one meaning per byte string.

Duplicate keys, NaN/Infinity and absurdly long numbers are refused, because two JSON readers
could disagree about them and so see two different documents behind one digest.
"""

from __future__ import annotations

import json
from typing import Any


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {duplicate!r}")
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bounded_int(text: str) -> int:
    # No number in a bundle needs more; Python would refuse beyond 4300 digits with a confusing message.
    if len(text) > 20:
        raise ValueError("a number of more than 20 digits")
    return int(text)


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_pairs, parse_constant=_refuse_constant, parse_int=_bounded_int
)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """One strict JSON object from UTF-8 bytes; ValueError with a short reason otherwise."""
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not valid UTF-8") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:
        raise ValueError(f"malformed JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"a JSON {type(value).__name__} where an object was expected")
    return value
