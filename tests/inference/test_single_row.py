"""One all-double row takes the single-row lane and answers exactly what the batch path does."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from inference_support import (
    COMPILED_OPTIONS,
    Stack,
    arrow_ipc,
    columnar,
    json_rows,
    model_version_message,
    numeric_bundle,
    private_inference,
    save,
)

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2 as pb
from arbor_core.artifacts import LocalArtifactStore
from arbor_inference.api import render_predict, render_row
from arbor_inference.domain import (
    LoadedModel,
    PredictResult,
    RowResult,
    ServedModel,
    load_model,
    store_root_uri,
)
from arbor_inference.inputs import single_row_doubles
from arbor_inference.resolver import ResolvedVersion
from arbor_ml import ModelBundle, TaskType
from arbor_ml.compiled import enable_compiled, unavailable_reason

LIBRARIES = ("catboost", "lightgbm", "xgboost")
SERVED = ServedModel("models/m/versions/1", "m", 1, 3, "experiments/e", 1, 1)


def loaded(bundle: ModelBundle, tmp_path: Path) -> LoadedModel:
    store = LocalArtifactStore(tmp_path / "store")
    message = model_version_message(save(bundle, store, "m", 1), "experiments/e")
    message.name, message.model, message.version = "models/m/versions/1", "m", 1
    return load_model(
        ResolvedVersion.from_proto(message), store, store_root_uri(store), compiled=True
    )


# --------------------------------------------------------------------------- the row


def test_a_row_of_the_signatures_doubles_is_read_straight_from_its_bytes(tmp_path: Path) -> None:
    bundle, frame = numeric_bundle("lightgbm", "binary", features=4, trees=5, rows=200)
    spec = loaded(bundle, tmp_path).spec
    assert single_row_doubles(columnar(frame[:1]), spec) == tuple(frame.row(0))
    shuffled = frame[:1].select(reversed(frame.columns))  # JSON fields: any order
    assert single_row_doubles(json_rows(shuffled), spec) == tuple(frame.row(0))


@pytest.mark.parametrize(
    "change",
    [
        "two rows",
        "a NaN",
        "an infinity",
        "columns in another order",
        "a column missing",
        "an extra column",
        "two json rows",
        "a json null",
        "a json string",
        "a json field missing",
        "an extra json field",
        "arrow",
        "no input",
    ],
)
def test_anything_else_is_left_to_the_batch_path(change: str, tmp_path: Path) -> None:
    bundle, frame = numeric_bundle("lightgbm", "binary", features=4, trees=5, rows=200)
    spec = loaded(bundle, tmp_path).spec
    row = frame[:1]
    data = {
        "two rows": lambda: columnar(frame[:2]),
        "a NaN": lambda: columnar(row.with_columns(pl.lit(math.nan).alias("f1"))),
        "an infinity": lambda: columnar(row.with_columns(pl.lit(math.inf).alias("f2"))),
        "columns in another order": lambda: columnar(row.select(reversed(row.columns))),
        "a column missing": lambda: columnar(row.drop("f3")),
        "an extra column": lambda: columnar(row.with_columns(pl.lit(1.0).alias("zz"))),
        "two json rows": lambda: json_rows(frame[:2]),
        "a json null": lambda: json_rows(row.with_columns(pl.lit(None).alias("f1"))),
        "a json string": lambda: json_rows(row.with_columns(pl.lit("1.5").alias("f1"))),
        "a json field missing": lambda: json_rows(row.drop("f0")),
        "an extra json field": lambda: json_rows(row.with_columns(pl.lit(2.0).alias("zz"))),
        "arrow": lambda: arrow_ipc(row),
        "no input": common_pb2.InlineData,
    }[change]()
    assert single_row_doubles(data, spec) is None


# --------------------------------------------------------------------------- the answer


@pytest.mark.parametrize("library", ["lightgbm", "xgboost", "catboost"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_lane_answers_the_bytes_of_the_batch_path(
    library: str, task: str, tmp_path: Path
) -> None:
    """Compiled LightGBM/XGBoost through their C function, CatBoost through its numpy trees:
    the rendered answer is byte for byte the one-row batch answer."""
    bundle, frame = numeric_bundle(library, task, features=6, trees=20, rows=300)
    model = loaded(bundle, tmp_path)
    if library != "catboost" and unavailable_reason(library) is None:
        assert enable_compiled(model.bundle, tmp_path / "compiled") is not None
    assert model.row_lane
    from arbor_inference.domain import _postprocess, _row_outcome  # the two paths, side by side
    from arbor_inference.inputs import Table

    for i in range(12):
        row = tuple(frame.row(i))
        for probabilities in (True, False):
            outcome = _row_outcome(model, row, probabilities)
            assert outcome is not None
            lane = render_row(RowResult(SERVED, model.classes, model.class_values, *outcome))
            table = Table.from_frame(frame[i : i + 1], model.spec)
            batch = _postprocess(model, SERVED, model.predict_raw(table, 256), probabilities)
            assert lane == render_predict(batch)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_a_blend_answers_one_row_as_its_batch_path_does(task: str, tmp_path: Path) -> None:
    from arbor_inference.domain import _postprocess, _row_outcome
    from arbor_inference.inputs import Table
    from arbor_ml.ensemble import blend_bundles

    parts = [numeric_bundle(lib, task, features=5, trees=10, rows=200) for lib in LIBRARIES]
    frame = parts[0][1]
    model = loaded(blend_bundles([bundle for bundle, _ in parts], [0.5, 0.3, 0.2]), tmp_path)
    assert model.row_lane
    for i in range(6):
        outcome = _row_outcome(model, tuple(frame.row(i)), True)
        assert outcome is not None
        lane = render_row(RowResult(SERVED, model.classes, model.class_values, *outcome))
        table = Table.from_frame(frame[i : i + 1], model.spec)
        batch = _postprocess(model, SERVED, model.predict_raw(table, 256), True)
        assert lane == render_predict(batch)


def test_a_busy_or_failing_compiled_row_leaves_the_answer_to_the_batch_path(
    tmp_path: Path,
) -> None:
    if unavailable_reason("lightgbm") is not None:
        pytest.skip(unavailable_reason("lightgbm"))
    bundle, frame = numeric_bundle("lightgbm", "binary", features=4, trees=10, rows=200)
    model = loaded(bundle, tmp_path)
    predictor = enable_compiled(model.bundle, tmp_path / "compiled")
    assert predictor is not None and model.fast is not None
    row = tuple(frame.row(0))
    expected = model.fast.predict_row(row)
    caller = predictor.row
    with caller._busy:  # another thread is in the buffers
        assert caller(row) is None
    assert caller(row) == expected[1:]  # the raw output: P(class 1)

    class Broken:
        @property
        def row(self) -> Callable[[object], list[float]]:
            raise RuntimeError("compiled row failed")

    model.bundle.model.compiled = Broken()
    with pytest.raises(RuntimeError):
        model.fast.predict_row(row)  # the domain catches this and the batch path answers


def test_rendering_one_row_matches_the_batch_renderer_for_every_task() -> None:
    cases = [
        (
            RowResult(SERVED, ["no", "yes"], ["no", "yes"], 1, [0.25, 0.75], None),
            PredictResult(
                SERVED,
                1,
                TaskType.BINARY,
                label_index=np.array([1]),
                class_values=["no", "yes"],
                classes=["no", "yes"],
                probabilities=np.array([[0.25, 0.75]]),
            ),
        ),
        (
            RowResult(SERVED, ["0", "1", "2"], [0, 1, 2], 2, None, None),
            PredictResult(
                SERVED,
                1,
                TaskType.MULTICLASS,
                label_index=np.array([2]),
                class_values=[0, 1, 2],
                classes=["0", "1", "2"],
            ),
        ),
        (
            RowResult(SERVED, [], [], None, None, -3.5),
            PredictResult(SERVED, 1, TaskType.REGRESSION, values=np.array([-3.5])),
        ),
    ]
    for row, batch in cases:
        assert render_row(row) == render_predict(batch)
        parsed = pb.PredictResponse.FromString(render_row(row))
        assert parsed.row_count == 1 and parsed.served_model.model == "m"


# --------------------------------------------------------------------------- served


@pytest.mark.integration
@pytest.mark.parametrize("library", ["lightgbm", "catboost"])
async def test_a_served_row_answers_as_the_same_row_in_a_batch(
    library: str, stack: Stack, unique: Callable[[str], str]
) -> None:
    bundle, frame = numeric_bundle(library, "binary", features=6, trees=15, rows=300)
    version = await stack.register(unique("row"), bundle)
    async with private_inference(stack.settings, COMPILED_OPTIONS) as (runner, stub):
        selector = common_pb2.ModelSelector(model_version=version.name)
        inference = runner.inference  # type: ignore[attr-defined]
        for i in range(4):
            row = frame[i : i + 1]
            shape = columnar if i % 2 else json_rows
            alone = await stub.Predict(
                pb.PredictRequest(model=selector, input=shape(row), include_probabilities=True)
            )
            in_batch = await stub.Predict(  # two rows: the batch path
                pb.PredictRequest(
                    model=selector,
                    input=columnar(pl.concat([row, frame[10:11]])),
                    include_probabilities=True,
                )
            )
            assert alone.labels[0] == in_batch.labels[0]
            assert list(alone.probabilities) == list(in_batch.probabilities[:2])
            assert alone.served_model == in_batch.served_model and alone.row_count == 1
        assert inference.row_lane_calls >= 3  # the first may have loaded the model
