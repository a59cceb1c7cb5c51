"""The drainer under real concurrency and crashes, with real commits: producers on several
connections emit while compliance.run_drainer loops; the drainer's backend is killed
mid-run; a second drainer gives way; the drainer role alone can run the loop and record a
halt. After each, every emitted event is in the chain exactly once, seq has no gap and
verify_chain and verify_tree pass.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

PRODUCERS = 8
EVENTS_PER_PRODUCER = 5000
EMIT_BATCH = 50  # events per producer transaction
DRAINER_APP = "ledger-test-drainer"
EMIT = "SELECT compliance.emit(%s, %s, %s::jsonb, %s)"


def produce(dsn: str, producer: int, out: list, keep_going: threading.Event | None) -> None:
    """Emit EVENTS_PER_PRODUCER events in transactions of EMIT_BATCH, and more while keep_going
    is set; append their ids in order."""
    with psycopg.connect(dsn) as conn:
        start = 0
        while start < EVENTS_PER_PRODUCER or (keep_going is not None and keep_going.is_set()):
            params = [
                (
                    "load.generated",
                    f"producer-{producer}",
                    f'{{"n": {n}, "producer": {producer}}}',
                    f"tenant-{n % 4}" if n % 5 else None,
                )
                for n in range(start, start + EMIT_BATCH)
            ]
            with conn.cursor() as cur:
                cur.executemany(EMIT, params, returning=True)
                while True:
                    out.append(cur.fetchone()[0])
                    if not cur.nextset():
                        break
            conn.commit()
            start += EMIT_BATCH


class Drainer(threading.Thread):
    """Calls run_drainer in short runs on its own connection until stopped, reconnecting
    whenever its backend is killed."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.killed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    with psycopg.connect(self.dsn, autocommit=True, application_name=DRAINER_APP) as conn:
                        while not self.stop.is_set():
                            conn.execute("CALL compliance.run_drainer('1 second', 1000, 0.02)")
                except psycopg.OperationalError:
                    self.killed += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc


@contextmanager
def running_drainer(dsn: str) -> Iterator[Drainer]:
    drainer = Drainer(dsn)
    drainer.start()
    try:
        yield drainer
    finally:
        drainer.stop.set()
        drainer.join(timeout=30)
    assert drainer.error is None, drainer.error


def run_producers(
    dsn: str, keep_going: threading.Event | None = None
) -> tuple[list[list], list[threading.Thread]]:
    emitted: list[list] = [[] for _ in range(PRODUCERS)]
    threads = [
        threading.Thread(target=produce, args=(dsn, p, emitted[p], keep_going)) for p in range(PRODUCERS)
    ]
    for thread in threads:
        thread.start()
    return emitted, threads


def wait_until_drained(conn: psycopg.Connection, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT EXISTS (SELECT 1 FROM compliance.audit_outbox)").fetchone()[0]:
        assert time.monotonic() < deadline, "the outbox did not drain"
        time.sleep(0.2)


def assert_ledger_intact(conn: psycopg.Connection, emitted: list[list]) -> None:
    expected = sum(map(len, emitted))
    assert expected >= PRODUCERS * EVENTS_PER_PRODUCER
    count, distinct, low, high = conn.execute(
        "SELECT count(*), count(DISTINCT event_id), min(seq), max(seq) FROM compliance.audit_events"
    ).fetchone()
    assert (count, distinct, low, high) == (expected, expected, 1, expected), "every event once, seq gapless"
    seq_of = dict(conn.execute("SELECT event_id, seq FROM compliance.audit_events").fetchall())
    assert set(seq_of) == {event_id for ids in emitted for event_id in ids}, "exactly the emitted events"
    for ids in emitted:
        seqs = [seq_of[event_id] for event_id in ids]
        assert seqs == sorted(seqs), "each producer's events are chained in the order it emitted them"
    assert conn.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
    ).fetchone() == (True, expected, None, None)
    # Killed batches left no half-built tree: it still covers exactly the chain.
    assert conn.execute("SELECT * FROM compliance.verify_tree()").fetchone() == (True, expected, None)
    assert conn.execute("SELECT last_seq, halted_at FROM compliance.drainer_state").fetchone() == (
        expected,
        None,
    )


