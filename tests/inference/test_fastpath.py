"""The numpy replay of the saved preprocessing predicts exactly what the Polars path does."""

from __future__ import annotations

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
    make_frame,
    model_version_message,
    numeric_bundle,
    private_inference,
    save,
    train_bundle,
)

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2 as pb
from arbor_core.artifacts import LocalArtifactStore
from arbor_inference.domain import LoadedModel, load_model, store_root_uri
from arbor_inference.fastpath import OBLIVIOUS_TREE_ROWS
from arbor_inference.inputs import Table, WireInput
from arbor_inference.resolver import ResolvedVersion
from arbor_ml import ModelBundle
from arbor_ml.ensemble import blend_bundles

LIBRARIES = ("catboost", "lightgbm", "xgboost")


def loaded(bundle: ModelBundle, tmp_path: Path, *, compiled: bool = False) -> LoadedModel:
    store = LocalArtifactStore(tmp_path / "store")
    message = model_version_message(save(bundle, store, "m", 1), "experiments/e")
    message.name, message.model, message.version = "models/m/versions/1", "m", 1
    return load_model(
        ResolvedVersion.from_proto(message), store, store_root_uri(store), compiled=compiled
    )


@pytest.mark.parametrize("library", ["catboost", "xgboost", "lightgbm"])
def test_numeric_model_uses_the_replay_at_any_size(library: str, tmp_path: Path) -> None:
    bundle, frame = numeric_bundle(library, "binary", features=6, trees=15, rows=400)
    model = loaded(bundle, tmp_path)
    assert model.fast is not None and model.fast.numeric_only
    big = pl.concat([frame, frame])[:700].with_columns(  # over the single-thread cut-off
        pl.when(pl.int_range(700) % 7 == 0).then(None).otherwise(pl.col("f1")).alias("f1")
    )
    for rows in (1, 700):
        table = Table.from_frame(big[:rows], model.spec)
        np.testing.assert_array_equal(
            model.predict_raw(table, fast_max_rows=0), bundle.predict_raw(big[:rows])
        )


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_large_batch_of_doubles_is_decoded_as_the_type_its_model_compares(
    library: str, tmp_path: Path
) -> None:
    """CatBoost and XGBoost compare float32 features: their batches are read as float32 from
    the request bytes (one copy), with the same answers as the float64 matrix gives."""
    bundle, frame = numeric_bundle(library, "multiclass", features=6, trees=15, rows=400)
    model = loaded(bundle, tmp_path, compiled=True)
    raw = pb.PredictRequest(input=columnar(frame)).SerializeToString()
    wire = WireInput.of(raw, pb.PredictRequest.DESCRIPTOR.fields_by_name["input"].number)
    assert wire is not None
    dtype = model.matrix_dtype(frame.height, fast_max_rows=0, numeric_batches=True)
    assert dtype is (np.float64 if library == "lightgbm" else np.float32)
    table = wire.decode(model.spec, max_rows=1000, dtype=dtype)
    assert table is not None and table.matrix is not None and table.matrix.dtype == dtype
    as_doubles = Table.from_matrix(frame.columns, frame.to_numpy().T.copy())
    np.testing.assert_array_equal(model.predict_raw(table, 0), model.predict_raw(as_doubles, 0))
    # (a compiled predictor agrees with its library within 1e-6)
    np.testing.assert_allclose(
        model.predict_raw(table, 0), bundle.predict_raw(frame), rtol=1e-6, atol=1e-7
    )
    # float32 Arrow columns: the same answers as the same values sent as doubles
    singles = frame.cast(pl.Float32)
    raw = pb.PredictRequest(input=arrow_ipc(singles)).SerializeToString()
    wire = WireInput.of(raw, pb.PredictRequest.DESCRIPTOR.fields_by_name["input"].number)
    assert wire is not None
    table = wire.decode(model.spec, max_rows=1000, dtype=dtype)
    assert table is not None and table.matrix is not None and table.matrix.dtype == dtype
    widened = Table.from_matrix(frame.columns, singles.to_numpy().T.astype(np.float64))
    np.testing.assert_array_equal(model.predict_raw(table, 0), model.predict_raw(widened, 0))
    # a batch the Polars path takes is read as float64, what that path reads
    assert model.matrix_dtype(frame.height, fast_max_rows=0, numeric_batches=False) is np.float64


