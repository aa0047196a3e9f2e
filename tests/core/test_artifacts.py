"""ArtifactStore on both backends: round trips, checksum verification, key validation."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import grpc
import pytest

from arbor_core.artifacts import (
    META_DIR,
    ArtifactStore,
    ChecksumMismatch,
    GcsArtifactStore,
    InvalidArtifactKey,
    LocalArtifactStore,
    open_store,
)
from arbor_core.errors import InvalidArgument, NotFound
from arbor_core.testing import GcsEmulator


@pytest.fixture(params=["local", "gcs"])
def store(request: pytest.FixtureRequest) -> ArtifactStore:
    name = "local_artifact_store" if request.param == "local" else "gcs_artifact_store"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def tamper(store: ArtifactStore, key: str, data: bytes) -> None:
    """Replace the stored bytes behind the store's back, keeping its recorded checksum."""
    if isinstance(store, LocalArtifactStore):
        (store.root / key).write_bytes(data)
    else:
        assert isinstance(store, GcsArtifactStore)
        blob = store.bucket.get_blob(store.prefix + key)
        metadata = dict(blob.metadata)
        blob = store.bucket.blob(store.prefix + key)
        blob.metadata = metadata
        blob.upload_from_string(data)


BAD_KEYS = [
    "",
    "../escape",
    "a/../../b",
    "a/./b",
    "/etc/passwd",
    "a//b",
    "a/b/",
    "a\\b",
    "C:/x",
    "a\x00b",
    f"{META_DIR}/sha256/x",
]


def test_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    data = b"\x00parquet bytes\xff" * 1000
    ref = store.put_bytes("splits/s1/train.parquet", data, "application/octet-stream")
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size == len(data)
    assert ref.key == "splits/s1/train.parquet"
    assert ref.uri == store.uri_for("splits/s1/train.parquet")
    assert store.exists("splits/s1/train.parquet")
    assert store.get_bytes("splits/s1/train.parquet") == data
    assert store.get_bytes("splits/s1/train.parquet", expected_sha256=ref.sha256) == data

    src = tmp_path / "model.cbm"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    ref2 = store.put_file("models/m/v1/model.cbm", src)
    assert ref2.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out" / "model.cbm"
    store.download_to("models/m/v1/model.cbm", out, expected_sha256=ref2.sha256)
    assert out.read_bytes() == src.read_bytes()

    # overwrite is allowed and re-records the checksum
    store.put_bytes("splits/s1/train.parquet", b"v2")
    assert store.get_bytes("splits/s1/train.parquet") == b"v2"

    store.put_bytes("splits/s10/train.parquet", b"x")
    assert store.list() == [
        "models/m/v1/model.cbm",
        "splits/s1/train.parquet",
        "splits/s10/train.parquet",
    ]
    assert store.list("splits/s1/") == ["splits/s1/train.parquet"]
    assert store.list("splits/s1") == ["splits/s1/train.parquet", "splits/s10/train.parquet"]
    assert store.list("nothing/") == []

    assert store.delete_prefix("splits/") == 2
    assert store.list() == ["models/m/v1/model.cbm"]
    store.delete("models/m/v1/model.cbm")
    store.delete("models/m/v1/model.cbm")  # idempotent
    assert not store.exists("models/m/v1/model.cbm")
    assert store.list() == []


def test_missing_artifact_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as info:
        store.get_bytes("models/none/model.cbm")
    assert info.value.reason == "ARTIFACT_NOT_FOUND"
    dest = tmp_path / "dl" / "x"
    with pytest.raises(NotFound):
        store.download_to("models/none/model.cbm", dest)
    assert list(dest.parent.iterdir()) == []  # no temp file left behind


def test_tampered_bytes_are_detected(store: ArtifactStore, tmp_path: Path) -> None:
    ref = store.put_bytes("models/m/v1/model.cbm", b"original model")
    tamper(store, "models/m/v1/model.cbm", b"evil model!!!!")
    with pytest.raises(ChecksumMismatch) as info:
        store.get_bytes("models/m/v1/model.cbm")
    err = info.value
    assert err.code == grpc.StatusCode.DATA_LOSS
    assert err.reason == "ARTIFACT_CHECKSUM_MISMATCH"
    assert err.metadata["stored_sha256"] == ref.sha256
    dest = tmp_path / "dl" / "model.cbm"
    with pytest.raises(ChecksumMismatch):
        store.download_to("models/m/v1/model.cbm", dest)
    assert not dest.exists()  # a corrupt download never lands at the destination
    assert list(dest.parent.iterdir()) == []


