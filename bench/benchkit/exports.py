"""Cases export and verify-bundle: waiting for auditchain.export and auditchain.bundle."""

from __future__ import annotations

import importlib.util

from .ledger import Ledger, human
from .results import Row

EXPORT_MODULE = "auditchain.export"
BUNDLE_MODULE = "auditchain.bundle"


def missing(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{module} not available yet"
    return None


def run_export(ledger: Ledger, *, size: int) -> Row:
    return Row(
        case="export",
        variant=f"events={human(size)}",
        unit="events/s",
        reference_name="",
        skipped=missing(EXPORT_MODULE) or "not written yet",
    )


def run_verify_bundle(ledger: Ledger, *, size: int) -> Row:
    return Row(
        case="verify_bundle",
        variant=f"events={human(size)}",
        unit="bytes/s",
        reference_name="sha256sum over the same bytes",
        skipped=missing(BUNDLE_MODULE) or missing(EXPORT_MODULE) or "not written yet",
    )
