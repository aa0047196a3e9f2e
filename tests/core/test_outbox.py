"""The transactional outbox and its relay, against real NATS servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from core_support import Collector, make_event, unique_context
from sqlalchemy.orm import Session, sessionmaker

from arbor_core import db, events
from arbor_core.outbox import OutboxRelay, add_event, outbox_table, pending_count
from arbor_core.testing import NatsServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture
def sqlite_factory(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    yield from _factory(sqlite_url, "svc")


@pytest.fixture
def any_factory(db_url: str, db_schema: str) -> Iterator[sessionmaker[Session]]:
    yield from _factory(db_url, db_schema)


def _factory(url: str, schema: str) -> Iterator[sessionmaker[Session]]:
    """A service database with one domain table and the outbox, created from its metadata."""
    metadata = db.make_metadata()
    sa.Table("things", metadata, sa.Column("id", sa.Integer, primary_key=True))
    outbox_table(metadata)
    engine = db.make_engine(url, schema)
    metadata.create_all(engine)
    yield db.session_factory(engine)
    engine.dispose()


def _stage(factory: sessionmaker[Session], event: Any) -> None:
    with db.transaction(factory) as session:
        session.execute(sa.insert(sa.table("things", sa.column("id"))).values())
        add_event(session, event)


def _pending(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return pending_count(session)


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_committed_events_are_published_and_rolled_back_ones_are_not(
    any_factory: sessionmaker[Session], nats_url: str, nats_namespace: str, nats_client: Any
) -> None:
    context = unique_context()
    kept, dropped = make_event(context, note="kept"), make_event(context, note="dropped")
    with pytest.raises(RuntimeError), db.transaction(any_factory) as session:
        add_event(session, dropped)
        raise RuntimeError("the change failed, so its event must not exist")
    await db.run_db(_stage, any_factory, kept)
    assert await db.run_db(_pending, any_factory) == 1

    relay = OutboxRelay(any_factory, nats_url=nats_url, namespace=nats_namespace)
    await relay.start()
    collector = await Collector().start(
        nats_client.jetstream(), f"arbor.events.{context}.>", nats_namespace
    )
    try:
        assert await collector.wait_for(1) == [kept.event_id]
        await _until(lambda: _pending(any_factory) == 0)
        assert relay.healthy()
    finally:
        await collector.stop()
        await relay.stop()


async def test_commit_wakes_the_relay(
    sqlite_factory: sessionmaker[Session], nats_url: str, nats_namespace: str, nats_client: Any
) -> None:
    """With a 30 s poll interval, only the after-commit notify can make this fast."""
    relay = OutboxRelay(
        sqlite_factory, nats_url=nats_url, namespace=nats_namespace, poll_interval=30
    )
    await relay.start()
    context = unique_context()
    collector = await Collector().start(
        nats_client.jetstream(), f"arbor.events.{context}.>", nats_namespace
    )
    try:
        await _until(relay.healthy)
        await asyncio.sleep(0.2)  # let the relay go to sleep
        event = make_event(context)
        start = time.monotonic()
        await db.run_db(_stage, sqlite_factory, event)  # commits in a worker thread
        assert await collector.wait_for(1, settle=0) == [event.event_id]
        assert time.monotonic() - start < 3
    finally:
        await collector.stop()
        await relay.stop()


async def test_republished_row_is_dropped_by_the_server(
    sqlite_factory: sessionmaker[Session], nats_url: str, nats_namespace: str, nats_client: Any
) -> None:
    """A crash between publish and mark re-publishes a row; JetStream keeps one copy."""
    relay = OutboxRelay(sqlite_factory, nats_url=nats_url, namespace=nats_namespace)
    await relay.start()
    context = unique_context()
    event = make_event(context)
    try:
        await db.run_db(_stage, sqlite_factory, event)
        await _until(lambda: _pending(sqlite_factory) == 0)
        published_before = relay.published
        with db.transaction(sqlite_factory) as session:  # "forget" that it was published
            session.execute(sa.text("UPDATE outbox SET published_at = NULL"))
        relay.notify()
        await _until(lambda: relay.published > published_before)
        assert _pending(sqlite_factory) == 0
        collector = await Collector().start(
            nats_client.jetstream(), f"arbor.events.{context}.>", nats_namespace
        )
        assert await collector.wait_for(1) == [event.event_id]
        await collector.stop()
    finally:
        await relay.stop()


@pytest.mark.fault
async def test_outbox_delivers_every_event_after_nats_comes_back(
    sqlite_factory: sessionmaker[Session],
    private_nats: Callable[[], NatsServerProcess],
) -> None:
    server = private_nats()
    namespace = "fault"
    relay = OutboxRelay(
        sqlite_factory,
        nats_url=server.url,
        namespace=namespace,
        poll_interval=0.2,
        max_backoff=0.3,
        publish_timeout=0.5,
    )
    await relay.start()
    context = unique_context()
    staged = [make_event(context, note=str(i)) for i in range(6)]
    try:
        await db.run_db(_stage, sqlite_factory, staged[0])
        await _until(lambda: _pending(sqlite_factory) == 0)

        server.stop(kill=True)  # a crash, not a graceful shutdown
        for event in staged[1:]:
            await db.run_db(_stage, sqlite_factory, event)
        await asyncio.sleep(1.0)  # the relay tries and fails meanwhile
        assert _pending(sqlite_factory) == 5
        assert not relay.healthy()

        server.start()  # same port, same JetStream store
        await _until(lambda: _pending(sqlite_factory) == 0, timeout=15)
        nc = await events.connect_nats(server.url)
        collector = await Collector().start(nc.jetstream(), f"arbor.events.{context}.>", namespace)
        try:
            ids = await collector.wait_for(len(staged), settle=0.5)
        finally:
            await collector.stop()
            await nc.close()
        assert ids == [e.event_id for e in staged]  # each exactly once, in order
    finally:
        await relay.stop()


async def test_relay_started_while_nats_is_down(
    sqlite_factory: sessionmaker[Session],
    private_nats: Callable[[], NatsServerProcess],
) -> None:
    server = private_nats()
    server.stop()
    relay = OutboxRelay(
        sqlite_factory, nats_url=server.url, namespace="late", max_backoff=0.3, connect_timeout=0.5
    )
    await relay.start()
    context = unique_context()
    event = make_event(context)
    try:
        await db.run_db(_stage, sqlite_factory, event)
        await asyncio.sleep(0.8)
        assert relay.last_error is not None
        assert _pending(sqlite_factory) == 1
        server.start()
        await _until(lambda: _pending(sqlite_factory) == 0, timeout=15)
    finally:
        await relay.stop()


def test_add_event_derives_the_subject(sqlite_factory: sessionmaker[Session]) -> None:
    event = make_event("split", "created")
    event.event_id = ""
    with db.transaction(sqlite_factory) as session:
        event_id = add_event(session, event)
        add_event(session, make_event("model", "promoted"), subject="arbor.events.model.custom")
    assert event_id and event.event_id == event_id
    with sqlite_factory() as session:
        rows = session.execute(sa.text("SELECT id, subject FROM outbox ORDER BY seq")).all()
    assert rows[0] == (event_id, "arbor.events.split.created")
    assert rows[1][1] == "arbor.events.model.custom"
