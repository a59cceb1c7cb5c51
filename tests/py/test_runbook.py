"""docs/runbook.md is executable: every SQL and shell command in it runs without error
against a database put into the state its section is about, and it covers every alarm.

Grammar (HTML comments in the document):
  <!-- runbook-test: scenario NAME -->  the section's database state (see SCENARIOS)
  <!-- runbook-test: exits 0 1 2 -->   the next block's commands may exit with these codes
  <!-- runbook-test: skip REASON -->    the next block is not run (destructive by design)
Console blocks run each `$ ` line with bash; SQL blocks are fed to psql, as the owner.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest

from auditchain.alarms import ALARMS
from auditchain.errors import EXIT_UNAVAILABLE
from awsfake import free_port
from test_anchor import create_anchor, make_worm_bucket, run_cli
from test_status import chain_recorded_at, emit
from test_watchdog import unique_stage

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "runbook.md"
ANNOTATION = re.compile(r"^<!-- runbook-test: (scenario|exits|skip) (.+?) -->$")
PLACEHOLDER = re.compile(r"<[a-z_]+>")
MAX_SKIPPED_BLOCKS = 3


@dataclass
class Block:
    language: str
    text: str
    line: int
    skip: str | None = None
    exits: tuple[int, ...] = (0,)

    @property
    def commands(self) -> list[str]:
        if self.language == "sql":
            return [self.text]
        return [line[2:] for line in self.text.splitlines() if line.startswith("$ ")]


@dataclass
class Section:
    title: str
    scenario: str = "healthy"
    blocks: list[Block] = field(default_factory=list)

    @property
    def runnable(self) -> list[Block]:
        return [b for b in self.blocks if b.language in ("sql", "console") and b.skip is None]


def parse(text: str) -> list[Section]:
    sections = [Section("preamble")]
    pending: dict[str, str] = {}
    fence: Block | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is not None:
            if line.startswith("```"):
                sections[-1].blocks.append(fence)
                fence = None
            else:
                fence.text += line + "\n"
            continue
        if line.startswith("## "):
            sections.append(Section(line[3:].strip()))
        elif line.startswith("```"):
            fence = Block(line[3:].strip(), "", number, skip=pending.pop("skip", None))
            if "exits" in pending:
                fence.exits = tuple(int(code) for code in pending.pop("exits").split())
        elif match := ANNOTATION.match(line.strip()):
            kind, value = match.groups()
            if kind == "scenario":
                sections[-1].scenario = value
            else:
                pending[kind] = value
    return sections


SECTIONS = parse(RUNBOOK.read_text(encoding="utf-8"))


@dataclass
class Context:
    conn: psycopg.Connection
    dsn: str
    endpoint_url: str
    bucket: str
    capsys: pytest.CaptureFixture[str]
    stage: str = field(default_factory=unique_stage)

    def anchor_once(self, endpoint_url: str | None = None) -> int:
        argv = ["anchor", "--once", "--dsn", self.dsn, "--bucket", self.bucket]
        return run_cli(self.capsys, *argv, "--endpoint-url", endpoint_url or self.endpoint_url)[0]

    def scalar(self, query: str) -> object:
        return self.conn.execute(query).fetchone()[0]

    def tamper(self, statement: str) -> None:
        self.conn.execute("ALTER TABLE compliance.audit_events DISABLE TRIGGER forbid_row_change")
        self.conn.execute(statement)
        self.conn.execute("ALTER TABLE compliance.audit_events ENABLE ALWAYS TRIGGER forbid_row_change")


def history(ctx: Context) -> None:
    """A few chained events and an empty WORM bucket."""
    emit(ctx.conn, 5)
    ctx.conn.execute("SELECT compliance.drain()")
    make_worm_bucket(ctx.endpoint_url, ctx.bucket)


def anchored(ctx: Context) -> None:
    history(ctx)
    create_anchor(ctx.conn)
    assert ctx.anchor_once() == 0


def healthy(ctx: Context) -> None:
    anchored(ctx)
    ctx.conn.execute("SELECT compliance.verify_new_events()")


def anchor_gap(ctx: Context) -> None:
    make_worm_bucket(ctx.endpoint_url, ctx.bucket)
    chain_recorded_at(ctx.conn, 3, datetime.now(UTC) - timedelta(minutes=40))


def outbox_backlog(ctx: Context) -> None:
    healthy(ctx)
    emit(ctx.conn, 150)


def drainer_halted(ctx: Context) -> None:
    healthy(ctx)
    ctx.tamper("UPDATE compliance.audit_events SET actor = 'someone else' WHERE seq = 5")
    emit(ctx.conn, 1)
    with pytest.raises(psycopg.Error):
        ctx.conn.execute("CALL compliance.run_drainer(max_runtime => '1 second')")
    assert ctx.scalar("SELECT halted_at IS NOT NULL FROM compliance.drainer_state")


def anchor_uploads_failing(ctx: Context) -> None:
    emit(ctx.conn, 5)
    ctx.conn.execute("SELECT compliance.drain()")
    create_anchor(ctx.conn)
    assert ctx.anchor_once(f"http://127.0.0.1:{free_port()}") == EXIT_UNAVAILABLE
    make_worm_bucket(ctx.endpoint_url, ctx.bucket)  # the cause is fixed by the time on-call acts


def anchor_failed(ctx: Context) -> None:
    history(ctx)
    create_anchor(ctx.conn)
    key = ctx.scalar(
        "SELECT 'anchors/' || lpad(seq_to::text, 20, '0') || '-' || cadence_id || '.json'"
        "  FROM compliance.anchors"
    )
    boto3.client("s3", endpoint_url=ctx.endpoint_url).put_object(Bucket=ctx.bucket, Key=key, Body=b"{}")
    assert ctx.anchor_once() == 1


def export_stuck(ctx: Context) -> None:
    healthy(ctx)
    job = ctx.scalar("SELECT compliance.request_export('{}', 'auditor@example.com')")
    ctx.conn.execute("SELECT compliance.claim_export(%s)", (job,))
    ctx.conn.execute("ALTER TABLE compliance.export_jobs DISABLE TRIGGER export_jobs_guard")
    ctx.conn.execute(
        "UPDATE compliance.export_jobs SET created_at = now() - interval '21 minutes',"
        " started_at = now() - interval '20 minutes' WHERE job_id = %s",
        (job,),
    )
    ctx.conn.execute("ALTER TABLE compliance.export_jobs ENABLE ALWAYS TRIGGER export_jobs_guard")


def verification_failed(ctx: Context) -> None:
    anchored(ctx)
    ctx.tamper("UPDATE compliance.audit_events SET payload = '{\"edited\": true}' WHERE seq = 2")
    ctx.conn.execute("SELECT compliance.verify_new_events()")
    assert ctx.scalar("SELECT last_ok FROM compliance.verification_state") is False


def migration_pending(ctx: Context) -> None:
    """The release brought migration 0007 and new definitions; this database has neither."""
    healthy(ctx)
    ctx.conn.execute("DROP TABLE compliance.anchor_failure_reviews")
    ctx.conn.execute("DROP INDEX compliance.idx_anchors_failed")
    ctx.conn.execute("DELETE FROM compliance.schema_migrations WHERE filename = '0007_watchdog.sql'")
    ctx.conn.execute(
        "UPDATE compliance.schema_migrations SET checksum = repeat('0', 64) WHERE filename = '75_metrics.sql'"
    )


def producer_events(ctx: Context) -> None:
    """billing keeps producing; the auth producer stopped an hour ago."""
    healthy(ctx)
    ctx.conn.execute("SELECT compliance.expect_events('billing', 'billing.%', '10 minutes')")
    ctx.conn.execute("SELECT compliance.expect_events('auth', 'auth.%', '10 minutes')")
    ctx.conn.execute("UPDATE compliance.event_expectations SET watched_since = now() - interval '1 hour'")
    ctx.conn.execute("SELECT compliance.emit('billing.invoice_sent', 'svc:billing')")
    ctx.conn.execute("SELECT compliance.drain()")
    assert ctx.scalar("SELECT array_agg(name) FROM compliance.expectation_status() WHERE silent") == ["auth"]


def erasure_request(ctx: Context) -> None:
    """A tenant's log holding a data subject's events, anchored."""
    history(ctx)
    ctx.conn.execute(
        "SELECT compliance.emit('user.login', 'alice@example.com',"
        " jsonb_build_object('email', 'alice@example.com', 'n', g), 'acme') FROM generate_series(1, 3) AS g"
    )
    ctx.conn.execute("SELECT compliance.drain()")
    create_anchor(ctx.conn)
    assert ctx.anchor_once() == 0


SCENARIOS: dict[str, Callable[[Context], None]] = {
    "healthy": healthy,
    "anchor-gap": anchor_gap,
    "heartbeat-missing": healthy,
    "outbox-backlog": outbox_backlog,
    "drainer-halted": drainer_halted,
    "anchor-uploads-failing": anchor_uploads_failing,
    "anchor-failed": anchor_failed,
    "export-stuck": export_stuck,
    "verification-failed": verification_failed,
    "cron": healthy,
    "migration-pending": migration_pending,
    "producer-events": producer_events,
    "erasure-request": erasure_request,
}


def placeholders(ctx: Context) -> dict[str, str]:
    """Values for the document's placeholders, from the rows the scenario made."""
    queries = {
        "<last_seq>": "SELECT max(seq) FROM compliance.audit_events",
        "<first_bad_seq>": "SELECT first_bad_seq FROM compliance.verification_state",
        "<job_id>": "SELECT job_id FROM compliance.export_jobs ORDER BY created_at LIMIT 1",
        "<anchor_id>": "SELECT anchor_id FROM compliance.anchors WHERE status = 'failed' LIMIT 1",
        # The silent monitor, and still the same one once the runbook paused or resumed it.
        "<monitor>": "SELECT s.name FROM compliance.expectation_status() AS s"
        " JOIN compliance.event_expectations AS x USING (name)"
        " ORDER BY s.silent DESC, x.paused DESC, x.watched_since DESC LIMIT 1",
    }
    values = {"<stage>": ctx.stage}
    for placeholder, query in queries.items():
        value = ctx.scalar(f"SELECT ({query})")
        if value is not None:
            values[placeholder] = str(value)
    return values


