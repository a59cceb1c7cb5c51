"""Exit codes and the one exception type the command line turns into a clean message.

One table for the whole CLI (docs/cli.md). 1 means evidence of tampering or a failed
check and nothing else; setup problems use the sysexits.h numbers, which no monitoring
verdict uses. `auditchain status` alone keeps the monitoring-plugin codes 0-3
(OK, WARNING, CRITICAL, UNKNOWN), which is why no other code may be 2 or 3.
"""

EXIT_OK = 0
EXIT_FAILED = 1  # a check ran and found a problem: tampering, drift, a broken chain, a failed upload
EXIT_USAGE = 64  # bad arguments, an unreadable input file (sysexits EX_USAGE)
EXIT_UNAVAILABLE = 69  # a dependency (database, S3, CloudWatch, KMS) could not be reached (EX_UNAVAILABLE)
EXIT_CONFIG = 78  # reachable but not set up: missing schema, role, bucket, credentials (EX_CONFIG)


class AuditchainError(Exception):
    """An expected failure with a message meant for the operator and a specific exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(exc: BaseException, empty: str | None = None) -> str:
    """The first line of an exception's message (driver messages run on with DETAIL and
    context lines); `empty`, else the exception's type name, when the message is blank."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else (empty or type(exc).__name__)
