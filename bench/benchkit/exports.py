"""Cases export and verify_bundle: `auditchain export run` into a loopback moto S3, then
`auditchain verify-bundle` over the bundle it wrote, each beside a physical reference.

export: events/s and peak RSS of the runner (a subprocess, measured with wait4) beside
  `psql -c "COPY (SELECT row_to_json(e) ... ORDER BY seq) TO STDOUT" | gzip -6`: the same
  events read in order, as JSON lines, compressed at the runner's level, written to a file.
verify_bundle: bytes/s of the offline verifier over the downloaded bundle folder beside
  `sha256sum` over the same files.
Both tools report their own working seconds (interpreter start-up and imports excluded);
the wall-clock seconds of the whole process are kept beside them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .cluster import PGBIN, Finished, run_measured
from .ledger import Ledger, human
from .results import Row, Target

ROOT = Path(__file__).resolve().parents[2]
EXPORT_MODULE = "auditchain.export"
BUNDLE_MODULE = "auditchain.offline.bundle"
BUCKET = "bench-exports"
REFERENCE_COPY_SQL = (
    "COPY (SELECT row_to_json(e)::text FROM compliance.audit_events AS e ORDER BY e.seq) TO STDOUT"
)


def missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"{', '.join(absent)} not available yet" if absent else None


class BundleLab:
    """Owns the moto server and the downloaded bundles; export at a size, then verify it."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.workdir = Path(tempfile.mkdtemp(prefix="bench_bundles_"))
        self.bundles: dict[int, tuple[Path, int]] = {}
        self.rss_kib: dict[tuple[str, int], int] = {}
        self.moto: Any = None
        self.env: dict[str, str] = {}
        self.client: Any = None

    def _start_s3(self) -> None:
        if self.moto is not None:
            return
        sys.path.insert(0, str(ROOT / "tests" / "py"))
        from awsfake import FAKE_CREDENTIALS, MotoServer

        self.moto = MotoServer().start()
        self.env = {**os.environ, **FAKE_CREDENTIALS}
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=self.moto.url,
            region_name=FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        self.client.create_bucket(Bucket=BUCKET)

    def close(self) -> None:
        if self.moto is not None:
            self.moto.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def export(self, size: int) -> Row:
        row = Row(
            case="export",
            variant=f"events={human(size)}",
            unit="events/s",
            reference_name="psql COPY row_to_json ORDER BY seq | gzip -6 > file",
            targets=[],
        )
        row.skipped = missing(EXPORT_MODULE)
        if row.skipped:
            return row
        self.ledger.ensure_log(size)
        self._start_s3()
        self.ledger.settle("compliance.audit_events")
        reference_seconds = self._reference_dump()

        job_id = self.ledger.scalar("SELECT compliance.request_export('{}', 'bench')")
        # The request's own audit event waits in the outbox; the export holds chained events only.
        outcome, done = self.run_export(job_id, f"bench/{size}/")
        self.ledger.drain_all()
        if outcome["line_count"] != size:
            raise RuntimeError(f"the export holds {outcome['line_count']} lines, expected {size}")
        self.bundles[size] = (self.download(outcome["prefix"], f"bundle_{size}"), outcome["line_count"])

        row.measured = size / outcome["seconds"]
        row.reference = size / reference_seconds
        row.metrics = {
            "events": size,
            "export_seconds": outcome["seconds"],
            "export_wall_seconds": done.seconds,
            "reference_seconds": reference_seconds,
            "data_bytes": outcome["data_bytes"],
        }
        self._memory(row, size, done.peak_rss_kib)
        return row

    def _memory(self, row: Row, size: int, peak_rss_kib: int) -> None:
        """Both tools stream, so their memory must stay flat: peak RSS at this size against the
        previous, smaller one (at most 25% more)."""
        row.metrics["peak_rss_mib"] = round(peak_rss_kib / 1024, 1)
        self.rss_kib[row.case, size] = peak_rss_kib
        smaller = [s for case, s in self.rss_kib if case == row.case and s < size]
        if smaller:
            row.metrics["rss_vs_smaller"] = peak_rss_kib / self.rss_kib[row.case, max(smaller)]
            row.targets.append(Target("rss_vs_smaller", "<=", 1.25))

    def _reference_dump(self) -> float:
        target = self.workdir / "reference.ndjson.gz"
        server = self.ledger.server
        started = time.perf_counter()
        with target.open("wb") as sink:
            dump = subprocess.Popen(
                [
                    str(PGBIN / "psql"),
                    "-X",
                    "-q",
                    "-h",
                    server.host,
                    "-p",
                    str(server.port),
                    "-U",
                    server.user,
                    "-d",
                    self.ledger.dbname,
                    "-c",
                    REFERENCE_COPY_SQL,
                ],
                stdout=subprocess.PIPE,
            )
            gzip = subprocess.Popen(["gzip", "-6"], stdin=dump.stdout, stdout=sink)
            dump.stdout.close()
            if gzip.wait(timeout=3600) != 0 or dump.wait(timeout=60) != 0:
                raise RuntimeError("the reference dump (psql COPY | gzip) failed")
        seconds = time.perf_counter() - started
        target.unlink()
        return seconds

    def run_export(self, job_id: object, prefix: str) -> tuple[dict[str, Any], Finished]:
        """`auditchain export run --job` as a subprocess into the loopback S3: its JSON outcome, and
        how it ran (wall seconds, peak RSS)."""
        done = run_measured(
            [
                sys.executable,
                "-m",
                "auditchain.cli",
                "export",
                "run",
                "--job",
                str(job_id),
                "--bucket",
                BUCKET,
                "--prefix",
                prefix,
                "--endpoint-url",
                self.moto.url,
                "--json",
                "--dsn",
                self.ledger.server.dsn(self.ledger.dbname),
            ],
            env=self.env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"export run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return json.loads(done.stdout), done

    def run_verify(self, folder: Path, *options: str) -> tuple[dict[str, Any], Finished]:
        """`auditchain verify-bundle FOLDER --json` as a subprocess; its report (which must be ok),
        and how it ran."""
        done = run_measured(
            [sys.executable, "-m", "auditchain.cli", "verify-bundle", str(folder), "--json", *options],
            env=self.env,
        )
        report = json.loads(done.stdout) if done.stdout.strip() else {}
        if done.returncode != 0 or not report.get("ok"):
            found = (
                "; ".join(f["text"] for f in report.get("failures", [])[:3]) or done.stderr.strip()[-2000:]
            )
            raise RuntimeError(f"verify-bundle {folder.name} exited {done.returncode}: {found}")
        return report, done

    def download(self, prefix: str, name: str) -> Path:
        """Every object under prefix into a new folder of that name."""
        folder = self.workdir / name
        folder.mkdir()
        listing = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        for item in listing.get("Contents", []):
            self.client.download_file(BUCKET, item["Key"], str(folder / Path(item["Key"]).name))
        return folder

    def verify_bundle(self, size: int) -> Row:
        row = Row(
            case="verify_bundle",
            variant=f"events={human(size)}",
            unit="bytes/s",
            reference_name="sha256sum over the same bundle files",
        )
        row.skipped = missing(EXPORT_MODULE, BUNDLE_MODULE)
        if row.skipped:
            return row
        folder, lines = self.bundles[size]
        files = sorted(str(p) for p in folder.iterdir())
        total_bytes = sum(Path(f).stat().st_size for f in files)
        run_measured(["sha256sum", *files])  # both read from the page cache
        reference = run_measured(["sha256sum", *files])
        report, done = self.run_verify(folder, "--no-anchors")
        row.measured = total_bytes / report["seconds"]
        row.reference = total_bytes / reference.seconds
        row.metrics = {
            "events": lines,
            "bundle_bytes": total_bytes,
            "events_per_s": lines / report["seconds"],
            "verify_seconds": report["seconds"],
            "verify_wall_seconds": done.seconds,
            "reference_seconds": reference.seconds,
        }
        self._memory(row, size, done.peak_rss_kib)
        return row
