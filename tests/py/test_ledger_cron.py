"""pg_cron really runs this database's jobs. The test databases are not pg_cron's own
(cron.database_name is `postgres`), so schedule_jobs() goes through dblink: the jobs appear
in pg_cron's database, the drainer chains events at the next minute tick, job_run_details
shows the runs succeed, and unschedule_jobs() removes the jobs and stops their runs, so that
nothing keeps the test database from being dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import psycopg
import pytest
from psycopg.rows import namedtuple_row

from conftest import CRON_DB, admin_dsn

T = TypeVar("T")


def cron(query: str, params: tuple = ()) -> list:
    """Rows of a query run as superuser in pg_cron's database."""
    with psycopg.connect(admin_dsn(CRON_DB), autocommit=True, row_factory=namedtuple_row) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def jobs_named(prefix: str) -> dict[str, tuple]:
    """jobname -> (jobid, schedule, command, database, active) of pg_cron's jobs with that prefix."""
    rows = cron(
        "SELECT jobname, jobid, schedule, command, database, active FROM cron.job"
        " WHERE starts_with(jobname::text, %s)",
        (prefix,),
    )
    return {r.jobname: (r.jobid, r.schedule, r.command, r.database, r.active) for r in rows}


def last_run(jobid: int):
    rows = cron(
        "SELECT status, start_time, end_time, return_message FROM cron.job_run_details"
        " WHERE jobid = %s ORDER BY runid DESC LIMIT 1",
        (jobid,),
    )
    return rows[0] if rows else None


def started_run(jobid: int, nudge_every: float = 15.0):
    """The job's last run once it has started. pg_cron 1.4's launcher can miss the change to
    cron.job when it was busy waiting on another job while the catalog changed a lot (as on
    a shared test cluster); a no-op change to the job every few seconds makes it look again."""
    run = last_run(jobid)
    if run is None and time.monotonic() - started_run.last_nudge > nudge_every:
        cron("SELECT cron.alter_job(%s, active => true)", (jobid,))
        started_run.last_nudge = time.monotonic()
    return run if run and run.start_time else None  # in libpq mode start_time comes after connecting


started_run.last_nudge = time.monotonic()


def ended_run(jobid: int):
    """The last run of a job once it has ended, else None."""
    run = last_run(jobid)
    return run if run and run.status in ("succeeded", "failed") else None


