"""A probe gRPC service for testing the server bootstrap, without generated Arbor protos.

The service's .proto is built as a descriptor at import time and added to the default pool,
so server reflection can describe it and grpcurl can call it. Each RPC kind exists once:
Echo/Get (unary), Count (server streaming, async generator), Collect (client streaming) and
Chat (bidirectional, ``context.write`` style). ``action`` in the request picks the behaviour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arbor_core.config import Settings, load_settings
from arbor_core.errors import (
    ErrorCollector,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Unavailable,
)
from arbor_core.logging import get_request_id, make_handler
from arbor_core.pagination import (
    clamp_page_size,
    decode_offset,
    encode_page_token,
    filter_fingerprint,
)
from arbor_core.server import ServiceRunner, build_server
from arbor_core.telemetry import Telemetry, configure_telemetry, current_traceparent

PACKAGE = "arbor.testing.v1"
SERVICE = f"{PACKAGE}.ProbeService"
_FILE = "arbor/testing/v1/probe.proto"


def _build_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
        return
    except KeyError:
        pass
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name=_FILE, package=PACKAGE, syntax="proto3")
    request = file.message_type.add(name="ProbeRequest")
    request.field.add(name="action", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    request.field.add(name="request_id", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    request.field.add(name="count", number=3, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    request.field.add(name="page_size", number=4, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    request.field.add(name="page_token", number=5, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    response = file.message_type.add(name="ProbeResponse")
    response.field.add(name="value", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    response.field.add(name="time_remaining", number=2, type=f.TYPE_DOUBLE, label=f.LABEL_OPTIONAL)
    response.field.add(name="headers", number=3, type=f.TYPE_STRING, label=f.LABEL_REPEATED)
    response.field.add(name="items", number=4, type=f.TYPE_STRING, label=f.LABEL_REPEATED)
    response.field.add(name="next_page_token", number=5, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    service = file.service.add(name="ProbeService")
    req, resp = f".{PACKAGE}.ProbeRequest", f".{PACKAGE}.ProbeResponse"
    service.method.add(name="Echo", input_type=req, output_type=resp)
    get = service.method.add(name="Get", input_type=req, output_type=resp)
    get.options.idempotency_level = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    service.method.add(name="Count", input_type=req, output_type=resp, server_streaming=True)
    service.method.add(name="Collect", input_type=req, output_type=resp, client_streaming=True)
    service.method.add(
        name="Chat", input_type=req, output_type=resp, client_streaming=True, server_streaming=True
    )
    pool.Add(file)


_build_descriptor()
ProbeRequest: Any = message_factory.GetMessageClass(
    descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.ProbeRequest")
)
ProbeResponse: Any = message_factory.GetMessageClass(
    descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.ProbeResponse")
)

log = logging.getLogger("probe")


class ProbeServicer:
    """Behaviour by ``action``; see the module docstring."""

    def __init__(self) -> None:
        self.flaky_calls: dict[str, int] = {}
        self.started = asyncio.Event()

    async def _act(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        action = request.action
        name, _, arg = action.partition(":")
        if name == "ok":
            return ProbeResponse(value="ok")
        if name == "echo":
            return ProbeResponse(value=arg)
        if name == "invalid":
            errors = ErrorCollector()
            errors.add("name", "must not be empty")
            errors.add("fractions.train", "must be in (0, 1)")
            errors.raise_if_any("invalid probe")
        if name == "notfound":
            raise NotFound("probe", "probes/42")
        if name == "precondition":
            raise FailedPrecondition(
                "probe is running",
                reason="PROBE_RUNNING",
                violations=[PreconditionViolation("STATE", "probes/42", "must be stopped")],
            )
        if name == "boom":
            raise RuntimeError("secret internal detail")
        if name == "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "handler aborted")
        if name == "sleep":
            self.started.set()
            await asyncio.sleep(float(arg))
            return ProbeResponse(value="slept")
        if name == "deadline":
            return ProbeResponse(value="deadline", time_remaining=context.time_remaining() or -1.0)
        if name == "headers":
            wanted = {"x-request-id", "traceparent", "authorization", "x-arbor-retry"}
            headers = [f"{k}={v}" for k, v in context.invocation_metadata() or () if k in wanted]
            return ProbeResponse(value="headers", headers=headers)
        if name == "flaky":
            key, _, times = arg.partition(":")
            self.flaky_calls[key] = self.flaky_calls.get(key, 0) + 1
            if self.flaky_calls[key] <= int(times):
                raise Unavailable("probe is flaky", reason="PROBE_FLAKY")
            return ProbeResponse(value=f"attempts={self.flaky_calls[key]}")
        if name == "log":
            log.info("inside handler", extra={"probe": True})
            return ProbeResponse(value=current_traceparent())
        if name == "list":
            # ``arg`` is the filter: items are "<filter>-<i>" for i < count.
            fingerprint = filter_fingerprint(arg)
            offset = decode_offset(request.page_token, fingerprint)
            size = clamp_page_size(request.page_size, default=3, maximum=5)
            end = min(offset + size, request.count)
            items = [f"{arg}-{i}" for i in range(offset, end)]
            token = encode_page_token(end, fingerprint) if end < request.count else ""
            return ProbeResponse(value="list", items=items, next_page_token=token)
        if name == "whoami":
            await asyncio.sleep(0.01)  # let concurrent calls interleave
            return ProbeResponse(value=get_request_id() or "")
        if name == "replace-trailer":
            context.set_trailing_metadata((("x-extra", "1"),))
            return ProbeResponse(value="ok")
        raise InvalidArgument(f"unknown action {action!r}", field="action")

    async def echo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._act(request, context)

    async def count(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        name, _, arg = request.action.partition(":")
        for i in range(request.count):
            if name == "fail-at" and i == int(arg):
                raise InvalidArgument("count went wrong", field="count", reason="COUNT_FAILED")
            if name == "boom-at" and i == int(arg):
                raise RuntimeError("secret stream detail")
            yield ProbeResponse(value=str(i), time_remaining=context.time_remaining() or -1.0)
            await asyncio.sleep(0)

    async def collect(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        seen = []
        async for request in requests:
            if request.action == "invalid":
                raise InvalidArgument("bad item", field=f"items[{len(seen)}]")
            if request.action == "boom":
                raise RuntimeError("secret collect detail")
            seen.append(request.action)
        return ProbeResponse(value=",".join(seen))

    async def chat(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        async for request in requests:
            if request.action == "notfound":
                raise NotFound("probe", "probes/7")
            if request.action == "boom":
                raise RuntimeError("secret chat detail")
            await context.write(ProbeResponse(value=request.action))


def register_probe(servicer: ProbeServicer) -> Any:
    """A ``register`` callable for build_server."""

    def register(server: grpc.aio.Server) -> list[str]:
        kw = {
            "request_deserializer": ProbeRequest.FromString,
            "response_serializer": ProbeResponse.SerializeToString,
        }
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(servicer.echo, **kw),
            "Get": grpc.unary_unary_rpc_method_handler(servicer.echo, **kw),
            "Count": grpc.unary_stream_rpc_method_handler(servicer.count, **kw),
            "Collect": grpc.stream_unary_rpc_method_handler(servicer.collect, **kw),
            "Chat": grpc.stream_stream_rpc_method_handler(servicer.chat, **kw),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]

    return register


class ProbeStub:
    """Client side of the probe service on any channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        kw = {
            "request_serializer": ProbeRequest.SerializeToString,
            "response_deserializer": ProbeResponse.FromString,
        }
        self.Echo = channel.unary_unary(f"/{SERVICE}/Echo", **kw)
        self.Get = channel.unary_unary(f"/{SERVICE}/Get", **kw)
        self.Count = channel.unary_stream(f"/{SERVICE}/Count", **kw)
        self.Collect = channel.stream_unary(f"/{SERVICE}/Collect", **kw)
        self.Chat = channel.stream_stream(f"/{SERVICE}/Chat", **kw)


