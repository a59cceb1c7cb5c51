"""A loopback S3/CloudWatch/KMS endpoint (moto's server) for `make demo` and the tests.

Development tooling, like demo.py: it needs the `dev` extra (moto[server]) and nothing in the
CLI imports it. Two ways to run the same server:

- `start_process`: moto's standalone server as a child process. The demo uses it because the
  endpoint must outlive `make demo` for the commands a user types next; tests use it when
  they kill or restart the endpoint.
- `start_threaded`: moto's ThreadedMotoServer inside the calling process, for tests that only
  need an endpoint (quicker to start, nothing to clean up).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

# Fake credentials and region: moto accepts any, but boto3 refuses to sign without them.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
HOST = "127.0.0.1"


class EndpointError(RuntimeError):
    """The endpoint could not be started; the message says why and what to change."""


def url_of(port: int) -> str:
    return f"http://{HOST}:{port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def is_moto(url: str) -> bool:
    """Whether a moto server answers at url."""
    try:
        urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
    except OSError:
        return False
    return True


def reset(url: str) -> None:
    """Forget every bucket, object, metric and key the server holds."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()


def start_process(
    port: int, *, log: IO[bytes] | int = subprocess.DEVNULL, detach: bool = False, hint: str = ""
) -> subprocess.Popen[bytes]:
    """Start `moto_server` on 127.0.0.1:port and wait until it answers. detach: in a session of
    its own, so that it outlives its parent and its terminal. hint: how to choose another port."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        raise EndpointError(f"{server} is missing: install the dev extra (pip install -e '.[dev]')")
    if port_in_use(port):
        raise EndpointError(f"port {port} is already in use by another program{hint}")
    process = subprocess.Popen(
        [str(server), "-H", HOST, "-p", str(port)],
        stdout=log,
        stderr=log,
        env={**os.environ, **FAKE_CREDENTIALS},
        start_new_session=detach,
    )
    deadline = time.monotonic() + 30
    while not is_moto(url_of(port)):
        if process.poll() is not None:
            raise EndpointError(f"moto_server on port {port} exited with {process.returncode}{hint}")
        if time.monotonic() > deadline:
            process.kill()
            raise EndpointError(f"moto_server on port {port} did not answer within 30 s")
        time.sleep(0.1)
    return process


def start_threaded():
    """ThreadedMotoServer on a free loopback port, started; its url is `url_of(server port)`."""
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO to stderr, which would mix into the output tests read.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    return server
