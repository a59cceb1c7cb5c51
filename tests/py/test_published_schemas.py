"""The JSON Schemas in python/auditchain/formats/schemas are the format specification outside
auditors read: what the database writes must satisfy them, and what breaks them must not."""

from __future__ import annotations

import json

from auditchain.formats import anchor_document, manifest, schemas
from tenantlog import TenantLog
from test_anchor import create_anchor, emit_and_drain


def anchor_documents(conn) -> list[dict]:
    rows = conn.execute("SELECT document FROM compliance.anchors ORDER BY seq_to").fetchall()
    return [json.loads(document) for (document,) in rows]


def test_the_anchor_documents_create_anchor_writes_satisfy_the_published_schema(conn):
    emit_and_drain(conn, 3)
    create_anchor(conn)
    emit_and_drain(conn, 2)
    create_anchor(conn)
    first, second = anchor_documents(conn)
    for document in (first, second):
        assert schemas.violations(anchor_document.SCHEMA, document) == []
    assert (first["seq_from"], second["seq_from"], first["prev_anchor_digest"]) == (1, 4, None)

    for broken in ({"approved_by": "x"}, {"head_hash": first["head_hash"].upper()}, {"seq_to": "3"}):
        assert schemas.violations(anchor_document.SCHEMA, first | broken) != [], broken


def test_the_manifest_schema_reads_tenant_mode_and_each_mode_has_its_own_fields():
    """A tenant bundle's manifest (format 4) as tests/py/tenantlog.py writes it, to the spec the
    export runner follows; a range manifest of format 4 is format 3 with "mode": "range"."""
    log = TenantLog.create()
    for n in range(1, 30):
        log.emit(("acme", None)[n % 2], n)
        if n % 10 == 0:
            log.commit_heads()
    tenant, _ = log.tenant_bundle("acme", log.size, since=log.commitments[0])
    tenant |= {"data_sha256": "0" * 64, "data_bytes": 1}
    assert schemas.violations(manifest.SCHEMA, tenant) == []
    rules = {rule for rule, _ in schemas.violations(manifest.SCHEMA, tenant | {"anchors": []})}
    assert rules == {"unevaluatedProperties"}, "a range field in a tenant manifest is not part of it"
    assert schemas.violations(manifest.SCHEMA, tenant | {"format_version": 3}) != []
    assert schemas.violations(manifest.SCHEMA, {k: v for k, v in tenant.items() if k != "mode"}) != []
