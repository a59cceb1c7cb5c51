"""Export job claims and reconciliation between real, committing sessions: the compare-and-set
holds while two sessions claim at the same moment, SKIP LOCKED hands concurrent runners
different jobs, and reconcile_exports fails only jobs whose runner went quiet."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg


def request(conn: psycopg.Connection) -> uuid.UUID:
    return conn.execute("SELECT compliance.request_export('{}', 'auditor@example.com')").fetchone()[0]


def status(conn: psycopg.Connection, job_id: uuid.UUID) -> str:
    return conn.execute(
        "SELECT status::text FROM compliance.export_jobs WHERE job_id = %s", (job_id,)
    ).fetchone()[0]


def wait_until_blocked_by(observer: psycopg.Connection, waiter_pid: int, holder_pid: int) -> None:
    """Return once backend `waiter_pid` waits on a lock `holder_pid` holds (seen from a third session)."""
    deadline = time.monotonic() + 30
    while not observer.execute("SELECT %s = ANY(pg_blocking_pids(%s))", (holder_pid, waiter_pid)).fetchone()[
        0
    ]:
        assert time.monotonic() < deadline, "the second claim never waited for the first transaction"
        time.sleep(0.01)


def test_concurrent_claims_of_one_job_let_exactly_one_win(conn, dsn):
    job_id = request(conn)
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        assert first.execute("SELECT compliance.claim_export(%s)", (job_id,)).fetchone()[0] is True
        with ThreadPoolExecutor(1) as pool:
            # The second claim blocks on the first one's row lock, then re-checks status = 'queued'.
            pending = pool.submit(
                lambda: second.execute("SELECT compliance.claim_export(%s)", (job_id,)).fetchone()[0]
            )
            wait_until_blocked_by(conn, second.info.backend_pid, first.info.backend_pid)
            assert not pending.done(), "the second claim should wait for the first transaction"
            first.commit()
            assert pending.result(timeout=30) is False
    assert status(conn, job_id) == "running"


def test_many_runners_claiming_at_once_each_get_a_different_job(conn, dsn):
    jobs = {request(conn) for _ in range(6)}
    barrier = threading.Barrier(8)

    def claim_all() -> list[uuid.UUID]:
        claimed = []
        with psycopg.connect(dsn, autocommit=True) as session:
            barrier.wait()
            while (
                job_id := session.execute("SELECT compliance.claim_next_export()").fetchone()[0]
            ) is not None:
                claimed.append(job_id)
        return claimed

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: claim_all(), range(8)))
    claimed = [job_id for result in results for job_id in result]
    assert sorted(claimed) == sorted(jobs), "every job claimed exactly once"


def test_skip_locked_hands_a_concurrent_runner_the_next_job(conn, dsn):
    older, newer = request(conn), request(conn)
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        assert first.execute("SELECT compliance.claim_next_export()").fetchone()[0] == older
        # Not committed yet: the second runner must not wait for it, nor take it.
        assert second.execute("SELECT compliance.claim_next_export()").fetchone()[0] == newer
        first.rollback()
    assert status(conn, older) == "queued"


def test_reconcile_fails_only_jobs_whose_runner_went_quiet(conn):
    quiet, busy, queued = request(conn), request(conn), request(conn)
    for job_id in (quiet, busy):
        assert conn.execute("SELECT compliance.claim_export(%s)", (job_id,)).fetchone()[0]
    time.sleep(1.2)
    assert conn.execute("SELECT compliance.export_heartbeat(%s)", (busy,)).fetchone()[0]

    assert conn.execute("SELECT compliance.reconcile_exports('1 second')").fetchone()[0] == 1
    assert [status(conn, j) for j in (quiet, busy, queued)] == ["failed", "running", "queued"]
    error = conn.execute(
        "SELECT job_error FROM compliance.export_jobs WHERE job_id = %s", (quiet,)
    ).fetchone()[0]
    assert error.startswith("reconciled: running since ")
    assert "(stuck_after 00:00:01)" in error and error.endswith("request the export again")

    assert conn.execute("SELECT compliance.reconcile_exports()").fetchone()[0] == 0, "default: 15 minutes"
    assert not conn.execute("SELECT compliance.export_heartbeat(%s)", (quiet,)).fetchone()[0], (
        "a reconciled job's runner learns from its next heartbeat that it must stop"
    )