def make_settings(**overrides: Any) -> Settings:
    base = load_settings("probe")
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "auth_tokens": [],
        "grace_seconds": 2.0,
        "max_message_bytes": 4 * 1024 * 1024,
    }
    values.update(overrides)
    return dataclasses.replace(base, **values)


@dataclass
class ProbeTelemetry:
    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader


def make_test_telemetry() -> ProbeTelemetry:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = configure_telemetry(
        "probe",
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[reader],
        install_global=False,
    )
    return ProbeTelemetry(telemetry, spans, reader)


@dataclass
class RunningProbe:
    runner: ServiceRunner
    servicer: ProbeServicer
    channel: grpc.aio.Channel
    stub: ProbeStub
    telemetry: ProbeTelemetry

    @property
    def address(self) -> str:
        return self.runner.address


@asynccontextmanager
async def serve_probe(
    settings: Settings | None = None,
    *,
    readiness_checks: Any = (),
    background_tasks: Any = (),
    readiness_interval: float = 0.05,
    readiness_timeout: float = 0.5,
    stop_grace: float = 0.0,
) -> AsyncIterator[RunningProbe]:
    """A started probe server on an ephemeral port and a plain aio channel to it."""
    servicer = ProbeServicer()
    telemetry = make_test_telemetry()
    runner = build_server(
        settings or make_settings(),
        register_probe(servicer),
        readiness_checks,
        background_tasks,
        telemetry=telemetry.telemetry,
        readiness_interval=readiness_interval,
        readiness_timeout=readiness_timeout,
    )
    await runner.start()
    channel = grpc.aio.insecure_channel(runner.address)
    try:
        yield RunningProbe(runner, servicer, channel, ProbeStub(channel), telemetry)
    finally:
        await channel.close()
        await runner.stop(grace=stop_grace)


class JsonLogs:
    """Parsed JSON lines written by Arbor's handler while the capture was active."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines() if line]

    def where(self, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.records if all(r.get(k) == v for k, v in fields.items())]


@contextmanager
def capture_json_logs(level: int = logging.DEBUG) -> Iterator[JsonLogs]:
    """Attach an Arbor JSON handler to the root logger for the duration of a block."""
    stream = io.StringIO()
    handler = make_handler("probe", stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield JsonLogs(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll an (async or sync) predicate until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def grpcurl_path() -> str:
    found = Path(sys.executable).parent / "grpcurl"
    if found.exists():
        return str(found)
    which = shutil.which("grpcurl")
    if which is None:
        pytest.skip("grpcurl not installed")
    return which


async def grpcurl(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run grpcurl without blocking the event loop that serves the server under test."""
    proc = await asyncio.create_subprocess_exec(
        grpcurl_path(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()
