"""Evaluation metrics in numpy, with their optimisation direction and a default per task.

Inputs are in the model's label space: ``y_true`` holds class indices ``0..K-1`` for
classification (the order of ``classes``) and floats for regression; ``proba`` is
``(n, K)``. Every metric takes optional sample weights. A metric that cannot be computed
(one class only in ``y_true`` for ROC AUC) is ``nan`` rather than an exception, so a
small validation part does not crash a study.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from arbor_core.errors import InvalidArgument
from arbor_ml.types import Direction, TaskType, parse_task_type

_EPS = 1e-15

_CLASSIFICATION = frozenset({TaskType.BINARY, TaskType.MULTICLASS})
_REGRESSION = frozenset({TaskType.REGRESSION})


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is for: its direction, tasks and the prediction kind it reads.

    ``input`` is ``proba`` (class probabilities), ``label`` (class indices after the
    threshold or argmax) or ``value`` (regression values).
    """

    name: str
    direction: Direction
    tasks: frozenset[TaskType]
    input: str


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("roc_auc", Direction.MAXIMIZE, _CLASSIFICATION, "proba"),
        MetricSpec("log_loss", Direction.MINIMIZE, _CLASSIFICATION, "proba"),
        MetricSpec("accuracy", Direction.MAXIMIZE, _CLASSIFICATION, "label"),
        MetricSpec("f1", Direction.MAXIMIZE, _CLASSIFICATION, "label"),
        MetricSpec("rmse", Direction.MINIMIZE, _REGRESSION, "value"),
        MetricSpec("mae", Direction.MINIMIZE, _REGRESSION, "value"),
        MetricSpec("r2", Direction.MAXIMIZE, _REGRESSION, "value"),
    )
}

DEFAULT_METRICS: dict[TaskType, str] = {
    TaskType.BINARY: "roc_auc",
    TaskType.MULTICLASS: "log_loss",
    TaskType.REGRESSION: "rmse",
}


def default_metric(task: TaskType | str) -> str:
    """The metric a study optimises when the caller names none."""
    return DEFAULT_METRICS[parse_task_type(task)]


def metric_direction(metric: str) -> Direction:
    return _spec(metric).direction


def metrics_for_task(task: TaskType | str) -> list[str]:
    task = parse_task_type(task)
    return [name for name, spec in METRICS.items() if task in spec.tasks]


def validate_metric(metric: str | None, task: TaskType | str, field: str = "metric") -> str:
    """The metric's canonical name; ``None``/empty picks the task default.

    Raises ``InvalidArgument(field=field)`` for an unknown metric or one that does not
    fit the task (``rmse`` for a classifier, ``roc_auc`` for a regressor).
    """
    task = parse_task_type(task)
    if metric is None or not metric.strip():
        return DEFAULT_METRICS[task]
    name = metric.strip().lower()
    spec = METRICS.get(name)
    if spec is None:
        raise InvalidArgument(
            f"unknown metric {metric!r}; known: {', '.join(METRICS)}", field=field
        )
    if task not in spec.tasks:
        raise InvalidArgument(
            f"metric {name!r} does not fit a {task.value} task; use one of "
            f"{', '.join(metrics_for_task(task))}",
            field=field,
        )
    return name


def _spec(metric: str) -> MetricSpec:
    spec = METRICS.get(metric)
    if spec is None:
        raise InvalidArgument(f"unknown metric {metric!r}", field="metric")
    return spec


# --- the metrics themselves ------------------------------------------------------------


