"""Migrations, the repository and the create/cleanup rules on SQLite (and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from split_support import Splitter, classification_frame

from arbor_core.artifacts import ArtifactExists, ArtifactRef, LocalArtifactStore
from arbor_core.db import current, downgrade, make_engine, upgrade, utcnow
from arbor_core.errors import Aborted, AlreadyExists, InvalidArgument, NotFound, Unavailable
from arbor_core.outbox import pending_count
from arbor_split import MIGRATIONS_DIR
from arbor_split.domain import DataAccess, Fractions, RandomStrategy, SplitSpec, UriSource
from arbor_split.repository import SqlSplitRepository
from arbor_split.service import CreateCommand, ListQuery, SplitRecord, SplitService
from arbor_split.tables import metadata, outbox


def _roundtrip(url: str, schema: str) -> None:
    upgrade(url, schema, MIGRATIONS_DIR)
    assert current(url, schema) == "0001"
    engine = make_engine(url, schema)
    try:
        with engine.connect() as conn:
            # The migration and tables.py describe the same schema.
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()
    downgrade(url, schema, MIGRATIONS_DIR, "base")
    assert current(url, schema) is None
    upgrade(url, schema, MIGRATIONS_DIR)


def test_migrations_up_and_down_on_sqlite(sqlite_url: str) -> None:
    _roundtrip(sqlite_url, "split")


@pytest.mark.integration
def test_migrations_up_and_down_on_postgresql(pg_url: str, db_schema: str) -> None:
    _roundtrip(pg_url, db_schema)


# --------------------------------------------------------------------------- service on SQLite


class FlakyStore(LocalArtifactStore):
    """Fails the n-th upload, like a network error halfway through a create."""

    def __init__(self, root: Path, fail_on: int) -> None:
        super().__init__(root)
        self.fail_on = fail_on
        self.puts = 0

    def put_file(self, key: str, path: Path, *, if_absent: bool = False) -> ArtifactRef:
        self.puts += 1
        if self.puts == self.fail_on:
            raise Unavailable("store went away", reason="ARTIFACT_STORE_UNAVAILABLE")
        return super().put_file(key, path, if_absent=if_absent)


@pytest.fixture
def service_parts(sqlite_url: str, tmp_path: Path, splitter: Splitter) -> Any:
    upgrade(sqlite_url, "split", MIGRATIONS_DIR)
    engine = make_engine(sqlite_url, "split")
    repository = SqlSplitRepository(engine)
    yield repository, tmp_path, splitter
    engine.dispose()


def _service(repository: SqlSplitRepository, store: Any, splitter: Splitter) -> SplitService:
    return SplitService(repository, store, DataAccess([str(splitter.root)]))


def _command(splitter: Splitter, **kwargs: Any) -> CreateCommand:
    path = splitter.file(classification_frame(100), "rows.parquet")
    spec = SplitSpec(UriSource(path), "label", RandomStrategy(), Fractions(0.6, 0.2, 0.2), 1)
    return CreateCommand(spec=spec, **kwargs)


def _row_count(repository: SqlSplitRepository) -> int:
    with repository.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM splits")).scalar_one())


def test_a_failed_upload_leaves_no_row_and_no_parts(service_parts: Any) -> None:
    repository, tmp_path, splitter = service_parts
    store = FlakyStore(tmp_path / "artifacts", fail_on=2)
    service = _service(repository, store, splitter)
    with pytest.raises(Unavailable):
        service.create(_command(splitter, split_id="flaky", request_id="r-1", request_hash="h"))
    assert store.list("splits/") == []
    assert _row_count(repository) == 0
    assert repository.lookup_request("r-1") is None
    with repository.sessions() as session:
        assert pending_count(session, outbox) == 0
    # The id and the request id are free again.
    store.fail_on = 0
    record = service.create(
        _command(splitter, split_id="flaky", request_id="r-1", request_hash="h")
    )
    assert record.state == "READY"
    assert len(store.list("splits/flaky/")) == 3
    with repository.sessions() as session:
        assert pending_count(session, outbox) == 1


def test_debris_is_replaced_and_a_late_upload_cannot_replace_a_part(service_parts: Any) -> None:
    """Parts are written create-only: debris of an earlier failed create of the same id is
    replaced, and that create's late upload (create-only too) is refused once a part is there."""
    repository, tmp_path, splitter = service_parts
    store = LocalArtifactStore(tmp_path / "artifacts")
    service = _service(repository, store, splitter)
    store.put_bytes("splits/reuse/train.parquet", b"debris of a failed create")
    record = service.create(_command(splitter, split_id="reuse"))
    assert record.state == "READY"
    for part in record.parts:
        assert store.get_bytes(part["key"], expected_sha256=part["sha256"])
    with pytest.raises(ArtifactExists):
        store.put_bytes("splits/reuse/train.parquet", b"late upload", if_absent=True)
    train = next(p for p in record.parts if p["part"] == "train")
    assert store.get_bytes(train["key"], expected_sha256=train["sha256"])


