"""Artifact storage behind one interface: a local directory or Google Cloud Storage.

Every write records the SHA-256 of the bytes and every read verifies it, so a truncated upload,
a bit flip or a hand-edited file surfaces as ``ChecksumMismatch`` (DATA_LOSS) instead of a model
that silently predicts garbage. Keys are relative POSIX paths (``splits/{id}/train.parquet``)
and are validated before any I/O, so a key can never address anything outside the store's root.

Writes overwrite by default. ``put_bytes(..., if_absent=True)`` / ``put_file(..., if_absent=True)``
are create-only: of two writers racing on one key exactly one wins and the other gets
``ArtifactExists`` (ALREADY_EXISTS); writing the very same bytes again succeeds, so a retried
upload is harmless. GCS enforces it with the generation precondition ``if_generation_match=0``,
the local store with an exclusive hard link under a store-wide lock.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar, runtime_checkable
from urllib.parse import unquote, urlparse

import grpc

from arbor_core.errors import (
    AlreadyExists,
    ArborError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
MAX_KEY_BYTES = 1024  # GCS's limit on object names; the local store keeps the same rule.
# Reserved top-level directory of the local store: checksums and in-flight temp files live here,
# and no key may start with it, so metadata can never be read or overwritten as an artifact.
META_DIR = ".arbor-meta"
SHA256_METADATA_KEY = "sha256"

__all__ = [
    "ArtifactExists",
    "ArtifactRef",
    "ArtifactStore",
    "ChecksumMismatch",
    "GcsArtifactStore",
    "InvalidArtifactKey",
    "LocalArtifactStore",
    "default_gcs_client",
    "open_store",
    "validate_key",
    "validate_prefix",
]


class ChecksumMismatch(ArborError):
    """Stored bytes do not match their recorded (or the caller's expected) SHA-256."""

    code = grpc.StatusCode.DATA_LOSS
    default_reason = "ARTIFACT_CHECKSUM_MISMATCH"


class ArtifactExists(AlreadyExists):
    """A create-only write found the key already holding different bytes."""

    default_reason = "ARTIFACT_ALREADY_EXISTS"


def _exists_error(key: str, existing_sha256: str | None, sha256: str) -> ArtifactExists:
    return ArtifactExists(
        f"artifact {key!r} already exists with other content; create-only writes never overwrite",
        metadata={"key": key, "existing_sha256": existing_sha256 or "", "sha256": sha256},
    )


class InvalidArtifactKey(InvalidArgument):
    """A key that is empty, absolute, escapes the root or uses reserved names."""

    default_reason = "INVALID_ARTIFACT_KEY"


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact was written and what its bytes hash to; store it next to the record."""

    key: str
    uri: str
    sha256: str
    size: int


@runtime_checkable
class ArtifactStore(Protocol):
    """What services use; ``open_store(uri)`` picks the backend."""

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str | None = None,
        *,
        if_absent: bool = False,
    ) -> ArtifactRef: ...

    def put_file(self, key: str, path: Path, *, if_absent: bool = False) -> ArtifactRef: ...

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes: ...

    def download_to(self, key: str, path: Path, expected_sha256: str | None = None) -> None: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def list(self, prefix: str = "") -> builtins.list[str]: ...

    def list_with_times(self, prefix: str = "") -> builtins.list[tuple[str, dt.datetime]]: ...

    def uri_for(self, key: str) -> str: ...


# --------------------------------------------------------------------------- keys

_DRIVE = re.compile(r"^[A-Za-z]:")


def _check_segments(value: str, field: str, what: str) -> None:
    if "\\" in value:
        raise InvalidArtifactKey(f"{what} {value!r} must use '/' separators", field=field)
    if value.startswith("/") or _DRIVE.match(value):
        raise InvalidArtifactKey(f"{what} {value!r} must be relative", field=field)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidArtifactKey(f"{what} {value!r} contains control characters", field=field)
    if len(value.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidArtifactKey(f"{what} is longer than {MAX_KEY_BYTES} bytes", field=field)
    parts = value.split("/")
    for part in parts:
        if part == "":
            raise InvalidArtifactKey(f"{what} {value!r} has an empty path segment", field=field)
        if part in {".", ".."}:
            raise InvalidArtifactKey(f"{what} {value!r} must not contain '.' or '..'", field=field)
    if parts[0] == META_DIR:
        raise InvalidArtifactKey(f"{what} {value!r} uses the reserved name {META_DIR}", field=field)


def validate_key(key: str, field: str = "key") -> str:
    """Return ``key`` if it is a safe relative POSIX path, else raise ``InvalidArtifactKey``."""
    if not isinstance(key, str) or key == "":
        raise InvalidArtifactKey("artifact key must not be empty", field=field)
    _check_segments(key, field, "artifact key")
    return key


def validate_prefix(prefix: str, field: str = "prefix") -> str:
    """Like ``validate_key`` but allows ``""`` and a trailing ``/`` (``splits/abc/``)."""
    if not isinstance(prefix, str):
        raise InvalidArtifactKey("artifact prefix must be a string", field=field)
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if prefix == "":
        return prefix
    if body == "":
        raise InvalidArtifactKey("artifact prefix '/' is not relative", field=field)
    _check_segments(body, field, "artifact prefix")
    return prefix


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _verify(key: str, actual: str, stored: str | None, expected: str | None) -> None:
    """Raise ``ChecksumMismatch`` unless ``actual`` matches every checksum we know of."""
    if stored is None and expected is None:
        raise ChecksumMismatch(
            f"artifact {key!r} has no recorded checksum",
            reason="ARTIFACT_CHECKSUM_MISSING",
            metadata={"key": key, "actual_sha256": actual},
        )
    for label, want in (("stored", stored), ("expected", expected)):
        if want is not None and want.lower() != actual:
            raise ChecksumMismatch(
                f"artifact {key!r} is corrupt: sha256 {actual} != {label} {want}",
                metadata={"key": key, "actual_sha256": actual, f"{label}_sha256": want},
            )


def _not_found(key: str) -> NotFound:
    return NotFound("artifact", key, reason="ARTIFACT_NOT_FOUND")


def _fsync_write(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())


# --------------------------------------------------------------------------- local


class LocalArtifactStore:
    """Artifacts as plain files under ``root``; checksums in ``root/.arbor-meta/sha256/<key>``.

    Writes go to a temp file in ``root/.arbor-meta/tmp`` (same filesystem) and are renamed into
    place, so readers never see a half-written artifact. The checksum sidecar is renamed first:
    a crash between the two renames leaves either an invisible orphan sidecar or a mismatch
    that a read reports; never an unverifiable artifact that reads as valid.
    """

    def __init__(self, root: Path | str) -> None:
        root_path = Path(root).expanduser()
        root_path.mkdir(parents=True, exist_ok=True)
        self.root = root_path.resolve()
        self._meta = self.root / META_DIR
        self._sums = self._meta / "sha256"
        self._tmp = self._meta / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    # paths ------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        validate_key(key)
        path = self.root.joinpath(*key.split("/"))
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root) or resolved.is_relative_to(self._meta):
            raise InvalidArtifactKey(
                f"artifact key {key!r} resolves outside the store root", field="key"
            )
        return path

    def _sum_path(self, key: str) -> Path:
        return self._sums.joinpath(*key.split("/"))

    def _read_sum(self, key: str) -> str | None:
        try:
            record = json.loads(self._sum_path(key).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return "unreadable-checksum-record"
        value = record.get("sha256") if isinstance(record, dict) else None
        return value if isinstance(value, str) else "unreadable-checksum-record"

    def _temp(self) -> Path:
        return self._tmp / f"{uuid.uuid4().hex}.tmp"

    def _place_sum(
        self, key: str, sum_tmp: Path, sha256: str, size: int, ctype: str | None
    ) -> Path:
        """Write ``key``'s checksum record to ``sum_tmp`` (fsynced) and rename it into place;
        returns the data file's path, its parent folder made."""
        with sum_tmp.open("wb") as fh:
            record = {"sha256": sha256, "size": size, "content_type": ctype}
            fh.write(json.dumps(record).encode())
            _fsync_write(fh)
        target = self._path(key)
        sum_target = self._sum_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        sum_target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(sum_tmp, sum_target)
        return target

    def _commit(self, key: str, data_tmp: Path, sha256: str, size: int, ctype: str | None) -> None:
        sum_tmp = self._temp()
        try:
            os.replace(data_tmp, self._place_sum(key, sum_tmp, sha256, size, ctype))
        finally:
            sum_tmp.unlink(missing_ok=True)
            data_tmp.unlink(missing_ok=True)

    def _commit_if_absent(
        self, key: str, data_tmp: Path, sha256: str, size: int, ctype: str | None
    ) -> None:
        """``_commit`` unless ``key`` exists: same bytes -> no-op, other bytes -> ArtifactExists.

        Create-only writers serialise on an ``flock`` of one store-wide lock file (held for two
        renames only; the kernel drops it if the process dies), and the data file is placed with
        ``os.link``, which refuses to replace an existing file even if a plain ``put`` raced in.
        """
        target = self._path(key)
        try:
            with (self._meta / "create.lock").open("a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                if target.exists():
                    existing = self._read_sum(key)
                    if existing != sha256:
                        raise _exists_error(key, existing, sha256)
                    return
                sum_tmp = self._temp()
                try:
                    self._place_sum(key, sum_tmp, sha256, size, ctype)
                    try:
                        os.link(data_tmp, target)
                    except FileExistsError:
                        raise _exists_error(key, None, sha256) from None
                finally:
                    sum_tmp.unlink(missing_ok=True)
        finally:
            data_tmp.unlink(missing_ok=True)

    def _ref(self, key: str, sha256: str, size: int) -> ArtifactRef:
        return ArtifactRef(key=key, uri=self.uri_for(key), sha256=sha256, size=size)

    # API ------------------------------------------------------------------------
    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str | None = None,
        *,
        if_absent: bool = False,
    ) -> ArtifactRef:
        self._path(key)
        sha256 = hashlib.sha256(data).hexdigest()
        tmp = self._temp()
        with tmp.open("wb") as fh:
            fh.write(data)
            _fsync_write(fh)
        commit = self._commit_if_absent if if_absent else self._commit
        commit(key, tmp, sha256, len(data), content_type)
        return self._ref(key, sha256, len(data))

    def put_file(self, key: str, path: Path, *, if_absent: bool = False) -> ArtifactRef:
        self._path(key)
        digest = hashlib.sha256()
        size = 0
        tmp = self._temp()
        try:
            with Path(path).open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
                _fsync_write(dst)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise InvalidArgument(f"no such file: {path}", field="path") from None
        commit = self._commit_if_absent if if_absent else self._commit
        commit(key, tmp, digest.hexdigest(), size, None)
        return self._ref(key, digest.hexdigest(), size)

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        path = self._path(key)
        # Two tries: a concurrent overwrite swaps sidecar and data in two renames.
        for attempt in range(2):
            stored = self._read_sum(key)
            try:
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                raise _not_found(key) from None
            try:
                _verify(key, hashlib.sha256(data).hexdigest(), stored, expected_sha256)
                return data
            except ChecksumMismatch:
                if attempt == 1 or self._read_sum(key) == stored:
                    raise
        raise AssertionError("unreachable")

    def download_to(self, key: str, path: Path, expected_sha256: str | None = None) -> None:
        src = self._path(key)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            stored = self._read_sum(key)
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as fout:
                try:
                    fin = src.open("rb")
                except (FileNotFoundError, IsADirectoryError):
                    raise _not_found(key) from None
                with fin:
                    while chunk := fin.read(CHUNK):
                        digest.update(chunk)
                        fout.write(chunk)
            _verify(key, digest.hexdigest(), stored, expected_sha256)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is a no-op so purges can be retried."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._sum_path(key).unlink(missing_ok=True)
        self._prune(path.parent, self.root)
        self._prune(self._sum_path(key).parent, self._sums)

    @staticmethod
    def _prune(directory: Path, stop: Path) -> None:
        """Remove now-empty directories from ``directory`` up to (not including) ``stop``."""
        while directory != stop and directory.is_relative_to(stop):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix`` (which must not be empty); return the count."""
        if validate_prefix(prefix) == "":
            raise InvalidArtifactKey("refusing to delete the whole store", field="prefix")
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str = "") -> builtins.list[str]:
        validate_prefix(prefix)
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*base_key.split("/")) if base_key else self.root
        if base_key and not base.resolve().is_relative_to(self.root):
            return []
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            current = Path(dirpath)
            if current == self.root and META_DIR in dirnames:
                dirnames.remove(META_DIR)
            for name in filenames:
                key = (current / name).relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    self._path(key)
                except InvalidArtifactKey:
                    continue  # e.g. a symlink that points outside the root
                keys.append(key)
        return sorted(keys)

    def list_with_times(self, prefix: str = "") -> builtins.list[tuple[str, dt.datetime]]:
        """``list`` with each key's last write time (UTC): what an orphan sweep ages by."""
        found = []
        for key in self.list(prefix):
            try:
                mtime = self._path(key).stat().st_mtime
            except FileNotFoundError:
                continue  # deleted meanwhile
            found.append((key, dt.datetime.fromtimestamp(mtime, dt.UTC)))
        return found

    def uri_for(self, key: str) -> str:
        return self._path(key).as_uri()


# --------------------------------------------------------------------------- GCS

_T = TypeVar("_T")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@contextlib.contextmanager
def _gcs_errors(key: str) -> Iterator[None]:
    """Map google-cloud-storage failures to Arbor errors (missing, denied, unreachable)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    try:
        yield
    except gexc.NotFound:
        raise _not_found(key) from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise PermissionDenied(
            f"artifact store refused access to {key!r}: {exc.message}",
            reason="ARTIFACT_STORE_ACCESS_DENIED",
        ) from exc
    except (gexc.ServerError, gexc.TooManyRequests, gexc.RetryError) as exc:
        raise Unavailable(
            f"artifact store unavailable: {exc}", reason="ARTIFACT_STORE_UNAVAILABLE"
        ) from exc
    except (auth_exc.TransportError, ConnectionError) as exc:
        raise Unavailable(
            f"artifact store unreachable: {exc}", reason="ARTIFACT_STORE_UNAVAILABLE"
        ) from exc
    except OSError as exc:
        # requests' ConnectionError derives from OSError (IOError)
        if exc.__class__.__module__.startswith(("requests", "urllib3")):
            raise Unavailable(
                f"artifact store unreachable: {exc}", reason="ARTIFACT_STORE_UNAVAILABLE"
            ) from exc
        raise


def default_gcs_client() -> Any:
    """A storage client; with STORAGE_EMULATOR_HOST set it talks to the emulator, anonymously."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "arbor-local")
        return storage.Client(project=project, credentials=AnonymousCredentials())
    return storage.Client()


class GcsArtifactStore:
    """Artifacts as objects under ``gs://bucket/prefix/``; the SHA-256 is object metadata.

    Reads fetch the metadata, then download that exact generation (``if_generation_match``), so
    the checksum and the bytes always belong to the same write even under concurrent overwrites.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        timeout: float = 60.0,
    ) -> None:
        if not _BUCKET.match(bucket):
            raise InvalidArgument(f"invalid GCS bucket name {bucket!r}", field="artifact_uri")
        prefix = prefix.strip("/")
        if prefix:
            validate_prefix(prefix, field="artifact_uri")
        self.bucket_name = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.timeout = timeout
        self._client = client
        self._bucket: Any = None

    def __repr__(self) -> str:
        return f"GcsArtifactStore('gs://{self.bucket_name}/{self.prefix}')"

    @property
    def bucket(self) -> Any:
        """The bucket handle; the client is created lazily so construction never does I/O."""
        if self._bucket is None:
            if self._client is None:
                self._client = default_gcs_client()
            self._bucket = self._client.bucket(self.bucket_name)
        return self._bucket

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _retry(self) -> Any:
        """The library's retry (transient errors, backoff) bounded by ``timeout`` in all: left
        to its default, every call would keep retrying an unreachable store for 120 s."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.timeout)

    def _ref(self, key: str, sha256: str, size: int) -> ArtifactRef:
        return ArtifactRef(key=key, uri=self.uri_for(key), sha256=sha256, size=size)

    def _created_or_exists(self, key: str, sha256: str) -> None:
        """After a refused create-only upload: fine if the object holds our bytes (a retry of an
        upload that had succeeded, or an identical writer), else ``ArtifactExists``."""
        with _gcs_errors(key):
            blob = self.bucket.get_blob(self._name(key), timeout=self.timeout, retry=self._retry())
        existing = (blob.metadata or {}).get(SHA256_METADATA_KEY) if blob is not None else None
        if existing != sha256:
            raise _exists_error(key, existing, sha256)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str | None = None,
        *,
        if_absent: bool = False,
    ) -> ArtifactRef:
        from google.api_core.exceptions import PreconditionFailed

        name = self._name(key)
        sha256 = hashlib.sha256(data).hexdigest()
        blob = self.bucket.blob(name)
        blob.metadata = {SHA256_METADATA_KEY: sha256}
        try:
            with _gcs_errors(key):
                # Rewriting the same key with the same bytes is harmless, so retries are safe;
                # create-only uploads carry ifGenerationMatch=0 and the server refuses a second.
                blob.upload_from_string(
                    data,
                    content_type=content_type or "application/octet-stream",
                    timeout=self.timeout,
                    retry=self._retry(),
                    if_generation_match=0 if if_absent else None,
                )
        except PreconditionFailed:
            self._created_or_exists(key, sha256)
        return self._ref(key, sha256, len(data))

    def put_file(self, key: str, path: Path, *, if_absent: bool = False) -> ArtifactRef:
        from google.api_core.exceptions import PreconditionFailed

        name = self._name(key)
        path = Path(path)
        if not path.is_file():
            raise InvalidArgument(f"no such file: {path}", field="path")
        sha256, size = _sha256_file(path)
        blob = self.bucket.blob(name)
        blob.metadata = {SHA256_METADATA_KEY: sha256}
        try:
            with _gcs_errors(key):
                blob.upload_from_filename(
                    str(path),
                    content_type="application/octet-stream",
                    timeout=self.timeout,
                    retry=self._retry(),
                    if_generation_match=0 if if_absent else None,
                )
        except PreconditionFailed:
            self._created_or_exists(key, sha256)
        # The file could have changed while uploading; the object must match what we recorded.
        after, after_size = _sha256_file(path)
        if (after, after_size) != (sha256, size):
            raise ChecksumMismatch(
                f"{path} changed while it was uploaded to {key!r}",
                metadata={"key": key, "actual_sha256": after, "stored_sha256": sha256},
            )
        return self._ref(key, sha256, size)

    def _stat(self, key: str) -> tuple[Any, str | None, int]:
        with _gcs_errors(key):
            blob = self.bucket.get_blob(self._name(key), timeout=self.timeout, retry=self._retry())
        if blob is None:
            raise _not_found(key)
        stored = (blob.metadata or {}).get(SHA256_METADATA_KEY)
        return blob, stored, int(blob.generation)

    def _consistent(self, key: str, read: Callable[[Any, int], _T]) -> tuple[_T, str | None]:
        """Run ``read(blob, generation)``; retry if the object was replaced meanwhile."""
        from google.api_core.exceptions import PreconditionFailed

        for attempt in range(3):
            blob, stored, generation = self._stat(key)
            try:
                with _gcs_errors(key):
                    return read(blob, generation), stored
            except PreconditionFailed:
                if attempt == 2:
                    raise Unavailable(
                        f"artifact {key!r} keeps changing while being read",
                        reason="ARTIFACT_STORE_UNAVAILABLE",
                    ) from None
        raise AssertionError("unreachable")

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        def read(blob: Any, generation: int) -> bytes:
            return bytes(
                blob.download_as_bytes(
                    if_generation_match=generation, timeout=self.timeout, retry=self._retry()
                )
            )

        data, stored = self._consistent(key, read)
        _verify(key, hashlib.sha256(data).hexdigest(), stored, expected_sha256)
        return data

    def download_to(self, key: str, path: Path, expected_sha256: str | None = None) -> None:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:

            def read(blob: Any, generation: int) -> None:
                blob.download_to_filename(
                    tmp_name,
                    if_generation_match=generation,
                    timeout=self.timeout,
                    retry=self._retry(),
                )

            _, stored = self._consistent(key, read)
            _verify(key, _sha256_file(tmp)[0], stored, expected_sha256)
            shutil.move(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        name = self._name(key)
        with _gcs_errors(key):
            return bool(self.bucket.blob(name).exists(timeout=self.timeout, retry=self._retry()))

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is a no-op so purges can be retried."""
        name = self._name(key)
        with contextlib.suppress(NotFound), _gcs_errors(key):
            self.bucket.blob(name).delete(timeout=self.timeout, retry=self._retry())

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix`` (which must not be empty); return the count."""
        if validate_prefix(prefix) == "":
            raise InvalidArtifactKey("refusing to delete the whole store", field="prefix")
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str = "") -> builtins.list[str]:
        return [key for key, _ in self.list_with_times(prefix)]

    def list_with_times(self, prefix: str = "") -> builtins.list[tuple[str, dt.datetime]]:
        """``list`` with each object's last write time (``updated``, UTC)."""
        validate_prefix(prefix)
        with _gcs_errors(prefix):
            blobs = self.bucket.client.list_blobs(
                self.bucket_name,
                prefix=self.prefix + prefix,
                timeout=self.timeout,
                retry=self._retry(),
            )
            found = [(blob.name, blob.updated) for blob in blobs]
        return sorted((name[len(self.prefix) :], updated) for name, updated in found)

    def uri_for(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}"


# --------------------------------------------------------------------------- factory


def open_store(uri: str, *, gcs_client: Any = None) -> ArtifactStore:
    """``/path``, ``./path``, ``file:///path`` -> local directory; ``gs://bucket/prefix`` -> GCS."""
    if not uri:
        raise InvalidArgument("artifact URI must not be empty", field="artifact_uri")
    if uri.startswith("gs://"):
        parsed = urlparse(uri)
        return GcsArtifactStore(parsed.netloc, parsed.path, client=gcs_client)
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in {"", "localhost"}:
            raise InvalidArgument(f"unsupported file URI host in {uri!r}", field="artifact_uri")
        return LocalArtifactStore(Path(unquote(parsed.path)))
    if "://" in uri:
        raise InvalidArgument(
            f"unsupported artifact URI {uri!r}: use a path, file:// or gs://",
            field="artifact_uri",
        )
    return LocalArtifactStore(Path(uri))
