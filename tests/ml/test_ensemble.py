"""A blend of models of several libraries: chosen on validation, served and explained as one."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from ml_support import TASKS, features

from arbor_core.errors import FailedPrecondition, InvalidArgument
from arbor_ml import build_bundle, get_trainer, load_bundle, metrics
from arbor_ml.ensemble import (
    POOL_SIZE,
    EnsembleModel,
    ValidationPool,
    margin_from_output,
    output_from_margin,
    select_blend,
    shared_preprocessor,
)
from arbor_ml.trainers.base import FitResult
from arbor_ml.types import ModelType, TaskType

LIBRARIES = ("catboost", "lightgbm", "xgboost")


def _blend(trained, task: str, weights=(0.5, 0.3, 0.2)):
    """An ensemble of the session's three models of ``task`` (CatBoost trained on category
    strings, the others on codes), the bundle around it, and the members' own bundles."""
    cases = {library: trained(library, task) for library in LIBRARIES}
    shared = shared_preprocessor([data.preprocessor for data, _, _ in cases.values()])
    model = EnsembleModel.blend(
        [
            (result.model, data.preprocessor, weight, i)
            for i, ((data, result, _), weight) in enumerate(
                zip(cases.values(), weights, strict=True)
            )
        ],
        shared,
    )
    data = next(d for d, _, _ in cases.values() if d.preprocessor is shared)
    first = cases["catboost"][1]
    result = FitResult(
        model=model,
        params={},
        library_params={},
        metric=first.metric,
        direction=first.direction,
        score=None,
        metrics={},
        best_iteration=None,
        iterations=0,
        stopped_by_callback=False,
        device=first.device,
        duration_s=0.0,
    )
    return build_bundle(data, result, importance_method="native_shap"), cases


@pytest.mark.parametrize("task", TASKS)
def test_the_blend_is_the_weighted_margin_of_its_members(trained, parts, task: str) -> None:
    bundle, cases = _blend(trained, task)
    valid = features(parts[1], task)
    margins = [cases[lib][2].predict_margin(valid) for lib in LIBRARIES]
    expected = 0.5 * margins[0] + 0.3 * margins[1] + 0.2 * margins[2]
    np.testing.assert_allclose(bundle.predict_margin(valid), expected, rtol=1e-9, atol=1e-9)
    output = bundle.predict_raw(valid)
    np.testing.assert_allclose(output, output_from_margin(TaskType(task), expected), atol=1e-12)
    if task != "regression":
        np.testing.assert_allclose(output.sum(axis=1), 1.0)
    assert bundle.model_type is ModelType.ENSEMBLE
    assert bundle.metadata["model_type"] == "ensemble"


@pytest.mark.parametrize("task", TASKS)
def test_a_saved_blend_loads_and_predicts_the_same(trained, parts, store, task: str) -> None:
    bundle, _ = _blend(trained, task)
    valid = features(parts[1], task)
    bundle.save(store, f"models/blend-{task}/v1")
    loaded = load_bundle(store, f"models/blend-{task}/v1")
    assert isinstance(loaded.model, EnsembleModel)
    assert loaded.model.member_types == list(LIBRARIES)
    assert [m.weight for m in loaded.model.members] == pytest.approx([0.5, 0.3, 0.2])
    np.testing.assert_allclose(loaded.predict_raw(valid), bundle.predict_raw(valid), atol=1e-12)
    # one blend always gives the same bytes (fixed zip entry dates)
    assert bundle.model.to_bytes() == bundle.model.to_bytes()


def test_a_catboost_member_reads_its_categories_back_from_codes(trained, parts) -> None:
    """Unknown and missing categories included: the blend's CatBoost member predicts what the
    CatBoost bundle predicts from the raw frame."""
    bundle, cases = _blend(trained, "binary", weights=(1.0, 0.0, 0.0))
    valid = features(parts[1], "binary").with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0)
        .then(pl.lit("never-seen"))
        .otherwise(pl.col("city"))
        .alias("city")
    )
    assert bundle.preprocessor.categorical_output == "codes"
    np.testing.assert_allclose(
        bundle.predict_raw(valid), cases["catboost"][2].predict_raw(valid), atol=1e-12
    )


