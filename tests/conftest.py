"""Shared fixtures: a run id, real PostgreSQL / NATS / GCS-emulator resources isolated per run.

Each test session gets its own PostgreSQL database (``arbor_test_<runid>``) and NATS namespace,
so concurrent runs (and xdist workers) never see each other's rows, streams or messages.
Process helpers live in ``arbor_core.testing``. Keep this file small and general.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from nats.aio.client import Client as NatsClient

from arbor_core.artifacts import GcsArtifactStore, LocalArtifactStore
from arbor_core.testing import GcsEmulator, NatsServerProcess, free_port, port_open

# Worker processes that tests start train one small library each: importing all three model
# libraries at start-up (the deployment default) would only add CPU to a 2-core test run.
os.environ.setdefault("ARBOR_TRAINING_PRELOAD_LIBRARIES", "0")

PG_ADMIN_URL = os.environ.get(
    "ARBOR_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def run_id() -> str:
    """Unique per test session (and per xdist worker): names databases, namespaces, buckets."""
    return uuid.uuid4().hex[:10]


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_url(run_id: str) -> Iterator[str]:
    """A fresh database ``arbor_test_<runid>``, dropped at session end (skips without a server)."""
    import psycopg
    from psycopg import sql

    dbname = f"arbor_test_{run_id}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {err}".splitlines()[0])
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    parsed = urlparse(PG_ADMIN_URL)
    url = parsed._replace(scheme="postgresql+psycopg", path=f"/{dbname}").geturl()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


@pytest.fixture
def db_schema() -> str:
    """A unique schema (PostgreSQL) / file stem (SQLite) name for one test."""
    return f"t_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An embedded database URL; ``make_engine`` derives one file per service from it."""
    return f"sqlite:///{tmp_path / 'arbor.db'}"


# --------------------------------------------------------------------------- NATS


@pytest.fixture(scope="session")
def nats_namespace(run_id: str) -> str:
    """Prefix for every subject (``<ns>.``) and stream (``<NS>_``) this run creates."""
    return f"t{run_id}"


@pytest.fixture(scope="session")
def nats_url(nats_namespace: str) -> Iterator[str]:
    """The shared NATS server; streams of this run's namespace are deleted at session end."""
    url = os.environ.get("ARBOR_TEST_NATS_URL", "nats://127.0.0.1:4222")
    parsed = urlparse(url)
    if not port_open(parsed.hostname or "127.0.0.1", parsed.port or 4222, timeout=1.0):
        pytest.skip(f"NATS unreachable at {url}")
    yield url
    # In a thread of its own: asyncio.run must not touch the loop pytest-asyncio keeps.
    cleanup = threading.Thread(
        target=lambda: asyncio.run(_delete_namespace_streams(url, nats_namespace))
    )
    cleanup.start()
    cleanup.join(30)


async def _delete_namespace_streams(url: str, namespace: str) -> None:
    import nats

    try:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    except Exception:
        return
    try:
        js = nc.jetstream()
        prefix = f"{namespace.upper()}_"
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await js.delete_stream(info.config.name)
    except Exception:
        pass  # best effort: a leftover stream only costs disk until someone deletes it
    finally:
        await nc.close()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[Callable[[], NatsServerProcess]]:
    """Factory for private JetStream servers (fixed free port, own store) a test may kill.

    ``srv = private_nats()`` starts one; ``srv.stop(kill=True)`` / ``srv.start()`` /
    ``srv.restart()`` keep the port and the store. All are stopped at teardown.
    """
    servers: list[NatsServerProcess] = []

    def start() -> NatsServerProcess:
        server = NatsServerProcess(free_port(), tmp_path / f"nats-{len(servers)}")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


# --------------------------------------------------------------------------- artifacts


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    """gcp-storage-emulator in-process; sets STORAGE_EMULATOR_HOST for this session."""
    emulator = GcsEmulator().start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
        mp.setenv("GOOGLE_CLOUD_PROJECT", "arbor-test")
        try:
            yield emulator
        finally:
            emulator.stop()


@pytest.fixture
def local_artifact_store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def gcs_artifact_store(gcs_emulator: GcsEmulator, run_id: str) -> GcsArtifactStore:
    """A GCS store on the emulator under a per-test prefix of the bucket ``arbor-<runid>``."""
    bucket = f"arbor-{run_id}"
    gcs_emulator.create_bucket(bucket)
    return GcsArtifactStore(bucket, f"t-{uuid.uuid4().hex[:8]}", client=gcs_emulator.client())


@pytest.fixture
def artifact_store(local_artifact_store: LocalArtifactStore) -> LocalArtifactStore:
    """The default store for service tests: a local directory (fast)."""
    return local_artifact_store


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[NatsClient]:
    """A connected nats-py client on the shared server, closed after the test."""
    from arbor_core.events import connect_nats

    nc = await connect_nats(nats_url, name="pytest")
    yield nc
    await nc.close()
