"""Spans, metrics and trace-context propagation through a real server, and the JSON log
lines that carry the same trace and request ids."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from server_testkit import (
    SERVICE,
    ProbeRequest,
    ProbeServicer,
    ProbeStub,
    RunningProbe,
    capture_json_logs,
    make_settings,
    register_probe,
    serve_probe,
)

from arbor_core.errors import FailedPrecondition
from arbor_core.server import build_server
from arbor_core.telemetry import (
    configure_telemetry,
    context_from_traceparent,
    current_traceparent,
    inject_metadata,
    trace_headers,
)

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


@pytest.fixture
async def probe() -> AsyncIterator[RunningProbe]:
    async with serve_probe() as running:
        yield running


def _spans(probe: RunningProbe) -> list[object]:
    return list(probe.telemetry.spans.get_finished_spans())


async def test_span_per_rpc_with_rpc_attributes_and_code(probe: RunningProbe) -> None:
    await probe.stub.Echo(ProbeRequest(action="ok"))
    with pytest.raises(grpc.aio.AioRpcError):
        await probe.stub.Echo(ProbeRequest(action="notfound"))
    with pytest.raises(grpc.aio.AioRpcError):
        await probe.stub.Echo(ProbeRequest(action="boom"))
    _ = [m async for m in probe.stub.Count(ProbeRequest(action="ok", count=2))]
    ok, not_found, internal, stream = _spans(probe)
    assert ok.name == f"{SERVICE}/Echo"
    assert ok.kind == SpanKind.SERVER
    assert ok.attributes["rpc.system"] == "grpc"
    assert ok.attributes["rpc.service"] == SERVICE
    assert ok.attributes["rpc.method"] == "Echo"
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert not_found.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert not_found.status.is_ok  # a client error is not a server fault
    assert internal.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert not internal.status.is_ok
    assert any(event.name == "exception" for event in internal.events)
    assert stream.attributes["rpc.method"] == "Count"
    assert ok.resource.attributes["service.name"] == "arbor-probe"


async def test_health_checks_are_not_traced(probe: RunningProbe) -> None:
    await health_pb2_grpc.HealthStub(probe.channel).Check(health_pb2.HealthCheckRequest())
    assert _spans(probe) == []


async def test_incoming_traceparent_becomes_the_parent(probe: RunningProbe) -> None:
    with capture_json_logs() as logs:
        reply = await probe.stub.Echo(
            ProbeRequest(action="log"),
            metadata=[("traceparent", TRACEPARENT), ("x-request-id", "rid-trace")],
        )
    [span] = _spans(probe)
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_SPAN
    span_id = format(span.context.span_id, "016x")
    # current_traceparent() inside the handler names the server span: ready for events.
    assert reply.value == f"00-{TRACE_ID}-{span_id}-01"
    [inside] = logs.where(message="inside handler")
    assert inside["trace_id"] == TRACE_ID
    assert inside["span_id"] == span_id
    assert inside["request_id"] == "rid-trace"
    assert inside["probe"] is True


async def test_request_metrics_by_method_and_code(probe: RunningProbe) -> None:
    await probe.stub.Echo(ProbeRequest(action="ok"))
    await probe.stub.Echo(ProbeRequest(action="ok"))
    with pytest.raises(grpc.aio.AioRpcError):
        await probe.stub.Echo(ProbeRequest(action="invalid"))
    data = probe.telemetry.metrics.get_metrics_data()
    metrics = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    counts = {
        (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p.value
        for p in metrics["rpc.server.requests"].data.data_points
    }
    assert counts == {("Echo", 0): 2, ("Echo", grpc.StatusCode.INVALID_ARGUMENT.value[0]): 1}
    durations = metrics["rpc.server.duration"]
    assert durations.unit == "ms"
    assert sum(p.count for p in durations.data.data_points) == 3


def test_propagation_helpers_round_trip() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    assert current_traceparent() == ""
    assert inject_metadata([("a", "1")]) == [("a", "1")]
    with tracer.start_as_current_span("outer") as span:
        traceparent = current_traceparent()
        ids = span.get_span_context()
        assert traceparent.startswith(f"00-{ids.trace_id:032x}-{ids.span_id:016x}-")
        assert ("traceparent", traceparent) in inject_metadata([("a", "1")])
        # An explicit value in the metadata wins.
        assert inject_metadata([("traceparent", "x")]) == [("traceparent", "x")]
    # A consumer continues the trace from an event envelope's traceparent.
    context = context_from_traceparent(traceparent)
    assert trace.get_current_span(context).get_span_context().trace_id == ids.trace_id
    assert trace_headers(context)["traceparent"] == traceparent


def test_exporter_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_OTEL_EXPORTER", "otlp")
    with pytest.raises(FailedPrecondition) as info:
        configure_telemetry("probe", install_global=False)
    assert info.value.reason == "OTEL_EXPORTER_UNAVAILABLE"
    with pytest.raises(FailedPrecondition) as info:
        configure_telemetry("probe", exporter="zipkin", install_global=False)
    assert info.value.reason == "OTEL_EXPORTER_UNKNOWN"
    console = configure_telemetry("probe", exporter="console", install_global=False)
    console.shutdown()
    quiet = configure_telemetry("probe", exporter="none", install_global=False)
    assert quiet.tracer is not None


def test_log_lines_outside_calls_have_null_ids() -> None:
    with capture_json_logs() as logs:
        logging.getLogger("outside").warning("no call here")
    [line] = logs.where(logger="outside")
    assert line["request_id"] is None and line["trace_id"] is None
    assert line["service"] == "probe"


async def test_without_a_span_processor_no_span_is_recorded_but_ids_still_flow() -> None:
    """Nothing receives spans: the server skips the SDK span (its cost is the point), yet the
    trace continues, logs carry its ids, and the metrics are recorded."""
    reader = InMemoryMetricReader()
    telemetry = configure_telemetry(
        "probe", span_processors=[], metric_readers=[reader], install_global=False
    )
    assert not telemetry.records_spans()
    runner = build_server(make_settings(), register_probe(ProbeServicer()), telemetry=telemetry)
    await runner.start()
    channel = grpc.aio.insecure_channel(runner.address)
    try:
        stub = ProbeStub(channel)
        with capture_json_logs() as logs:
            reply = await stub.Echo(
                ProbeRequest(action="log"),
                metadata=[("traceparent", TRACEPARENT), ("x-request-id", "rid-quiet")],
            )
            root = await stub.Echo(ProbeRequest(action="log"))
        assert reply.value.startswith(f"00-{TRACE_ID}-") and reply.value.endswith("-01")
        assert reply.value.split("-")[2] != PARENT_SPAN  # a span of its own, child of the caller
        first, second = logs.where(message="inside handler")
        assert first["trace_id"] == TRACE_ID and first["request_id"] == "rid-quiet"
        assert second["trace_id"] and second["trace_id"] != TRACE_ID  # a new trace
        assert root.value == f"00-{second['trace_id']}-{second['span_id']}-01"
        data: Any = reader.get_metrics_data()
        counts = [
            point.value
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "rpc.server.requests"
            for point in metric.data.data_points
        ]
        assert sum(counts) == 2
    finally:
        await channel.close()
        await runner.stop(grace=0)
        telemetry.shutdown()


async def test_access_log_sampling_keeps_every_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_ACCESS_LOG_SAMPLE", "0")
    async with serve_probe() as probe:
        with capture_json_logs() as logs:
            await probe.stub.Echo(ProbeRequest(action="ok"))
            with pytest.raises(grpc.aio.AioRpcError):
                await probe.stub.Echo(ProbeRequest(action="notfound"))
        lines = logs.where(logger="arbor.access")
        assert [line["code"] for line in lines] == ["NOT_FOUND"]
