"""The benchmark suite at tiny sizes, so that `make bench` cannot rot: every case runs and
produces numbers beside its reference. Timing targets are never asserted here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import admin_dsn

ROOT = Path(__file__).resolve().parents[2]
CASES = {
    "emit",
    "emit_batch",
    "drain",
    "verify_chain",
    "rotation",
    "export",
    "verify_bundle",
    "latency",
    "merkle_proof",
    "merkle_drain",
    "monitors",
    "receipt_verify",
    "hash_v2_drain",
    "erase",
    "tenant_drain",
    "tenant_export",
}
# A case may be skipped only while the module it measures does not exist.
NEEDS = {"export": ["auditchain.export"], "verify_bundle": ["auditchain.export", "auditchain.offline.bundle"]}


@pytest.mark.slow
def test_bench_smoke_measures_every_case_beside_its_reference(tmp_path: Path) -> None:
    output = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text(encoding="utf-8"))

    assert results["mode"] == "smoke"
    machine = results["machine"]
    assert machine["nproc"] >= 1 and machine["memory_gib"] > 0
    assert machine["cpu_model"] and machine["postgresql"].startswith("PostgreSQL 15")

    rows = results["cases"]
    assert {row["case"] for row in rows} == CASES
    assert len([r for r in rows if r["case"] == "emit"]) == 4, "clients 1, 4, 8 and emit beside a larger log"
    assert len([r for r in rows if r["case"] == "verify_chain"]) == 2, "two sizes"
    drains = [r for r in rows if r["case"] == "drain"]
    assert len(drains) == 3, "an empty, a larger and a still larger log"
    assert all("seconds_per_event_vs_empty_log" in r["metrics"] for r in drains[1:]), "growth not compared"
    assert len([r for r in rows if r["case"] == "emit_batch"]) == 2, "two batch sizes"
    assert len([r for r in rows if r["case"] in ("merkle_proof", "merkle_drain")]) == 4, "two sizes each"
    for row in rows:
        label = f"{row['case']} {row['variant']}"
        assert row["error"] is None, f"{label}: {row['error']}"
        if row["skipped"]:
            missing = [m for m in NEEDS.get(row["case"], []) if importlib.util.find_spec(m) is None]
            assert missing, f"{label} skipped although what it measures exists: {row['skipped']}"
            continue
        assert row["measured"] > 0, label
        assert all(isinstance(t["met"], bool) for t in row["targets"]), label
        # Cases measured against a reference without a target of their own.
        if row["case"] not in ("export", "verify_bundle", "receipt_verify"):
            assert row["targets"], label
        if row["case"] != "latency":
            assert row["reference"] > 0 and row["ratio"] > 0, label
        if row["case"] in ("emit", "emit_batch", "drain", "verify_chain", "rotation"):
            assert row["floor_name"] and row["floor"] > 0 and row["floor_ratio"] > 0, f"{label}: no floor"
        assert row["variant"] in done.stdout, f"{label} missing from the printed table"

    for case in ("export", "verify_bundle"):
        larger = [r for r in rows if r["case"] == case and not r["skipped"]][1:]
        assert all("rss_vs_smaller" in r["metrics"] for r in larger), f"{case}: memory not compared"

    latency = next(r for r in rows if r["case"] == "latency")["metrics"]
    assert latency["unchained"] == 0 and latency["emitted"] > 0
    assert latency["p50_s"] <= latency["p99_s"] <= latency["max_s"]

    with psycopg.connect(admin_dsn()) as admin:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        assert admin.execute(query, (results["database"],)).fetchone() is None, "bench database left behind"
