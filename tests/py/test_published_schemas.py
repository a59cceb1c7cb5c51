"""The JSON Schemas in python/auditchain/formats/schemas are the format specification outside
auditors read: what the database writes must satisfy them, and what breaks them must not."""

from __future__ import annotations

import json

from auditchain.formats import anchor_document, schemas
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