def wait_for(probe: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def prefix_of(conn: psycopg.Connection) -> str:
    return f"auditchain:{conn.info.dbname}:"


def test_schedule_jobs_is_idempotent_and_repairs_drift(conn):
    prefix = prefix_of(conn)
    other_project = f"auditchain:{conn.info.dbname}_other:drain"
    try:
        assert conn.execute("SELECT compliance.schedule_jobs()").fetchone()[0] == 7
        installed = jobs_named(prefix)
        wanted = {
            name: (schedule, command, database, True)
            for name, schedule, command, database in conn.execute(
                "SELECT jobname, schedule, command, database_name FROM compliance.cron_jobs()"
            )
        }
        assert {name: job[1:] for name, job in installed.items()} == wanted

        assert conn.execute("SELECT compliance.schedule_jobs()").fetchone()[0] == 7
        assert jobs_named(prefix) == installed, "a second call changes nothing"

        drain_id = installed[prefix + "drain"][0]
        cron(
            "SELECT cron.alter_job(%s, '*/7 * * * *', 'SELECT 1', %s, NULL, false)",
            (drain_id, CRON_DB),
        )
        cron(
            "SELECT cron.schedule_in_database(%s, '0 0 1 1 *', 'SELECT 1', %s, NULL, false)",
            (prefix + "retired", conn.info.dbname),
        )
        cron(
            "SELECT cron.schedule_in_database(%s, '0 0 1 1 *', 'SELECT 1', %s, NULL, false)",
            (other_project, CRON_DB),
        )
        assert conn.execute("SELECT compliance.schedule_jobs()").fetchone()[0] == 7
        assert jobs_named(prefix) == installed, "drift is repaired in place and the stray job removed"
        assert other_project in jobs_named(other_project), "another database's jobs are left alone"

        health = conn.execute(
            "SELECT jobname, scheduled, jobid, active FROM compliance.cron_job_health()"
        ).fetchall()
        assert {(name, scheduled, jobid, active) for name, scheduled, jobid, active in health} == {
            (name, True, job[0], True) for name, job in installed.items()
        }
    finally:
        removed = conn.execute("SELECT compliance.unschedule_jobs()").fetchone()[0]
        cron("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s", (other_project,))
    assert removed == 7
    assert jobs_named(prefix) == {}
    assert conn.execute("SELECT compliance.unschedule_jobs()").fetchone()[0] == 0, "idempotent"
    assert conn.execute("SELECT bool_or(scheduled) FROM compliance.cron_job_health()").fetchone()[0] is False


def test_purge_job_deletes_only_this_databases_old_runs(conn):
    prefix = prefix_of(conn)
    try:
        conn.execute("SELECT compliance.schedule_jobs()")
        drain_id = jobs_named(prefix)[prefix + "drain"][0]
        purge = conn.execute(
            "SELECT command FROM compliance.cron_jobs() WHERE job = 'purge-run-details'"
        ).fetchone()[0]
        unrelated_id = -drain_id  # no pg_cron job has a negative id

        def staged_run(jobid: int, started: str, ended: str | None) -> int:
            return cron(
                "INSERT INTO cron.job_run_details (jobid, status, start_time, end_time)"
                " VALUES (%s, 'succeeded', now() - %s::interval, now() - %s::interval) RETURNING runid",
                (jobid, started, ended),
            )[0].runid

        ours_old = staged_run(drain_id, "8 days", "8 days")
        ours_old_unfinished = staged_run(drain_id, "8 days", None)
        ours_recent = staged_run(drain_id, "6 days", "6 days")
        unrelated_old = staged_run(unrelated_id, "8 days", "8 days")
        cron(purge)
        staged = [ours_old, ours_old_unfinished, ours_recent, unrelated_old]
        left = cron("SELECT runid FROM cron.job_run_details WHERE runid = ANY(%s)", (staged,))
        kept = {r.runid for r in left}
        assert kept == {ours_recent, unrelated_old}
    finally:
        conn.execute("SELECT compliance.unschedule_jobs()")
        cron("DELETE FROM cron.job_run_details WHERE jobid = %s", (-drain_id,))


def test_cron_job_health_summarises_pg_cron_runs(conn):
    prefix = prefix_of(conn)
    try:
        conn.execute("SELECT compliance.schedule_jobs()")
        jobs = jobs_named(prefix)
        drain_id, verify_id = jobs[prefix + "drain"][0], jobs[prefix + "verify"][0]
        cron(
            "INSERT INTO cron.job_run_details (jobid, status, return_message, start_time, end_time) VALUES"
            " (%(drain)s, 'succeeded', 'CALL', now() - interval '2 hours', now() - interval '2 hours'),"
            " (%(drain)s, 'failed', 'boom', now() - interval '50 minutes', now() - interval '50 minutes'),"
            " (%(drain)s, 'succeeded', 'CALL', now() - interval '30 minutes', now() - interval '29 minutes'),"
            " (%(drain)s, 'failed', 'ERROR: drainer halted', now() - interval '1 minute', now()),"
            " (%(verify)s, 'running', NULL, now(), NULL)",
            {"drain": drain_id, "verify": verify_id},
        )
        health = {
            row.job: row
            for row in conn.cursor(row_factory=namedtuple_row).execute(
                "SELECT * FROM compliance.cron_job_health()"
            )
        }
        drain = health["drain"]
        assert (drain.scheduled, drain.jobid, drain.active) == (True, drain_id, True)
        assert (drain.last_status, drain.last_message) == ("failed", "ERROR: drainer halted")
        assert (drain.runs_last_hour, drain.failures_last_hour) == (3, 2)
        succeeded_at = cron(
            "SELECT max(end_time) AS t FROM cron.job_run_details WHERE jobid = %s AND status = 'succeeded'",
            (drain_id,),
        )[0].t
        assert drain.last_succeeded_at == succeeded_at
        verify = health["verify"]
        assert (verify.last_status, verify.last_ended_at, verify.runs_last_hour) == ("running", None, 1)
        anchor = health["anchor"]
        assert (anchor.scheduled, anchor.last_status, anchor.runs_last_hour) == (True, None, 0)
        assert {row.database_name for job, row in health.items() if job != "purge-run-details"} == {
            conn.info.dbname
        }
    finally:
        conn.execute("SELECT compliance.unschedule_jobs()")
        cron("DELETE FROM cron.job_run_details WHERE jobid IN (%s, %s)", (drain_id, verify_id))


@pytest.mark.slow
def test_pg_cron_drains_within_the_tick_and_unschedule_stops_the_runs(conn):
    """With background workers, pg_cron 1.4 records a run's end only when its launcher next
    looks, and the launcher waits on any running job; the short runs' outcomes are therefore
    read after the long run has been stopped, which works in libpq mode too."""
    db = conn.info.dbname
    prefix = prefix_of(conn)
    try:
        conn.execute("SELECT compliance.schedule_jobs()")
        jobs = jobs_named(prefix)
        drain_id, verify_id = jobs[prefix + "drain"][0], jobs[prefix + "verify"][0]
        # The real job runs 65 s; a 4 s run ends within the test.
        short_run = "CALL compliance.run_drainer('4 seconds')"
        cron("SELECT cron.alter_job(%s, command => %s)", (drain_id, short_run))
        # A long run of one of our jobs, for unschedule_jobs to stop.
        hold_id = cron(
            "SELECT cron.schedule_in_database(%s, '* * * * *', 'SELECT pg_sleep(50)', %s) AS jobid",
            (prefix + "hold", db),
        )[0].jobid
        before_tick = [
            conn.execute("SELECT compliance.emit('auth.login', %s)", (f"user-{n}",)).fetchone()[0]
            for n in range(3)
        ]

        # Another long-running pg_cron job in the cluster delays every start until it ends.
        run = wait_for(lambda: started_run(drain_id), 150, "pg_cron to start the drainer")
        chained = wait_for(
            lambda: conn.execute(
                "SELECT max(recorded_at) FROM compliance.audit_events WHERE event_id = ANY(%s)"
                " HAVING count(*) = 3",
                (before_tick,),
            ).fetchone(),
            10,
            "the events emitted before the tick to be chained",
        )[0]
        # pg_cron 1.4 stamps start_time once the worker is up, when it may already be draining.
        tick_run = run.start_time - timedelta(seconds=1) <= chained < run.start_time + timedelta(seconds=4)
        assert tick_run, f"chained at {chained} by the run that started at {run.start_time}"

        during_run = conn.execute("SELECT compliance.emit('auth.logout', 'user-0')").fetchone()[0]
        wait_for(
            lambda: conn.execute(
                "SELECT 1 FROM compliance.audit_events WHERE event_id = %s", (during_run,)
            ).fetchone(),
            3,
            "an event emitted during the run to be chained by the same run",
        )
        health = {
            row.job: row
            for row in conn.cursor(row_factory=namedtuple_row).execute(
                "SELECT * FROM compliance.cron_job_health()"
            )
        }
        assert (health["drain"].last_started_at, health["drain"].runs_last_hour) == (run.start_time, 1)
        assert health["drain"].failures_last_hour == 0

        def only_the_long_run_left():
            return conn.execute(
                "SELECT array_agg(query) = ARRAY['SELECT pg_sleep(50)'] FROM pg_stat_activity"
                " WHERE datname = current_database() AND 'pg_cron' IN (backend_type, application_name)"
            ).fetchone()[0]

        wait_for(only_the_long_run_left, 15, "the drainer's and the verifier's runs to end")
    finally:
        removed = conn.execute("SELECT compliance.unschedule_jobs()").fetchone()[0]

    assert removed == 8
    assert jobs_named(prefix) == {}
    wait_for(
        lambda: conn.execute(
            "SELECT count(*) = 0 FROM pg_stat_activity"
            " WHERE datname = current_database() AND 'pg_cron' IN (backend_type, application_name)"
        ).fetchone()[0],
        10,
        "pg_cron's sessions to leave the test database",
    )
    # Recorded when the launcher next looks, which a long run of another database can delay.
    drained = wait_for(lambda: ended_run(drain_id), 75, "the drainer's run to be recorded")
    assert (drained.status, drained.return_message) == ("succeeded", "CALL")
    verified = wait_for(lambda: ended_run(verify_id), 75, "the verifier's run to be recorded")
    assert verified.status == "succeeded", verified.return_message
    stopped = wait_for(lambda: ended_run(hold_id), 75, "the long run to be recorded")
    assert stopped.status == "failed", "the run in progress was stopped"
    assert conn.execute("SELECT * FROM compliance.verify_chain()").fetchone()[:2] == (True, 4)
