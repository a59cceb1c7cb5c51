"""The verifier keys an auditor trusts (--vkey), as `verify-proof` and `verify-bundle` read them:
never a key taken from the receipt or the bundle being checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EXIT_USAGE, AuditchainError
from ..formats import note


def add_vkey_option(parser: argparse.ArgumentParser, *, required: bool, applies_to: str = "") -> None:
    parser.add_argument(
        "--vkey",
        action="append",
        required=required,
        default=None if required else [],
        metavar="VKEY",
        help="a trusted verifier key (name+id+key), or a file holding one per line; repeat to trust "
        f"several (for example the old and the new key during a rotation){applies_to}",
    )


def read_verifiers(values: list[str]) -> list[note.Verifier]:
    """Each --vkey is a verifier key, or the path of a file holding one per line."""
    verifiers = []
    for value in values:
        if "+" in value:
            lines = [value]
        else:
            try:
                lines = [
                    line for line in Path(value).read_text(encoding="utf-8").splitlines() if line.strip()
                ]
            except (OSError, UnicodeDecodeError) as exc:
                raise AuditchainError(
                    f"cannot read the verifier key file {value}: {type(exc).__name__}", EXIT_USAGE
                ) from None
        for line in lines:
            try:
                verifiers.append(note.parse_vkey(line))
            except note.NoteError as exc:
                raise AuditchainError(str(exc), EXIT_USAGE) from None
    if not verifiers:
        raise AuditchainError("no verifier key given", EXIT_USAGE)
    return verifiers