@pytest.mark.slow
def test_concurrent_producers_while_the_drainer_runs(dsn, conn):
    with running_drainer(dsn):
        emitted, producers = run_producers(dsn)
        for thread in producers:
            thread.join()
        wait_until_drained(conn)
    assert_ledger_intact(conn, emitted)


@pytest.mark.slow
def test_drainer_killed_ten_times_under_load(dsn, conn):
    kills_under_load = 0
    under_load = threading.Event()
    under_load.set()  # producers keep emitting until the ten kills are done
    with running_drainer(dsn) as drainer:
        emitted, producers = run_producers(dsn, under_load)
        rng = random.Random(20261128)
        kills = 0
        while kills < 10:
            time.sleep(rng.uniform(0.05, 0.3))
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database() AND state = 'active'",
                (DRAINER_APP,),
            ).fetchall()
            if killed and killed[0][0]:
                kills += 1
                kills_under_load += all(t.is_alive() for t in producers)
        under_load.clear()
        for thread in producers:
            thread.join()
        wait_until_drained(conn)
    assert drainer.killed == 10
    assert kills_under_load == 10, "every kill lands while all producers are emitting"
    assert_ledger_intact(conn, emitted)


def test_a_second_drainer_gives_way_at_once(dsn, conn):
    for n in range(10):
        conn.execute("SELECT compliance.emit('auth.login', %s)", (f"user-{n}",))
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        assert first.execute("SELECT compliance.drain(4)").fetchone()[0] == 4
        second.execute("SET statement_timeout = '2s'")  # waiting for the lock would fail the test
        assert second.execute("SELECT compliance.drain(100)").fetchone()[0] == 0
        first.commit()
        assert second.execute("SELECT compliance.drain(100)").fetchone()[0] == 6
    assert conn.execute(
        "SELECT ok, events_checked, first_bad_seq, problem FROM compliance.verify_chain()"
    ).fetchone() == (True, 10, None, None)


@pytest.fixture
def drainer_login(conn) -> Iterator[str]:
    """A login role whose only rights are compliance_drainer's."""
    role = f"ac_ledger_drainer_{conn.info.backend_pid}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compliance_drainer").format(sql.Identifier(role)))
    yield role
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_drainer_role_runs_the_loop_and_records_a_halt(dsn, conn, drainer_login):
    for n in range(5):
        conn.execute("SELECT compliance.emit('auth.login', %s)", (f"user-{n}",))
    drainer_dsn = psycopg.conninfo.make_conninfo(dsn, user=drainer_login)
    with psycopg.connect(drainer_dsn, autocommit=True) as drainer:
        drainer.execute("CALL compliance.run_drainer('0 seconds')")
        assert conn.execute("SELECT last_seq FROM compliance.drainer_state").fetchone()[0] == 5

        with conn.transaction():
            conn.execute("ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change")
            conn.execute("UPDATE compliance.audit_events SET actor = 'mallory' WHERE seq = 5")
            conn.execute("ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change")
        conn.execute("SELECT compliance.emit('auth.login', 'waiting')")
        with pytest.raises(psycopg.Error) as tampered:
            drainer.execute("CALL compliance.run_drainer('0 seconds')")
        assert tampered.value.sqlstate == "AC010"
        halted = conn.execute(
            "SELECT halted_seq, halted_at IS NOT NULL FROM compliance.drainer_state"
        ).fetchone()
        assert halted == (5, True), "the halt was recorded and committed despite the failed run"

        with pytest.raises(psycopg.Error) as refused:
            drainer.execute("CALL compliance.run_drainer('0 seconds')")
        assert refused.value.sqlstate == "AC011"
    assert conn.execute("SELECT count(*) FROM compliance.audit_outbox").fetchone()[0] == 1
