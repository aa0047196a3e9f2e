"""Wiring: engine, store, artifact store, outbox relay and the gRPC runner of the registry."""

from __future__ import annotations

import asyncio
import functools
import logging

from arbor_core.artifacts import ArtifactStore, open_store
from arbor_core.config import Settings
from arbor_core.db import make_engine, ping, run_db, upgrade
from arbor_core.outbox import OutboxRelay
from arbor_core.server import ServiceRunner, build_server
from arbor_registry import MIGRATIONS_DIR
from arbor_registry.api import register
from arbor_registry.domain import Registry
from arbor_registry.repository import SqlRegistryStore
from arbor_registry.tables import outbox

log = logging.getLogger("arbor.registry")


def migrate(settings: Settings) -> None:
    """Bring the registry's schema (PostgreSQL) or file (SQLite) to the newest revision."""
    upgrade(settings.database_url, settings.db_schema, MIGRATIONS_DIR)


def build_runner(settings: Settings, *, relay_poll_interval: float = 0.5) -> ServiceRunner:
    """A ready-to-start registry server (``await runner.start()``; port 0 -> ephemeral).

    The schema must already be migrated (``migrate``). Readiness is the database only: while
    NATS is away the outbox keeps the events and the relay sends them when it is back.
    """
    engine = make_engine(settings)
    store = SqlRegistryStore(engine)
    artifacts = functools.cache(lambda: _open_artifacts(settings))
    registry = Registry(store, artifacts)
    relay = OutboxRelay(
        store.sessions,
        outbox,
        settings.nats_url,
        settings.nats_namespace,
        name="registry-outbox",
        poll_interval=relay_poll_interval,
    )

    async def database_ready() -> bool:
        return await run_db(ping, engine)

    async def run_relay() -> None:
        await relay.start()
        await asyncio.Event().wait()  # until the runner cancels it at shutdown

    async def close() -> None:
        await relay.stop()
        engine.dispose()

    runner = build_server(
        settings,
        register(registry),
        readiness_checks=[database_ready],
        background_tasks=[run_relay],
        shutdown_hooks=[close],
    )
    runner.registry = registry  # type: ignore[attr-defined]  # for tests and tools
    runner.relay = relay  # type: ignore[attr-defined]
    return runner


def _open_artifacts(settings: Settings) -> ArtifactStore:
    return open_store(settings.artifact_uri)
