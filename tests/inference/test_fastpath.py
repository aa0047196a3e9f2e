"""The numpy replay of the saved preprocessing predicts exactly what the Polars path does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from inference_support import make_frame, model_version_message, numeric_bundle, save, train_bundle

from arbor_core.artifacts import LocalArtifactStore
from arbor_inference.domain import LoadedModel, load_model, store_root_uri
from arbor_inference.inputs import Table
from arbor_inference.resolver import ResolvedVersion
from arbor_ml import ModelBundle


def loaded(bundle: ModelBundle, tmp_path: Path) -> LoadedModel:
    store = LocalArtifactStore(tmp_path / "store")
    message = model_version_message(save(bundle, store, "m", 1), "experiments/e")
    message.name, message.model, message.version = "models/m/versions/1", "m", 1
    return load_model(ResolvedVersion.from_proto(message), store, store_root_uri(store))


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
