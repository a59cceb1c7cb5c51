"""`make demo` at a small size, so the demo cannot rot: the whole pipeline a newcomer sees
(migrate, pg_cron draining, anchor upload, watchdog, export, offline and bucket verification,
status) must succeed end to end, again after `make demo-down`, and leave an environment file
with which the commands it suggests work."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from auditchain.errors import EXIT_FAILED, EXIT_OK
from awsfake import free_port
from conftest import admin_dsn, drop_database

AUDITCHAIN = Path(sys.executable).with_name("auditchain")


def demo_command(database: str, moto_port: int, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        *("-m", "auditchain.demo", "--database", database, "--moto-port", str(moto_port)),
        *("--run-dir", str(run_dir), "--bucket", "demo-test-bucket", *extra),
    ]


def run_demo(database: str, moto_port: int, run_dir: Path) -> str:
    small = ("--duration", "4", "--rate", "150", "--producers", "3")
    result = subprocess.run(
        demo_command(database, moto_port, run_dir, *small), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "RESULT    OK" in out  # verify-bundle, anchors required
    assert "verify: OK" in out  # chain in SQL and anchors in the bucket
    assert "overall: OK" in out  # status
    return out


def without_demo_environment() -> dict[str, str]:
    """This process's environment less what demo.env must provide on its own."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "AUDITCHAIN_")) and k not in ("DATABASE_URL", "PGDATABASE")
    }


@pytest.mark.slow
def test_demo_runs_again_after_demo_down_and_its_environment_file_serves_later_commands(tmp_path):
    database = f"auditchain_demo_{os.getpid()}"
    moto_port = free_port()
    try:
        run_demo(database, moto_port, tmp_path)
        subprocess.run(demo_command(database, moto_port, tmp_path, "--down"), check=True, timeout=60)
        # The endpoint is gone with the first run's anchors; the database is still there.
        out = run_demo(database, moto_port, tmp_path)
        assert f"dropped the previous demo's database {database}" in out

        with psycopg.connect(admin_dsn(database), autocommit=True) as conn:
            chained, outbox = conn.execute(
                "SELECT (SELECT count(*) FROM compliance.audit_events), "
                "(SELECT count(*) FROM compliance.audit_outbox)"
            ).fetchone()
            assert outbox == 0
            assert chained > 300
            assert conn.execute("SELECT ok FROM compliance.verify_chain()").fetchone()[0] is True
            assert conn.execute("SELECT status FROM compliance.export_jobs").fetchone()[0] == "completed"

        env_file = tmp_path / "demo.env"
        assert f"source {env_file}" in out
        for command, allowed in (("verify", {EXIT_OK}), ("status --stage demo", {EXIT_OK, EXIT_FAILED})):
            later = subprocess.run(
                ["bash", "-c", f'source "$1" && "$2" {command}', "demo.env", env_file, AUDITCHAIN],
                env=without_demo_environment(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert later.returncode in allowed, f"auditchain {command}: {later.stdout}{later.stderr}"
    finally:
        subprocess.run(demo_command(database, moto_port, tmp_path, "--down"), capture_output=True, timeout=60)
        drop_database(database)
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        left = admin.execute(
            "SELECT count(*) FROM cron.job WHERE jobname LIKE %s", (f"auditchain:{database}:%",)
        ).fetchone()[0]
    assert left == 0, "demo --down must unschedule the demo's pg_cron jobs"


def test_a_busy_endpoint_port_is_named_with_the_variable_that_changes_it(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            demo_command(f"auditchain_demo_{os.getpid()}", port, tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert "MOTO_PORT=" in result.stderr
    assert not (tmp_path / "moto.pid").exists()
