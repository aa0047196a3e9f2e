"""Fault 11: two writers racing on one artifact key. Create-only uploads let exactly one win;
the others get ALREADY_EXISTS (ArtifactExists), and the stored bytes are the winner's, intact.

GCS runs against fake-gcs-server, which enforces ``ifGenerationMatch=0`` like the real service
(gcp-storage-emulator ignores generation preconditions, so it cannot show the race).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from reliability_support import FakeGcsServer

from arbor_core.artifacts import (
    ArtifactExists,
    ArtifactStore,
    GcsArtifactStore,
    LocalArtifactStore,
)
from arbor_core.status_details import status_for_error

pytestmark = pytest.mark.fault

WRITERS = 8


def _race(store: ArtifactStore, key: str, payloads: list[bytes]) -> list[Any]:
    """Every writer starts at the same instant; each returns its ref or its exception."""
    barrier = threading.Barrier(len(payloads))
    results: list[Any] = [None] * len(payloads)

    def write(i: int) -> None:
        barrier.wait()
        try:
            results[i] = store.put_bytes(key, payloads[i], if_absent=True)
        except Exception as err:
            results[i] = err

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _assert_one_winner(store: ArtifactStore, key: str, payloads: list[bytes]) -> None:
    results = _race(store, key, payloads)
    winners = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ArtifactExists) for r in losers), losers
    assert len(losers) == len(payloads) - 1
    for loser in losers:
        assert loser.reason == "ARTIFACT_ALREADY_EXISTS"
        assert loser.metadata["key"] == key
        status = status_for_error(loser)
        assert status.code == grpc.StatusCode.ALREADY_EXISTS
    winner = payloads[winners[0]]
    assert store.get_bytes(key, expected_sha256=hashlib.sha256(winner).hexdigest()) == winner
    # A retry of the winning upload (same bytes) is not an error: create-only is idempotent.
    assert store.put_bytes(key, winner, if_absent=True).sha256 == hashlib.sha256(winner).hexdigest()


def _payloads() -> list[bytes]:
    return [f"writer-{i}-".encode() * (1000 + i) for i in range(WRITERS)]


def test_local_store_create_only_race_has_one_winner(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    for round_ in range(3):
        _assert_one_winner(store, f"models/race/v{round_}/model.cbm", _payloads())
    assert not list((store.root / ".arbor-meta" / "tmp").iterdir()), "temp files left behind"


def test_local_store_create_only_put_file_and_overwrite_default(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    source = tmp_path / "part.parquet"
    source.write_bytes(b"first")
    store.put_file("splits/s1/train.parquet", source, if_absent=True)
    source.write_bytes(b"second")
    with pytest.raises(ArtifactExists):
        store.put_file("splits/s1/train.parquet", source, if_absent=True)
    assert store.get_bytes("splits/s1/train.parquet") == b"first"
    # Without if_absent a write still overwrites (the old behaviour, unchanged).
    store.put_file("splits/s1/train.parquet", source)
    assert store.get_bytes("splits/s1/train.parquet") == b"second"


def test_gcs_create_only_race_has_one_winner(fake_gcs: FakeGcsServer) -> None:
    client = fake_gcs.client()
    bucket = f"arbor-race-{uuid.uuid4().hex[:8]}"
    client.create_bucket(bucket)
    store = GcsArtifactStore(bucket, "race", client=client)
    for round_ in range(2):
        _assert_one_winner(store, f"models/race/v{round_}/model.cbm", _payloads())
    source = Path(__file__)
    store.put_file("files/a.py", source, if_absent=True)
    store.put_file("files/a.py", source, if_absent=True)  # same bytes: fine
    store.put_bytes("files/b", b"x")
    with pytest.raises(ArtifactExists):
        store.put_file("files/b", source, if_absent=True)
    assert store.get_bytes("files/b") == b"x"
