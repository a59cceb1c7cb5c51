"""Cases hash_v2_drain and erase: what hash format v2 (salted commitments) costs the drainer,
and how fast compliance.erase removes a data subject's values.

hash_v2_drain drains the same backlog repeatedly, each time in one transaction that is rolled
back: alternately as shipped (v2: two salts derived and two commitments per event, salts
stored) and with compliance.drain replaced, inside that transaction only, by the same
function with the v1 record put back (the actor as text, the payload's unsalted digest, no
salts). Same rows, same batches: the ratio is v2's share of the drain. Emit is not measured
separately: v2 changes nothing there (the salts are drawn by the drainer), so its v2/v1
ratio is 1 by construction.

erase times compliance.erase over `count` events of the log (payload and actor), in a
transaction that is rolled back, beside an UPDATE of the same rows' payload in a plain copy
of them."""

from __future__ import annotations

import re

from .drain import fresh_backlog
from .ledger import Ledger, human
from .merkle import ROUNDS, drain_rolled_back, median_timing
from .results import Row, Target, cpu_metrics

# compliance.drain with the v1 record: every substitution must apply, else the shipped
# drain changed shape and this case must be updated rather than measure something else.
V1_SUBSTITUTIONS = [
    (r"compliance\.event_record_v2\(", "compliance.event_record("),
    (
        r"compliance\.commitment\(pg_catalog\.substr\(b\.salts, 17, 16\), b\.actor\),\s*"
        r"compliance\.commitment\(pg_catalog\.substr\(b\.salts, 1, 16\), b\.payload::text\)",
        "b.actor, compliance.payload_digest(b.payload)",
    ),
    (r"compliance\._new_salt_key\(\)", "NULL::bytea"),
    (r"compliance\._salts\(v_salt_key, o\.outbox_id\)", "NULL::bytea"),
    (r"m\.payload, 2, u\.prev_hash", "m.payload, 1, u.prev_hash"),
]


def v1_drain_sql(ledger: Ledger) -> str:
    definition = str(ledger.scalar("SELECT pg_get_functiondef('compliance.drain(integer)'::regprocedure)"))
    for pattern, replacement in V1_SUBSTITUTIONS:
        definition, count = re.subn(pattern, replacement, definition)
        if not count:
            raise RuntimeError(
                f"compliance.drain no longer contains {pattern!r}: update bench/benchkit/erasure.py"
            )
    return definition


def run_drain(ledger: Ledger, *, log_size: int, backlog: int) -> Row:
    ledger.ensure_log(log_size)
    row = Row(
        case="hash_v2_drain",
        variant=f"backlog={human(backlog)} log={human(log_size)}",
        unit="events/s",
        reference_name="the same drain with the v1 record (no salts, unsalted payload digest)",
        targets=[Target("ratio", ">=", 0.95)],
    )
    v1_sql = v1_drain_sql(ledger)
    fresh_backlog(ledger, backlog)
    drain_rolled_back(ledger, v1_sql)  # warm the cache for both
    v1s, v2s = [], []
    for _ in range(ROUNDS):
        v1s.append(drain_rolled_back(ledger, v1_sql))
        v2s.append(drain_rolled_back(ledger))
    v1, v2 = median_timing(v1s), median_timing(v2s)
    ledger.conn.execute("TRUNCATE compliance.audit_outbox")
    row.measured = backlog / v2.wall
    row.reference = backlog / v1.wall
    row.metrics = {
        "events": backlog,
        "log_size_before": log_size,
        "v2_seconds": v2.wall,
        "v1_seconds": v1.wall,
        "rounds": ROUNDS,
        **cpu_metrics(v2, v1, backlog),
    }
    return row


COPY_SQL = (
    "CREATE TEMP TABLE erase_copy AS SELECT seq, payload, actor FROM compliance.audit_events WHERE seq <= %s"
)
REFERENCE_SQL = "UPDATE erase_copy SET payload = NULL, actor = NULL WHERE seq = ANY (%s)"
ERASE_SQL = "SELECT compliance.erase(%s, '{payload,actor}', 'bench', 'bench')"


def run_erase(ledger: Ledger, *, size: int, count: int) -> Row:
    ledger.ensure_log(size)
    row = Row(
        case="erase",
        variant=f"events={human(count)} log={human(size)}",
        unit="events/s",
        reference_name="UPDATE of the same rows' payload and actor to NULL in a plain copy",
        targets=[Target("measured", ">=", 1000)],
    )
    seqs = list(range(1, count + 1))
    erases, references = [], []
    for _ in range(ROUNDS):
        erases.append(ledger.measure_rolled_back(lambda: ledger.conn.execute(ERASE_SQL, (seqs,))))
        references.append(
            ledger.measure_rolled_back(
                lambda: ledger.conn.execute(REFERENCE_SQL, (seqs,)),
                lambda: ledger.conn.execute(COPY_SQL, (count,)),
            )
        )
    erase, reference = median_timing(erases), median_timing(references)
    row.measured = count / erase.wall
    row.reference = count / reference.wall
    row.metrics = {"events": count, "log_size": size, "erase_seconds": erase.wall, "rounds": ROUNDS}
    return row
