"""A real registry server per backend (SQLite file, PostgreSQL schema) on an ephemeral port."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from registry_support import Registry

from arbor.registry.v1 import registry_service_pb2_grpc as pb_grpc
from arbor_core.artifacts import LocalArtifactStore
from arbor_core.config import load_settings
from arbor_registry.server import build_runner, migrate


async def _start(backend: str, database_url: str, home: Path, nats_url: str, ns: str) -> Registry:
    artifacts = LocalArtifactStore(home / "artifacts")
    settings = dataclasses.replace(
        load_settings("registry"),
        host="127.0.0.1",
        port=0,
        home=home,
        database_url=database_url,
        nats_url=nats_url,
        nats_namespace=ns,
        artifact_uri=str(artifacts.root),
        auth_tokens=[],
        grace_seconds=0.5,
    )
    migrate(settings)
    runner = build_runner(settings, relay_poll_interval=0.1)
    await runner.start()
    assert await runner.check_readiness()
    channel = grpc.aio.insecure_channel(runner.address)
    stub = pb_grpc.RegistryServiceStub(channel)
    registry = Registry(backend, stub, settings, artifacts, runner)
    registry._channel = channel  # type: ignore[attr-defined]
    return registry


@pytest.fixture(scope="session")
async def pg_registry(
    pg_url: str, nats_url: str, nats_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Registry]:
    home = tmp_path_factory.mktemp("registry-pg")
    registry = await _start("postgresql", pg_url, home, nats_url, nats_namespace)
    yield registry
    await registry._channel.close()  # type: ignore[attr-defined]
    await registry.runner.stop(0.5)


@pytest.fixture(scope="session")
async def sqlite_registry(
    nats_url: str, nats_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Registry]:
    home = tmp_path_factory.mktemp("registry-sqlite")
    url = f"sqlite:///{home / 'registry.db'}"
    registry = await _start("sqlite", url, home, nats_url, nats_namespace)
    yield registry
    await registry._channel.close()  # type: ignore[attr-defined]
    await registry.runner.stop(0.5)


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest) -> Registry:
    """The registry on each backend in turn."""
    name = "sqlite_registry" if request.param == "sqlite" else "pg_registry"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
