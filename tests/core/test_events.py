"""events.py against the shared NATS server, inside this run's namespace."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from core_support import Collector, SampleEvent, make_event, unique_context
from nats.js import api as js_api

from arbor_core import events
from arbor_core.errors import InvalidArgument, Unavailable
from arbor_core.testing import free_port

pytestmark = pytest.mark.integration


def test_subjects_and_stream_names() -> None:
    assert events.event_subject("model", "promoted") == "arbor.events.model.promoted"
    assert events.subject_for_type("split.created", "t1") == "t1.arbor.events.split.created"
    assert events.job_subject("training") == "arbor.jobs.training"
    assert events.job_subject("training", "ns-a") == "ns-a.arbor.jobs.training"
    assert events.events_stream_name() == "ARBOR_EVENTS"
    assert events.events_stream_name("t1") == "T1_ARBOR_EVENTS"
    assert events.jobs_stream_name("t1") == "T1_ARBOR_JOBS"
    for bad in ("a.b", "a b", "x>", "*"):
        with pytest.raises(InvalidArgument):
            events.namespaced("arbor.events.x.y", bad)
    for bad_type in ("split", "split.created.extra", "split.*", "a b.c"):
        with pytest.raises(InvalidArgument):
            events.subject_for_type(bad_type)


async def test_ensure_streams_is_idempotent(nats_client: Any, nats_namespace: str) -> None:
    js = nats_client.jetstream()
    # concurrent callers (services starting together) must all succeed
    await asyncio.gather(*(events.ensure_streams(js, nats_namespace) for _ in range(3)))
    infos = await events.ensure_streams(js, nats_namespace)
    ev = infos[events.events_stream_name(nats_namespace)].config
    assert ev.subjects == [f"{nats_namespace}.arbor.events.>"]
    assert ev.retention == js_api.RetentionPolicy.LIMITS
    assert ev.max_age == pytest.approx(7 * 24 * 3600)
    assert ev.duplicate_window == pytest.approx(120)
    jobs = infos[events.jobs_stream_name(nats_namespace)].config
    assert jobs.subjects == [f"{nats_namespace}.arbor.jobs.>"]
    assert jobs.retention == js_api.RetentionPolicy.WORK_QUEUE


async def test_duplicate_publish_is_dropped_by_the_server(
    nats_client: Any, nats_namespace: str
) -> None:
    js = nats_client.jetstream()
    await events.ensure_streams(js, nats_namespace)
    context = unique_context()
    event = make_event(context)
    first = await events.publish_event(js, event, namespace=nats_namespace)
    again = await events.publish_event(js, event, namespace=nats_namespace)
    assert not first.duplicate
    assert again.duplicate
    assert again.seq == first.seq
    collector = await Collector().start(js, f"arbor.events.{context}.>", nats_namespace)
    try:
        assert await collector.wait_for(1) == [event.event_id]
    finally:
        await collector.stop()


async def test_subscriber_decodes_and_dedupes(nats_client: Any, nats_namespace: str) -> None:
    js = nats_client.jetstream()
    await events.ensure_streams(js, nats_namespace)
    context = unique_context()
    seen: list[str] = []

    async def handler(event: Any) -> None:
        seen.append(event.note)

    sub = await events.subscribe_events(
        js,
        handler,
        pattern=f"arbor.events.{context}.>",
        namespace=nats_namespace,
        message_type=SampleEvent,
        deliver_policy="all",
    )
    try:
        a, b = make_event(context, note="a"), make_event(context, note="b")
        subject = events.subject_for_type(a.type, nats_namespace)
        await events.publish(js, subject, a.SerializeToString(), msg_id=a.event_id)
        # the same event re-published after the server's window (new Nats-Msg-Id)
        await events.publish(js, subject, a.SerializeToString(), msg_id=str(uuid.uuid4()))
        await events.publish(js, subject, b.SerializeToString(), msg_id=b.event_id)
        for _ in range(200):
            if sub.delivered + sub.duplicates >= 3:
                break
            await asyncio.sleep(0.02)
        assert seen == ["a", "b"]
        assert (sub.delivered, sub.duplicates) == (2, 1)
    finally:
        await sub.stop()


async def test_durable_subscriber_redelivers_after_handler_failure(
    nats_client: Any, nats_namespace: str
) -> None:
    js = nats_client.jetstream()
    await events.ensure_streams(js, nats_namespace)
    context = unique_context()
    calls: list[str] = []

    async def flaky(event: Any) -> None:
        calls.append(event.event_id)
        if len(calls) == 1:
            raise RuntimeError("transient")

    sub = await events.subscribe_events(
        js,
        flaky,
        pattern=f"arbor.events.{context}.>",
        namespace=nats_namespace,
        message_type=SampleEvent,
        durable=f"d{context}",
        deliver_policy="all",
    )
    try:
        event = make_event(context)
        await events.publish_event(js, event, namespace=nats_namespace)
        for _ in range(250):
            if sub.delivered:
                break
            await asyncio.sleep(0.02)
        assert calls == [event.event_id, event.event_id]
        assert (sub.delivered, sub.failures) == (1, 1)
    finally:
        await sub.stop()


def test_seen_ids_is_a_bounded_lru() -> None:
    seen = events.SeenIds(maxsize=2)
    assert not seen.seen("a")
    assert not seen.seen("b")
    assert seen.seen("a")  # refreshes a
    assert not seen.seen("c")  # evicts b
    assert "b" not in seen
    assert "a" in seen
    assert len(seen) == 2


async def test_connect_nats_unreachable_is_unavailable() -> None:
    with pytest.raises(Unavailable) as info:
        await events.connect_nats(f"nats://127.0.0.1:{free_port()}", timeout=0.5)
    assert info.value.reason == "NATS_UNAVAILABLE"


async def test_health_probes(nats_client: Any) -> None:
    assert await events.nats_healthy(nats_client)
    assert await events.jetstream_healthy(nats_client.jetstream())


def test_new_event_envelope() -> None:
    pytest.importorskip("arbor.events.v1.events_pb2", reason="run `make protos` first")
    from arbor.events.v1 import events_pb2

    event = events.new_event(
        "split.deleted",
        "splits/abc",
        "arbor.split",
        split_deleted=events_pb2.SplitDeleted(split="splits/abc", purged=True),
    )
    assert event.event_id
    assert event.WhichOneof("payload") == "split_deleted"
    assert event.time.seconds > 0
    with pytest.raises(InvalidArgument):
        events.new_event("nodot", "x", "y")
