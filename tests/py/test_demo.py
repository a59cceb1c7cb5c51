"""`make demo` at a small size, so the demo cannot rot: the whole pipeline a newcomer sees
(migrate, pg_cron draining, anchor upload, watchdog, export, offline and bucket verification,
status) must succeed end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from awsfake import free_port
from conftest import admin_dsn, drop_database


@pytest.mark.slow
def test_demo_runs_end_to_end_at_small_size(tmp_path):
    database = f"auditchain_demo_{os.getpid()}"
    command = [sys.executable, "-m", "auditchain.demo", "--database", database]
    options = ["--moto-port", str(free_port()), "--run-dir", str(tmp_path), "--bucket", "demo-test-bucket"]
    try:
        result = subprocess.run(
            [*command, *options, "--duration", "4", "--rate", "150", "--producers", "3"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = result.stdout
        assert "RESULT    OK" in out  # verify-bundle, anchors required
        assert "verify: OK" in out  # chain in SQL and anchors in the bucket
        assert "overall: OK" in out  # status
        with psycopg.connect(admin_dsn(database), autocommit=True) as conn:
            chained, outbox = conn.execute(
                "SELECT (SELECT count(*) FROM compliance.audit_events), "
                "(SELECT count(*) FROM compliance.audit_outbox)"
            ).fetchone()
            assert outbox == 0
            assert chained > 300
            assert conn.execute("SELECT ok FROM compliance.verify_chain()").fetchone()[0] is True
            assert conn.execute("SELECT status FROM compliance.export_jobs").fetchone()[0] == "completed"
    finally:
        subprocess.run([*command, *options, "--down"], capture_output=True, timeout=60)
        drop_database(database)
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        left = admin.execute(
            "SELECT count(*) FROM cron.job WHERE jobname LIKE %s", (f"auditchain:{database}:%",)
        ).fetchone()[0]
    assert left == 0, "demo --down must unschedule the demo's pg_cron jobs"
