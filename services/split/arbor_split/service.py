"""The split use cases: create, get, list, update, delete. No gRPC, no SQL here.

Create reserves the id (and the request id) with a ``CREATING`` row first, so two requests
can never write the same ``splits/{id}/`` prefix; it then does the data work (``domain``),
uploads the parts and flips the row to ``READY`` together with the ``split.created`` outbox
event. Any failure on the way deletes what was uploaded and the reserved row: nothing
half-written stays behind. A crash in the middle leaves a ``CREATING`` row that
``cleanup_stale`` removes (with its artifacts) later. Parts that outlive their create anyway
(an upload that reached the store after the call gave up, a clean-up whose delete failed)
have no row: ``sweep_orphans`` deletes them once they are older than a grace period.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from arbor.common.v1 import common_pb2
from arbor.events.v1 import events_pb2
from arbor_core.artifacts import ArtifactExists, ArtifactRef, ArtifactStore
from arbor_core.db import utcnow
from arbor_core.errors import Aborted, AlreadyExists, InvalidArgument, NotFound, Unavailable
from arbor_core.events import new_event
from arbor_core.logging import get_request_id
from arbor_core.pagination import (
    clamp_page_size,
    decode_page_token,
    encode_page_token,
    filter_fingerprint,
)
from arbor_split import EVENT_SOURCE
from arbor_split.domain import (
    DataAccess,
    EntityStrategy,
    InlineSource,
    RandomStrategy,
    SplitOutcome,
    SplitSpec,
    TaskType,
    TimeStrategy,
    execute_split,
    scratch_dir,
    validate_fractions,
    validate_split_id,
)

log = logging.getLogger("arbor.split")

RESOURCE = "split"
MUTABLE_FIELDS = ("display_name", "description", "labels")
MAX_LABELS = 64
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
MAX_LABEL_VALUE = 256
MAX_DISPLAY_NAME = 512
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# --------------------------------------------------------------------------- records


@dataclass
class SplitRecord:
    """A split as stored; ``state`` is CREATING (internal), READY or DELETED."""

    split_id: str
    state: str
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    target_column: str = ""
    task_type: str = ""
    strategy: dict[str, Any] = field(default_factory=dict)
    fractions: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    columns: list[dict[str, str]] = field(default_factory=list)
    parts: list[dict[str, Any]] = field(default_factory=list)
    null_counts: dict[str, int] = field(default_factory=dict)
    row_count: int = 0
    content_hash: str = ""
    leakage_report: dict[str, Any] = field(default_factory=dict)
    revision: int = 1
    create_time: dt.datetime = field(default_factory=utcnow)
    update_time: dt.datetime = field(default_factory=utcnow)
    delete_time: dt.datetime | None = None
    purge_time: dt.datetime | None = None

    @property
    def name(self) -> str:
        return f"splits/{self.split_id}"

    @property
    def etag(self) -> str:
        """Opaque: changes whenever the row does."""
        return hashlib.sha256(f"{self.split_id}:{self.revision}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CreateCommand:
    """A validated-shape create request (the api layer builds it from protobuf)."""

    spec: SplitSpec
    split_id: str = ""
    request_id: str = ""
    # sha256 of the request without request_id: replays must carry the same content.
    request_hash: str = ""
    fail_on_leakage: bool = False
    display_name: str = ""
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ListQuery:
    page_size: int = 0
    page_token: str = ""
    label_filter: Mapping[str, str] = field(default_factory=dict)
    state_filter: str | None = None  # "READY" / "DELETED" / None
    show_deleted: bool = False


@dataclass(frozen=True)
class Replay:
    """A reservation lost to an earlier request with the same request_id."""

    split_id: str
    request_hash: str


class SplitRepository(Protocol):
    """What the use cases need from persistence (``repository.SqlSplitRepository``)."""

    def lookup_request(self, request_id: str) -> Replay | None: ...

    def reserve(self, record: SplitRecord, request_id: str, request_hash: str) -> Replay | None: ...

    def finalize(self, record: SplitRecord, event: Any) -> SplitRecord: ...

    def discard(self, split_id: str) -> None: ...

    def get(self, split_id: str) -> SplitRecord | None: ...

    def list_page(
        self,
        states: Sequence[str],
        labels: Mapping[str, str],
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[SplitRecord]: ...

    def update_metadata(
        self, split_id: str, etag: str, changes: Mapping[str, Any], now: dt.datetime
    ) -> SplitRecord: ...

    def mark_deleted(
        self, split_id: str, etag: str, now: dt.datetime, event: Any
    ) -> SplitRecord: ...

    def mark_purged(self, split_id: str, now: dt.datetime, event: Any | None) -> SplitRecord: ...

    def stale_creating(self, before: dt.datetime) -> list[str]: ...

    def lifecycle(self, split_ids: Sequence[str]) -> dict[str, tuple[str, bool]]: ...


# --------------------------------------------------------------------------- helpers


def parse_name(name: str, field_name: str = "name") -> str:
    """``splits/{id}`` -> id."""
    prefix, sep, split_id = name.partition("/")
    if prefix != "splits" or not sep or not split_id:
        raise InvalidArgument(
            f"{field_name} must look like 'splits/{{split_id}}' (got {name!r})",
            field=field_name,
            reason="INVALID_NAME",
        )
    try:
        return validate_split_id(split_id)
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message, field=field_name, reason="INVALID_NAME") from None


def validate_metadata(
    display_name: str, description: str, labels: Mapping[str, str], prefix: str = "split"
) -> None:
    if len(display_name) > MAX_DISPLAY_NAME:
        raise InvalidArgument(
            f"display_name is longer than {MAX_DISPLAY_NAME} characters",
            field=f"{prefix}.display_name",
        )
    if len(description) > 16_384:
        raise InvalidArgument(
            "description is longer than 16384 characters", field=f"{prefix}.description"
        )
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"at most {MAX_LABELS} labels", field=f"{prefix}.labels")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise InvalidArgument(
                f"label key {key!r} must be 1-63 characters of a-z, 0-9, '_', '-', '.', "
                "starting with a letter",
                field=f"{prefix}.labels",
                reason="INVALID_LABEL",
            )
        if len(value) > MAX_LABEL_VALUE:
            raise InvalidArgument(
                f"label {key!r} is longer than {MAX_LABEL_VALUE} characters",
                field=f"{prefix}.labels",
                reason="INVALID_LABEL",
            )


def strategy_to_dict(spec: SplitSpec) -> dict[str, Any]:
    match spec.strategy:
        case RandomStrategy(stratify=stratify):
            return {"kind": "random", "stratify": stratify}
        case TimeStrategy() as t:
            return {
                "kind": "time",
                "time_column": t.time_column,
                "mode": t.mode,
                "validation_start": t.validation_start.isoformat() if t.validation_start else None,
                "test_start": t.test_start.isoformat() if t.test_start else None,
            }
        case EntityStrategy(entity_column=entity, stratify=stratify):
            return {"kind": "entity", "entity_column": entity, "stratify": stratify}
    raise AssertionError("unknown strategy")


def source_to_dict(spec: SplitSpec) -> dict[str, Any]:
    source = spec.source
    if isinstance(source, InlineSource):
        return {
            "inline": {
                "shape": source.shape,
                "sha256": source.sha256,
                "rows": source.frame.height,
            }
        }
    return {"uri": source.uri, "format": source.format.value if source.format else None}


def _page_cursor(position: Any) -> tuple[dt.datetime, str] | None:
    if position is None:
        return None
    if (
        not isinstance(position, list)
        or len(position) != 2
        or not all(isinstance(p, str) for p in position)
    ):
        raise InvalidArgument(
            "page_token does not hold a position", field="page_token", reason="INVALID_PAGE_TOKEN"
        )
    try:
        when = dt.datetime.fromisoformat(position[0])
    except ValueError:
        raise InvalidArgument(
            "page_token does not hold a position", field="page_token", reason="INVALID_PAGE_TOKEN"
        ) from None
    return when, position[1]


# --------------------------------------------------------------------------- use cases


class SplitService:
    """The split use cases over a repository, an artifact store and the data sources."""

    def __init__(
        self,
        repository: SplitRepository,
        store: ArtifactStore,
        access: DataAccess,
        *,
        scratch_root: Path | None = None,
        max_concurrent_creates: int = 2,
    ) -> None:
        self.repository = repository
        self.store = store
        self.access = access
        self.scratch_root = scratch_root
        # The data work is memory- and CPU-heavy: bound how many run at once.
        self._slots = threading.BoundedSemaphore(max_concurrent_creates)

    # create ------------------------------------------------------------------
    def create(self, command: CreateCommand) -> SplitRecord:
        fractions = validate_fractions(command.spec.fractions)
        spec = dataclasses.replace(command.spec, fractions=fractions)
        validate_metadata(command.display_name, command.description, command.labels)
        split_id = validate_split_id(command.split_id) if command.split_id else uuid.uuid4().hex
        request_id = command.request_id
        if request_id:
            if not _REQUEST_ID.match(request_id):
                raise InvalidArgument(
                    "request_id must be 1-128 characters of letters, digits, '.', '_', ':', '-'",
                    field="request_id",
                )
            replay = self.repository.lookup_request(request_id)
            if replay is not None:
                return self._replay(replay, command)
        now = utcnow()
        record = SplitRecord(
            split_id=split_id,
            state="CREATING",
            display_name=command.display_name,
            description=command.description,
            labels=dict(command.labels),
            source=source_to_dict(spec),
            target_column=spec.target_column,
            strategy=strategy_to_dict(spec),
            fractions={
                "train": fractions.train,
                "validation": fractions.validation,
                "test": fractions.test,
            },
            seed=spec.seed,
            create_time=now,
            update_time=now,
        )
        replay = self.repository.reserve(record, request_id, command.request_hash)
        if replay is not None:
            return self._replay(replay, command)
        with self._cleanup_on_failure(split_id):
            with self._slots, scratch_dir(self.scratch_root) as workdir:
                outcome = execute_split(
                    spec, self.access, workdir, fail_on_leakage=command.fail_on_leakage
                )
                self._upload(record, outcome)
            event = new_event(
                "split.created",
                record.name,
                EVENT_SOURCE,
                request_id=get_request_id() or "",
                split_created=events_pb2.SplitCreated(
                    split=record.name,
                    content_hash=record.content_hash,
                    row_counts={p["part"]: p["row_count"] for p in record.parts},
                    task_type=_TASK_ENUM[outcome.task_type],
                ),
            )
            record.state = "READY"
            record.update_time = utcnow()
            stored = self.repository.finalize(record, event)
        log.info(
            "split created",
            extra={"split": record.name, "rows": record.row_count, "hash": record.content_hash},
        )
        return stored

    def _replay(self, replay: Replay, command: CreateCommand) -> SplitRecord:
        if command.request_hash and replay.request_hash != command.request_hash:
            raise InvalidArgument(
                "request_id was already used for a different request",
                field="request_id",
                reason="REQUEST_ID_REUSED",
            )
        record = self.repository.get(replay.split_id)
        if record is None:
            raise Aborted(
                "the earlier request with this request_id failed meanwhile; retry",
                reason="REQUEST_IN_PROGRESS",
            )
        if record.state == "CREATING":
            raise Aborted(
                "a create with this request_id is still running; retry later",
                reason="REQUEST_IN_PROGRESS",
                metadata={"split": record.name},
            )
        return record

    def _upload(self, record: SplitRecord, outcome: SplitOutcome) -> None:
        parts = []
        for part in outcome.parts:
            ref = self._put_part(f"splits/{record.split_id}/{part.name}.parquet", part.path)
            if ref.sha256 != part.sha256:
                raise Unavailable(
                    f"part {part.name} changed while it was uploaded", reason="UPLOAD_MISMATCH"
                )
            parts.append(
                {
                    "part": part.name,
                    "row_count": part.row_count,
                    "key": ref.key,
                    "uri": ref.uri,
                    "sha256": ref.sha256,
                    "size_bytes": ref.size,
                    "class_balance": dict(part.class_balance),
                }
            )
        record.parts = parts
        record.task_type = outcome.task_type.value
        record.columns = [{"name": n, "dtype": d} for n, d in outcome.schema]
        record.null_counts = dict(outcome.null_counts)
        record.row_count = outcome.row_count
        record.content_hash = outcome.content_hash
        record.leakage_report = outcome.leakage.to_dict()

    def _put_part(self, key: str, path: Path) -> ArtifactRef:
        """Create-only, so that a late upload of an earlier failed create of this id (held by
        the network past its timeout) can never replace a part once written: it is refused.
        An object already there is that create's debris (this create holds the id): it is
        deleted and the upload tried once more."""
        try:
            return self.store.put_file(key, path, if_absent=True)
        except ArtifactExists:
            log.warning("replacing debris of an earlier failed create at %s", key)
            self.store.delete(key)
        try:
            return self.store.put_file(key, path, if_absent=True)
        except ArtifactExists:
            raise Aborted(
                "an earlier create of this split is still writing its parts; retry",
                reason="SPLIT_PARTS_BUSY",
                metadata={"key": key},
            ) from None

    @contextlib.contextmanager
    def _cleanup_on_failure(self, split_id: str) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self._remove(split_id)
            raise

    def _remove(self, split_id: str) -> None:
        """Best effort: delete a failed create's artifacts and its reserved row."""
        try:
            self.store.delete_prefix(f"splits/{split_id}/")
        except Exception:
            log.exception("could not delete the artifacts of a failed split %s", split_id)
        try:
            self.repository.discard(split_id)
        except Exception:
            log.exception("could not delete the reserved row of a failed split %s", split_id)

    def cleanup_stale(self, older_than: dt.timedelta = dt.timedelta(hours=6)) -> int:
        """Remove creates that never finished (a crash mid-create); returns how many."""
        ids = self.repository.stale_creating(utcnow() - older_than)
        for split_id in ids:
            log.warning("removing unfinished split %s", split_id)
            self._remove(split_id)
        return len(ids)

    def sweep_orphans(self, grace: dt.timedelta) -> int:
        """Delete parts under ``splits/{id}/`` that no split owns; returns how many objects.

        Owned means a row in CREATING (a create running now), READY or DELETED but not yet
        purged. Orphans are prefixes without a row (a failed create whose clean-up could not
        delete, or an upload that landed after the call gave up) and purged splits' prefixes.
        A prefix is swept only when its newest object is older than ``grace`` (longer than the
        store's timeout: no upload of a failed create is still on its way). An id without a
        row is reserved (a CREATING row) while its prefix is deleted, so a create choosing the
        same id meanwhile is refused (ALREADY_EXISTS) rather than having its parts deleted.
        """
        now = utcnow()
        newest: dict[str, dt.datetime] = {}
        for key, updated in self.store.list_with_times("splits/"):
            segments = key.split("/")
            if len(segments) < 3:
                continue  # not under a split's prefix
            when = updated or now  # no time: treat as new
            split_id = segments[1]
            newest[split_id] = max(newest.get(split_id, when), when)
        candidates = [i for i, when in newest.items() if when < now - grace]
        if not candidates:
            return 0
        owners = self.repository.lifecycle(candidates)
        removed = 0
        for split_id in candidates:
            owner = owners.get(split_id)
            if owner is None:
                removed += self._remove_orphan(split_id)
            elif owner == ("DELETED", True):
                log.warning("removing parts left under purged split %s", split_id)
                removed += self.store.delete_prefix(f"splits/{split_id}/")
        return removed

    def _remove_orphan(self, split_id: str) -> int:
        try:
            validate_split_id(split_id)
        except InvalidArgument:
            log.warning("not sweeping splits/%s/: not a split id", split_id)
            return 0
        now = utcnow()
        marker = SplitRecord(split_id=split_id, state="CREATING", create_time=now, update_time=now)
        try:
            if self.repository.reserve(marker, "", "") is not None:
                return 0
        except AlreadyExists:
            return 0  # a create took the id since the check: its prefix is live
        try:
            log.warning("removing orphan parts of splits/%s/ (no split owns them)", split_id)
            return self.store.delete_prefix(f"splits/{split_id}/")
        finally:
            self.repository.discard(split_id)

    # read ----------------------------------------------------------------------
    def get(self, name: str, show_deleted: bool = False) -> SplitRecord:
        split_id = parse_name(name)
        record = self.repository.get(split_id)
        if (
            record is None
            or record.state == "CREATING"
            or (record.state == "DELETED" and not show_deleted)
        ):
            raise NotFound(RESOURCE, name)
        return record

    def list_splits(self, query: ListQuery) -> tuple[list[SplitRecord], str]:
        size = clamp_page_size(query.page_size)
        if query.state_filter == "READY":
            states = ["READY"]
        elif query.state_filter == "DELETED":
            states = ["DELETED"]
        else:
            states = ["READY", "DELETED"] if query.show_deleted else ["READY"]
        for key in query.label_filter:
            if not _LABEL_KEY.match(key):
                raise InvalidArgument(
                    f"label key {key!r} is not a valid label key", field="label_filter"
                )
        fingerprint = filter_fingerprint(
            sorted(query.label_filter.items()), sorted(states), "create_time desc"
        )
        after = _page_cursor(decode_page_token(query.page_token, fingerprint))
        rows = self.repository.list_page(states, query.label_filter, after, size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            token = encode_page_token([last.create_time.isoformat(), last.split_id], fingerprint)
        return rows, token

    # update --------------------------------------------------------------------
    def update(
        self,
        name: str,
        values: Mapping[str, Any],
        paths: Sequence[str],
        etag: str = "",
    ) -> SplitRecord:
        split_id = parse_name(name, "split.name")
        if not paths:
            paths = [
                f for f in MUTABLE_FIELDS if values.get(f)
            ]  # no mask: every populated mutable field
            if not paths:
                raise InvalidArgument(
                    "update_mask is empty and no mutable field is set",
                    field="update_mask",
                    reason="INVALID_UPDATE_MASK",
                )
        bad = [p for p in paths if p not in MUTABLE_FIELDS]
        if bad:
            raise InvalidArgument(
                f"update_mask path {bad[0]!r} cannot be updated; only "
                f"{', '.join(MUTABLE_FIELDS)} can",
                field="update_mask",
                reason="INVALID_UPDATE_MASK",
                metadata={"path": bad[0]},
            )
        changes = {p: values.get(p) for p in dict.fromkeys(paths)}
        validate_metadata(
            str(changes.get("display_name") or ""),
            str(changes.get("description") or ""),
            dict(changes.get("labels") or {}),
        )
        return self.repository.update_metadata(split_id, etag, changes, utcnow())

    # delete --------------------------------------------------------------------
    def delete(self, name: str, purge: bool = False, etag: str = "") -> SplitRecord:
        split_id = parse_name(name)
        record = self.repository.get(split_id)
        if record is None or record.state == "CREATING":
            raise NotFound(RESOURCE, name)
        purge_event = None
        if record.state == "DELETED":
            # Soft-deleted before: only a purge that has not happened yet is left to do.
            if not purge or record.purge_time is not None:
                raise NotFound(RESOURCE, name, f"split {name!r} is already deleted")
            if etag and etag != record.etag:
                raise _stale(name)
            purge_event = _deleted_event(record.name, purged=True)
        else:
            event = _deleted_event(record.name, purged=purge)
            record = self.repository.mark_deleted(split_id, etag, utcnow(), event)
        if purge:
            # After the row says DELETED: a failure here leaves a deleted split whose purge
            # can be retried, never a READY split with missing parts.
            self.store.delete_prefix(f"splits/{split_id}/")
            record = self.repository.mark_purged(split_id, utcnow(), purge_event)
        return record


def _deleted_event(name: str, *, purged: bool) -> Any:
    return new_event(
        "split.deleted",
        name,
        EVENT_SOURCE,
        request_id=get_request_id() or "",
        split_deleted=events_pb2.SplitDeleted(split=name, purged=purged),
    )


def _stale(name: str) -> Aborted:
    return Aborted(
        f"etag does not match the current version of {name}; read it again and retry",
        reason="ETAG_MISMATCH",
        metadata={"resource_name": name},
    )


_TASK_ENUM = {
    TaskType.BINARY: common_pb2.TASK_TYPE_BINARY,
    TaskType.MULTICLASS: common_pb2.TASK_TYPE_MULTICLASS,
    TaskType.REGRESSION: common_pb2.TASK_TYPE_REGRESSION,
}
