"""NATS JetStream: subjects, streams, the event envelope, publishing and deduplicating consumers.

Two subject roots that never overlap (JetStream refuses overlapping streams): events
``arbor.events.<context>.<event>`` in a limits stream kept 7 days, and jobs ``arbor.jobs.<queue>``
in a work-queue stream. A non-empty namespace (``Settings.nats_namespace``) prefixes every
subject with ``<ns>.`` and every stream name with ``<NS>_`` so that concurrent test runs (or
tenants) share one server without colliding. Payloads are protobuf bytes; the header
``Nats-Msg-Id`` carries the event id, so the server drops a re-publish inside the 2-minute
duplicate window and consumers drop later ones by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from arbor_core.errors import InvalidArgument, Unavailable
from arbor_core.logging import request_id_scope
from arbor_core.telemetry import continue_trace, current_traceparent

log = logging.getLogger(__name__)

EVENTS_ROOT = "arbor.events"
JOBS_ROOT = "arbor.jobs"
EVENTS_STREAM = "ARBOR_EVENTS"
JOBS_STREAM = "ARBOR_JOBS"
EVENTS_MAX_AGE_S = 7 * 24 * 3600.0
DUPLICATE_WINDOW_S = 120.0
MSG_ID_HEADER = "Nats-Msg-Id"

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")

__all__ = [
    "DUPLICATE_WINDOW_S",
    "EVENTS_ROOT",
    "JOBS_ROOT",
    "EventSubscription",
    "ProtoEvent",
    "SeenIds",
    "connect_nats",
    "ensure_streams",
    "event_subject",
    "events_stream_name",
    "job_subject",
    "jobs_pull_subscription",
    "jobs_stream_name",
    "namespaced",
    "nats_healthy",
    "new_event",
    "publish",
    "publish_event",
    "publish_job",
    "subject_for_type",
    "subscribe_events",
]


class ProtoEvent(Protocol):
    """Any protobuf message with an ``event_id`` (``arbor.events.v1.Event`` in practice)."""

    event_id: str

    def SerializeToString(self, **kwargs: Any) -> bytes: ...


# --------------------------------------------------------------------------- naming


def validate_namespace(namespace: str) -> str:
    if namespace and not _NAMESPACE_RE.match(namespace):
        raise InvalidArgument(
            f"invalid NATS namespace {namespace!r}: letters, digits, '_' and '-' only",
            field="nats_namespace",
        )
    return namespace


def namespaced(subject: str, namespace: str = "") -> str:
    """``subject`` under ``namespace`` (``<ns>.arbor.events...``); unchanged when it is empty."""
    validate_namespace(namespace)
    return f"{namespace}.{subject}" if namespace else subject


def _stream_name(base: str, namespace: str) -> str:
    validate_namespace(namespace)
    return f"{namespace.upper()}_{base}" if namespace else base


def events_stream_name(namespace: str = "") -> str:
    return _stream_name(EVENTS_STREAM, namespace)


def jobs_stream_name(namespace: str = "") -> str:
    return _stream_name(JOBS_STREAM, namespace)


def _token(value: str, what: str) -> str:
    if not _TOKEN_RE.match(value):
        raise InvalidArgument(f"invalid {what} {value!r} in a NATS subject", field=what)
    return value


def event_subject(context: str, event: str, namespace: str = "") -> str:
    """``[<ns>.]arbor.events.<context>.<event>``, e.g. ``arbor.events.model.promoted``."""
    subject = f"{EVENTS_ROOT}.{_token(context, 'context')}.{_token(event, 'event')}"
    return namespaced(subject, namespace)


def subject_for_type(event_type: str, namespace: str = "") -> str:
    """The subject of an event type such as ``"split.created"``."""
    context, sep, name = event_type.partition(".")
    if not sep or "." in name:
        raise InvalidArgument(
            f"event type {event_type!r} must look like '<context>.<event>'", field="type"
        )
    return event_subject(context, name, namespace)


def job_subject(queue: str, namespace: str = "") -> str:
    """``[<ns>.]arbor.jobs.<queue>``, e.g. ``arbor.jobs.training``."""
    return namespaced(f"{JOBS_ROOT}.{_token(queue, 'queue')}", namespace)


def stream_configs(namespace: str = "") -> list[js_api.StreamConfig]:
    """The two streams every deployment needs (file storage, duplicate window 2 min)."""
    return [
        js_api.StreamConfig(
            name=events_stream_name(namespace),
            description="Arbor domain events (limits retention, 7 days)",
            subjects=[namespaced(f"{EVENTS_ROOT}.>", namespace)],
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            discard=js_api.DiscardPolicy.OLD,
            max_age=EVENTS_MAX_AGE_S,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=1,
        ),
        js_api.StreamConfig(
            name=jobs_stream_name(namespace),
            description="Arbor work queues (each job is delivered to one worker)",
            subjects=[namespaced(f"{JOBS_ROOT}.>", namespace)],
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            storage=js_api.StorageType.FILE,
            discard=js_api.DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=1,
        ),
    ]


async def ensure_streams(js: JetStreamContext, namespace: str = "") -> dict[str, Any]:
    """Create the events and jobs streams, or update them to the current config; idempotent.

    Safe to call from every service at start-up, concurrently: a lost creation race falls
    back to an update.
    """
    infos: dict[str, Any] = {}
    for config in stream_configs(namespace):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
            exists = True
        except nats.js.errors.NotFoundError:
            exists = False
        if not exists:
            try:
                infos[config.name] = await js.add_stream(config)
                continue
            except nats.js.errors.BadRequestError as err:
                # 10058: created meanwhile by someone else (possibly with an older config).
                if err.err_code != 10058:
                    raise
        infos[config.name] = await js.update_stream(config)
    return infos


# --------------------------------------------------------------------------- connection


async def connect_nats(
    url: str,
    *,
    name: str | None = None,
    timeout: float = 5.0,
    **options: Any,
) -> NatsClient:
    """Connect with settings for long-lived services: reconnect forever, fast ping detection.

    The first connection must succeed within ``timeout`` seconds, else ``Unavailable``; after
    that the client reconnects on its own (every 0.5 s, without limit) and ``is_connected``
    says whether it is up.
    """
    nc = NatsClient()

    async def on_error(err: Exception) -> None:
        log.warning("nats %s: %s: %s", url, type(err).__name__, err)

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats %s disconnected; reconnecting", url)

    async def on_reconnected() -> None:
        log.info("nats %s reconnected", url)

    opts: dict[str, Any] = {
        "servers": [url],
        "name": name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
        "ping_interval": 10,
        "max_outstanding_pings": 3,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
    }
    opts.update(options)
    try:
        await asyncio.wait_for(nc.connect(**opts), timeout)
    except (TimeoutError, OSError, nats.errors.Error) as err:
        with contextlib.suppress(Exception):
            await nc.close()
        raise Unavailable(f"NATS at {url} unreachable: {err!r}", reason="NATS_UNAVAILABLE") from err
    return nc


async def nats_healthy(nc: NatsClient, timeout: float = 1.0) -> bool:
    """Health probe: connected, and a round trip to the server answers in time."""
    if not nc.is_connected:
        return False
    try:
        await nc.flush(timeout=timeout)  # type: ignore[arg-type]
        return True
    except (TimeoutError, nats.errors.Error):
        return False


async def jetstream_healthy(js: JetStreamContext, timeout: float = 1.0) -> bool:
    """Health probe for JetStream itself (the account API answers)."""
    try:
        await asyncio.wait_for(js.account_info(), timeout)
        return True
    except (TimeoutError, nats.errors.Error):
        return False


# --------------------------------------------------------------------------- envelope


def new_event(
    type: str,
    subject: str,
    source: str,
    *,
    event_id: str | None = None,
    trace_parent: str | None = None,
    request_id: str = "",
    time: dt.datetime | None = None,
    **payload: Any,
) -> Any:
    """Build an ``arbor.events.v1.Event`` with a fresh id, the time and the current trace.

    ``payload`` is the one typed payload, e.g. ``split_created=SplitCreated(...)``.
    ``trace_parent`` defaults to the active OpenTelemetry span's W3C traceparent.
    """
    from arbor.events.v1 import events_pb2  # generated by `make protos`

    subject_for_type(type)  # validates the shape of the type
    if len(payload) > 1:
        raise InvalidArgument("an event carries at most one payload", field="payload")
    if trace_parent is None:
        trace_parent = current_traceparent()
    event = events_pb2.Event(
        event_id=event_id or str(uuid.uuid4()),
        type=type,
        source=source,
        subject=subject,
        trace_parent=trace_parent,
        request_id=request_id,
        **payload,
    )
    event.time.FromDatetime(time or dt.datetime.now(dt.UTC))
    return event


# --------------------------------------------------------------------------- publishing


async def publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    timeout: float = 5.0,
) -> js_api.PubAck:
    """Publish bytes with ``Nats-Msg-Id``; a duplicate inside the window returns ``duplicate``."""
    return await js.publish(subject, payload, timeout=timeout, headers={MSG_ID_HEADER: msg_id})


async def publish_event(
    js: JetStreamContext,
    event: ProtoEvent,
    *,
    namespace: str = "",
    subject: str | None = None,
    timeout: float = 5.0,
) -> js_api.PubAck:
    """Publish an envelope directly (services normally go through the outbox instead)."""
    if not event.event_id:
        raise InvalidArgument("event_id must be set", field="event_id")
    if subject is None:
        subject = subject_for_type(event.type)  # type: ignore[attr-defined]
    return await publish(
        js,
        namespaced(subject, namespace),
        event.SerializeToString(),
        msg_id=event.event_id,
        timeout=timeout,
    )


async def publish_job(
    js: JetStreamContext,
    queue: str,
    message: Any,
    *,
    msg_id: str,
    namespace: str = "",
    timeout: float = 5.0,
) -> js_api.PubAck:
    """Put a protobuf job on ``arbor.jobs.<queue>``; ``msg_id`` makes enqueueing idempotent."""
    return await publish(
        js,
        job_subject(queue, namespace),
        message.SerializeToString(),
        msg_id=msg_id,
        timeout=timeout,
    )


async def jobs_pull_subscription(
    js: JetStreamContext,
    queue: str,
    durable: str,
    *,
    namespace: str = "",
    ack_wait: float = 60.0,
    max_deliver: int = 5,
) -> JetStreamContext.PullSubscription:
    """A pull subscription on one job queue, shared by every worker of that queue.

    Workers ``fetch`` jobs, call ``msg.in_progress()`` while working longer than ``ack_wait``,
    and ``ack`` when done; an unacked job is redelivered to another worker.
    """
    config = js_api.ConsumerConfig(
        ack_policy=js_api.AckPolicy.EXPLICIT, ack_wait=ack_wait, max_deliver=max_deliver
    )
    return await js.pull_subscribe(
        job_subject(queue, namespace),
        durable=_token(durable, "durable"),
        stream=jobs_stream_name(namespace),
        config=config,
    )


# --------------------------------------------------------------------------- consuming


class SeenIds:
    """A bounded LRU set of event ids: redeliveries and re-publishes are dropped by id."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.maxsize:
            self._ids.popitem(last=False)

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` was seen before (and refresh it); records it otherwise."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        self.add(event_id)
        return False


Handler = Callable[[Any], Awaitable[None]]


@dataclass
class EventSubscription:
    """A running JetStream subscription; ``stop()`` to end it."""

    subscription: Any
    seen: SeenIds
    delivered: int = 0
    duplicates: int = 0
    failures: int = 0
    _stopped: bool = field(default=False, repr=False)

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            with contextlib.suppress(nats.errors.Error):
                await self.subscription.unsubscribe()


def _default_event_type() -> Any:
    from arbor.events.v1 import events_pb2

    return events_pb2.Event


async def subscribe_events(
    js: JetStreamContext,
    handler: Handler,
    *,
    pattern: str = f"{EVENTS_ROOT}.>",
    namespace: str = "",
    message_type: Any = None,
    durable: str | None = None,
    deliver_policy: str = "new",
    dedupe_size: int = 10_000,
) -> EventSubscription:
    """Decode events matching ``pattern`` and hand each new one to ``handler`` exactly once.

    Without ``durable`` it is an ordered, ephemeral consumer (each replica sees every event;
    a failing handler is logged and the event skipped — right for caches). With ``durable``
    the consumer survives restarts and a failing handler's event is redelivered (nak).
    ``deliver_policy`` is ``"new"`` (from now), ``"all"`` (from the start of the stream) or
    ``"last"``. Events whose id was seen before are acknowledged and dropped.
    """
    decode = (message_type or _default_event_type()).FromString
    seen = SeenIds(dedupe_size)
    lock = asyncio.Lock()

    state = EventSubscription(subscription=None, seen=seen)

    async def on_msg(msg: Msg) -> None:
        try:
            event = decode(msg.data)
        except Exception as err:
            log.error("undecodable event on %s dropped: %s", msg.subject, err)
            if durable:
                await msg.term()
            return
        event_id = getattr(event, "event_id", "") or (msg.headers or {}).get(MSG_ID_HEADER, "")
        async with lock:
            if event_id and event_id in seen:
                state.duplicates += 1
                if durable:
                    await msg.ack()
                return
            try:
                # Continue the trace of the call that caused the event (its envelope's
                # trace_parent), under that call's request id, so the handler's own calls
                # and log lines join it.
                with (
                    continue_trace(
                        f"process {msg.subject}",
                        str(getattr(event, "trace_parent", "") or ""),
                        attributes={
                            "messaging.system": "nats",
                            "messaging.operation.type": "process",
                            "messaging.destination.name": msg.subject,
                            "messaging.message.id": event_id,
                            "arbor.event.type": str(getattr(event, "type", "") or ""),
                        },
                    ),
                    request_id_scope(getattr(event, "request_id", "") or None),
                ):
                    await handler(event)
            except Exception:
                state.failures += 1
                log.exception("event handler failed for %s (%s)", event_id, msg.subject)
                if durable:
                    await msg.nak(delay=1.0)
                return
            if event_id:
                seen.add(event_id)
            state.delivered += 1
            if durable:
                await msg.ack()

    policy = js_api.DeliverPolicy(deliver_policy)
    subject = namespaced(pattern, namespace)
    stream = events_stream_name(namespace)
    if durable:
        state.subscription = await js.subscribe(
            subject,
            durable=_token(durable, "durable"),
            stream=stream,
            cb=on_msg,
            manual_ack=True,
            deliver_policy=policy,
        )
    else:
        state.subscription = await js.subscribe(
            subject, stream=stream, cb=on_msg, ordered_consumer=True, deliver_policy=policy
        )
    return state
