"""The export bundle's manifest (manifest.json): read, held to the published schema
(schemas/export-manifest.schema.json) and to its own arithmetic. docs/bundle-verification.md
describes every field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import hashing, schemas
from .export_filter import ExportFilter, FilterError, from_manifest
from .strictjson import parse_json_object

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "auditchain-export"
SCHEMA = "export-manifest.schema.json"
# Versions this verifier reads; compliance.export_plan writes the last one. Each manifest
# version states the newest hash format its lines may use: version 3 and 4 bundles mix v1
# lines (no "hash_version" field) and v2 lines ("hash_version": 2). Version 4 names its mode.
FORMAT_VERSIONS = (1, 2, 3, 4)
HASH_VERSION_OF_FORMAT = {1: 1, 2: 1, 3: 2, 4: 2}
RANGE, TENANT = "range", "tenant"
# Where the schema lets a manifest go on being checked: a field beside the format's own.
_EXTRA_FIELD_RULES = ("additionalProperties", "unevaluatedProperties")
_DIGESTS = ("range_prev_hash", "data_sha256")
_ANCHOR_DIGESTS = ("cadence_id", "head_hash", "document_digest")


class UnusableManifest(ValueError):
    """A manifest no verification can start from; the message says why."""


@dataclass
class Manifest:
    fields: dict[str, Any]
    export_filter: ExportFilter
    anchors: list[dict[str, Any]]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    @property
    def mode(self) -> str:
        """ "range" (every bundle before format version 4) or "tenant"."""
        return self.fields.get("mode", RANGE)

    @property
    def database(self) -> dict[str, str]:
        return self.fields["database"]

    @property
    def expected_lines(self) -> int:
        if self.mode == TENANT:
            return self["line_count"]
        if self["seq_from"] is None:
            return 0
        return self["seq_to"] - self["seq_from"] + 1


def load(raw: bytes) -> tuple[Manifest, list[str]]:
    """The manifest and the inconsistencies it carries (each a failed check). A field the
    format does not have is such a failure; any other departure from the schema, or a
    manifest this verifier cannot read, raises UnusableManifest."""
    try:
        document = parse_json_object(raw)
    except ValueError as exc:
        raise UnusableManifest(f"{MANIFEST_NAME} is not usable: {exc}") from None
    if document.get("format") != MANIFEST_FORMAT:
        raise UnusableManifest(
            f"{MANIFEST_NAME} is not an {MANIFEST_FORMAT} manifest (format {document.get('format')!r})"
        )
    version = document.get("format_version")
    if type(version) is not int or version not in FORMAT_VERSIONS:
        raise UnusableManifest(
            f"{MANIFEST_NAME} has format_version {version!r}; this verifier reads versions "
            f"{', '.join(map(str, FORMAT_VERSIONS))}"
        )
    if document.get("hash_version") != HASH_VERSION_OF_FORMAT[version]:
        raise UnusableManifest(
            f"{MANIFEST_NAME} has hash_version {document.get('hash_version')!r}; "
            f"format_version {version} carries hash_version {HASH_VERSION_OF_FORMAT[version]}"
        )
    problems = []
    for rule, description in schemas.violations(SCHEMA, document):
        # A field added beside the format's own is reported and verification goes on; a
        # filter key the database does not know makes the filter, and so the bundle, unusable.
        if rule not in _EXTRA_FIELD_RULES or description.startswith(".filter"):
            raise UnusableManifest(f"{MANIFEST_NAME} does not follow format v{version}: {description}")
        problems.append(f"{description}: not part of manifest format v{version}")
    # A pattern cannot tell 2026-02-30 from a date.
    instants = {"created_at": document["created_at"]}
    if version > 1:
        instants |= {f"filter.{key}": document["filter"].get(key) for key in ("from", "to")}
    for name, value in instants.items():
        try:
            if value is not None:
                hashing.parse_export_timestamp(value)
        except hashing.FieldError as exc:
            raise UnusableManifest(f"{MANIFEST_NAME} field {name} {exc}") from None
    if document.get("mode") == TENANT:
        manifest = _tenant_manifest(document)
        return manifest, problems + _tenant_inconsistencies(manifest)
    try:
        export_filter = from_manifest(document["filter"], version)
    except FilterError as exc:
        raise UnusableManifest(f"{MANIFEST_NAME} has a filter no export can have: {exc}") from None

    fields = dict(document)
    for name in _DIGESTS:
        if fields[name] is not None:
            fields[name] = bytes.fromhex(fields[name])
    anchors = [
        {**anchor, **{name: bytes.fromhex(anchor[name]) for name in _ANCHOR_DIGESTS}}
        for anchor in document["anchors"]
    ]
    _check_seq_bounds(fields["seq_from"], fields["seq_to"])
    if (fields["seq_from"] is None) != (fields["range_prev_hash"] is None):
        raise UnusableManifest(f"{MANIFEST_NAME} has a range_prev_hash exactly when it has a range")
    manifest = Manifest(fields, export_filter, anchors)
    return manifest, problems + _inconsistencies(manifest)


def _check_seq_bounds(seq_from: int | None, seq_to: int | None) -> None:
    if (seq_from is None) != (seq_to is None):
        raise UnusableManifest(f"{MANIFEST_NAME} has only one of seq_from and seq_to")
    if seq_from is not None and seq_to is not None and seq_from > seq_to:
        raise UnusableManifest(f"{MANIFEST_NAME} range seq {seq_from}..{seq_to} is not a range of seqs")


def _tenant_manifest(document: dict[str, Any]) -> Manifest:
    """A tenant-mode manifest: its lines are checked against the tenant section's proofs
    (offline/tenant.py), so the filter selects by nothing but withhold_payloads here."""
    _check_seq_bounds(document["seq_from"], document["seq_to"])
    export_filter = ExportFilter(withhold_payloads=document["filter"]["withhold_payloads"])
    return Manifest(document | {"data_sha256": bytes.fromhex(document["data_sha256"])}, export_filter, [])


def _tenant_inconsistencies(manifest: Manifest) -> list[str]:
    problems = []
    filter_, tenant = manifest["filter"], manifest["tenant"]
    if manifest["matched_count"] != manifest["line_count"]:
        problems.append(
            f"matched_count {manifest['matched_count']} but a tenant bundle's {manifest['line_count']} "
            "lines are all matched"
        )
    if (manifest["seq_from"] is None) != (manifest["line_count"] == 0):
        problems.append("seq_from and seq_to are null exactly when a tenant bundle has no lines")
    if manifest["withheld_payloads"] != filter_["withhold_payloads"]:
        problems.append(
            f"withheld_payloads is {str(manifest['withheld_payloads']).lower()} but the filter's "
            f"withhold_payloads is {str(filter_['withhold_payloads']).lower()}"
        )
    if filter_["tenant_id"] != tenant["tenant_id"]:
        problems.append(
            f"the filter's tenant_id {filter_['tenant_id']!r} is not the tenant section's "
            f"{tenant['tenant_id']!r}"
        )
    if ("from_checkpoint" in filter_) != ("from" in tenant):
        problems.append(
            "the filter has a from_checkpoint exactly when the tenant section has a from checkpoint"
        )
    return problems


def _inconsistencies(manifest: Manifest) -> list[str]:
    problems = []
    expected = manifest.expected_lines
    if manifest["line_count"] != expected:
        problems.append(f"line_count {manifest['line_count']} but the range seq_from..seq_to has {expected}")
    if manifest["matched_count"] > manifest["line_count"]:
        problems.append(f"matched_count {manifest['matched_count']} exceeds line_count")
    if manifest["withheld_payloads"] != manifest.export_filter.withhold_payloads:
        problems.append(
            f"withheld_payloads is {str(manifest['withheld_payloads']).lower()} but the filter's "
            f"withhold_payloads is {str(manifest.export_filter.withhold_payloads).lower()}"
        )
    if manifest["seq_from"] == 1 and manifest["range_prev_hash"] != hashing.GENESIS_HASH:
        problems.append("range_prev_hash of a range starting at seq 1 must be 32 zero bytes (the genesis)")
    return problems
