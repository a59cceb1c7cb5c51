"""Exit codes and the one exception type the command line turns into a clean message."""

EXIT_OK = 0
EXIT_FAILED = 1  # a check ran and found a problem (drift, broken chain, failed upload)
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_UNAVAILABLE = 3  # a dependency (database, S3, CloudWatch) could not be reached


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
