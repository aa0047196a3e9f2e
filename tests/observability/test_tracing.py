"""One trace across services: the W3C trace context travels in gRPC metadata (client ->
inference -> registry, client -> training -> split) and in event envelopes (PromoteModel ->
outbox -> NATS -> the inference cache's event handler; CreateExperiment -> its events)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from google.protobuf import struct_pb2
from obs_support import TracedStack, register_tiny_model, tiny_frame
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2 as inf_pb
from arbor.inference.v1 import inference_service_pb2_grpc as inf_grpc
from arbor.registry.v1 import registry_service_pb2 as reg_pb
from arbor.registry.v1 import registry_service_pb2_grpc as reg_grpc
from arbor.split.v1 import split_service_pb2 as split_pb
from arbor.split.v1 import split_service_pb2_grpc as split_grpc
from arbor.training.v1 import training_service_pb2 as train_pb
from arbor.training.v1 import training_service_pb2_grpc as train_grpc
from arbor_core.events import connect_nats, subscribe_events
from arbor_core.telemetry import inject_metadata

pytestmark = pytest.mark.integration


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert len(found) == 1, f"{name} {kind}: {[(s.name, s.kind) for s in spans]}"
    return found[0]


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def _assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent is not None
    assert child.parent.span_id == parent.context.span_id


async def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_predict_and_its_registry_lookup_share_one_trace(
    traced_stack: TracedStack,
) -> None:
    name = f"traced-{uuid.uuid4().hex[:8]}"
    version = await register_tiny_model(traced_stack, name)
    inference = inf_grpc.InferenceServiceStub(traced_stack.channel("inference"))
    rows = common_pb2.InlineData()
    for row in tiny_frame(3, seed=1).drop("y").to_dicts():
        rows.json_rows.rows.append(struct_pb2.Struct(fields={}))
        rows.json_rows.rows[-1].update(row)
    tracer = traced_stack.telemetry["inference"].tracer_provider.get_tracer("test.client")
    with tracer.start_as_current_span("demo client", kind=SpanKind.CLIENT) as root:
        response = await inference.Predict(
            inf_pb.PredictRequest(
                model=common_pb2.ModelSelector(model_version=version.name), input=rows
            ),
            metadata=inject_metadata(),
        )
    assert response.row_count == 3
    trace_id = root.get_span_context().trace_id

    await _wait_for(
        lambda: any(s.name.endswith("/ResolveModel") for s in traced_stack.trace(trace_id))
    )
    spans = traced_stack.trace(trace_id)
    root_span = _one(spans, "demo client", SpanKind.CLIENT)
    predict = _one(spans, "arbor.inference.v1.InferenceService/Predict", SpanKind.SERVER)
    resolve_call = _one(spans, "arbor.registry.v1.RegistryService/ResolveModel", SpanKind.CLIENT)
    resolve = _one(spans, "arbor.registry.v1.RegistryService/ResolveModel", SpanKind.SERVER)
    # client -> inference (metadata) -> its outbound call -> registry (metadata)
    _assert_child(predict, root_span)
    _assert_child(resolve_call, predict)
    _assert_child(resolve, resolve_call)
    assert _service(predict) == "arbor-inference"
    assert _service(resolve_call) == "arbor-inference"
    assert _service(resolve) == "arbor-registry"
    assert resolve.attributes["rpc.grpc.status_code"] == 0


async def test_a_promotion_event_continues_the_promote_call_trace(
    traced_stack: TracedStack,
) -> None:
    name = f"promoted-{uuid.uuid4().hex[:8]}"
    version = await register_tiny_model(traced_stack, name)
    feed = traced_stack.runners["inference"].events  # type: ignore[attr-defined]
    await asyncio.wait_for(feed.subscribed.wait(), 15)
    registry = reg_grpc.RegistryServiceStub(traced_stack.channel("registry"))
    tracer = traced_stack.telemetry["registry"].tracer_provider.get_tracer("test.client")
    with tracer.start_as_current_span("promote", kind=SpanKind.CLIENT) as root:
        await registry.PromoteModel(
            reg_pb.PromoteModelRequest(name=version.name, stage=common_pb2.MODEL_STAGE_PRODUCTION),
            metadata=inject_metadata(),
        )
    trace_id = root.get_span_context().trace_id

    def consumed() -> bool:
        return any(
            s.kind == SpanKind.CONSUMER and s.name.endswith(".model.promoted")
            for s in traced_stack.trace(trace_id)
        )

    await _wait_for(consumed)  # outbox relay -> JetStream -> the inference event feed
    spans = traced_stack.trace(trace_id)
    promote = _one(spans, "arbor.registry.v1.RegistryService/PromoteModel", SpanKind.SERVER)
    [consumer] = [s for s in spans if s.kind == SpanKind.CONSUMER]
    _assert_child(consumer, promote)  # the envelope's trace_parent was PromoteModel's span
    assert _service(consumer) == "arbor-inference"
    assert consumer.attributes["arbor.event.type"] == "model.promoted"
    assert consumer.attributes["messaging.system"] == "nats"


async def test_create_experiment_traces_into_split_and_into_its_events(
    traced_stack: TracedStack, nats_url: str
) -> None:
    split_stub = split_grpc.SplitServiceStub(traced_stack.channel("split"))
    inline = common_pb2.InlineData()
    for row in tiny_frame(60, seed=2).to_dicts():
        inline.json_rows.rows.append(struct_pb2.Struct())
        inline.json_rows.rows[-1].update(row)
    split = (
        await split_stub.CreateSplit(
            split_pb.CreateSplitRequest(
                split=split_pb.Split(
                    source=split_pb.DataSource(inline=inline),
                    target_column="y",
                    fractions=split_pb.Fractions(train=0.7, validation=0.3),
                    seed=1,
                )
            )
        )
    ).split
    runner = traced_stack.runners["training"]
    seen: list[tuple[str, str, int]] = []

    async def on_event(event: object) -> None:
        current = trace.get_current_span().get_span_context().trace_id
        seen.append((event.type, event.trace_parent, current))  # type: ignore[attr-defined]

    nc = await connect_nats(nats_url)
    try:
        subscription = await subscribe_events(
            nc.jetstream(),
            on_event,
            pattern="arbor.events.experiment.>",
            namespace=runner.settings.nats_namespace,
        )
        training = train_grpc.TrainingServiceStub(traced_stack.channel("training"))
        tracer = traced_stack.telemetry["training"].tracer_provider.get_tracer("test.client")
        with tracer.start_as_current_span("create experiment", kind=SpanKind.CLIENT) as root:
            created = await training.CreateExperiment(
                train_pb.CreateExperimentRequest(
                    experiment=train_pb.Experiment(
                        split=split.name,
                        model_type=common_pb2.MODEL_TYPE_LIGHTGBM,
                        study=train_pb.StudyConfig(n_trials=1),
                    )
                ),
                metadata=inject_metadata(),
            )
        trace_id = root.get_span_context().trace_id
        await _wait_for(lambda: any(t == "experiment.queued" for t, _, _ in seen))
        await subscription.stop()
    finally:
        await nc.close()
    assert (
        created.experiment.state == train_pb.EXPERIMENT_STATE_QUEUED
    )  # no worker here: it stays so

    spans = traced_stack.trace(trace_id)
    create = _one(spans, "arbor.training.v1.TrainingService/CreateExperiment", SpanKind.SERVER)
    get_call = _one(spans, "arbor.split.v1.SplitService/GetSplit", SpanKind.CLIENT)
    get_split = _one(spans, "arbor.split.v1.SplitService/GetSplit", SpanKind.SERVER)
    _assert_child(get_call, create)
    _assert_child(get_split, get_call)
    assert _service(get_split) == "arbor-split"
    # The queued event (and the job beside it) carry CreateExperiment's trace; the consumer's
    # handler runs inside a span of that same trace.
    [(_, trace_parent, current)] = [s for s in seen if s[0] == "experiment.queued"]
    assert trace_parent.split("-")[1] == format(trace_id, "032x")
    assert trace_parent.split("-")[2] == format(create.context.span_id, "016x")
    assert current == trace_id
