"""Compiled inference (``arbor_ml.compiled``): same numbers as the library, a cache keyed by
the model file's SHA-256, and a fall-back to the library whenever compiling is not possible.

Models are the session's small ones (30 rounds) trained on the generated table, which has
string categoricals (native categoricals in LightGBM and XGBoost), nulls and a NaN.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from arbor_ml import ModelBundle, compiled
from arbor_ml.trainers.base import TrainedModel

pytestmark = pytest.mark.skipif(
    compiled.unavailable_reason("lightgbm") is not None,
    reason=f"compiled inference unavailable here: {compiled.unavailable_reason('lightgbm')}",
)

CASES = [
    (library, task)
    for library in ("lightgbm", "xgboost")
    for task in ("binary", "multiclass", "regression")
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled")


def _fresh(bundle: ModelBundle) -> ModelBundle:
    """An independent copy (the session's bundles are shared with other tests)."""
    return ModelBundle.from_files(bundle.to_files())


def _random_rows(bundle: ModelBundle, frame: pl.DataFrame, n: int = 400) -> pl.DataFrame:
    """Rows drawn from the table, numbers jittered, with extra nulls and unseen categories."""
    rng = np.random.default_rng(11)
    names = [c.name for c in bundle.signature.inputs]
    rows = frame.select(names).sample(n, with_replacement=True, seed=3)
    columns = []
    for series in rows.get_columns():
        drop = pl.Series(rng.random(n) < 0.15)
        if series.dtype.is_float():
            series = series + pl.Series(rng.normal(0.0, 5.0, n))
        elif series.dtype == pl.String:
            unseen = pl.Series(rng.random(n) < 0.1)
            series = pl.select(
                pl.when(unseen).then(pl.lit("never-seen")).otherwise(series).alias(series.name)
            ).to_series()
        series = pl.select(
            pl.when(drop).then(None).otherwise(series).alias(series.name)
        ).to_series()
        columns.append(series)
    return pl.DataFrame(columns)


@pytest.mark.parametrize(("library", "task"), CASES)
def test_compiled_predictions_match_the_library(
    trained: Callable[[str, str], tuple],
    frame: pl.DataFrame,
    cache_dir: Path,
    library: str,
    task: str,
) -> None:
    _, _, shared = trained(library, task)
    bundle = _fresh(shared)
    rows = _random_rows(bundle, frame)
    expected = bundle.predict_raw(rows)
    expected_margin = bundle.predict_margin(rows)

    predictor = compiled.enable_compiled(bundle, cache_dir)
    assert predictor is not None
    assert bundle.model.compiled is predictor
    actual = bundle.predict_raw(rows)
    actual_margin = bundle.predict_margin(rows)

    assert actual.shape == expected.shape
    model = bundle.model
    scale = np.maximum(np.abs(expected), 1.0)
    assert np.max(np.abs(actual - expected) / scale) <= compiled.tolerance(model, margin=False)
    scale = np.maximum(np.abs(expected_margin), 1.0)
    diff = np.max(np.abs(actual_margin - expected_margin) / scale)
    assert diff <= compiled.tolerance(model, margin=True)
    if library == "lightgbm" or task != "regression":
        assert np.max(np.abs(actual - expected)) <= 1e-6  # the headline promise
    # the full pipeline gives the same labels too
    if task != "regression":
        labels, reference = bundle.predict(rows).labels, shared.predict(rows).labels
        assert labels is not None and reference is not None
        assert labels.to_list() == reference.to_list()


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_threshold_rows_with_missing_values_match(
    trained: Callable[[str, str], tuple], cache_dir: Path, library: str
) -> None:
    """Rows on and beside every split threshold, NaN and every category code (incl. unseen)."""
    _, _, shared = trained(library, "binary")
    model: TrainedModel = _fresh(shared).model
    predictor = compiled.compile_model(model, cache_dir)
    assert predictor is not None
    rows = compiled.check_rows(model, rows=2000, seed=5)
    assert np.isnan(rows).any()
    for margin in (False, True):
        diff = compiled.max_difference(model, predictor, rows, margin=margin)
        assert diff <= compiled.tolerance(model, margin=margin)
    assert compiled.max_difference(model, predictor, rows, margin=False) <= 1e-6


def test_large_batches_split_over_threads_give_the_same_numbers(
    trained: Callable[[str, str], tuple], cache_dir: Path
) -> None:
    _, _, shared = trained("xgboost", "multiclass")
    model: TrainedModel = _fresh(shared).model
    predictor = compiled.compile_model(model, cache_dir)
    assert predictor is not None
    rows = compiled.check_rows(model, rows=compiled.PARALLEL_ROWS + 1001, seed=9)
    one = predictor.predict(rows, threads=1)
    np.testing.assert_array_equal(predictor.predict(rows, threads=3), one)
    assert compiled.max_difference(model, predictor, rows, margin=False) <= 1e-6


def test_cache_is_keyed_by_the_model_file(
    trained: Callable[[str, str], tuple], tmp_path: Path
) -> None:
    _, _, shared = trained("lightgbm", "regression")
    model = _fresh(shared).model
    first = compiled.compile_model(model, tmp_path)
    assert first is not None and first.compile_seconds is not None
    sha = compiled.model_sha256(model)
    assert first.path == compiled.artifact_path(tmp_path, sha)
    assert sha in str(first.path)

    # a restart (a new model object from the same file) reuses the build
    again = compiled.compile_model(_fresh(shared).model, tmp_path)
    assert again is not None and again.compile_seconds is None
    assert again.path == first.path

    # another model never reads this one's library
    _, _, other_bundle = trained("lightgbm", "binary")
    other = _fresh(other_bundle).model
    assert compiled.model_sha256(other) != sha
    assert compiled.artifact_path(tmp_path, compiled.model_sha256(other)) != first.path

    # a library planted under the wrong key is detected and rebuilt, not used
    other_predictor = compiled.compile_model(other, tmp_path)
    assert other_predictor is not None
    victim = _fresh(shared).model
    planted = first.path.with_suffix(".planted")
    shutil.copy(other_predictor.path, planted)
    os.replace(planted, first.path)
    with pytest.raises(compiled.StaleArtifact):
        compiled.CompiledPredictor(first.path, sha)
    rebuilt = compiled.compile_model(victim, tmp_path)
    assert rebuilt is not None and rebuilt.compile_seconds is not None
    rows = compiled.check_rows(victim)
    assert compiled.max_difference(victim, rebuilt, rows, margin=False) <= 1e-6


def test_falls_back_to_the_library_when_off_or_unavailable(
    trained: Callable[[str, str], tuple],
    frame: pl.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, shared = trained("xgboost", "binary")
    rows = _random_rows(shared, frame, 50)
    expected = shared.predict_raw(rows)

    monkeypatch.setenv("ARBOR_COMPILED_INFERENCE", "off")
    bundle = _fresh(shared)
    assert compiled.enable_compiled(bundle, tmp_path) is None
    assert bundle.model.compiled is None
    np.testing.assert_array_equal(bundle.predict_raw(rows), expected)

    monkeypatch.setenv("ARBOR_COMPILED_INFERENCE", "auto")
    prebuilt = tmp_path / "prebuilt"
    assert compiled.compile_model(_fresh(shared).model, prebuilt) is not None
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc, no cc
    assert compiled.unavailable_reason("xgboost") == "no C compiler (gcc) on PATH"
    assert compiled.enable_compiled(bundle, tmp_path / "empty") is None
    np.testing.assert_array_equal(bundle.predict_raw(rows), expected)
    # without a compiler, a library already built into the cache (an image's) still serves
    assert compiled.enable_compiled(bundle, prebuilt) is not None
    np.testing.assert_allclose(bundle.predict_raw(rows), expected, atol=1e-6)


def test_catboost_is_served_by_its_library(
    trained: Callable[[str, str], tuple], tmp_path: Path
) -> None:
    _, _, shared = trained("catboost", "binary")
    bundle = _fresh(shared)
    assert compiled.enable_compiled(bundle, tmp_path) is None
    assert bundle.model.compiled is None


def test_background_build_attaches_when_ready(
    trained: Callable[[str, str], tuple],
    frame: pl.DataFrame,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _, _, shared = trained("lightgbm", "multiclass")
    bundle = _fresh(shared)
    done = threading.Event()
    results: list[object] = []

    def ready(predictor: object) -> None:
        results.append(predictor)
        done.set()

    assert compiled.enable_compiled(bundle, tmp_path, background=True, on_ready=ready) is None
    rows = _random_rows(bundle, frame, 30)
    bundle.predict_raw(rows)  # serves with the library meanwhile
    assert done.wait(120)
    assert results[0] is not None and bundle.model.compiled is results[0]
    # TL2cgen's own log lines go to the log, never into what the process prints (90 trees:
    # it splits them over 5 translation units and says so)
    assert "translation units" not in capfd.readouterr().out

    # next time (a restart) the cached library is attached at once
    again = _fresh(shared)
    predictor = compiled.enable_compiled(again, tmp_path, background=True)
    assert predictor is not None and predictor.compile_seconds is None
    np.testing.assert_allclose(again.predict_raw(rows), shared.predict_raw(rows), atol=1e-6)
