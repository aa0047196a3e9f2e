"""Metrics against scikit-learn, their directions and defaults, and task inference."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from arbor_core.errors import InvalidArgument
from arbor_ml import (
    Direction,
    TaskType,
    compute_metric,
    default_metric,
    evaluate,
    infer_task,
    metric_direction,
    metrics_for_task,
    validate_metric,
)

rng = np.random.default_rng(5)
N = 200
Y_BIN = rng.integers(0, 2, N)
P_BIN = np.clip(0.3 * Y_BIN + rng.random(N) * 0.7, 0.0, 1.0).round(2)  # ties on purpose
PROBA_BIN = np.column_stack([1 - P_BIN, P_BIN])
Y_MULTI = rng.integers(0, 3, N)
RAW = rng.random((N, 3)) + np.eye(3)[Y_MULTI] * 0.8
PROBA_MULTI = RAW / RAW.sum(axis=1, keepdims=True)
WEIGHTS = rng.random(N) + 0.1
Y_REG = rng.normal(size=N)
PRED_REG = Y_REG + rng.normal(scale=0.5, size=N)


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_classification_metrics_match_sklearn(weights) -> None:
    kw = {"sample_weight": weights}
    labels = (P_BIN >= 0.5).astype(int)
    assert compute_metric("roc_auc", Y_BIN, PROBA_BIN, weights=weights) == pytest.approx(
        skm.roc_auc_score(Y_BIN, P_BIN, **kw)
    )
    assert compute_metric("log_loss", Y_BIN, PROBA_BIN, weights=weights) == pytest.approx(
        skm.log_loss(Y_BIN, np.clip(PROBA_BIN, 1e-15, 1), **kw)
    )
    assert compute_metric("accuracy", Y_BIN, PROBA_BIN, weights=weights) == pytest.approx(
        skm.accuracy_score(Y_BIN, labels, **kw)
    )
    assert compute_metric("f1", Y_BIN, PROBA_BIN, weights=weights) == pytest.approx(
        skm.f1_score(Y_BIN, labels, **kw)
    )
    multi_labels = PROBA_MULTI.argmax(axis=1)
    assert compute_metric("roc_auc", Y_MULTI, PROBA_MULTI, weights=weights) == pytest.approx(
        skm.roc_auc_score(Y_MULTI, PROBA_MULTI, multi_class="ovr", average="macro", **kw)
    )
    assert compute_metric("log_loss", Y_MULTI, PROBA_MULTI, weights=weights) == pytest.approx(
        skm.log_loss(Y_MULTI, PROBA_MULTI, **kw)
    )
    assert compute_metric("f1", Y_MULTI, PROBA_MULTI, weights=weights) == pytest.approx(
        skm.f1_score(Y_MULTI, multi_labels, average="macro", **kw)
    )
    assert compute_metric("accuracy", Y_MULTI, PROBA_MULTI, weights=weights) == pytest.approx(
        skm.accuracy_score(Y_MULTI, multi_labels, **kw)
    )


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_regression_metrics_match_sklearn(weights) -> None:
    kw = {"sample_weight": weights}
    assert compute_metric("rmse", Y_REG, PRED_REG, weights=weights) == pytest.approx(
        np.sqrt(skm.mean_squared_error(Y_REG, PRED_REG, **kw))
    )
    assert compute_metric("mae", Y_REG, PRED_REG, weights=weights) == pytest.approx(
        skm.mean_absolute_error(Y_REG, PRED_REG, **kw)
    )
    assert compute_metric("r2", Y_REG, PRED_REG, weights=weights) == pytest.approx(
        skm.r2_score(Y_REG, PRED_REG, **kw)
    )


def test_threshold_changes_label_metrics_only() -> None:
    low = evaluate("binary", Y_BIN, PROBA_BIN, threshold=0.2)
    high = evaluate("binary", Y_BIN, PROBA_BIN, threshold=0.8)
    assert low["roc_auc"] == high["roc_auc"]
    assert low["accuracy"] != high["accuracy"]
    assert set(low) == {"roc_auc", "log_loss", "accuracy", "f1"}


def test_one_class_auc_is_nan_not_an_error() -> None:
    assert np.isnan(compute_metric("roc_auc", np.ones(5), np.full((5, 2), 0.5)))


def test_directions_defaults_and_validation() -> None:
    assert metric_direction("roc_auc") is Direction.MAXIMIZE
    assert metric_direction("log_loss") is Direction.MINIMIZE
    assert metric_direction("rmse") is Direction.MINIMIZE
    assert metric_direction("r2") is Direction.MAXIMIZE
    assert default_metric("binary") == "roc_auc"
    assert default_metric(TaskType.MULTICLASS) == "log_loss"
    assert default_metric("regression") == "rmse"
    assert metrics_for_task("regression") == ["rmse", "mae", "r2"]
    assert validate_metric(None, "binary") == "roc_auc"
    assert validate_metric(" Accuracy ", "multiclass") == "accuracy"
    for bad, task in (("mae", "binary"), ("nope", "regression")):
        with pytest.raises(InvalidArgument) as err:
            validate_metric(bad, task)
        assert err.value.violations[0].field == "metric"


@pytest.mark.parametrize(
    ("values", "dtype", "task"),
    [
        ([True, False, None, True], pl.Boolean, TaskType.BINARY),
        (["yes", "no", "yes", None], pl.String, TaskType.BINARY),
        ([0, 1, 1, 0], pl.Int64, TaskType.BINARY),
        ([0.0, 1.0, 1.0, float("nan")], pl.Float64, TaskType.BINARY),
        (["a", "b", "c", "a"], pl.String, TaskType.MULTICLASS),
        (["a", "b", "c", "a"], pl.Categorical, TaskType.MULTICLASS),
        ([1, 2, 3, 4, 5], pl.Int32, TaskType.MULTICLASS),
        (list(range(50)), pl.Int64, TaskType.REGRESSION),
        ([1.0, 2.0, 3.0], pl.Float64, TaskType.REGRESSION),
        ([0.5, 1.5, 2.25, 3.0], pl.Float32, TaskType.REGRESSION),
    ],
)
def test_infer_task(values, dtype, task: TaskType) -> None:
    assert infer_task(pl.Series("target", values, dtype=dtype, strict=False)) is task


@pytest.mark.parametrize(
    "series",
    [
        pl.Series("target", [None, None], dtype=pl.Int64),
        pl.Series("target", ["only", "only"]),
        pl.Series("target", [[1], [2]]),
    ],
)
def test_infer_task_refuses_what_cannot_be_a_target(series: pl.Series) -> None:
    with pytest.raises(InvalidArgument) as err:
        infer_task(series)
    assert err.value.violations[0].field == "target"
