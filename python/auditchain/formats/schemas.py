"""The published JSON Schemas (formats/schemas/*.schema.json) and validation against them.

The schema files are the format specification third-party verifiers read; this module only
loads them, so what our verifier enforces and what we publish cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_FILES = ("definitions.schema.json", "anchor.schema.json", "export-manifest.schema.json")
# jsonschema quotes the offending value; a message is cut here so that it stays one line.
MAX_MESSAGE = 200


def load(name: str) -> dict[str, Any]:
    return json.loads(files(__package__).joinpath("schemas", name).read_text(encoding="utf-8"))


@functools.cache
def registry() -> Registry:
    """Every published schema under its $id, so that their $refs resolve offline."""
    schemas = [load(file) for file in SCHEMA_FILES]
    return Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name), registry=registry())


def _describe(error: Any) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path) or "(top)"
    message = " ".join(error.message.split())
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return f"{where}: {message}"


def violations(name: str, document: Any) -> list[tuple[str, str]]:
    """(rule, one-line description) for each way document breaks schema `name`, in document order."""
    errors = sorted(validator(name).iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    return [(error.validator, _describe(error)) for error in errors]
