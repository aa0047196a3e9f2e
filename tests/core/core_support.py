"""Helpers for arbor_core tests: a stand-in event message and a raw event collector."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from arbor_core.events import ensure_streams, events_stream_name, namespaced


def _make_test_event_class() -> Any:
    """``arbor.testing.SampleEvent`` {event_id, type, subject, note}, built without protoc.

    The outbox and relay accept any message with ``event_id`` and ``SerializeToString``;
    this keeps their tests independent of the generated ``arbor.events.v1`` code.
    """
    fdp = descriptor_pb2.FileDescriptorProto(
        name="arbor_testing_event.proto", package="arbor.testing", syntax="proto3"
    )
    msg = fdp.message_type.add(name="SampleEvent")
    for number, name in enumerate(["event_id", "type", "subject", "note"], start=1):
        msg.field.add(
            name=name,
            number=number,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("arbor.testing.SampleEvent"))


SampleEvent = _make_test_event_class()


def make_event(context: str, name: str = "created", note: str = "") -> Any:
    return SampleEvent(event_id=str(uuid.uuid4()), type=f"{context}.{name}", note=note)


def unique_context() -> str:
    """A fresh ``<context>`` token, so each test reads only its own subjects."""
    return f"c{uuid.uuid4().hex[:8]}"


class Collector:
    """Raw JetStream deliveries on one subject pattern (no dedupe: to count duplicates)."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []
        self.sub: Any = None

    @property
    def ids(self) -> list[str]:
        return [SampleEvent.FromString(m.data).event_id for m in self.messages]

    async def start(self, js: JetStreamContext, pattern: str, namespace: str) -> Collector:
        async def on_msg(msg: Msg) -> None:
            self.messages.append(msg)

        await ensure_streams(js, namespace)
        self.sub = await js.subscribe(
            namespaced(pattern, namespace),
            stream=events_stream_name(namespace),
            cb=on_msg,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.ALL,
        )
        return self

    async def wait_for(self, count: int, timeout: float = 10.0, settle: float = 0.3) -> list[str]:
        """Wait for ``count`` messages, then a little longer to catch extra (duplicate) ones."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(settle)
        return self.ids

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()
