"""The anchor functions where real commits and several sessions matter: uploaders never take
the same anchor (leases, and the deprecated row-locking claim), a crash before commit leaves
it pending, create_anchor wakes the uploader and two concurrent calls record one anchor."""

from __future__ import annotations

import threading

import psycopg

from test_anchor import create_anchor, emit_and_drain


def claim(conn: psycopg.Connection, max_anchors: int) -> list[int]:
    rows = conn.execute("SELECT seq_to FROM compliance.claim_pending_anchors(%s)", (max_anchors,)).fetchall()
    return [seq_to for (seq_to,) in rows]


def lease(conn: psycopg.Connection, uploader: str) -> list[int]:
    rows = conn.execute("SELECT seq_to FROM compliance.claim_next_anchor(%s)", (uploader,)).fetchall()
    return [seq_to for (seq_to,) in rows]


def test_concurrent_leases_never_take_the_same_anchor(conn, dsn):
    emit_and_drain(conn, 1)
    create_anchor(conn)
    emit_and_drain(conn, 1)
    create_anchor(conn)

    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        assert lease(first, "first") == [1]  # not yet committed: the row is locked
        assert lease(second, "second") == [2]
        first.commit()
        assert lease(second, "second") == []
        # The deprecated claim leaves leased anchors alone too.
        assert claim(second, 10) == []
    holders = conn.execute("SELECT claimed_by FROM compliance.anchors ORDER BY seq_to").fetchall()
    assert holders == [("first",), ("second",)]


def test_uploaders_never_take_the_same_anchor_and_a_rollback_returns_it(conn, dsn):
    emit_and_drain(conn, 1)
    create_anchor(conn)
    emit_and_drain(conn, 1)
    create_anchor(conn)

    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        assert claim(first, 1) == [1]
        assert claim(second, 10) == [2]
        first.rollback()
        second.rollback()
        assert claim(second, 10) == [1, 2]


def test_uploader_killed_before_commit_leaves_the_anchor_pending(conn, dsn):
    emit_and_drain(conn, 2)
    create_anchor(conn)
    (anchor_id,) = conn.execute("SELECT anchor_id FROM compliance.anchors").fetchone()

    uploader = psycopg.connect(dsn)
    try:
        assert claim(uploader, 1) == [2]
        uploader.execute(
            "SELECT compliance.record_anchor_upload(a.anchor_id, 'b', 'anchors/' || lpad('2', 20, '0') || '-'"
            " || a.cadence_id || '.json', 'v1', 'GOVERNANCE', now() + interval '1 day', NULL,"
            " a.checkpoint || E'\\n— test-key 3q2+7wAAAAA=\\n',"
            " 'checkpoints/' || lpad('2', 20, '0') || '-' || a.cadence_id || '.checkpoint', 'c1')"
            " FROM compliance.anchors AS a WHERE a.anchor_id = %s",
            (anchor_id,),
        )
        conn.execute("SELECT pg_terminate_backend(%s, 10000)", (uploader.info.backend_pid,))
    finally:
        uploader.close()

    row = conn.execute("SELECT status::text, attempts, version_id FROM compliance.anchors").fetchone()
    assert row == ("pending", 0, None)
    assert claim(conn, 1) == [2]


def test_create_anchor_notifies_the_uploader_with_the_cadence_id(conn, dsn):
    emit_and_drain(conn, 1)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN auditchain_anchor")
        cadence = create_anchor(conn)
        payloads = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
        assert create_anchor(conn) is None
        assert [n.payload for n in listener.notifies(timeout=0.5)] == []
    assert payloads == [cadence]


def test_concurrent_create_anchor_calls_record_one_anchor(conn, dsn):
    emit_and_drain(conn, 3)
    results: list[str | None] = []

    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        results.append(create_anchor(first))  # holds the creator lock until commit
        waiter = threading.Thread(target=lambda: results.append(create_anchor(second)))
        waiter.start()
        waiter.join(timeout=1)
        assert waiter.is_alive(), "the second call must wait for the first to commit"
        first.commit()
        waiter.join(timeout=30)
        second.commit()

    assert results[0] is not None and results[1] is None
    assert conn.execute("SELECT count(*) FROM compliance.anchors").fetchone()[0] == 1
