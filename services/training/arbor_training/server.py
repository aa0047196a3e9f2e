"""Wiring: engine, repository, split client, outbox relay, Watch's event hub, gRPC runner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from arbor.split.v1 import split_service_pb2_grpc
from arbor_core.clients import service_channel
from arbor_core.config import Settings
from arbor_core.db import current, make_engine, ping, run_db, session_factory, upgrade
from arbor_core.events import EVENTS_ROOT, connect_nats, ensure_streams, subscribe_events
from arbor_core.outbox import OutboxRelay
from arbor_core.server import ServiceRunner, build_server
from arbor_training.api import EventHub, TrainingServicer, register
from arbor_training.domain import Experiments
from arbor_training.repository import TrainingRepository
from arbor_training.study import search_spaces
from arbor_training.tables import VERSION_TABLE, outbox

log = logging.getLogger("arbor.training")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def migrate(settings: Settings) -> None:
    """Bring the training schema (PostgreSQL) or file (SQLite) to the newest revision."""
    upgrade(settings.database_url, settings.db_schema, MIGRATIONS_DIR)


def current_revision(settings: Settings) -> str | None:
    """The schema's migration revision (kept in ``training_alembic_version``)."""
    return current(settings.database_url, settings.db_schema, version_table=VERSION_TABLE)


async def _follow_events(settings: Settings, hub: EventHub) -> None:
    """Keep one subscription to experiment events for Watch; reconnect when it drops."""
    backoff = 0.5
    while True:
        nc = None
        try:
            nc = await connect_nats(settings.nats_url, name="training-watch")
            js = nc.jetstream()
            await ensure_streams(js, settings.nats_namespace)
            subscription = await subscribe_events(
                js,
                hub.handle,
                pattern=f"{EVENTS_ROOT}.experiment.>",
                namespace=settings.nats_namespace,
            )
            hub.connected = True
            backoff = 0.5
            try:
                while nc.is_connected or nc.is_reconnecting:
                    await asyncio.sleep(1.0)
            finally:
                await subscription.stop()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("watch events unavailable (%s); Watch polls the database", err)
        finally:
            hub.connected = False
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)


def build_runner(settings: Settings, *, relay_poll_interval: float = 0.5) -> ServiceRunner:
    """A ready-to-start training API server (``await runner.start()``; port 0 -> ephemeral).

    The schema must already be migrated (``migrate``). Readiness is the database only: while
    NATS is away, experiments still queue in the outbox and Watch falls back to polling.
    """
    engine = make_engine(settings)
    repo = TrainingRepository(session_factory(engine))
    experiments = Experiments(repo)
    split_channel = service_channel("split", settings)
    hub = EventHub()
    servicer = TrainingServicer(
        experiments, split_service_pb2_grpc.SplitServiceStub(split_channel), search_spaces, hub
    )
    relay = OutboxRelay(
        repo.session_factory,
        outbox,
        settings.nats_url,
        settings.nats_namespace,
        name="training-outbox",
        poll_interval=relay_poll_interval,
    )

    async def database_ready() -> bool:
        return await run_db(ping, engine)

    async def run_relay() -> None:
        await relay.start()
        await asyncio.Event().wait()  # until the runner cancels it at shutdown

    async def follow_events() -> None:
        await _follow_events(settings, hub)

    async def close() -> None:
        await relay.stop()
        await split_channel.close()
        engine.dispose()

    runner = build_server(
        settings,
        register(servicer),
        readiness_checks=[database_ready],
        background_tasks=[run_relay, follow_events],
        shutdown_hooks=[close],
        draining_hooks=[hub.close],  # open watches end at once, not after the grace
    )
    runner.experiments = experiments  # type: ignore[attr-defined]  # for tests and tools
    runner.relay = relay  # type: ignore[attr-defined]
    runner.hub = hub  # type: ignore[attr-defined]
    return runner
