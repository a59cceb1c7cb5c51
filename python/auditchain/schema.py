"""The schema as files: versioned migrations/ and re-appliable definitions in sql/.

migrations/NNNN_description.sql  applied once each, in order; tables, indexes, types, roles.
sql/NN_area.sql                  functions, procedures, triggers, views, comments on them and
                                 grants; all of them re-applied, in order, whenever any one's
                                 checksum changes. See docs/migrations.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from . import config
from .errors import EXIT_USAGE, AuditchainError

MIGRATION_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
DEFINITION_NAME = re.compile(r"^\d{2}_[a-z0-9_]+\.sql$")
CREATES_LINE = re.compile(r"^\s*--\s*creates:\s*(\S+)\s*$", re.MULTILINE)
DROPS_LINE = re.compile(r"^\s*--\s*drops:\s*(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class SchemaFile:
    kind: str  # 'migration' or 'definition'
    path: Path
    text: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def declared_objects(self) -> list[str]:
        return CREATES_LINE.findall(self.text)

    @property
    def dropped_objects(self) -> list[str]:
        return DROPS_LINE.findall(self.text)


def schema_root() -> Path:
    """The folder holding migrations/ and sql/: AUDITCHAIN_SCHEMA_DIR, the wheel's copy, or the checkout."""
    override = config.env("AUDITCHAIN_SCHEMA_DIR")
    if override:
        return Path(override)
    packaged = Path(__file__).resolve().parent / "schema"
    if (packaged / "migrations").is_dir():
        return packaged
    return Path(__file__).resolve().parents[2]


def _load(folder: Path, kind: str, pattern: re.Pattern[str]) -> list[SchemaFile]:
    if not folder.is_dir():
        raise AuditchainError(f"schema folder not found: {folder}", EXIT_USAGE)
    files = []
    for path in sorted(folder.iterdir()):
        if path.suffix != ".sql":
            continue
        if not pattern.match(path.name):
            raise AuditchainError(
                f"{kind} file name does not match {pattern.pattern}: {path.name}", EXIT_USAGE
            )
        files.append(SchemaFile(kind, path, path.read_text(encoding="utf-8")))
    return files


def load_migrations(root: Path | None = None) -> list[SchemaFile]:
    files = _load((root or schema_root()) / "migrations", "migration", MIGRATION_NAME)
    versions = [f.name[:4] for f in files]
    duplicated = sorted({v for v in versions if versions.count(v) > 1})
    if duplicated:
        raise AuditchainError(f"two migrations share a version number: {', '.join(duplicated)}", EXIT_USAGE)
    return files


def load_definitions(root: Path | None = None) -> list[SchemaFile]:
    return _load((root or schema_root()) / "sql", "definition", DEFINITION_NAME)
