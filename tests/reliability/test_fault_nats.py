"""Faults 2 and 10 (NATS): NATS stopped while models are registered or while an experiment
runs, and the network to it paused or reset. Registrations and studies keep going (the database
is the source of truth), the outbox holds their events, and once NATS is reachable again every
event is delivered; the subscriber sees each event id exactly once, even when the relay
re-publishes them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from reliability_support import (
    RunningService,
    TcpProxy,
    register_request,
    start_registry,
    wait_until,
)
from training_stack import TrainingStack
from training_support import create, experiment, wait_final, wait_for

from arbor.registry.v1 import registry_service_pb2_grpc as rpb_grpc
from arbor.training.v1 import training_service_pb2 as tpb
from arbor_core.artifacts import LocalArtifactStore
from arbor_core.db import make_engine
from arbor_core.events import (
    EventSubscription,
    connect_nats,
    ensure_streams,
    namespaced,
    publish,
    subscribe_events,
)
from arbor_core.testing import NatsServerProcess

pytestmark = [pytest.mark.fault, pytest.mark.integration]

NAMESPACE = "rel"


class Subscriber:
    """A durable subscriber on the private server that counts deliveries per event id."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.types: Counter[str] = Counter()
        self.nc: Any = None
        self.sub: EventSubscription | None = None

    async def start(
        self, url: str, *, namespace: str = NAMESPACE, pattern: str = "arbor.events.model.>"
    ) -> Subscriber:
        self.nc = await connect_nats(url, name="reliability-subscriber")
        js = self.nc.jetstream()
        await ensure_streams(js, namespace)

        async def handler(event: Any) -> None:
            self.counts[event.event_id] += 1
            self.types[event.type] += 1

        self.sub = await subscribe_events(
            js,
            handler,
            pattern=pattern,
            namespace=namespace,
            durable=f"rel_{uuid.uuid4().hex[:8]}",
            deliver_policy="all",
        )
        return self

    async def has(self, n: int, timeout: float = 20) -> bool:
        async def enough() -> bool:
            return len(self.counts) >= n

        return await wait_until(enough, timeout)

    async def close(self) -> None:
        if self.sub is not None:
            await self.sub.stop()
        if self.nc is not None:
            await self.nc.close()


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    sub = Subscriber()
    yield sub
    await sub.close()


async def _registry(tmp_path: Path, nats_url: str) -> tuple[RunningService, LocalArtifactStore]:
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    svc = await start_registry(
        f"sqlite:///{tmp_path / 'registry.db'}", nats_url, NAMESPACE, artifacts.root
    )
    svc.runner.relay.max_backoff = 0.5  # reconnect fast enough for a test
    return svc, artifacts


def _unpublish_all(tmp_path: Path) -> int:
    """Mark every outbox row unpublished: the relay will publish each one a second time."""
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}", "registry")
    try:
        with engine.begin() as conn:
            return conn.execute(sa.text("UPDATE outbox SET published_at = NULL")).rowcount
    finally:
        engine.dispose()


def _pending(tmp_path: Path) -> int:
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}", "registry")
    try:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            return int(conn.execute(sa.text(query)).scalar_one())
    finally:
        engine.dispose()


async def test_nats_down_during_registrations_delivers_every_event_once(
    private_nats: Callable[[], NatsServerProcess], subscriber: Subscriber, tmp_path: Path
) -> None:
    nats = private_nats()
    svc, artifacts = await _registry(tmp_path, nats.url)
    stub = rpb_grpc.RegistryServiceStub(svc.channel)
    model = f"nats-{uuid.uuid4().hex[:6]}"
    try:
        await subscriber.start(nats.url)
        for i in range(2):
            await stub.RegisterModelVersion(register_request(artifacts, model, f"a{i}"), timeout=10)
        assert await subscriber.has(2)

        await asyncio.to_thread(nats.stop, kill=True)
        for i in range(5):  # NATS is down: registering still works
            reply = await stub.RegisterModelVersion(
                register_request(artifacts, model, f"b{i}"), timeout=10
            )
            assert reply.created
        assert _pending(tmp_path) == 5
        await asyncio.sleep(1.0)  # the relay keeps retrying meanwhile
        assert len(subscriber.counts) == 2

        await asyncio.to_thread(nats.start)
        assert await subscriber.has(7), f"only {len(subscriber.counts)} of 7 events arrived"
        assert await wait_until(_async(lambda: _pending(tmp_path) == 0), 10)

        # The relay publishing everything again (a crash between publish and mark) duplicates
        # nothing: JetStream drops the re-publishes by Nats-Msg-Id.
        assert _unpublish_all(tmp_path) == 7
        svc.runner.relay.notify()
        assert await wait_until(_async(lambda: _pending(tmp_path) == 0), 10)
        # Past the duplicate window only the subscriber's dedupe by event id is left: publish
        # one event again under a fresh message id.
        js = subscriber.nc.jetstream()
        first = next(iter(subscriber.counts))
        raw = _outbox_payload(tmp_path, first)
        subject = namespaced("arbor.events.model.registered", NAMESPACE)
        await publish(js, subject, raw, msg_id=f"replay-{uuid.uuid4().hex}")
        assert subscriber.sub is not None
        assert await wait_until(_async(lambda: subscriber.sub.duplicates >= 1), 10)
        await asyncio.sleep(0.3)
        assert len(subscriber.counts) == 7
        assert set(subscriber.counts.values()) == {1}, subscriber.counts
    finally:
        await svc.close()


