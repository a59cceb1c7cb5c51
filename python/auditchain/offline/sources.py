"""Where a bundle is read from: a folder, or an S3 prefix (boto3 is imported only for that)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Any

from ..errors import EXIT_UNAVAILABLE, EXIT_USAGE, AuditchainError
from ..formats.manifest import MANIFEST_NAME

READ_CHUNK = 1024 * 1024
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404"}


class UnusableBundle(AuditchainError):
    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


class BundleUnavailable(AuditchainError):
    def __init__(self, message: str):
        super().__init__(message, EXIT_UNAVAILABLE)


class FolderSource:
    def __init__(self, folder: Path):
        self.folder = folder
        self.location = str(folder)

    def _file(self, name: str) -> Path:
        path = self.folder / name
        if not path.exists():
            raise UnusableBundle(f"{path} does not exist")
        if not path.is_file():
            raise UnusableBundle(f"{path} is not a regular file")
        return path

    def read_small(self, name: str, limit: int) -> bytes:
        try:
            with self._file(name).open("rb") as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise UnusableBundle(f"cannot read {self.folder / name}: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise UnusableBundle(f"{self.folder / name} is larger than {limit} bytes")
        return data

    def open_stream(self, name: str) -> IO[bytes]:
        try:
            return self._file(name).open("rb")
        except OSError as exc:
            raise UnusableBundle(f"cannot read {self.folder / name}: {exc.strerror or exc}") from None

    def read_error(self, exc: Exception) -> AuditchainError:
        return UnusableBundle(f"reading {self.location} failed: {exc}")


class S3Source:
    def __init__(self, url: str, client: Any):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise UnusableBundle(f"{url!r} names no bucket (expected s3://bucket/prefix)")
        if prefix.endswith(MANIFEST_NAME):
            prefix = prefix[: -len(MANIFEST_NAME)]
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket, self.prefix, self.client = bucket, prefix, client
        self.location = f"s3://{bucket}/{prefix}"

    def _get(self, name: str) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        from .. import s3

        key = self.prefix + name
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            code = s3.error_code(exc)
            if code in _MISSING_CODES:
                raise UnusableBundle(f"s3://{self.bucket}/{key} does not exist ({code})") from None
            raise BundleUnavailable(f"cannot read s3://{self.bucket}/{key}: {code or exc}") from None
        except BotoCoreError as exc:
            raise BundleUnavailable(f"cannot reach S3 for s3://{self.bucket}/{key}: {exc}") from None

    def read_small(self, name: str, limit: int) -> bytes:
        body = self._get(name)
        try:
            data = body.read(limit + 1)
        except Exception as exc:  # botocore and urllib3 raise several unrelated types mid-stream
            raise self.read_error(exc) from None
        finally:
            body.close()
        if len(data) > limit:
            raise UnusableBundle(f"s3://{self.bucket}/{self.prefix}{name} is larger than {limit} bytes")
        return data

    def open_stream(self, name: str) -> IO[bytes]:
        return self._get(name)

    def read_error(self, exc: Exception) -> AuditchainError:
        return BundleUnavailable(f"reading from {self.location} failed: {type(exc).__name__}: {exc}")


class HashingReader:
    """Reads the raw data object for gzip while hashing and counting every byte; a failure
    of the source itself (not of its content) surfaces as the source's own error."""

    def __init__(self, raw: IO[bytes], source: FolderSource | S3Source):
        self.raw, self.source = raw, source
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        try:
            chunk = self.raw.read(size)
        except Exception as exc:
            raise self.source.read_error(exc) from None
        self.sha256.update(chunk)
        self.bytes += len(chunk)
        return chunk

    def drain(self) -> None:
        while self.read(READ_CHUNK):
            pass