@pytest.mark.parametrize("library", ["catboost", "xgboost", "lightgbm"])
def test_large_batches_on_several_threads_give_the_same_numbers(
    library: str, tmp_path: Path
) -> None:
    bundle, frame = numeric_bundle(library, "binary", features=6, trees=15, rows=400)
    model = loaded(bundle, tmp_path, compiled=library != "catboost")
    big = pl.concat([frame] * 13)  # 5,200 rows: past the libraries' one-thread cut-offs
    table = Table.from_frame(big, model.spec)
    expected = bundle.predict_raw(big)
    for threads in (1, 2):
        np.testing.assert_allclose(
            model.predict_raw(table, 0, True, threads), expected, rtol=1e-6, atol=1e-7
        )


@pytest.mark.parametrize(
    ("library", "task"),
    [("catboost", "multiclass"), ("xgboost", "binary"), ("lightgbm", "regression")],
)
def test_categorical_model_replays_small_batches_only(
    library: str, task: str, tmp_path: Path
) -> None:
    bundle = train_bundle(library, task, iterations=10, rows=200)
    model = loaded(bundle, tmp_path)
    assert model.fast is not None and not model.fast.numeric_only
    frame = (
        make_frame(40, 5, task)
        .drop("y")
        .with_columns(
            pl.Series("color", ["red", None, "purple", "green"] * 10)  # seen, missing, unseen
        )
    )
    table = Table.from_frame(frame, model.spec)
    np.testing.assert_array_equal(model.fast.predict_raw(table), bundle.predict_raw(frame))
    np.testing.assert_array_equal(model.predict_raw(table, 8), bundle.predict_raw(frame))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_blend_replays_its_members_margins(task: str, tmp_path: Path) -> None:
    """CatBoost (category strings), LightGBM and XGBoost (codes): the replay gives the Polars
    path's numbers, unseen and missing categories included."""
    bundle = blend_bundles(
        [train_bundle(library, task, iterations=10, rows=200) for library in LIBRARIES],
        [0.5, 0.3, 0.2],
    )
    model = loaded(bundle, tmp_path)
    assert model.fast is not None
    frame = (
        make_frame(40, 5, task)
        .drop("y")
        .with_columns(pl.Series("color", ["red", None, "purple", "green"] * 10))
    )
    table = Table.from_frame(frame, model.spec)
    np.testing.assert_allclose(
        model.fast.predict_raw(table), bundle.predict_raw(frame), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_numeric_blends_catboost_member_answers_small_batches_in_numpy(
    task: str, tmp_path: Path
) -> None:
    members = [
        numeric_bundle(library, task, features=6, trees=15, rows=400) for library in LIBRARIES
    ]
    bundle = blend_bundles([b for b, _ in members], [0.4, 0.4, 0.2])
    frame = members[0][1]
    model = loaded(bundle, tmp_path, compiled=True)
    assert model.fast is not None
    catboost = model.fast.member_slots[0].oblivious
    assert catboost is not None and model.fast.member_slots[1].oblivious is None
    calls = catboost.calls
    for rows in (1, 5):  # compiled LightGBM and XGBoost may attach meanwhile: 1e-6 apart
        table = Table.from_frame(frame[:rows], model.spec)
        np.testing.assert_allclose(
            model.predict_raw(table, 64), bundle.predict_raw(frame[:rows]), rtol=1e-6, atol=1e-7
        )
    assert catboost.calls == calls + 2


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_replay_follows_a_compiled_predictor(library: str, tmp_path: Path) -> None:
    from arbor_ml.compiled import enable_compiled, unavailable_reason

    if unavailable_reason(library) is not None:
        pytest.skip(unavailable_reason(library))
    bundle, frame = numeric_bundle(library, "binary", features=4, trees=10, rows=300)
    model = loaded(bundle, tmp_path)
    library_answer = bundle.predict_raw(frame)
    assert model.bundle.model.compiled is None
    assert enable_compiled(model.bundle, tmp_path / "compiled") is not None
    assert model.fast is not None
    for rows in (1, 300):  # the replay and the Polars path agree, both compiled now
        table = Table.from_frame(frame[:rows], model.spec)
        np.testing.assert_array_equal(
            model.predict_raw(table, fast_max_rows=0), model.bundle.predict_raw(frame[:rows])
        )
    np.testing.assert_allclose(
        model.predict_raw(Table.from_frame(frame, model.spec), 0), library_answer, atol=1e-5
    )


def test_a_failing_compiled_predictor_is_detached_not_fatal(tmp_path: Path) -> None:
    bundle, frame = numeric_bundle("lightgbm", "regression", features=4, trees=10, rows=300)
    model = loaded(bundle, tmp_path)

    class Broken:
        def predict(self, x: np.ndarray, **kwargs: object) -> np.ndarray:
            raise RuntimeError("compiled predict failed")

    model.bundle.model.compiled = Broken()
    table = Table.from_frame(frame, model.spec)
    np.testing.assert_array_equal(model.predict_raw(table, 0), bundle.predict_raw(frame))
    assert model.bundle.model.compiled is None


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_small_catboost_batches_use_the_oblivious_predictor(task: str, tmp_path: Path) -> None:
    bundle, frame = numeric_bundle("catboost", task, features=6, trees=15, rows=400)
    model = loaded(bundle, tmp_path, compiled=True)  # compiled: fast predictors allowed
    assert model.fast is not None and model.fast.oblivious is not None
    frame = frame.with_columns(  # missing values take the saved fill, as on the Polars path
        pl.when(pl.int_range(frame.height) % 5 == 0).then(None).otherwise(pl.col("f2")).alias("f2")
    )
    assert model.fast.oblivious_max_rows == OBLIVIOUS_TREE_ROWS // 15  # rows x trees budget
    limit = model.fast.oblivious_max_rows = 48  # as for ~340 trees: both sides of the cut
    for rows in (1, limit, limit + 1, 300):
        calls = model.fast.oblivious.calls
        table = Table.from_frame(frame[:rows], model.spec)
        answer = model.predict_raw(table, fast_max_rows=0)
        # CatBoost's own predict (the library path) gives the same numbers
        np.testing.assert_allclose(answer, bundle.predict_raw(frame[:rows]), rtol=1e-12, atol=0)
        used = model.fast.oblivious.calls - calls
        assert used == (1 if rows <= limit else 0)
    assert loaded(bundle, tmp_path / "off").fast.oblivious is None  # type: ignore[union-attr]


def test_catboost_with_categoricals_keeps_its_own_predict(tmp_path: Path) -> None:
    bundle = train_bundle("catboost", "binary", iterations=5, rows=200)
    model = loaded(bundle, tmp_path, compiled=True)
    assert model.fast is not None and model.fast.oblivious is None


@pytest.mark.integration
async def test_one_row_catboost_predict_uses_the_oblivious_predictor(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    bundle, frame = numeric_bundle("catboost", "binary", features=6, trees=15, rows=400)
    version = await stack.register(unique("oblivious"), bundle)
    async with private_inference(stack.settings, COMPILED_OPTIONS) as (runner, stub):
        selector = common_pb2.ModelSelector(model_version=version.name)
        for row in range(3):
            response = await stub.Predict(
                pb.PredictRequest(
                    model=selector, input=columnar(frame[row : row + 1]), include_probabilities=True
                )
            )
            np.testing.assert_allclose(  # the library path's answer
                np.array(response.probabilities),
                bundle.predict_raw(frame[row : row + 1]).reshape(-1),
                rtol=1e-12,
                atol=0,
            )
        models = runner.inference.models  # type: ignore[attr-defined]
        served = [models.peek(key) for key in list(models) if key.startswith(version.name)]
        assert len(served) == 1 and served[0].fast is not None
        assert served[0].fast.oblivious is not None and served[0].fast.oblivious.calls >= 3


def test_a_failing_oblivious_predictor_is_dropped_not_fatal(tmp_path: Path) -> None:
    bundle, frame = numeric_bundle("catboost", "regression", features=4, trees=10, rows=300)
    model = loaded(bundle, tmp_path, compiled=True)
    assert model.fast is not None and model.fast.oblivious is not None

    class Broken:
        def predict(self, x: np.ndarray) -> np.ndarray:
            raise RuntimeError("oblivious predict failed")

    model.fast.oblivious = Broken()
    table = Table.from_frame(frame[:1], model.spec)
    np.testing.assert_array_equal(model.predict_raw(table, 0), bundle.predict_raw(frame[:1]))
    assert model.fast.oblivious is None  # CatBoost's predict from now on


def test_a_batch_running_alone_may_use_every_core_and_shares_them_otherwise() -> None:
    from arbor_inference.domain import CoreShare

    cores = CoreShare(4)
    with cores.claim() as alone:
        assert alone == 4
        with cores.claim() as second:
            assert second == 2
            with cores.claim() as third:
                assert third == 1
    with cores.claim() as again:
        assert again == 4