def test_expected_checksum_is_checked(store: ArtifactStore) -> None:
    store.put_bytes("a/b.bin", b"payload")
    with pytest.raises(ChecksumMismatch) as info:
        store.get_bytes("a/b.bin", expected_sha256="0" * 64)
    assert "expected_sha256" in info.value.metadata


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(store: ArtifactStore, key: str) -> None:
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.uri_for(key),
    ):
        with pytest.raises(InvalidArtifactKey) as info:
            call()
        assert info.value.violations[0].field == "key"
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("prefix", ["../", "/abs", "a//", "/", f"{META_DIR}/"])
def test_bad_prefixes_are_refused(store: ArtifactStore, prefix: str) -> None:
    with pytest.raises(InvalidArtifactKey):
        store.list(prefix)
    with pytest.raises(InvalidArtifactKey):
        store.delete_prefix(prefix)


def test_delete_prefix_refuses_everything(store: ArtifactStore) -> None:
    store.put_bytes("a/b", b"x")
    with pytest.raises(InvalidArtifactKey):
        store.delete_prefix("")
    assert store.exists("a/b")


def test_list_with_times_gives_each_keys_write_time(store: ArtifactStore) -> None:
    """What the split service's orphan sweep ages objects by (UTC, around the write)."""
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    store.put_bytes("t/one", b"1")
    store.put_bytes("t/sub/two", b"2")
    store.put_bytes("other", b"3")
    listed = store.list_with_times("t/")
    assert [key for key, _ in listed] == store.list("t/") == ["t/one", "t/sub/two"]
    for _, when in listed:
        assert when.tzinfo is not None
        assert before < when < dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)


def test_local_symlink_escape_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    store = LocalArtifactStore(tmp_path / "root")
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidArtifactKey):
        store.get_bytes("link/secret")
    with pytest.raises(InvalidArtifactKey):
        store.put_bytes("link/new", b"x")
    assert not (outside / "new").exists()
    assert store.list() == []


def test_local_checksums_live_apart_from_artifacts(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    ref = store.put_bytes("models/m/v1/model.cbm", b"abc")
    # The artifact is a plain file at its key; the checksum sits under the reserved directory.
    assert (store.root / "models/m/v1/model.cbm").read_bytes() == b"abc"
    record = json.loads((store.root / META_DIR / "sha256/models/m/v1/model.cbm").read_text())
    assert record["sha256"] == ref.sha256
    assert store.list() == ["models/m/v1/model.cbm"]
    assert not list((store.root / META_DIR / "tmp").iterdir())  # no temp files left


def test_local_artifact_without_checksum_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    (store.root / "dropped").write_bytes(b"copied in by hand")
    with pytest.raises(ChecksumMismatch) as info:
        store.get_bytes("dropped")
    assert info.value.reason == "ARTIFACT_CHECKSUM_MISSING"
    data = b"copied in by hand"
    assert store.get_bytes("dropped", expected_sha256=hashlib.sha256(data).hexdigest()) == data


def test_open_store(tmp_path: Path, gcs_emulator: GcsEmulator, run_id: str) -> None:
    local = open_store(str(tmp_path / "a"))
    assert isinstance(local, LocalArtifactStore)
    via_uri = open_store((tmp_path / "b").as_uri())
    assert isinstance(via_uri, LocalArtifactStore)
    assert via_uri.root == (tmp_path / "b").resolve()
    with pytest.raises(InvalidArgument):
        open_store("s3://bucket/x")
    with pytest.raises(InvalidArgument):
        open_store("gs://Bad_Bucket/x")

    # STORAGE_EMULATOR_HOST (set by the fixture) routes the default client to the emulator.
    bucket = f"arbor-{run_id}"
    gcs_emulator.create_bucket(bucket)
    gcs = open_store(f"gs://{bucket}/open-store/")
    assert isinstance(gcs, GcsArtifactStore)
    ref = gcs.put_bytes("k/v.bin", b"hi")
    assert ref.uri == f"gs://{bucket}/open-store/k/v.bin"
    assert gcs.get_bytes("k/v.bin") == b"hi"
    assert gcs.list() == ["k/v.bin"]
