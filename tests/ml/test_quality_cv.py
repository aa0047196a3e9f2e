"""Cross-validation folds follow the split's rules: stratified, grouped, forward-chaining."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from arbor_core.errors import InvalidArgument
from arbor_ml.cv import FoldRule, make_folds, pool


def _frame(n: int = 200) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "y": (rng.random(n) < 0.15).astype(np.int64),  # imbalanced: ~15% positives
            "entity": rng.integers(0, 23, n),
            "when": [datetime(2024, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 60, n)],
            "x": rng.random(n),
        }
    )


def _check_partition(folds: list, n: int) -> None:
    for fold in folds:
        assert np.intersect1d(fold.train, fold.valid).size == 0
        assert fold.train.size + fold.valid.size == n


def test_stratified_folds_keep_the_class_balance() -> None:
    frame = _frame()
    folds = make_folds(frame, 5, FoldRule("stratified", "y"), seed=1)
    assert len(folds) == 5
    _check_partition(folds, frame.height)
    # Every row is validated exactly once.
    assert np.array_equal(np.sort(np.concatenate([f.valid for f in folds])), np.arange(200))
    positives = frame["y"].sum()
    for fold in folds:
        in_fold = int(frame["y"].to_numpy()[fold.valid].sum())
        assert abs(in_fold - positives / 5) <= 1
        assert abs(fold.valid.size - 40) <= 1
    # The same seed gives the same folds; another seed other ones.
    again = make_folds(frame, 5, FoldRule("stratified", "y"), seed=1)
    assert all(np.array_equal(a.valid, b.valid) for a, b in zip(folds, again, strict=True))
    other = make_folds(frame, 5, FoldRule("stratified", "y"), seed=2)
    assert not all(np.array_equal(a.valid, b.valid) for a, b in zip(folds, other, strict=True))


def test_group_folds_never_split_an_entity() -> None:
    frame = _frame()
    folds = make_folds(frame, 4, FoldRule("group", "entity"))
    _check_partition(folds, frame.height)
    entity = frame["entity"].to_numpy()
    seen: set[int] = set()
    for fold in folds:
        groups = set(entity[fold.valid].tolist())
        assert not groups & set(entity[fold.train].tolist())
        assert not groups & seen
        seen |= groups
    sizes = [f.valid.size for f in folds]
    assert max(sizes) - min(sizes) <= max(np.bincount(entity))  # balanced by rows
    with pytest.raises(InvalidArgument) as err:
        make_folds(frame.head(10), 20, FoldRule("group", "entity"))
    assert err.value.violations[0].field == "study.cv_folds"


def test_time_folds_chain_forward() -> None:
    frame = _frame()
    folds = make_folds(frame, 4, FoldRule("time", "when"))
    when = frame["when"].to_numpy()
    previous = 0
    for fold in folds:
        assert when[fold.train].max() < when[fold.valid].min()  # no future in train
        assert fold.train.size > previous  # the train part grows
        previous = fold.train.size
    # Rows sharing a timestamp never straddle a cut.
    valid_times = [set(when[f.valid].tolist()) for f in folds]
    for a in range(len(valid_times)):
        for b in range(a + 1, len(valid_times)):
            assert not valid_times[a] & valid_times[b]


def test_pool_and_bad_requests() -> None:
    frame = _frame(20)
    pooled = pool(frame.head(12), frame.tail(8).select(list(reversed(frame.columns))))
    assert pooled.columns == frame.columns and pooled.height == 20
    for k in (1, 21):
        with pytest.raises(InvalidArgument):
            make_folds(frame, k, FoldRule())
    with pytest.raises(InvalidArgument):
        make_folds(frame, 3, FoldRule("stratified", "missing"))
    random = make_folds(frame, 4, FoldRule())
    assert sorted(f.valid.size for f in random) == [5, 5, 5, 5]
