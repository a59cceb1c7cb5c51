"""`pip install .` gives a working CLI on a machine without the repository: the wheel carries the
package, the schema files and the console script."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from auditchain.migrate import render_dist
from auditchain.schema import load_definitions, load_migrations

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_alone_runs_the_cli_and_installs_the_schema(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("auditchain-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "auditchain = auditchain.cli:entry" in archive.read(entry_points).decode()
        archive.extractall(tmp_path / "site")
    for item in load_migrations() + load_definitions():
        folder = "migrations" if item.kind == "migration" else "sql"
        assert f"auditchain/schema/{folder}/{item.name}" in names

    # The unpacked wheel first on the path, run from elsewhere: nothing may come from the checkout.
    env = {k: v for k, v in os.environ.items() if k != "AUDITCHAIN_SCHEMA_DIR"}
    env["PYTHONPATH"] = str(tmp_path / "site")

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "auditchain.cli", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    origin = subprocess.run(
        [sys.executable, "-c", "import auditchain; print(auditchain.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert origin.startswith(str(tmp_path / "site")), origin
    assert cli("--help").returncode == 0
    assert cli("dist", "--output", "auditchain.sql").returncode == 0
    assert (tmp_path / "auditchain.sql").read_text(encoding="utf-8") == render_dist()
