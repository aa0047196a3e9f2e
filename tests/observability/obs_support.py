"""Helpers for the observability tests (a top-level module, like the other areas' *_support.py)."""

from __future__ import annotations

import dataclasses
import uuid

import grpc
import numpy as np
import polars as pl
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as reg_pb
from arbor.registry.v1 import registry_service_pb2_grpc as reg_grpc
from arbor_core.artifacts import LocalArtifactStore
from arbor_core.server import ServiceRunner
from arbor_core.telemetry import Telemetry
from arbor_ml import FitSettings, bundle_prefix, save_bundle, train


@dataclasses.dataclass
class TracedStack:
    """Running services, their telemetry and the one exporter every span ends up in."""

    exporter: InMemorySpanExporter
    telemetry: dict[str, Telemetry]
    runners: dict[str, ServiceRunner]
    store: LocalArtifactStore
    channels: list[grpc.aio.Channel] = dataclasses.field(default_factory=list)

    def channel(self, service: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.runners[service].address)
        self.channels.append(channel)
        return channel

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def trace(self, trace_id: int) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.context.trace_id == trace_id]


def tiny_frame(rows: int = 200, seed: int = 0) -> pl.DataFrame:
    """Two numeric features and a binary target that depends on them."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    label = np.where(x1 + 0.5 * x2 + rng.normal(0, 0.3, rows) > 0, "yes", "no")
    return pl.DataFrame({"x1": x1, "x2": x2, "y": label})


async def register_tiny_model(stack: TracedStack, name: str) -> reg_pb.ModelVersion:
    """Train a few-tree LightGBM model, save its bundle and register it as version 1."""
    frame = tiny_frame()
    bundle = train(
        frame[:160],
        frame[160:],
        target="y",
        model_type="lightgbm",
        task="binary",
        settings=FitSettings(iterations=10, early_stopping_rounds=None, seed=0, threads=1),
    )
    ref = save_bundle(bundle, stack.store, bundle_prefix(name, 1))
    registry = reg_grpc.RegistryServiceStub(stack.channel("registry"))
    message = reg_pb.ModelVersion(
        experiment=f"experiments/{uuid.uuid4().hex[:12]}",
        model_type=common_pb2.MODEL_TYPE_LIGHTGBM,
        task_type=common_pb2.TASK_TYPE_BINARY,
        signature=reg_pb.ModelSignature(
            inputs=[
                reg_pb.InputColumn(name=c.name, dtype=c.dtype, nullable=True)
                for c in bundle.signature.inputs
            ],
            class_labels=[str(c) for c in bundle.classes],
            label_dtype=bundle.signature.label_dtype or "",
        ),
        artifact_uri=ref.uri,
        artifact_checksums={n: r.sha256 for n, r in ref.files.items()},
    )
    response = await registry.RegisterModelVersion(
        reg_pb.RegisterModelVersionRequest(model=name, model_version=message)
    )
    return response.model_version
