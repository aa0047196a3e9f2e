"""The decision threshold tuned on validation: better F1 than 0.5, constraints honoured."""

from __future__ import annotations

import numpy as np
import pytest

from arbor_core.errors import InvalidArgument
from arbor_ml import metrics as M
from arbor_ml.threshold import parse_threshold_objective, tune_threshold


def _imbalanced(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """10% positives whose scores sit low: a model that ranks well but is timid at 0.5."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int64)
    p1 = np.clip(rng.normal(0.12 + 0.25 * y, 0.08), 0.0, 1.0)
    return y, p1


def test_f1_threshold_beats_one_half() -> None:
    y, p1 = _imbalanced()
    result = tune_threshold(y, p1, "f1")
    at_half = M.f1(y, (p1 >= 0.5).astype(np.int64))
    tuned = M.f1(y, (p1 >= result.threshold).astype(np.int64))
    assert result.value == pytest.approx(tuned)
    assert result.value_at_default == pytest.approx(at_half)
    assert tuned > at_half + 0.3
    assert 0.0 < result.threshold < 0.5 and result.feasible


@pytest.mark.parametrize("bound", [0.5, 0.9])
def test_constrained_objectives_meet_their_bound(bound: float) -> None:
    y, p1 = _imbalanced(seed=3)
    result = tune_threshold(y, p1, f"precision@recall={bound}")
    pred = p1 >= result.threshold
    recall = (pred & (y == 1)).sum() / (y == 1).sum()
    precision = (pred & (y == 1)).sum() / pred.sum()
    assert recall >= bound and result.value == pytest.approx(precision)
    result = tune_threshold(y, p1, f"recall@precision={bound}")
    pred = p1 >= result.threshold
    precision = (pred & (y == 1)).sum() / max(pred.sum(), 1)
    assert result.feasible and precision >= bound


def test_unreachable_constraint_comes_as_close_as_it_can() -> None:
    y = np.array([0, 1, 0, 1])
    p1 = np.array([0.9, 0.8, 0.7, 0.1])  # the top score is a negative: precision 1 is impossible
    result = tune_threshold(y, p1, "recall@precision=1")
    assert not result.feasible
    assert result.threshold == pytest.approx(0.8)  # the best precision there is (1 of 2)


def test_objectives_parse_or_name_the_field() -> None:
    assert parse_threshold_objective(" F1 ").text == "f1"
    assert parse_threshold_objective("precision@recall=0.9").bound == 0.9
    assert parse_threshold_objective("recall@precision=1").text == "recall@precision=1"
    for bad in ("auc", "precision@recall=1.5", "recall@precision=", "f2"):
        with pytest.raises(InvalidArgument) as err:
            parse_threshold_objective(bad)
        assert err.value.violations[0].field == "postprocessing.threshold_objective"
