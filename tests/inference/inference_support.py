"""Helpers for the inference tests and the benchmark: data, bundles, registration, inputs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import polars as pl
import pyarrow as pa
from google.protobuf import struct_pb2

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2_grpc as inf_grpc
from arbor.registry.v1 import registry_service_pb2 as reg_pb
from arbor.registry.v1 import registry_service_pb2_grpc as reg_grpc
from arbor_core.artifacts import ArtifactStore, LocalArtifactStore
from arbor_core.config import Settings, load_settings
from arbor_core.server import ServiceRunner
from arbor_inference.domain import ServingOptions
from arbor_inference.server import build_runner as build_inference
from arbor_ml import FitSettings, ModelBundle, bundle_prefix, save_bundle, train

MODEL_TYPES = {
    "catboost": common_pb2.MODEL_TYPE_CATBOOST,
    "xgboost": common_pb2.MODEL_TYPE_XGBOOST,
    "lightgbm": common_pb2.MODEL_TYPE_LIGHTGBM,
    "ensemble": common_pb2.MODEL_TYPE_ENSEMBLE,
}
TASK_TYPES = {
    "binary": common_pb2.TASK_TYPE_BINARY,
    "multiclass": common_pb2.TASK_TYPE_MULTICLASS,
    "regression": common_pb2.TASK_TYPE_REGRESSION,
}


def make_frame(n: int, seed: int, task: str) -> pl.DataFrame:
    """Mixed features with nulls in two columns; the target depends on most of them."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    n3 = rng.integers(0, 10, n)
    color = rng.choice(["red", "green", "blue"], n)
    flag = rng.random(n) < 0.5
    score = x1 + 0.5 * np.nan_to_num(x2) + (color == "red") + 0.3 * flag + 0.1 * n3
    x2_values = [None if m else float(v) for v, m in zip(x2, rng.random(n) < 0.1, strict=True)]
    colors = [None if m else str(c) for c, m in zip(color, rng.random(n) < 0.05, strict=True)]
    frame = pl.DataFrame(
        {
            "x1": x1,
            "x2": pl.Series(x2_values, dtype=pl.Float64),
            "n3": pl.Series(n3, dtype=pl.Int64),
            "color": pl.Series(colors, dtype=pl.String),
            "flag": pl.Series(flag, dtype=pl.Boolean),
        }
    )
    if task == "binary":
        target = pl.Series("y", np.where(score + rng.normal(0, 0.3, n) > 1.0, "yes", "no"))
    elif task == "multiclass":
        bins = np.digitize(score + rng.normal(0, 0.3, n), [0.3, 1.5])
        target = pl.Series("y", np.array([10, 20, 30])[bins], dtype=pl.Int64)
    else:
        target = pl.Series("y", 3.0 * score + rng.normal(0, 0.1, n))
    return frame.with_columns(target)


def train_bundle(
    model_type: str, task: str, *, seed: int = 0, rows: int = 400, iterations: int = 30
) -> ModelBundle:
    frame = make_frame(rows, seed, task)
    cut = int(rows * 0.8)
    return train(
        frame[:cut],
        frame[cut:],
        target="y",
        model_type=model_type,
        task=task,
        settings=FitSettings(
            iterations=iterations, early_stopping_rounds=None, seed=seed, threads=1
        ),
    )