def test_orphan_sweep_deletes_only_what_no_split_owns(service_parts: Any) -> None:
    repository, tmp_path, splitter = service_parts
    store = LocalArtifactStore(tmp_path / "artifacts")
    service = _service(repository, store, splitter)
    ready = service.create(_command(splitter, split_id="ready"))
    service.create(_command(splitter, split_id="soft"))
    service.delete("splits/soft")
    service.create(_command(splitter, split_id="gone"))
    service.delete("splits/gone", purge=True)
    store.put_bytes("splits/gone/train.parquet", b"late copy")  # under a purged split
    assert repository.reserve(SplitRecord("running", "CREATING"), "", "") is None
    store.put_bytes("splits/running/train.parquet", b"being written")
    store.put_bytes("splits/orphan/train.parquet", b"no row")
    store.put_bytes("splits/Not_An_Id/x", b"not ours to judge")
    store.put_bytes("splits/loose", b"not under a split prefix")
    kept = {"ready", "soft", "running", "Not_An_Id", "loose"}

    assert service.sweep_orphans(dt.timedelta(hours=1)) == 0  # all younger than the grace
    assert service.sweep_orphans(dt.timedelta(0)) == 2
    assert {k.split("/")[1] for k in store.list("splits/")} == kept
    assert repository.get("orphan") is None  # its reservation was dropped again
    assert repository.get("running").state == "CREATING"
    for part in ready.parts:
        assert store.get_bytes(part["key"], expected_sha256=part["sha256"])
    assert service.sweep_orphans(dt.timedelta(0)) == 0


def test_stale_creates_are_cleaned_up(service_parts: Any) -> None:
    repository, tmp_path, splitter = service_parts
    store = LocalArtifactStore(tmp_path / "artifacts")
    service = _service(repository, store, splitter)
    old = utcnow() - dt.timedelta(days=1)
    stale = SplitRecord("crashed", "CREATING", create_time=old, update_time=old)
    fresh = SplitRecord("running", "CREATING")
    assert repository.reserve(stale, "req-stale", "h") is None
    assert repository.reserve(fresh, "", "") is None
    store.put_bytes("splits/crashed/train.parquet", b"half")
    assert service.cleanup_stale(dt.timedelta(hours=1)) == 1
    assert store.list("splits/") == []
    assert repository.get("crashed") is None and repository.lookup_request("req-stale") is None
    assert repository.get("running") is not None
    # CREATING rows are invisible through the API.
    with pytest.raises(NotFound):
        service.get("splits/running")
    assert service.list_splits(ListQuery())[0] == []


def test_replay_of_a_create_in_progress_is_aborted(service_parts: Any) -> None:
    repository, tmp_path, splitter = service_parts
    service = _service(repository, LocalArtifactStore(tmp_path / "a"), splitter)
    assert repository.reserve(SplitRecord("busy", "CREATING"), "req-busy", "h") is None
    with pytest.raises(Aborted) as info:
        service.create(_command(splitter, request_id="req-busy", request_hash="h"))
    assert info.value.reason == "REQUEST_IN_PROGRESS"
    with pytest.raises(AlreadyExists):
        repository.reserve(SplitRecord("busy", "CREATING"), "", "")


def test_update_rules(service_parts: Any) -> None:
    repository, tmp_path, splitter = service_parts
    service = _service(repository, LocalArtifactStore(tmp_path / "a"), splitter)
    record = service.create(_command(splitter, labels={"team": "risk"}))
    updated = service.update(record.name, {"description": "d"}, [], record.etag)
    assert updated.description == "d" and updated.labels == {"team": "risk"}
    with pytest.raises(InvalidArgument) as info:
        service.update(record.name, {"seed": 3}, ["seed"])
    assert info.value.violations[0].field == "update_mask"
    with pytest.raises(InvalidArgument):
        service.update(record.name, {"labels": {"Bad Key": "x"}}, ["labels"])
    with pytest.raises(Aborted):
        service.update(record.name, {"display_name": "x"}, ["display_name"], record.etag)
    with pytest.raises(InvalidArgument) as bad_name:
        service.get("models/abc")
    assert bad_name.value.violations[0].field == "name"


def test_a_record_roundtrips_through_the_repository(service_parts: Any) -> None:
    repository, tmp_path, splitter = service_parts
    service = _service(repository, LocalArtifactStore(tmp_path / "a"), splitter)
    record = service.create(_command(splitter, display_name="x", labels={"a": "1"}))
    loaded = repository.get(record.split_id)
    assert loaded is not None
    assert dataclasses.asdict(loaded) == dataclasses.asdict(record)
    assert loaded.create_time.tzinfo is not None


def test_list_filters_by_label_and_state_on_sqlite(service_parts: Any) -> None:
    repository, tmp_path, splitter = service_parts
    service = _service(repository, LocalArtifactStore(tmp_path / "a"), splitter)
    red = service.create(_command(splitter, labels={"color": "red"}))
    blue = service.create(_command(splitter, labels={"color": "blue", "size": "l"}))
    service.delete(blue.name)
    names = lambda q: [r.name for r in service.list_splits(q)[0]]  # noqa: E731
    assert names(ListQuery(label_filter={"color": "red"})) == [red.name]
    assert names(ListQuery(label_filter={"color": "blue"})) == []
    assert names(ListQuery(label_filter={"color": "blue"}, show_deleted=True)) == [blue.name]
    assert names(ListQuery(state_filter="DELETED")) == [blue.name]
    assert names(ListQuery(show_deleted=True)) == [blue.name, red.name]
