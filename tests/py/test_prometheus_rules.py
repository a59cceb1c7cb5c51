"""The shipped Prometheus rules and Grafana dashboard: promtool accepts the rules and their
unit tests pass (a silent producer fires, a stalled scheduler fires, quiet series stay
quiet), every alert is a CloudWatch alarm with the database's threshold, and every alert
and dashboard query names only metrics the real exporter serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from auditchain.alarms import ALARMS, MONITOR_ALARM
from auditchain.watchdog import PrometheusEndpoint

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "auditchain-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "auditchain-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "auditchain.json"
METRIC_NAME = re.compile(r"\bauditchain_[a-z_]+\b")
THRESHOLD = re.compile(r"^auditchain_([a-z_]+) > ([0-9.]+)$")


def promtool(*argv: str, cwd: Path | None = None) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: install the Debian package prometheus (make setup does)")
    proc = subprocess.run([exe, *argv], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert proc.returncode == 0, f"promtool {' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def panel_queries() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def test_promtool_checks_the_rules():
    out = promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_promtool_rule_unit_tests_pass():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    names = " ".join(t["name"] for t in tests)
    assert "silent producer" in names and "stalled pg_cron scheduler" in names and "healthy" in names

    out = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)

    assert "SUCCESS" in out


def test_one_alert_per_cloudwatch_alarm_with_its_threshold(conn):
    """Same alarms, same thresholds: the label `alarm` names the CloudWatch alarm, and an
    alert on a compliance.metrics() row fires above exactly that row's alarm_above."""
    alarm_above = dict(
        conn.execute("SELECT metric, alarm_above FROM compliance.metrics() WHERE alarm_above IS NOT NULL")
    )
    rules = alert_rules()
    by_alarm = {r["labels"]["alarm"]: r for r in rules}

    assert set(by_alarm) == {spec.what for spec in ALARMS} | {MONITOR_ALARM + "<monitor>"}
    assert len(rules) == len(by_alarm)
    for spec in ALARMS:
        rule = by_alarm[spec.what]
        assert rule["annotations"]["runbook"] == f"docs/runbook.md#{spec.runbook or spec.what}"
        if spec.sql_metric is None:
            continue
        metric, threshold = THRESHOLD.match(rule["expr"]).groups()
        assert (metric, float(threshold)) == (spec.sql_metric, alarm_above[spec.sql_metric]), spec.what
    assert by_alarm[MONITOR_ALARM + "<monitor>"]["expr"] == "auditchain_expectation_silent > 0"


@pytest.fixture
def served_metrics(conn, dsn) -> set[str]:
    """The metric names of one scrape of the real exporter on a database with a monitor."""
    conn.execute("SELECT compliance.expect_events('auth', 'auth.%', '1 minute')")
    with PrometheusEndpoint(dsn, "127.0.0.1", 0) as endpoint:
        text = urllib.request.urlopen(endpoint.address, timeout=30).read().decode()
    return set(re.findall(r"^# TYPE (\S+) gauge$", text, re.MULTILINE))


def test_every_alert_names_only_served_metrics(served_metrics):
    named = {name for rule in alert_rules() for name in METRIC_NAME.findall(rule["expr"])}

    assert named
    assert named - served_metrics == set()


def test_every_dashboard_query_names_served_metrics_and_parses(served_metrics, tmp_path):
    queries = panel_queries()
    named = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert all(METRIC_NAME.search(query) for query in queries)
    assert named - served_metrics == set()
    # promtool parses each query as the expression of a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"panel:q{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))

    out = promtool("check", "rules", str(tmp_path / "panels.yml"))

    assert f"SUCCESS: {len(queries)} rules found" in out


def test_dashboard_is_importable_with_a_datasource_input():
    dashboard = json.loads(DASHBOARD.read_text())

    assert dashboard["uid"] == "auditchain"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in dashboard["panels"])
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
