"""The offline verifier stands alone: an auditor installs only what verifies. verify-bundle runs
with the database driver and the AWS SDK made unimportable, and the environment is read in one
module whose variables docs/cli.md lists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from auditchain import config
from auditchain.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tenantlog import TenantLog, write_folder

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "python" / "auditchain"
# Setting a module to None in sys.modules makes every later import of it raise ImportError,
# as on a machine where it is not installed.
WITHOUT_DRIVERS = (
    "import sys\n"
    "for name in ('psycopg', 'boto3', 'botocore', 'prometheus_client'):\n"
    "    sys.modules[name] = None\n"
    "from auditchain.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "loaded = sorted(n for n in ('psycopg', 'boto3', 'botocore') if sys.modules.get(n) is not None)\n"
    "print('LOADED', loaded, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_without_drivers(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_DRIVERS, *argv], capture_output=True, text=True, timeout=60
    )


def test_verify_bundle_runs_without_the_database_driver_or_the_aws_sdk(tmp_path):
    proc = run_without_drivers("verify-bundle", str(tmp_path))
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "manifest.json does not exist" in proc.stderr
    assert "LOADED []" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = run_without_drivers("verify-bundle", "--help")
    assert proc.returncode == 0 and "Verify an export bundle" in proc.stdout


def test_a_tenant_bundle_verifies_without_the_database_driver_or_the_aws_sdk(tmp_path):
    """Its proofs, the tenant heads and the compact ranges are all auditchain.formats."""
    log = TenantLog.create()
    for n in range(1, 40):
        log.emit(("acme", None, "globex")[n % 3], n)
        if n % 13 == 0:
            log.commit_heads()
    folder = write_folder(tmp_path, *log.tenant_bundle("acme", log.size, since=log.commitments[0]))
    proc = run_without_drivers("verify-bundle", str(folder), "--vkey", log.vkey)
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    assert "complete up to global seq" in proc.stdout and "LOADED []" in proc.stderr

    other = TenantLog.create().vkey
    proc = run_without_drivers("verify-bundle", str(folder), "--vkey", other)
    assert proc.returncode == EXIT_FAILED and "not signed by a trusted key" in proc.stdout
    assert "LOADED []" in proc.stderr and "Traceback" not in proc.stderr


def test_a_command_whose_extra_is_missing_names_the_extra():
    proc = run_without_drivers("verify", "--bucket", "b")
    assert proc.returncode == EXIT_CONFIG
    assert "pip install 'auditchain[db]'" in proc.stderr and "Traceback" not in proc.stderr


def test_the_environment_is_read_in_config_only():
    readers = re.compile(r"os\.environ|os\.getenv")
    offenders = [
        str(path.relative_to(REPO))
        for path in PACKAGE.rglob("*.py")
        # The demo and its loopback launcher are dev tooling that hands its environment to children.
        if path.name not in ("config.py", "demo.py", "loopback.py") and readers.search(path.read_text())
    ]
    assert offenders == [], "read environment variables through auditchain.config"


def test_every_variable_is_documented_with_the_same_meaning():
    documented = dict(
        re.findall(r"^\| `([A-Z_]+)` \| (.+) \|$", (REPO / "docs" / "cli.md").read_text(), re.M)
    )
    assert set(documented) == set(config.ENVIRONMENT)
    for name, meaning in config.ENVIRONMENT.items():
        assert documented[name].replace("`", "") == meaning, name