def numeric_bundle(
    model_type: str, task: str, *, features: int = 30, trees: int = 300, rows: int = 2000
) -> tuple[ModelBundle, pl.DataFrame]:
    """The benchmark's model: ``trees`` trees on ``features`` numeric columns."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, features))
    frame = pl.DataFrame({f"f{i}": x[:, i] for i in range(features)})
    score = x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + rng.normal(0, 0.2, rows)
    if task == "binary":
        y = pl.Series("y", np.where(score > 0, "yes", "no"))
    elif task == "multiclass":
        y = pl.Series("y", np.digitize(score, [-0.5, 0.5]).astype(np.int64))
    else:
        y = pl.Series("y", score)
    cut = int(rows * 0.8)
    data = frame.with_columns(y)
    bundle = train(
        data[:cut],
        data[cut:],
        target="y",
        model_type=model_type,
        task=task,
        settings=FitSettings(iterations=trees, early_stopping_rounds=None, seed=0, threads=0),
    )
    return bundle, frame


@dataclass
class SavedBundle:
    bundle: ModelBundle
    uri: str
    checksums: dict[str, str]


def save(bundle: ModelBundle, store: ArtifactStore, name: str, version: int) -> SavedBundle:
    ref = save_bundle(bundle, store, bundle_prefix(name, version))
    return SavedBundle(bundle, ref.uri, {n: r.sha256 for n, r in ref.files.items()})


def signature_of(
    bundle: ModelBundle, nullable: dict[str, bool] | None = None
) -> reg_pb.ModelSignature:
    """The registry signature of a bundle; ``nullable`` per column (default: all nullable)."""
    kinds = {c.name: c.kind for c in bundle.preprocessor.columns}
    return reg_pb.ModelSignature(
        inputs=[
            reg_pb.InputColumn(
                name=c.name,
                dtype=c.dtype,
                nullable=(nullable or {}).get(c.name, True),
                categorical=kinds.get(c.name) == "categorical",
            )
            for c in bundle.signature.inputs
        ],
        class_labels=[str(c) for c in bundle.classes],
        label_dtype=bundle.signature.label_dtype or "",
    )


def model_version_message(
    saved: SavedBundle, experiment: str, nullable: dict[str, bool] | None = None
) -> reg_pb.ModelVersion:
    bundle = saved.bundle
    return reg_pb.ModelVersion(
        experiment=experiment,
        model_type=MODEL_TYPES[bundle.model_type.value],
        task_type=TASK_TYPES[bundle.task.value],
        signature=signature_of(bundle, nullable),
        artifact_uri=saved.uri,
        artifact_checksums=saved.checksums,
    )


# --------------------------------------------------------------------------- input shapes


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    return value


def json_rows(frame: pl.DataFrame) -> common_pb2.InlineData:
    data = common_pb2.InlineData()
    rows = data.json_rows.rows
    for row in frame.iter_rows(named=True):
        struct = struct_pb2.Struct()
        struct.update({k: _json_value(v) for k, v in row.items()})
        rows.append(struct)
    return data


def columnar(frame: pl.DataFrame) -> common_pb2.InlineData:
    """Typed columns built from numpy arrays (no per-row Python for numbers)."""
    data = common_pb2.InlineData()
    for series in frame.get_columns():
        column = data.columns.columns.add(name=series.name)
        nulls = series.is_null()
        if nulls.any():
            column.null_indices.extend(nulls.arg_true().to_numpy().tolist())
        dtype = series.dtype
        if dtype.is_float():
            column.double_values.values.extend(series.fill_null(0.0).to_numpy().tolist())
        elif dtype.is_integer():
            column.int64_values.values.extend(series.fill_null(0).to_numpy().tolist())
        elif dtype == pl.Boolean:
            column.bool_values.values.extend(series.fill_null(False).to_list())
        elif isinstance(dtype, pl.Datetime):
            micros = series.dt.cast_time_unit("us").dt.epoch("us").fill_null(0)
            column.timestamp_micros.values.extend(micros.to_list())
        else:
            column.string_values.values.extend(series.cast(pl.String).fill_null("").to_list())
    return data


def arrow_ipc(frame: pl.DataFrame) -> common_pb2.InlineData:
    return common_pb2.InlineData(arrow_ipc=ipc_bytes(frame.to_arrow()))


def ipc_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


SHAPES = {"json_rows": json_rows, "columns": columnar, "arrow_ipc": arrow_ipc}


# --------------------------------------------------------------------------- the stack

#: Small so that the oversized-batch test needs few rows; the fast path covers <= 8 rows.
TEST_OPTIONS = ServingOptions(
    max_batch_rows=2_000,
    max_explain_rows=500,
    fast_path_max_rows=8,
    resolve_timeout_s=5.0,
    resolve_ttl_s=60.0,
    cache_max_models=8,
    compiled=False,  # exact comparisons with the library; test_fastpath covers compiled
    workers=2,
)
#: as a service serves by default: compiled predictors, CatBoost's trees in C
COMPILED_OPTIONS = dataclasses.replace(TEST_OPTIONS, compiled=True)


@dataclasses.dataclass
class Stack:
    """Registry + inference, their stubs, the store and the trained bundles."""

    registry: reg_grpc.RegistryServiceStub
    inference: inf_grpc.InferenceServiceStub
    registry_runner: ServiceRunner
    inference_runner: ServiceRunner
    store: LocalArtifactStore
    settings: Settings
    bundles: dict[str, ModelBundle]
    channels: list[grpc.aio.Channel]
    _prefixes: itertools.count[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    async def register(
        self,
        name: str,
        bundle: ModelBundle,
        *,
        experiment: str | None = None,
        nullable: dict[str, bool] | None = None,
    ) -> reg_pb.ModelVersion:
        """Save ``bundle`` as the next version of ``name`` and register it."""
        saved: SavedBundle = save(bundle, self.store, name, next(self._prefixes))
        message = model_version_message(
            saved, experiment or f"experiments/{uuid.uuid4().hex[:12]}", nullable
        )
        response = await self.registry.RegisterModelVersion(
            reg_pb.RegisterModelVersionRequest(model=name, model_version=message)
        )
        return response.model_version

    async def promote(
        self, version_name: str, stage: int = common_pb2.MODEL_STAGE_PRODUCTION
    ) -> Any:
        return await self.registry.PromoteModel(
            reg_pb.PromoteModelRequest(name=version_name, stage=stage)
        )


def service_settings(service: str, home: Path, **overrides: Any) -> Settings:
    return dataclasses.replace(
        load_settings(service),
        host="127.0.0.1",
        port=0,
        home=home,
        auth_tokens=[],
        grace_seconds=0.5,
        **overrides,
    )


async def start_inference(
    settings: Settings, options: ServingOptions = TEST_OPTIONS
) -> tuple[ServiceRunner, grpc.aio.Channel]:
    runner = build_inference(settings, options=options)
    await runner.start()
    await asyncio.wait_for(runner.events.subscribed.wait(), 10)  # type: ignore[attr-defined]
    return runner, grpc.aio.insecure_channel(runner.address)


@contextlib.asynccontextmanager
async def private_inference(
    settings: Settings, options: ServingOptions = TEST_OPTIONS
) -> AsyncIterator[tuple[ServiceRunner, inf_grpc.InferenceServiceStub]]:
    """An inference server of the test's own (its caches start empty), stopped afterwards."""
    runner, channel = await start_inference(settings, options)
    try:
        yield runner, inf_grpc.InferenceServiceStub(channel)
    finally:
        await channel.close()
        await runner.stop(0.5)