def _outbox_payload(tmp_path: Path, event_id: str) -> bytes:
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}", "registry")
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT payload FROM outbox WHERE id = :id")
            return bytes(conn.execute(query, {"id": event_id}).scalar_one())
    finally:
        engine.dispose()


def _async(check: Callable[[], bool]) -> Callable[[], Any]:
    async def run() -> bool:
        return check()

    return run


async def test_nats_network_paused_then_reset(
    private_nats: Callable[[], NatsServerProcess],
    tcp_proxy: Callable[[str, int], TcpProxy],
    subscriber: Subscriber,
    tmp_path: Path,
) -> None:
    nats = private_nats()
    proxy = tcp_proxy("127.0.0.1", nats.port)
    svc, artifacts = await _registry(tmp_path, f"nats://{proxy.address}")
    stub = rpb_grpc.RegistryServiceStub(svc.channel)
    model = f"natsproxy-{uuid.uuid4().hex[:6]}"
    try:
        await subscriber.start(nats.url)  # the subscriber's own path stays healthy
        await stub.RegisterModelVersion(register_request(artifacts, model, "a"), timeout=10)
        assert await subscriber.has(1)

        proxy.pause()  # publishes time out; the rows stay pending and are retried
        for i in range(3):
            await stub.RegisterModelVersion(register_request(artifacts, model, f"p{i}"), timeout=10)
        await asyncio.sleep(2.5)
        assert len(subscriber.counts) == 1
        assert _pending(tmp_path) >= 1
        proxy.resume()
        assert await subscriber.has(4)

        assert proxy.reset() > 0  # the relay's connection is cut: it reconnects and goes on
        for i in range(2):
            await stub.RegisterModelVersion(register_request(artifacts, model, f"r{i}"), timeout=10)
        assert await subscriber.has(6)
        assert await wait_until(_async(lambda: _pending(tmp_path) == 0), 10)
        await asyncio.sleep(0.3)
        assert set(subscriber.counts.values()) == {1}, subscriber.counts
    finally:
        proxy.resume()
        await svc.close()


@pytest.mark.slow
async def test_nats_down_during_an_experiment_delivers_every_event_once(
    private_nats: Callable[[], NatsServerProcess],
    subscriber: Subscriber,
    training_stack: Callable[..., Awaitable[TrainingStack]],
) -> None:
    nats = private_nats()
    ts = await training_stack(nats=nats.url)
    stack = ts.stack
    split = await ts.split()
    await subscriber.start(nats.url, namespace=ts.namespace, pattern="arbor.events.experiment.>")
    worker = ts.start_worker()
    relays = [ts.runners["training"].relay, worker.worker.relay]
    for relay in relays:
        relay.max_backoff = 0.5  # reconnect fast enough for a test
    # Trials of a few tenths of a second (400 rounds, no early stop): NATS goes down while
    # they run, even on a fast machine.
    message = experiment(split, n_trials=3, max_iterations=400, pruner=tpb.PRUNER_NONE)
    message.study.early_stopping_rounds = 400
    created = await create(stack, message)
    await wait_for(stack, created.name, lambda e: e.state == tpb.EXPERIMENT_STATE_RUNNING, 30)

    await asyncio.to_thread(nats.stop, kill=True)
    # The study goes on without NATS: trials, refit, registration, the final state.
    done = await wait_final(stack, created.name, timeout=60)
    assert done.state == tpb.EXPERIMENT_STATE_SUCCEEDED, done.error_message
    events = _experiment_events(ts)
    assert sum(1 for subject, _ in events.values() if subject.endswith("trial_completed")) == 3
    held = [subject.rsplit(".", 1)[1] for subject, published in events.values() if not published]
    assert "succeeded" in held and "trial_completed" in held, held  # waiting in the outbox
    assert len(subscriber.counts) < len(events)

    await asyncio.sleep(0.5)
    await asyncio.to_thread(nats.start)
    assert await subscriber.has(len(events)), (
        f"{len(subscriber.counts)} of {len(events)} events arrived"
    )
    assert await wait_until(_async(lambda: _all_published(ts)), 10)
    # A relay publishing everything again duplicates nothing (Nats-Msg-Id, then event ids).
    republished = ts.execute(
        "UPDATE outbox SET published_at = NULL WHERE subject LIKE 'arbor.events.experiment.%'"
    )
    assert republished == len(events)
    for relay in relays:
        relay.notify()
    assert await wait_until(_async(lambda: _all_published(ts)), 10)
    await asyncio.sleep(0.5)
    assert set(subscriber.counts) == set(events)
    assert set(subscriber.counts.values()) == {1}, subscriber.counts
    assert subscriber.types["experiment.trial_completed"] == 3
    assert subscriber.types["experiment.succeeded"] == 1


def _experiment_events(ts: TrainingStack) -> dict[str, tuple[str, bool]]:
    """Event id -> (subject, published) of the training outbox's experiment events."""
    rows = ts.query(
        "SELECT id, subject, published_at IS NOT NULL FROM outbox "
        "WHERE subject LIKE 'arbor.events.experiment.%'"
    )
    return {str(r[0]): (str(r[1]), bool(r[2])) for r in rows}


def _all_published(ts: TrainingStack) -> bool:
    return all(published for _, published in _experiment_events(ts).values())