@pytest.mark.parametrize("task", TASKS)
def test_shap_values_of_the_blend_add_up_to_its_margin(trained, parts, task: str) -> None:
    bundle, _ = _blend(trained, task)
    valid = features(parts[1], task).head(20)
    explanation = bundle.explain(valid)
    assert explanation.method == "ensemble.weighted_native_shap"
    assert explanation.contributions is not None and explanation.base_values is not None
    total = explanation.contributions.sum(axis=-1) + explanation.base_values
    margin = bundle.predict_margin(valid)
    margin = margin[:, None] if margin.ndim == 1 else margin
    if task == "multiclass":  # softmax inputs are defined up to a per-row constant
        total = total - total.mean(axis=1, keepdims=True)
        margin = margin - margin.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(total, margin, atol=1e-5)
    with pytest.raises(InvalidArgument) as err:
        bundle.explain(valid, method="shap")
    assert err.value.violations[0].field == "method"


def test_a_corrupt_ensemble_file_is_refused(trained) -> None:
    bundle, _ = _blend(trained, "regression")
    with pytest.raises(FailedPrecondition) as err:
        EnsembleModel.from_bytes(
            b"not a zip",
            task=TaskType.REGRESSION,
            feature_names=bundle.model.feature_names,
            categorical_features=[],
            n_classes=0,
        )
    assert err.value.reason == "MODEL_BUNDLE_INCOMPATIBLE"


def test_an_ensemble_is_not_a_library_to_train() -> None:
    with pytest.raises(InvalidArgument) as err:
        get_trainer("ensemble", "binary")
    assert err.value.violations[0].field == "model_type"


# --------------------------------------------------------------------------- selection


def _rmse_of(y: np.ndarray):
    return lambda margin: metrics.rmse(y, margin)


def test_selection_blends_models_whose_errors_cancel() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=2000)
    noise = rng.normal(size=(3, 2000))
    candidates = {
        0: y + 0.5 * noise[0],  # the best alone
        1: y + 0.6 * noise[1],
        2: y + 0.6 * noise[2],
        3: y + 3.0 * noise[0],  # bad, and its errors are those of 0
    }
    blend = select_blend(candidates, _rmse_of(y), maximize=False, most=3)
    assert blend.members[0] == 0
    assert set(blend.members) == {0, 1, 2}
    assert sum(blend.weights.values()) == pytest.approx(1.0)
    assert blend.value < blend.single_value * 0.8  # three independent errors: ~1/sqrt(3)


def test_selection_keeps_the_best_alone_when_nothing_helps() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    base = y + 0.1 * rng.normal(size=500)
    blend = select_blend({7: base, 8: base + 1.0}, _rmse_of(y), maximize=False, most=3)
    assert blend.weights == {7: 1.0}
    assert blend.value == blend.single_value


def test_selection_respects_the_size_and_what_is_allowed() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=2000)
    candidates = {k: y + (0.5 + 0.01 * k) * rng.normal(size=2000) for k in range(6)}
    assert len(select_blend(candidates, _rmse_of(y), maximize=False, most=2).weights) == 2
    without_five = select_blend(
        candidates,
        _rmse_of(y),
        maximize=False,
        most=6,
        allowed=lambda members: 5 not in members,
    )
    assert 5 not in without_five.weights
    assert len(without_five.weights) >= 3


def test_selection_maximises_auc_on_log_odds() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.4).astype(np.int64)
    signal = y * 1.0
    a = signal + rng.normal(size=3000)
    b = signal + rng.normal(size=3000)

    def auc(margin: np.ndarray) -> float:
        return metrics.roc_auc(y, output_from_margin(TaskType.BINARY, margin))

    blend = select_blend({1: a, 2: b}, auc, maximize=True, most=3)
    assert set(blend.weights) == {1, 2}
    assert blend.value > blend.single_value


