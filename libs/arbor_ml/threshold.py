"""The binary decision threshold, tuned on validation for a chosen objective.

A classifier's probabilities rank rows; the threshold turns them into decisions, and 0.5 is
rarely the right one on imbalanced data. :func:`tune_threshold` picks, among the distinct
validation scores, the threshold that is best for one of these objectives:

* ``f1`` — F1 of the positive class;
* ``accuracy``;
* ``precision@recall=R`` — the highest precision among thresholds whose recall is >= R;
* ``recall@precision=P`` — the highest recall among thresholds whose precision is >= P.

Every candidate is evaluated in one pass (sorted scores, cumulative counts), so tuning on a
large validation part costs a sort. The chosen value is stored in the model's
``postprocessing.json`` (``Postprocessor.threshold``), where serving applies it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from arbor_core.errors import InvalidArgument

#: Objectives without a parameter.
SIMPLE_OBJECTIVES = ("f1", "accuracy")
_CONSTRAINED = re.compile(r"(precision@recall|recall@precision)=(0?\.\d+|0|1|1\.0+|0\.\d+)")


@dataclass(frozen=True)
class ThresholdObjective:
    """A parsed objective: ``kind`` is f1, accuracy, precision@recall or recall@precision."""

    kind: str
    bound: float | None = None

    @property
    def text(self) -> str:
        return self.kind if self.bound is None else f"{self.kind}={self.bound:g}"


def parse_threshold_objective(
    text: str, field: str = "postprocessing.threshold_objective"
) -> ThresholdObjective:
    """``"f1"``, ``"accuracy"``, ``"precision@recall=0.9"`` or ``"recall@precision=0.9"``."""
    value = (text or "").strip().lower().replace(" ", "")
    if value in SIMPLE_OBJECTIVES:
        return ThresholdObjective(value)
    match = _CONSTRAINED.fullmatch(value)
    if match is None:
        raise InvalidArgument(
            f"threshold objective {text!r} is not one of f1, accuracy, precision@recall=R, "
            "recall@precision=P (R and P in [0, 1])",
            field=field,
            reason="INVALID_THRESHOLD_OBJECTIVE",
        )
    bound = float(match.group(2))
    if not 0.0 <= bound <= 1.0:
        raise InvalidArgument("the bound must be in [0, 1]", field=field)
    return ThresholdObjective(match.group(1), bound)


@dataclass(frozen=True)
class ThresholdResult:
    """The chosen threshold, its objective value, and the objective at 0.5 for comparison.

    ``feasible`` is False when no threshold meets a ``@`` constraint; the threshold is then
    the one that comes closest to it (the highest recall, or the highest precision).
    """

    threshold: float
    objective: str
    value: float
    value_at_default: float
    feasible: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "objective": self.objective,
            "value": self.value,
            "value_at_0.5": self.value_at_default,
            "feasible": self.feasible,
        }


def _counts(
    y: np.ndarray, p1: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Candidate thresholds (distinct scores, descending) and the weighted TP/FP at each,
    predicting positive for every score >= the candidate."""
    order = np.argsort(-p1, kind="mergesort")
    scores, labels, weights = p1[order], y[order], w[order]
    tp = np.cumsum(weights * labels)
    fp = np.cumsum(weights * (1 - labels))
    # Keep the last row of each run of equal scores: ties are all in or all out.
    last = np.r_[scores[1:] != scores[:-1], True]
    return scores[last], tp[last], fp[last], float(tp[-1]), float(fp[-1])


def _at(y: np.ndarray, p1: np.ndarray, w: np.ndarray, threshold: float, kind: str) -> float:
    pred = p1 >= threshold
    tp = float(w[pred & (y == 1)].sum())
    fp = float(w[pred & (y == 0)].sum())
    fn = float(w[~pred & (y == 1)].sum())
    tn = float(w[~pred & (y == 0)].sum())
    if kind == "accuracy":
        total = tp + fp + fn + tn
        return (tp + tn) / total if total else 0.0
    if kind == "f1":
        denom = 2 * tp + fp + fn
        return 2 * tp / denom if denom else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision if kind == "precision@recall" else recall


def tune_threshold(
    y_true: np.ndarray,
    p1: np.ndarray,
    objective: str | ThresholdObjective = "f1",
    *,
    weights: np.ndarray | None = None,
) -> ThresholdResult:
    """The threshold on ``p1`` (positive-class probability) that is best for ``objective``.

    ``y_true`` holds 0/1 (1 = the positive class). A tie between thresholds goes to the one
    nearest 0.5, so a flat objective keeps the usual threshold. Raises ``InvalidArgument``
    for an unknown objective or mismatched lengths.
    """
    goal = (
        objective
        if isinstance(objective, ThresholdObjective)
        else (parse_threshold_objective(objective))
    )
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    p = np.asarray(p1, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise InvalidArgument(
            f"{y.size} labels but {p.size} scores", field="postprocessing.threshold_objective"
        )
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64)
    if y.size == 0:
        return ThresholdResult(0.5, goal.text, math.nan, math.nan, False)
    default_value = _at(y, p, w, 0.5, goal.kind)
    scores, tp, fp, pos, neg = _counts(y, p, w)
    fn = pos - tp
    tn = neg - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(pos > 0, tp / pos, 0.0)
        match goal.kind:
            case "f1":
                denom = 2 * tp + fp + fn
                value = np.where(denom > 0, 2 * tp / denom, 0.0)
                feasible = np.ones_like(value, dtype=bool)
            case "accuracy":
                value = (tp + tn) / max(pos + neg, 1e-300)
                feasible = np.ones_like(value, dtype=bool)
            case "precision@recall":
                value = precision
                feasible = recall >= (goal.bound or 0.0) - 1e-12
            case _:  # recall@precision
                value = recall
                feasible = precision >= (goal.bound or 0.0) - 1e-12
    ok = bool(feasible.any())
    if not ok:
        # Nothing meets the constraint: come as close to it as possible.
        value = recall if goal.kind == "precision@recall" else precision
        feasible = np.ones_like(value, dtype=bool)
    candidates = np.where(feasible, value, -np.inf)
    best = float(candidates.max())
    ties = np.flatnonzero(candidates >= best - 1e-12)
    pick = int(ties[np.argmin(np.abs(scores[ties] - 0.5))])
    threshold = float(np.clip(scores[pick], 0.0, 1.0))
    chosen = _at(y, p, w, threshold, goal.kind)
    return ThresholdResult(threshold, goal.text, chosen, default_value, ok)
