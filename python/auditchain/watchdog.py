"""`auditchain watchdog`: publish compliance.metrics() and a heartbeat to CloudWatch.

Every cycle reads compliance.metrics() (the database role needs only compliance_watchdog)
and publishes, in one PutMetricData call with the dimension Stage=<stage>:

  ComplianceAnchorWatchdogHeartbeat  1, proof that this cycle read the ledger and published
  ComplianceAnchorGap                seconds the oldest unanchored event has waited
  Compliance<Metric>                 every other metric (docs/api.md, "Metrics")
  ComplianceExpectationSilence       per expected-event monitor (dimension Monitor=<name>
  ComplianceExpectationSilent        as well): its silence in seconds, and 1 while silent

A metric whose value is NULL (not measurable now) is left out of the call. The heartbeat
is sent only together with the metrics: when the database cannot be read, no heartbeat
goes out and the heartbeat-missing alarm fires. A failed publish is logged as an error
every time; with --once the command then exits 3, with --follow it keeps going.

With --follow and --prometheus-port the same metrics are served as Prometheus text on
http://<host>:<port>/metrics (prometheus_client's exposition, OpenMetrics when the scraper
asks for it), read from the database at each scrape; a scrape the database cannot answer
gets 503. The endpoint binds to 127.0.0.1 unless --prometheus-host says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import threading
import time
from datetime import UTC, datetime
from wsgiref.simple_server import WSGIRequestHandler, make_server

import boto3
import prometheus_client
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client.exposition import ThreadingWSGIServer

from . import db
from .cliutil import add_command
from .errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError
from .metrics import Reading, fetch_from, prometheus_registry

log = logging.getLogger("auditchain.watchdog")

DEFAULT_NAMESPACE = "Auditchain/Compliance"
DEFAULT_INTERVAL = 300
HEARTBEAT_METRIC = "ComplianceAnchorWatchdogHeartbeat"
# The heartbeat lives only in CloudWatch, so its rules live here, beside the cadence that
# sends it: one 5-minute cycle missed is a warning, two are critical (and the alarm).
HEARTBEAT_WARNING_SECONDS = 360
HEARTBEAT_CRITICAL_SECONDS = 2 * DEFAULT_INTERVAL
STAGE_DIMENSION = "Stage"
MONITOR_DIMENSION = "Monitor"
SILENCE_METRIC = "ComplianceExpectationSilence"
SILENT_METRIC = "ComplianceExpectationSilent"
# PutMetricData takes at most 1,000 values per call.
MAX_VALUES_PER_CALL = 1000
NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A dead endpoint must fail a cycle in seconds, not after botocore's default minute-long waits.
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"})


def name_part(text: str) -> str:
    """A stage or prefix: it becomes part of alarm names and a dimension value."""
    if not NAME_PART.match(text):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return text


def add_cloudwatch_options(parser: argparse.ArgumentParser, *, stage_required: bool) -> None:
    parser.add_argument(
        "--stage",
        type=name_part,
        required=stage_required,
        help="deployment stage, the value of the Stage dimension (e.g. dev, prod)",
    )
    parser.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help=f"CloudWatch namespace (default: {DEFAULT_NAMESPACE})"
    )
    parser.add_argument("--region", help="AWS region (default: boto3's configuration)")
    parser.add_argument(
        "--endpoint-url",
        help="CloudWatch endpoint URL (default: AWS_ENDPOINT_URL_CLOUDWATCH, AWS_ENDPOINT_URL, else AWS)",
    )


def cloudwatch_client(args: argparse.Namespace):
    try:
        return boto3.client(
            "cloudwatch", region_name=args.region, endpoint_url=args.endpoint_url, config=CLIENT_CONFIG
        )
    except BotoCoreError as exc:
        raise AuditchainError(f"CloudWatch is not configured: {exc}", EXIT_USAGE) from None


def stage_dimensions(stage: str) -> list[dict[str, str]]:
    return [{"Name": STAGE_DIMENSION, "Value": stage}]


def monitor_dimensions(stage: str, monitor: str) -> list[dict[str, str]]:
    return [*stage_dimensions(stage), {"Name": MONITOR_DIMENSION, "Value": monitor}]


def metric_data(reading: Reading, stage: str, at: datetime) -> list[dict[str, object]]:
    """The PutMetricData items: the heartbeat first, then every measurable metric, then two
    values per expected-event monitor."""
    dimensions = stage_dimensions(stage)
    data: list[dict[str, object]] = [
        {
            "MetricName": HEARTBEAT_METRIC,
            "Dimensions": dimensions,
            "Timestamp": at,
            "Value": 1.0,
            "Unit": "Count",
        }
    ]
    for m in reading.metrics:
        if m.value is None:
            continue
        data.append(
            {
                "MetricName": m.cloudwatch_name,
                "Dimensions": dimensions,
                "Timestamp": at,
                "Value": float(m.value),
                "Unit": m.cloudwatch_unit,
            }
        )
    for e in reading.expectations:
        for name, value, unit in (
            (SILENCE_METRIC, e.silence_seconds, "Seconds"),
            (SILENT_METRIC, float(e.silent), "None"),
        ):
            data.append(
                {
                    "MetricName": name,
                    "Dimensions": monitor_dimensions(stage, e.name),
                    "Timestamp": at,
                    "Value": float(value),
                    "Unit": unit,
                }
            )
    return data


def publish(client, namespace: str, stage: str, reading: Reading) -> int:
    """PutMetricData calls of up to 1,000 values; the one holding the heartbeat goes last, so
    a heartbeat is sent only when everything else was. Returns the number of values sent.
    Raises AuditchainError (EXIT_UNAVAILABLE)."""
    data = metric_data(reading, stage, datetime.now(UTC))
    try:
        for start in reversed(range(0, len(data), MAX_VALUES_PER_CALL)):
            client.put_metric_data(Namespace=namespace, MetricData=data[start : start + MAX_VALUES_PER_CALL])
    except (BotoCoreError, ClientError) as exc:
        raise AuditchainError(
            f"CloudWatch publish FAILED for namespace {namespace} stage {stage}: {exc}; "
            f"{len(data)} values including the heartbeat were NOT delivered",
            EXIT_UNAVAILABLE,
        ) from None
    return len(data)


def run_cycle(args: argparse.Namespace, client) -> None:
    reading = fetch_from(args.dsn, app="auditchain watchdog")
    sent = publish(client, args.namespace, args.stage, reading)
    gap = next((m.value for m in reading.metrics if m.name == "anchor_gap_seconds"), None)
    log.info(
        "published %d values to %s (stage %s); anchor gap %s s",
        sent,
        args.namespace,
        args.stage,
        "-" if gap is None else f"{gap:.0f}",
    )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        log.debug("prometheus %s - %s", self.address_string(), format % args)


class PrometheusEndpoint:
    """GET /metrics: prometheus_client's exposition of compliance.metrics(), read afresh at
    each scrape; 503 with one line when the database cannot be read; any other path 404."""

    def __init__(self, dsn: str, host: str, port: int):
        exposition = prometheus_client.make_wsgi_app(
            prometheus_registry(lambda: fetch_from(dsn, app="auditchain watchdog prometheus"))
        )

        def app(environ, start_response):
            if environ["PATH_INFO"] != "/metrics":
                return _reply(start_response, "404 Not Found", "not found; try /metrics\n")
            try:
                return exposition(environ, start_response)
            except AuditchainError as exc:
                log.error("Prometheus scrape failed: %s", exc)
                return _reply(start_response, "503 Service Unavailable", f"{exc}\n")

        try:
            self.server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as exc:
            raise AuditchainError(f"cannot listen on {host}:{port}: {exc}", EXIT_UNAVAILABLE) from None
        self.thread = threading.Thread(target=self.server.serve_forever, name="prometheus", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def __enter__(self) -> PrometheusEndpoint:
        self.thread.start()
        log.info("serving Prometheus metrics on %s", self.address)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reply(start_response, status: str, body: str) -> list[bytes]:
    payload = body.encode("utf-8")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload)))]
    start_response(status, headers)
    return [payload]


def follow(args: argparse.Namespace, client, stop: threading.Event) -> None:
    """A cycle every --interval seconds, measured from the start of each; failures never stop it."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            run_cycle(args, client)
        except AuditchainError as exc:
            log.error("watchdog cycle failed: %s", exc)
        stop.wait(max(0.0, args.interval - (time.monotonic() - started)))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers,
        "watchdog",
        help="publish compliance metrics and a heartbeat to CloudWatch (once or every 5 minutes)",
        description=__doc__,
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one cycle; exit 3 when publishing fails")
    mode.add_argument("--follow", action="store_true", help="a cycle every --interval seconds until stopped")
    p.add_argument(
        "--interval",
        type=int,
        default=DEFAULT_INTERVAL,
        help=f"seconds between cycles with --follow (default: {DEFAULT_INTERVAL})",
    )
    add_cloudwatch_options(p, stage_required=True)
    p.add_argument(
        "--prometheus-port",
        type=int,
        help="with --follow, also serve Prometheus text on this port (0 picks a free port)",
    )
    p.add_argument(
        "--prometheus-host",
        default="127.0.0.1",
        help="address the Prometheus endpoint binds to (default: 127.0.0.1)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.interval < 1:
        raise AuditchainError("--interval must be at least 1 second", EXIT_USAGE)
    if args.prometheus_port is not None and not args.follow:
        raise AuditchainError("--prometheus-port needs --follow", EXIT_USAGE)
    client = cloudwatch_client(args)
    log.info("watchdog for %s, stage %s, namespace %s", db.describe(args.dsn), args.stage, args.namespace)
    if args.once:
        try:
            run_cycle(args, client)
        except AuditchainError as exc:
            log.error("%s", exc)
            return exc.exit_code
        return EXIT_OK

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.prometheus_port is None:
        follow(args, client, stop)
    else:
        with PrometheusEndpoint(args.dsn, args.prometheus_host, args.prometheus_port):
            follow(args, client, stop)
    log.info("watchdog stopped")
    return EXIT_OK