def fill(command: str, values: dict[str, str], where: str) -> str:
    for placeholder, value in values.items():
        command = command.replace(placeholder, value)
    left = PLACEHOLDER.findall(command)
    assert not left, f"{where}: no value for {left}"
    return command


def shell_env(ctx: Context) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=ctx.dsn,
        AUDITCHAIN_BUCKET=ctx.bucket,
        AWS_ENDPOINT_URL=ctx.endpoint_url,
        PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}",
    )
    return env


@pytest.mark.slow
@pytest.mark.parametrize(
    "section", [s for s in SECTIONS if s.runnable], ids=lambda s: s.title.lower().replace(" ", "-")
)
def test_runbook_commands_run(section: Section, conn, dsn, endpoint_url, bucket_name, capsys):
    ctx = Context(conn, dsn, endpoint_url, bucket_name, capsys)
    SCENARIOS[section.scenario](ctx)
    try:
        for block in section.runnable:
            values = placeholders(ctx)
            for command in block.commands:
                where = f"runbook.md line {block.line} ({section.title})"
                command = fill(command, values, where)
                if block.language == "sql":
                    # As documented: the block pasted into psql, each statement on its own.
                    argv, stdin = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn], command
                else:
                    argv, stdin = ["bash", "-c", command], None
                proc = subprocess.run(
                    argv, input=stdin, env=shell_env(ctx), capture_output=True, text=True, timeout=120
                )
                assert proc.returncode in block.exits, (
                    f"{where}: `{command}` exited {proc.returncode}\n{proc.stderr}"
                )
                assert "Traceback" not in proc.stderr, f"{where}: `{command}`\n{proc.stderr}"
    finally:
        conn.execute("SELECT compliance.unschedule_jobs()")


def test_every_scenario_named_in_the_runbook_exists():
    assert {s.scenario for s in SECTIONS} <= set(SCENARIOS)


def test_every_alarm_and_reference_scenario_has_a_section():
    text = RUNBOOK.read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', text))
    alarms = {spec.what for spec in ALARMS}
    reference = {
        "outbox-depth",
        "drainer-halted",
        "anchor-failed",
        "anchor-uploads-failing",
        "watchdog-heartbeat-missing",
        "anchor-gap",
        "drift-gate",
        "exports-stuck",
        "producer-events-missing",
        "silent-producers",
        "irreversible-operations",
    }
    assert alarms | reference <= anchors


def test_every_metric_is_documented(conn):
    text = RUNBOOK.read_text(encoding="utf-8")
    names = [row[0] for row in conn.execute("SELECT metric FROM compliance.metrics()")]
    assert [n for n in names if f"| `{n}` |" not in text] == []


def test_few_commands_are_exempt():
    skipped = [b for s in SECTIONS for b in s.blocks if b.skip]
    assert 0 < len(skipped) <= MAX_SKIPPED_BLOCKS
    assert all("set-compliance" in b.text or "set-retention" in b.text for b in skipped)
