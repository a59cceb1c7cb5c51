"""`auditchain status` with each failure mode induced for real: the backlog of an
unscheduled drainer, an unreachable bucket, a stuck export, a halted drainer, a missing
heartbeat, an unreachable database."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from auditchain.errors import EXIT_UNAVAILABLE
from auditchain.status import EXIT_CODES, worst
from awsfake import free_port
from test_anchor import create_anchor, make_worm_bucket, run_cli
from test_ledger_cron import cron
from test_watchdog import (
    metric_values,
    published_names,
    unique_stage,
    wait_until,
    watchdog_login_fixture,  # noqa: F401 (the watchdog_login fixture)
    watchdog_once,
)


def status(capsys, dsn: str, *extra: str) -> tuple[int, dict]:
    code, out, err = run_cli(capsys, "status", "--json", "--dsn", dsn, *extra)
    document = json.loads(out)
    assert document["exit_code"] == code, err
    return code, document


def check(document: dict, name: str) -> dict:
    (found,) = [c for c in document["checks"] if c["name"] == name]
    return found


def emit(conn: psycopg.Connection, count: int) -> None:
    conn.execute(
        "SELECT count(compliance.emit('test.produced', 'tester')) FROM generate_series(1, %s)", (count,)
    )


def chain_recorded_at(conn: psycopg.Connection, count: int, at: datetime) -> None:
    """Append events exactly as the drainer would have chained them at `at`: valid hashes,
    the drainer's head and Merkle tree moved along. How a test has events that were chained 40
    minutes ago."""
    for _ in range(count):
        conn.execute(
            """
            WITH next AS (
                SELECT d.last_seq + 1 AS seq, d.last_hash AS prev_hash, compliance._uuidv7() AS event_id
                  FROM compliance.drainer_state AS d
            ), hashed AS (
                SELECT n.*, compliance.event_hash(n.prev_hash, compliance.event_record(
                           n.seq, n.event_id, %(at)s, %(at)s, NULL, 'test.backdated', 'tester',
                           compliance.payload_digest('{}'))) AS event_hash
                  FROM next AS n
            ), inserted AS (
                INSERT INTO compliance.audit_events
                    (seq, event_id, occurred_at, recorded_at, tenant_id, event_type, actor, payload,
                     hash_version, prev_hash, event_hash)
                SELECT h.seq, h.event_id, %(at)s, %(at)s, NULL, 'test.backdated', 'tester', '{}', 1,
                       h.prev_hash, h.event_hash
                  FROM hashed AS h
                RETURNING seq, event_hash
            )
            UPDATE compliance.drainer_state AS d
               SET last_seq = i.seq, last_hash = i.event_hash, last_success_at = %(at)s
              FROM inserted AS i
            """,
            {"at": at},
        )
    # and its Merkle trees, as the drainer would
    conn.execute("SELECT compliance._tree_catch_up(), compliance._tenant_trees_catch_up()")


@pytest.mark.slow
def test_unscheduled_drainer_backlog_bands_and_rescheduling_drains_it(conn, dsn, capsys):
    assert metric_values(conn)["cron_jobs_unscheduled"] == 7
    expected = [
        (150, "elevated", "warning"),
        (10_001, "concerning", "warning"),
        (100_001, "critical", "critical"),
    ]
    try:
        produced = 0
        for depth, band, state in expected:
            emit(conn, depth - produced)
            produced = depth
            code, document = status(capsys, dsn)
            outbox = check(document, "outbox")
            assert (outbox["state"], outbox["data"]["band"]) == (state, band), depth
            assert document["metrics"]["outbox_depth"] == depth
            assert code == (2 if state == "critical" else 1)
        assert check(document, "pg_cron")["state"] == "warning"
        assert "drain: not scheduled" in check(document, "pg_cron")["details"]

        assert conn.execute("SELECT compliance.schedule_jobs()").fetchone()[0] == 7
        wait_until(lambda: metric_values(conn)["outbox_depth"] == 0, timeout=180, what="pg_cron to drain")

        _, document = status(capsys, dsn)
        outbox = check(document, "outbox")
        assert (outbox["state"], outbox["data"]["band"]) == ("ok", "healthy")
        assert document["metrics"]["chain_length"] == 100_001
        assert document["metrics"]["cron_jobs_unscheduled"] == 0
    finally:
        conn.execute("SELECT compliance.unschedule_jobs()")


def test_outbox_band_edges(conn, dsn, capsys):
    emit(conn, 99)
    assert check(status(capsys, dsn)[1], "outbox")["data"]["band"] == "healthy"
    emit(conn, 1)
    assert check(status(capsys, dsn)[1], "outbox")["data"]["band"] == "elevated"


def test_states_and_exit_codes_are_the_verdicts_the_database_decides(conn, dsn, capsys):
    """status re-decides nothing: change the outbox thresholds in the database alone and its
    bands, state and exit code follow (warning above 4 rows, the alarm above 6, critical above 9)."""
    conn.execute("ALTER FUNCTION compliance._metric_thresholds() RENAME TO _metric_thresholds_shipped")
    conn.execute(
        """
        CREATE FUNCTION compliance._metric_thresholds()
        RETURNS TABLE (metric text, warning_above double precision, critical_above double precision,
                       alarm_above double precision, verdict_when_null text, ok_while_zero text)
        LANGUAGE sql AS $$
            SELECT t.metric,
                   CASE t.metric WHEN 'outbox_depth' THEN 4 ELSE t.warning_above END,
                   CASE t.metric WHEN 'outbox_depth' THEN 9 ELSE t.critical_above END,
                   CASE t.metric WHEN 'outbox_depth' THEN 6 ELSE t.alarm_above END,
                   t.verdict_when_null, t.ok_while_zero
              FROM compliance._metric_thresholds_shipped() AS t
        $$
        """
    )
    expected = [(4, "healthy", "ok"), (5, "elevated", "warning"), (7, "concerning", "warning")]
    produced = 0
    for depth, band, state in expected:
        emit(conn, depth - produced)
        produced = depth
        code, document = status(capsys, dsn)
        outbox = check(document, "outbox")
        assert (outbox["state"], outbox["data"]["band"]) == (state, band), depth
        assert document["verdicts"]["outbox_depth"] == state
    emit(conn, 10 - produced)

    code, document = status(capsys, dsn)

    assert (check(document, "outbox")["state"], check(document, "outbox")["data"]["band"]) == (
        "critical",
        "critical",
    )
    assert (document["overall"], code) == ("critical", EXIT_CODES["critical"])


def test_exit_code_of_each_overall_state():
    assert [EXIT_CODES[state] for state in ("ok", "warning", "critical", "unknown")] == [0, 1, 2, 3]
    assert worst(["ok", "warning", "unknown"]) == "unknown"
    assert worst(["unknown", "critical", "warning"]) == "critical"
    assert worst(["skipped", "ok"]) == "ok"


def test_old_rows_in_a_small_outbox_are_a_warning(conn, dsn, capsys):
    conn.execute(
        "INSERT INTO compliance.audit_outbox (event_id, emitted_at, occurred_at, event_type, actor, payload)"
        " VALUES (compliance._uuidv7(), now() - interval '6 minutes', now(), 'test.stale', 'tester', '{}')"
    )

    outbox = check(status(capsys, dsn)[1], "outbox")

    assert (outbox["state"], outbox["data"]["band"]) == ("warning", "healthy")
    assert "the drainer is not draining" in outbox["summary"]


def test_unreachable_bucket_grows_the_gap_to_critical_and_recovery_clears_it(
    conn, dsn, endpoint_url, bucket_name, capsys
):
    dead = f"http://127.0.0.1:{free_port()}"
    chain_recorded_at(conn, 3, datetime.now(UTC) - timedelta(minutes=40))
    assert conn.execute("SELECT ok FROM compliance.verify_chain()").fetchone()[0]
    create_anchor(conn)

    code, _, _ = run_cli(
        capsys, "anchor", "--once", "--dsn", dsn, "--endpoint-url", dead, "--bucket", bucket_name
    )
    assert code == EXIT_UNAVAILABLE

    first = metric_values(conn)
    time.sleep(1.1)
    second = metric_values(conn)
    assert 1800 < first["anchor_gap_seconds"] < second["anchor_gap_seconds"]
    assert (second["anchors_pending"], second["anchors_failed"]) == (1, 0)
    code, document = status(capsys, dsn)
    anchors = check(document, "anchors")
    assert (code, document["overall"], anchors["state"]) == (2, "critical", "critical")
    (problem,) = anchors["details"]
    assert "(seq 1-3) pending after 1 attempt(s): " in problem
    assert "Could not connect to the endpoint URL" in problem

    make_worm_bucket(endpoint_url, bucket_name)
    code, _, err = run_cli(
        capsys, "anchor", "--once", "--dsn", dsn, "--endpoint-url", endpoint_url, "--bucket", bucket_name
    )
    assert code == 0, err

    recovered = metric_values(conn)
    assert (recovered["anchor_gap_seconds"], recovered["anchors_pending"]) == (0, 0)
    assert recovered["anchor_last_upload_age_seconds"] < 60
    code, document = status(capsys, dsn)
    assert check(document, "anchors")["state"] == "ok"
    assert document["overall"] != "critical"


def test_watchdog_role_sees_the_numbers_but_not_the_details(conn, watchdog_login, capsys):
    chain_recorded_at(conn, 1, datetime.now(UTC) - timedelta(minutes=31))
    create_anchor(conn)
    conn.execute(
        "SELECT compliance.record_anchor_error(max(anchor_id), 'SlowDown: throttled') FROM compliance.anchors"
    )

    code, document = status(capsys, watchdog_login)

    anchors = check(document, "anchors")
    assert (code, anchors["state"]) == (2, "critical")
    assert anchors["details"] == ["details hidden: this role cannot read compliance.anchors"]


def test_a_retrying_anchor_upload_is_a_warning_even_without_the_details(conn, watchdog_login, capsys):
    emit(conn, 1)
    conn.execute("SELECT compliance.drain()")
    create_anchor(conn)
    conn.execute(
        "SELECT compliance.record_anchor_error(max(anchor_id), 'SlowDown: throttled') FROM compliance.anchors"
    )

    code, document = status(capsys, watchdog_login)

    anchors = check(document, "anchors")
    assert document["metrics"]["anchors_retrying"] == 1
    assert (anchors["state"], document["verdicts"]["anchors_retrying"]) == ("warning", "warning")
    assert "1 pending (1 retrying)" in anchors["summary"]
    assert anchors["details"] == ["details hidden: this role cannot read compliance.anchors"]


def test_stuck_export_appears_in_metrics_and_status_until_reconciled(conn, dsn, capsys):
    job = conn.execute("SELECT compliance.request_export('{}', 'auditor@example.com')").fetchone()[0]
    assert conn.execute("SELECT compliance.claim_export(%s)", (job,)).fetchone()[0]
    assert metric_values(conn)["exports_stuck"] == 0

    # The runner crashed 20 minutes ago: move the claim back as the clock would have.
    conn.execute("ALTER TABLE compliance.export_jobs DISABLE TRIGGER export_jobs_guard")
    conn.execute(
        "UPDATE compliance.export_jobs SET created_at = now() - interval '21 minutes',"
        " started_at = now() - interval '20 minutes' WHERE job_id = %s",
        (job,),
    )
    conn.execute("ALTER TABLE compliance.export_jobs ENABLE ALWAYS TRIGGER export_jobs_guard")

    assert metric_values(conn)["exports_stuck"] == 1
    exports = check(status(capsys, dsn)[1], "exports")
    assert exports["state"] == "warning"
    assert exports["summary"].startswith("1 stuck")
    assert exports["details"][0].startswith(f"job {job} running since ")

    assert conn.execute("SELECT compliance.reconcile_exports()").fetchone()[0] == 1
    assert metric_values(conn)["exports_stuck"] == 0
    assert check(status(capsys, dsn)[1], "exports")["state"] == "ok"


def test_halted_drainer_is_critical_and_names_the_seq(conn, dsn, capsys):
    emit(conn, 2)
    conn.execute("SELECT compliance.drain()")
    conn.execute("ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change")
    conn.execute("UPDATE compliance.audit_events SET actor = 'someone else' WHERE seq = 2")
    conn.execute("ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change")
    emit(conn, 1)
    with pytest.raises(psycopg.Error) as halted:
        conn.execute("CALL compliance.run_drainer(max_runtime => '1 second')")
    assert halted.value.sqlstate == "AC010"

    code, document = status(capsys, dsn)

    drainer = check(document, "drainer")
    assert (code, drainer["state"]) == (2, "critical")
    assert drainer["summary"].startswith("HALTED on an integrity failure")
    assert " at seq 2: chain head check failed at seq 2" in drainer["details"][0]
    assert document["metrics"]["drainer_halted"] == 1


def test_verification_failure_is_critical(conn, dsn, capsys):
    emit(conn, 2)
    conn.execute("SELECT compliance.drain()")
    conn.execute("ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change")
    conn.execute("UPDATE compliance.audit_events SET payload = '{\"edited\": true}' WHERE seq = 1")
    conn.execute("ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change")
    conn.execute("SELECT compliance.verify_new_events()")

    code, document = status(capsys, dsn)

    verification = check(document, "verification")
    assert (code, verification["state"]) == (2, "critical")
    assert verification["details"] == [
        "first bad seq 1: content changed: the event no longer matches its event_hash"
    ]


def test_heartbeat_is_read_back_from_cloudwatch(conn, dsn, endpoint_url, capsys):
    stage = unique_stage()
    options = ("--stage", stage, "--endpoint-url", endpoint_url)

    heartbeat = check(status(capsys, dsn, *options)[1], "heartbeat")
    assert heartbeat["state"] == "critical"
    assert heartbeat["summary"] == f"no heartbeat in the last 3 h (Auditchain/Compliance Stage={stage})"

    assert watchdog_once(capsys, dsn, endpoint_url, stage)[0] == 0
    heartbeat = check(status(capsys, dsn, *options)[1], "heartbeat")
    assert heartbeat["state"] == "ok"
    assert heartbeat["summary"].startswith("last heartbeat ")


def test_heartbeat_unknown_when_cloudwatch_is_unreachable(conn, dsn, moto_server, capsys):
    dead = f"http://127.0.0.1:{free_port()}"

    code, document = status(capsys, dsn, "--stage", "prod", "--endpoint-url", dead)

    heartbeat = check(document, "heartbeat")
    assert heartbeat["state"] == "unknown"
    assert heartbeat["summary"].startswith("cannot read ComplianceAnchorWatchdogHeartbeat from CloudWatch")
    assert (code, document["overall"]) == (3, "unknown")


def test_heartbeat_skipped_without_stage(conn, dsn, capsys):
    heartbeat = check(status(capsys, dsn)[1], "heartbeat")
    assert heartbeat["state"] == "skipped"


def test_unreachable_database_is_unknown(capsys):
    dsn = f"host=127.0.0.1 port={free_port()} dbname=nowhere user=postgres connect_timeout=3"

    code, out, err = run_cli(capsys, "status", "--json", "--dsn", dsn)

    assert code == 3
    assert json.loads(out)["overall"] == "unknown"
    assert err.startswith("auditchain status: cannot connect to postgresql://postgres@127.0.0.1:")
    code, out, _ = run_cli(capsys, "status", "--dsn", dsn)
    assert (code, out) == (3, "")


def test_table_on_a_terminal_lists_every_check_and_the_overall_state(conn, dsn, capsys):
    emit(conn, 120)

    code, out, _ = run_cli(capsys, "status", "--dsn", dsn)

    lines = out.splitlines()
    assert lines[0].startswith("auditchain status of postgresql://")
    assert lines[2].split() == ["CHECK", "STATE", "SUMMARY"]
    rows = {line.split()[0]: line.split()[1] for line in lines[3:] if line and not line.startswith(" ")}
    assert rows["outbox"] == "WARNING"
    assert set(rows) >= {"outbox", "drainer", "anchors", "verification", "exports", "pg_cron", "heartbeat"}
    assert lines[-1] == f"overall: WARNING (exit {code})"
    assert code == 1


class StagedCronJobs:
    """This database's five jobs in pg_cron, active but due only at midnight on 1 January, so
    that pg_cron starts none of them during a test; their runs are what the test records."""

    def __init__(self, conn: psycopg.Connection):
        self.ids = {
            job: cron("SELECT cron.schedule_in_database(%s, '0 0 1 1 *', 'SELECT 1', %s)", (name, database))[
                0
            ][0]
            for job, name, database in conn.execute(
                "SELECT job, jobname, database_name FROM compliance.cron_jobs()"
            )
        }

    def started(self, job: str, seconds_ago: float) -> None:
        cron(
            "INSERT INTO cron.job_run_details (jobid, status, start_time, end_time)"
            " VALUES (%s, 'succeeded', now() - make_interval(secs => %s), now() - make_interval(secs => %s))",
            (self.ids[job], seconds_ago, seconds_ago - 1),
        )

    def last_started(self, drain_seconds_ago: float | None, verify_seconds_ago: float | None) -> None:
        """Replace the runs: the drain and verify jobs last started that long ago (None: never)."""
        self.forget_runs()
        for job, seconds_ago in (("drain", drain_seconds_ago), ("verify", verify_seconds_ago)):
            if seconds_ago is not None:
                self.started(job, seconds_ago)

    def forget_runs(self) -> None:
        cron("DELETE FROM cron.job_run_details WHERE jobid = ANY(%s)", (list(self.ids.values()),))

    def remove(self) -> None:
        self.forget_runs()
        cron("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobid = ANY(%s)", (list(self.ids.values()),))


@pytest.fixture
def staged_jobs(conn) -> Iterator[StagedCronJobs]:
    jobs = StagedCronJobs(conn)
    try:
        yield jobs
    finally:
        jobs.remove()


def test_a_scheduler_that_stopped_starting_jobs_is_flagged(conn, dsn, staged_jobs, capsys):
    """pg_cron's scheduler dies quietly: jobs stay scheduled and no run fails. What shows it is
    the age of the last start of the once-a-minute jobs (the older of drain and verify)."""
    staged_jobs.last_started(drain_seconds_ago=100, verify_seconds_ago=30)
    values = metric_values(conn)
    assert (values["cron_jobs_unscheduled"], values["cron_failed_runs_last_hour"]) == (0, 0)
    assert 100 <= values["cron_minutely_jobs_last_start_age_seconds"] < 115
    cron_check = check(status(capsys, dsn)[1], "pg_cron")
    assert (cron_check["state"], cron_check["details"]) == ("ok", [])
    assert cron_check["summary"].startswith(
        "0 job(s) not scheduled; 0 failed run(s) in the last hour; minutely jobs last started 1"
    )

    staged_jobs.last_started(drain_seconds_ago=30, verify_seconds_ago=200)
    assert 200 <= metric_values(conn)["cron_minutely_jobs_last_start_age_seconds"] < 230
    cron_check = check(status(capsys, dsn)[1], "pg_cron")
    assert cron_check["state"] == "warning"
    assert cron_check["details"] == [
        "pg_cron has stopped starting the drain and verify jobs: is its scheduler running? "
        "(docs/runbook.md#cron-scheduler-stalled)"
    ]

    staged_jobs.last_started(drain_seconds_ago=700, verify_seconds_ago=700)
    code, document = status(capsys, dsn)
    assert check(document, "pg_cron")["state"] == "critical"
    assert "minutely jobs last started 12 min ago" in check(document, "pg_cron")["summary"]
    assert code == 2


def test_only_scheduled_active_minutely_jobs_that_ran_count(conn, staged_jobs):
    """A job that is not due every minute, inactive (cron_jobs_unscheduled reports it) or has
    never started has no start to measure: it does not make the scheduler look stalled."""
    staged_jobs.last_started(drain_seconds_ago=None, verify_seconds_ago=None)
    assert metric_values(conn)["cron_minutely_jobs_last_start_age_seconds"] == 0

    staged_jobs.last_started(drain_seconds_ago=900, verify_seconds_ago=40)
    cron("SELECT cron.alter_job(%s, active => false)", (staged_jobs.ids["drain"],))
    staged_jobs.started("anchor", 7200)
    values = metric_values(conn)
    assert values["cron_jobs_unscheduled"] == 1
    assert 40 <= values["cron_minutely_jobs_last_start_age_seconds"] < 55


def test_unreachable_pg_cron_is_unknown_not_zero(conn, dsn, endpoint_url, capsys):
    dbname = conn.info.dbname
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET auditchain.cron_conninfo = {}").format(
            sql.Identifier(dbname),
            sql.Literal(f"host=127.0.0.1 port={free_port()} dbname=postgres connect_timeout=3"),
        )
    )

    values = metric_values(conn)
    assert (
        values["cron_failed_runs_last_hour"],
        values["cron_jobs_unscheduled"],
        values["cron_minutely_jobs_last_start_age_seconds"],
    ) == (None, None, None)
    assert values["chain_length"] == 0
    code, document = status(capsys, dsn)
    cron = check(document, "pg_cron")
    assert cron["state"] == "unknown"
    assert cron["summary"].startswith("cannot read pg_cron: cannot reach pg_cron's database")
    assert code == 3

    stage = unique_stage()
    assert watchdog_once(capsys, dsn, endpoint_url, stage)[0] == 0
    published = published_names(endpoint_url, stage)
    assert "ComplianceAnchorWatchdogHeartbeat" in published
    assert (
        not {
            "ComplianceCronFailedRunsLastHour",
            "ComplianceCronJobsUnscheduled",
            "ComplianceCronMinutelyJobsLastStartAge",
        }
        & published
    )
