"""Wiring: engine, repository, artifact store, outbox relay and the gRPC runner of the split
service."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from arbor_core.artifacts import ArtifactStore, open_store
from arbor_core.config import Settings, env_float
from arbor_core.db import make_engine, ping, run_db, upgrade
from arbor_core.outbox import OutboxRelay
from arbor_core.server import ServiceRunner, build_server
from arbor_split import MIGRATIONS_DIR
from arbor_split.api import register
from arbor_split.domain import DataAccess
from arbor_split.repository import SqlSplitRepository
from arbor_split.service import SplitService
from arbor_split.tables import outbox

log = logging.getLogger("arbor.split")

#: How old the newest object under ``splits/{id}/`` must be before an unowned prefix is swept
#: (longer than the artifact store's timeout, so no upload of a failed create is on its way).
ORPHAN_GRACE_ENV = "ARBOR_SPLIT_ORPHAN_GRACE_SECONDS"
#: Sweep period after the one at start-up (0: at start-up only).
ORPHAN_SWEEP_ENV = "ARBOR_SPLIT_ORPHAN_SWEEP_SECONDS"


def migrate(settings: Settings) -> None:
    """Bring the split schema (PostgreSQL) or file (SQLite) to the newest revision."""
    upgrade(settings.database_url, settings.db_schema, MIGRATIONS_DIR)


def build_runner(
    settings: Settings,
    *,
    store: ArtifactStore | None = None,
    gcs_client: Any = None,
    relay_poll_interval: float = 0.5,
    orphan_grace_s: float | None = None,
    orphan_sweep_s: float | None = None,
    **runner_options: Any,
) -> ServiceRunner:
    """A ready-to-start split server (``await runner.start()``; port 0 -> ephemeral).

    The schema must already be migrated (``migrate``). Ready means the database answers and
    the outbox relay is connected to NATS. ``store`` overrides the artifact store named by
    ``settings.artifact_uri``; ``gcs_client`` is used to read ``gs://`` sources. Orphan parts
    are swept at start and every ``orphan_sweep_s`` (defaults: the environment, else 1 h grace
    and a 15 min period).
    """
    engine = make_engine(settings)
    repository = SqlSplitRepository(engine)
    store = store if store is not None else open_store(settings.artifact_uri)
    service = SplitService(repository, store, DataAccess(settings.allowed_data_roots, gcs_client))
    grace = orphan_grace_s if orphan_grace_s is not None else env_float(ORPHAN_GRACE_ENV, 3600)
    period = orphan_sweep_s if orphan_sweep_s is not None else env_float(ORPHAN_SWEEP_ENV, 900)
    store_timeout = float(getattr(store, "timeout", 0.0))
    if grace <= 2 * store_timeout:
        log.warning(
            "orphan grace %.0fs is not well beyond the store's timeout %.0fs; using %.0fs",
            grace,
            store_timeout,
            2 * store_timeout,
        )
        grace = 2 * store_timeout
    relay = OutboxRelay(
        repository.sessions,
        outbox,
        settings.nats_url,
        settings.nats_namespace,
        name="split-outbox",
        poll_interval=relay_poll_interval,
    )

    async def database_ready() -> bool:
        return await run_db(ping, engine)

    async def nats_ready() -> bool:
        return relay.connected

    async def run_relay() -> None:
        await relay.start()
        await asyncio.Event().wait()  # until the runner cancels it at shutdown

    async def remove_unfinished() -> None:
        # Creates interrupted by a crash leave a CREATING row and maybe some parts behind.
        with contextlib.suppress(Exception):
            removed = await run_db(service.cleanup_stale)
            if removed:
                log.warning("removed %d unfinished splits", removed)

    async def sweep_orphans() -> None:
        # Parts no split owns: late uploads of failed creates, clean-ups that could not delete.
        while True:
            try:
                removed = await asyncio.to_thread(
                    service.sweep_orphans, dt.timedelta(seconds=grace)
                )
                if removed:
                    log.warning("removed %d orphan split objects", removed)
            except Exception as err:  # the store or the database is away: next time
                log.warning("orphan sweep failed: %s", err)
            if period <= 0:
                return
            await asyncio.sleep(period)

    async def close() -> None:
        await relay.stop()
        engine.dispose()

    runner = build_server(
        settings,
        register(service),
        readiness_checks=[database_ready, nats_ready],
        background_tasks=[run_relay, remove_unfinished, sweep_orphans],
        shutdown_hooks=[close],
        **runner_options,
    )
    runner.service = service  # type: ignore[attr-defined]  # for tests and tools
    runner.relay = relay  # type: ignore[attr-defined]
    return runner