def _weights(n: int, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    return np.asarray(weights, dtype=np.float64)


def roc_auc_binary(
    y_true: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Weighted Mann-Whitney AUC with ties counted as one half; ``nan`` if one class only."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    w = _weights(len(y), weights)
    w_pos = np.where(y, w, 0.0)
    w_neg = np.where(y, 0.0, w)
    total_pos, total_neg = w_pos.sum(), w_neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    _, group = np.unique(s, return_inverse=True)
    pos_g = np.bincount(group, weights=w_pos)
    neg_g = np.bincount(group, weights=w_neg)
    neg_below = np.cumsum(neg_g) - neg_g
    return float(np.sum(pos_g * (neg_below + 0.5 * neg_g)) / (total_pos * total_neg))


def roc_auc(y_true: np.ndarray, proba: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Binary AUC on the positive column, or the macro one-vs-rest mean for multiclass."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true)
    if proba.ndim == 1:
        return roc_auc_binary(y, proba, weights)
    if proba.shape[1] == 2:
        return roc_auc_binary(y == 1, proba[:, 1], weights)
    scores = [roc_auc_binary(y == k, proba[:, k], weights) for k in range(proba.shape[1])]
    finite = [s for s in scores if not np.isnan(s)]
    return float(np.mean(finite)) if finite else float("nan")


def log_loss(y_true: np.ndarray, proba: np.ndarray, weights: np.ndarray | None = None) -> float:
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true).astype(np.int64)
    if proba.ndim == 1:
        proba = np.column_stack([1.0 - proba, proba])
    p = np.clip(proba[np.arange(len(y)), y], _EPS, 1.0)
    return float(np.average(-np.log(p), weights=_weights(len(y), weights)))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> float:
    y, p = np.asarray(y_true), np.asarray(y_pred)
    return float(np.average(y == p, weights=_weights(len(y), weights)))


def _f1_for(y: np.ndarray, p: np.ndarray, w: np.ndarray, k: int) -> float:
    tp = w[(y == k) & (p == k)].sum()
    fp = w[(y != k) & (p == k)].sum()
    fn = w[(y == k) & (p != k)].sum()
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom > 0 else 0.0


def f1(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    n_classes: int = 2,
) -> float:
    """F1 of the positive class (index 1) for binary, the unweighted class mean (macro) else."""
    y, p = np.asarray(y_true), np.asarray(y_pred)
    w = _weights(len(y), weights)
    if n_classes <= 2:
        return _f1_for(y, p, w, 1)
    present = np.union1d(np.unique(y), np.unique(p))
    return float(np.mean([_f1_for(y, p, w, int(k)) for k in present]))


def rmse(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> float:
    err = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return float(np.sqrt(np.average(err**2, weights=_weights(len(err), weights))))


def mae(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> float:
    err = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return float(np.average(np.abs(err), weights=_weights(len(err), weights)))


def r2(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> float:
    y = np.asarray(y_true, dtype=np.float64)
    w = _weights(len(y), weights)
    ss_res = np.sum(w * (y - np.asarray(y_pred, dtype=np.float64)) ** 2)
    ss_tot = np.sum(w * (y - np.average(y, weights=w)) ** 2)
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return float(1.0 - ss_res / ss_tot)


def labels_from_proba(proba: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class indices: positive when ``p1 >= threshold`` for binary, argmax otherwise."""
    proba = np.asarray(proba)
    if proba.ndim == 1:
        return (proba >= threshold).astype(np.int64)
    if proba.shape[1] == 2:
        return (proba[:, 1] >= threshold).astype(np.int64)
    return np.argmax(proba, axis=1).astype(np.int64)


def compute_metric(
    metric: str,
    y_true: np.ndarray,
    output: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    threshold: float = 0.5,
) -> float:
    """One metric from the model output: ``(n, K)`` probabilities or regression values."""
    spec = _spec(metric)
    fn: Callable[..., float]
    if spec.input == "value":
        fn = {"rmse": rmse, "mae": mae, "r2": r2}[metric]
        return fn(y_true, output, weights)
    if spec.input == "proba":
        fn = roc_auc if metric == "roc_auc" else log_loss
        return fn(y_true, output, weights)
    labels = labels_from_proba(output, threshold)
    if metric == "accuracy":
        return accuracy(y_true, labels, weights)
    n_classes = 2 if np.ndim(output) == 1 else int(np.shape(output)[1])
    return f1(y_true, labels, weights, n_classes=n_classes)


def evaluate(
    task: TaskType | str,
    y_true: np.ndarray,
    output: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    threshold: float = 0.5,
    metrics: Iterable[str] | None = None,
) -> dict[str, float]:
    """Every metric of the task (or the ones named), keyed by name."""
    names = list(metrics) if metrics is not None else metrics_for_task(task)
    return {
        name: compute_metric(name, y_true, output, weights=weights, threshold=threshold)
        for name in names
    }
