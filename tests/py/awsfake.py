"""A real S3/CloudWatch/KMS API on loopback: moto's server (auditchain.loopback, which the demo
uses too).

Tests talk to it through boto3 exactly as production talks to AWS; nothing is mocked
in-process. The session's endpoint runs in a thread of the test process; tests that need the
endpoint to die mid-operation, or a new empty one on the same port, start a MotoServer: a child
process of their own.
"""

from __future__ import annotations

import subprocess

from auditchain.loopback import FAKE_CREDENTIALS, free_port, start_process, start_threaded, url_of

__all__ = ["FAKE_CREDENTIALS", "MotoServer", "ThreadedServer", "free_port"]


class MotoServer:
    """moto_server as a child process, which a test can stop (or kill) whenever it likes."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = url_of(self.port)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        self.process = start_process(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class ThreadedServer:
    """moto's ThreadedMotoServer in this process. Every such server shares moto's in-process
    state, so a test that needs an empty endpoint uses a MotoServer instead."""

    def __init__(self) -> None:
        self.server = start_threaded()
        self.port = self.server.get_host_and_port()[1]
        self.url = url_of(self.port)

    def stop(self) -> None:
        self.server.stop()
