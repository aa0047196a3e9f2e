"""``arbor events tail``: decode and print Arbor's events from NATS as they happen."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format

from arbor.events.v1 import events_pb2
from arbor_cli._common import (
    EXIT_OUTCOME,
    JsonOption,
    console,
    fail,
    json_mode,
    print_json,
    timestamp,
)
from arbor_client import ArborClientError
from arbor_core.devstack import recorded_nats_url

app = typer.Typer(help="Domain events on NATS JetStream.", no_args_is_help=True)


def _matches(event: events_pb2.Event, types: list[str], resources: list[str]) -> bool:
    """Types are globs (``model.*``); a resource matches itself and what lies under it
    (``models/churn`` matches ``models/churn/versions/3``)."""
    if types and not any(fnmatch.fnmatchcase(event.type, pattern) for pattern in types):
        return False
    if resources:
        subject = event.subject.rstrip("/")
        return any(
            subject == r.rstrip("/") or subject.startswith(r.rstrip("/") + "/") for r in resources
        )
    return True


def _pattern(types: list[str]) -> str:
    """The narrowest subject that still covers every requested type."""
    from arbor_core.events import EVENTS_ROOT, subject_for_type

    if len(types) == 1 and not any(ch in types[0] for ch in "*?["):
        return subject_for_type(types[0])
    contexts = {t.split(".", 1)[0] for t in types}
    if len(contexts) == 1 and types and not any(ch in next(iter(contexts)) for ch in "*?["):
        return f"{EVENTS_ROOT}.{next(iter(contexts))}.>"
    return f"{EVENTS_ROOT}.>"


def payload_dict(event: events_pb2.Event) -> dict[str, Any]:
    kind = event.WhichOneof("payload")
    if not kind:
        return {}
    return json_format.MessageToDict(getattr(event, kind))


def _print_event(event: events_pb2.Event) -> None:
    if json_mode():
        print_json(event, compact=True)
        return
    payload = payload_dict(event)
    details = " ".join(f"{k}={v}" for k, v in payload.items() if k not in {"experiment", "split"})
    console().print(
        f"[dim]{timestamp(event.time)}[/dim] [bold cyan]{event.type:<28}[/bold cyan] "
        f"{event.subject}  {details}",
        highlight=False,
    )


async def _tail(
    *,
    url: str,
    namespace: str,
    pattern: str,
    replay: bool,
    accept: Callable[[events_pb2.Event], bool],
    on_event: Callable[[events_pb2.Event], None],
    count: int,
    timeout: float | None,
) -> int:
    """Deliver matching events to ``on_event``; returns how many were delivered."""
    import nats.js.errors

    from arbor_core.events import (
        SeenIds,
        connect_nats,
        events_stream_name,
        namespaced,
        subscribe_events,
    )

    nc = await connect_nats(url, name="arbor-cli", timeout=5.0, max_reconnect_attempts=5)
    queue: asyncio.Queue[events_pb2.Event] = asyncio.Queue()
    stop: Callable[[], Any]
    try:
        if replay:
            # A JetStream ordered consumer from the start of the stream (the stream keeps 7 days).
            try:
                subscription = await subscribe_events(
                    nc.jetstream(),
                    queue.put,
                    pattern=pattern,
                    namespace=namespace,
                    deliver_policy="all",
                )
            except nats.js.errors.NotFoundError:
                raise ArborClientError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"no events stream {events_stream_name(namespace)} on {url}: "
                    "start a service first (they create it)",
                    reason="EVENTS_STREAM_NOT_FOUND",
                ) from None
            stop = subscription.stop
        else:
            # Live only: a plain subscription sees every publish and needs no consumer.
            seen = SeenIds()

            async def on_msg(msg: Any) -> None:
                try:
                    event = events_pb2.Event.FromString(msg.data)
                except Exception:
                    return
                if event.event_id and seen.seen(event.event_id):
                    return  # a re-publish the stream deduplicated
                await queue.put(event)

            core = await nc.subscribe(namespaced(pattern, namespace), cb=on_msg)
            await nc.flush()
            stop = core.unsubscribe
        where = namespaced(pattern, namespace)
        sys.stderr.write(
            f"listening on {where} at {url}" + (" (from the start)\n" if replay else "\n")
        )
        sys.stderr.flush()
        delivered = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while not count or delivered < count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                break
            if accept(event):
                on_event(event)
                delivered += 1
        with contextlib.suppress(Exception):
            await stop()
        return delivered
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


@app.command("tail")
def tail(
    ctx: typer.Context,
    types: Annotated[
        list[str] | None,
        typer.Option("--type", "-t", help="Event type or glob (model.promoted, experiment.*)."),
    ] = None,
    resources: Annotated[
        list[str] | None,
        typer.Option("--resource", "-r", help="Resource and what is under it (models/churn)."),
    ] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Replay the stream first (7 days kept).")
    ] = False,
    count: Annotated[int, typer.Option("--count", "-n", help="Stop after N events.")] = 0,
    timeout: Annotated[
        float | None, typer.Option(help="Stop after N seconds (with --count: fail if short).")
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="NATS server (default $ARBOR_NATS_URL, else make up's).")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Subject namespace (default $ARBOR_NATS_NAMESPACE).")
    ] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Print events as they are published (one JSON object per line with --json)."""
    type_list = list(types or [])
    resource_list = list(resources or [])
    url = (
        nats_url
        or os.environ.get("ARBOR_NATS_URL")
        or recorded_nats_url()  # a `make up` stack runs its own nats-server
        or "nats://127.0.0.1:4222"
    )
    ns = namespace if namespace is not None else os.environ.get("ARBOR_NATS_NAMESPACE", "")
    try:
        delivered = asyncio.run(
            _tail(
                url=url,
                namespace=ns,
                pattern=_pattern(type_list),
                replay=from_start,
                accept=lambda e: _matches(e, type_list, resource_list),
                on_event=_print_event,
                count=count,
                timeout=timeout,
            )
        )
    except KeyboardInterrupt:
        return
    if count and delivered < count:
        fail(
            f"received {delivered} of {count} events within {timeout or 0:g}s",
            code="DEADLINE_EXCEEDED",
            reason="EVENTS_TIMEOUT",
            exit_code=EXIT_OUTCOME,
        )
