"""Fixtures for the split service: a data root for unit tests and one running split server.

Unit tests call ``arbor_split.domain`` directly on files under ``tmp_path``. Integration tests
share one real server per session: PostgreSQL (this run's database), NATS (this run's
namespace) and the GCS emulator as artifact store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from split_support import DATASETS, Splitter

from arbor.split.v1 import split_service_pb2_grpc
from arbor_core.artifacts import GcsArtifactStore
from arbor_core.config import load_settings
from arbor_core.testing import GcsEmulator


@pytest.fixture
def splitter(tmp_path: Path) -> Splitter:
    root = tmp_path / "data"
    root.mkdir()
    return Splitter(root)


# --------------------------------------------------------------------------- server


@dataclass
class SplitServer:
    address: str
    stub: split_service_pb2_grpc.SplitServiceStub
    store: GcsArtifactStore
    data_root: Path
    namespace: str
    runner: Any
    gcs: GcsEmulator


@pytest.fixture(scope="session")
def split_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("split-data")


@pytest.fixture(scope="session")
async def split_server(
    pg_url: str,
    nats_url: str,
    nats_namespace: str,
    gcs_emulator: GcsEmulator,
    run_id: str,
    split_data_root: Path,
) -> AsyncIterator[SplitServer]:
    """One split server for the session: PostgreSQL, NATS and GCS (emulator) artifacts."""
    from arbor_split.server import build_runner, migrate

    settings = dataclasses.replace(
        load_settings("split"),
        host="127.0.0.1",
        port=0,
        database_url=pg_url,
        nats_url=nats_url,
        nats_namespace=nats_namespace,
        artifact_uri=f"gs://arbor-{run_id}/split",
        allowed_data_roots=[str(split_data_root), str(DATASETS)],
        auth_tokens=[],
        grace_seconds=1.0,
    )
    migrate(settings)
    bucket = f"arbor-{run_id}"
    gcs_emulator.create_bucket(bucket)
    store = GcsArtifactStore(bucket, "split", client=gcs_emulator.client())
    runner = build_runner(
        settings,
        store=store,
        gcs_client=gcs_emulator.client(),
        relay_poll_interval=0.1,
        readiness_interval=0.2,
    )
    await runner.start()
    channel = grpc.aio.insecure_channel(runner.address)
    try:
        yield SplitServer(
            runner.address,
            split_service_pb2_grpc.SplitServiceStub(channel),
            store,
            split_data_root,
            nats_namespace,
            runner,
            gcs_emulator,
        )
    finally:
        await channel.close()
        await runner.stop(grace=0.5)
