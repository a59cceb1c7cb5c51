"""A private copy of migrations/ and sql/ that a test may edit and point the runner at
(AUDITCHAIN_SCHEMA_DIR), for the migrate, drift-check and dist tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from auditchain.schema import schema_root


def copy_schema(tmp_path: Path, name: str = "schema") -> Path:
    """Copy the session's schema files to tmp_path/name; return that folder."""
    source = schema_root()
    dest = tmp_path / name
    shutil.copytree(source / "migrations", dest / "migrations")
    if (source / "sql").is_dir():
        shutil.copytree(source / "sql", dest / "sql")
    else:
        (dest / "sql").mkdir()
    return dest


def add_migration(schema_dir: Path, description: str, text: str) -> str:
    """Write the next-numbered migration; return its file name."""
    versions = [int(p.name[:4]) for p in (schema_dir / "migrations").glob("*.sql")]
    name = f"{max(versions, default=0) + 1:04d}_{description}.sql"
    (schema_dir / "migrations" / name).write_text(text, encoding="utf-8")
    return name
