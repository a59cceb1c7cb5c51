"""`python -m auditchain`: the same as the `auditchain` command."""

from .cli import entry

entry()
