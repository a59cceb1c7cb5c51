"""compliance.emit_batch: the ids come back in array order, the events are chained in that
order with exactly the fields sent, and a refused batch leaves nothing behind."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb


def batch(count: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {
            "event_type": "batch.imported",
            "actor": f"user:{start + i}",
            "payload": {"n": start + i, "note": "é\u2028"},
            **({"tenant_id": f"tenant-{i % 3}"} if i % 2 else {}),
            **({"occurred_at": f"2026-01-01T00:00:{i % 60:02d}.{i:06d}Z"} if i % 5 == 0 else {}),
        }
        for i in range(count)
    ]


def test_ids_come_back_in_array_order_and_are_chained_in_that_order(conn):
    events = batch(300)
    ids = conn.execute("SELECT compliance.emit_batch(%s)", (Jsonb(events),)).fetchone()[0]

    assert len(ids) == len(events) == len(set(ids))
    assert all(uuid.UUID(str(i)).version == 7 for i in ids)
    conn.execute("SELECT compliance.drain(1000)")
    rows = conn.execute(
        "SELECT event_id, actor, tenant_id, payload, occurred_at FROM compliance.audit_events ORDER BY seq"
    ).fetchall()
    assert [r[0] for r in rows] == ids
    for sent, (_, actor, tenant_id, payload, occurred_at) in zip(events, rows, strict=True):
        assert (actor, tenant_id, payload) == (sent["actor"], sent.get("tenant_id"), sent["payload"])
        if "occurred_at" in sent:
            assert occurred_at == datetime.fromisoformat(str(sent["occurred_at"])).astimezone(UTC)
    assert conn.execute("SELECT ok FROM compliance.verify_chain()").fetchone()[0] is True


def test_batches_and_single_emits_keep_their_call_order(conn):
    first = conn.execute("SELECT compliance.emit('single.before', 'a')").fetchone()[0]
    middle = conn.execute("SELECT compliance.emit_batch(%s)", (Jsonb(batch(3)),)).fetchone()[0]
    last = conn.execute("SELECT compliance.emit('single.after', 'b')").fetchone()[0]
    conn.execute("SELECT compliance.drain(100)")

    chained = [r[0] for r in conn.execute("SELECT event_id FROM compliance.audit_events ORDER BY seq")]
    assert chained == [first, *middle, last]


def test_a_refused_batch_writes_nothing_and_names_the_element(conn):
    events = batch(10)
    events[7]["actor"] = "   "
    events[9]["event_type"] = "Not.Valid"

    with pytest.raises(psycopg.Error) as refused:
        conn.execute("SELECT compliance.emit_batch(%s)", (Jsonb(events),))

    assert refused.value.sqlstate == "AC002"
    assert refused.value.diag.message_primary.startswith("events[7]: ")
    assert refused.value.diag.message_detail == "index=7"
    assert conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0] == 0


def test_a_writer_login_can_call_it(conn, dsn):
    conn.execute("CREATE ROLE ac_batch_writer LOGIN IN ROLE compliance_writer")
    try:
        writer_dsn = psycopg.conninfo.make_conninfo(dsn, user="ac_batch_writer")
        with psycopg.connect(writer_dsn, autocommit=True) as writer:
            sent = json.dumps(batch(2))
            ids = writer.execute("SELECT compliance.emit_batch(%s::jsonb)", (sent,)).fetchone()[0]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                writer.execute("SELECT count(*) FROM compliance.audit_outbox")
        assert len(ids) == 2
    finally:
        conn.execute("DROP OWNED BY ac_batch_writer")
        conn.execute("DROP ROLE ac_batch_writer")