@pytest.mark.parametrize("task", [TaskType.BINARY, TaskType.MULTICLASS])
def test_margins_and_outputs_are_inverse(task: TaskType) -> None:
    rng = np.random.default_rng(4)
    k = 2 if task is TaskType.BINARY else 4
    margin = rng.normal(size=(50, k))
    margin = margin[:, 1] if task is TaskType.BINARY else margin
    output = output_from_margin(task, margin)
    np.testing.assert_allclose(output_from_margin(task, margin_from_output(task, output)), output)


def test_the_pool_keeps_the_best_trials_and_prices_a_likely_blend() -> None:
    y = np.zeros(10)
    pool = ValidationPool(task=TaskType.REGRESSION, metric="rmse", maximize=False, y=y)
    for trial in range(POOL_SIZE + 4):  # values 0, 1, 2...: lower is better
        kind = ("catboost", "lightgbm", "xgboost")[trial % 3]
        pool.add(trial, float(trial), np.full(10, float(trial)), kind, cost=10.0 + trial)
    assert sorted(pool.values) == list(range(POOL_SIZE))  # the worst four were dropped
    pool.add(99, 0.5, np.zeros(3), "catboost", 1.0)  # other rows: not comparable
    pool.add(98, float("nan"), np.zeros(10), "catboost", 1.0)
    assert 99 not in pool.values and 98 not in pool.values
    # the best (0, catboost) plus the best of each other library (1, lightgbm; 2, xgboost)
    assert pool.likely_cost(0, most=3) == 10.0 + 11.0 + 12.0
    assert pool.likely_cost(0, most=2) == 10.0 + 11.0
    assert pool.likely_cost(0, most=1) == 10.0


def test_a_likely_blend_within_a_limit_keeps_the_partners_that_fit() -> None:
    pool = ValidationPool(task=TaskType.REGRESSION, metric="rmse", maximize=False, y=np.zeros(4))
    pool.add(0, 517.0, np.zeros(4), "lightgbm", cost=1.5)  # the best, cheap
    pool.add(1, 521.0, np.zeros(4), "catboost", cost=14.0)  # the best partner, costly
    pool.add(2, 527.0, np.zeros(4), "xgboost", cost=1.5)
    assert pool.likely_cost(0, most=3) == 17.0
    # the cheap third member no longer pushes the costly partner out: it is left out instead
    assert pool.likely_cost(0, most=3, limit=16.0) == 15.5
    # a partner that cannot fit is skipped, the next one joins
    assert pool.likely_cost(0, most=3, limit=5.0) == 3.0
    assert pool.likely_cost(0, most=2, limit=5.0) == 3.0
    # the best trial itself is always counted
    assert pool.likely_cost(1, most=3, limit=1.0) == 14.0


def test_the_pool_blends_outputs_as_the_ensemble_does() -> None:
    y = np.array([0, 1, 1, 0])
    pool = ValidationPool(task=TaskType.BINARY, metric="log_loss", maximize=False, y=y)
    a = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]])
    b = np.array([[0.6, 0.4], [0.1, 0.9], [0.2, 0.8], [0.9, 0.1]])
    pool.add(1, 0.5, a, "catboost", 1.0)
    pool.add(2, 0.4, b, "lightgbm", 1.0)
    blended = pool.blended_output({1: 0.5, 2: 0.5})
    logit = 0.5 * margin_from_output(TaskType.BINARY, a) + 0.5 * margin_from_output(
        TaskType.BINARY, b
    )
    np.testing.assert_allclose(blended[:, 1], 1 / (1 + np.exp(-logit)))
    assert pool.score(margin_from_output(TaskType.BINARY, blended)) < max(
        metrics.log_loss(y, a), metrics.log_loss(y, b)
    )
