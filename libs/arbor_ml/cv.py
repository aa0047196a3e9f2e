"""Cross-validation folds that follow the split's own rules.

A study with ``cv_folds = k`` pools the split's train and validation parts and cuts them into
k folds the same way the split service cut the parts, so no fold leaks what the split kept
apart:

* ``random`` — shuffled rows, k near-equal folds;
* ``stratified`` — every class spread evenly over the folds (classification);
* ``group`` — all rows of one entity in one fold (entity splits); groups are dealt largest
  first to the fold with the fewest rows, so folds stay balanced;
* ``time`` — forward chaining: the rows sorted by the time column are cut into k + 1 blocks
  (rows sharing a timestamp never straddle a cut); fold i trains on blocks 0..i and validates
  on block i + 1, so a model never sees the future of the rows it is scored on.

Folds are index arrays into the pooled frame; the same seed gives the same folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from arbor_core.errors import InvalidArgument

FoldKind = Literal["random", "stratified", "group", "time"]
FOLD_KINDS: tuple[FoldKind, ...] = ("random", "stratified", "group", "time")
MAX_FOLDS = 20


@dataclass(frozen=True)
class FoldRule:
    """How to cut folds: the kind and the column it needs (target, entity or time column)."""

    kind: FoldKind = "random"
    column: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "column": self.column}


@dataclass(frozen=True)
class Fold:
    """One fold: row indices (into the pooled frame) to train on and to validate on."""

    number: int
    train: np.ndarray
    valid: np.ndarray


def check_folds(k: int, field: str = "study.cv_folds") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_FOLDS:
        raise InvalidArgument(f"cv_folds must be an integer in [2, {MAX_FOLDS}]", field=field)
    return k


def make_folds(frame: pl.DataFrame, k: int, rule: FoldRule, *, seed: int = 0) -> list[Fold]:
    """k folds of ``frame`` by ``rule``. Raises ``InvalidArgument`` when the frame cannot
    hold k folds of that kind (fewer groups, timestamps or rows than needed)."""
    check_folds(k)
    n = frame.height
    if n < k + (1 if rule.kind == "time" else 0):
        raise InvalidArgument(f"{n} rows cannot make {k} folds", field="study.cv_folds")
    if rule.kind != "random" and (not rule.column or rule.column not in frame.columns):
        raise InvalidArgument(
            f"{rule.kind} folds need a column of the data, got {rule.column!r}",
            field="study.cv_folds",
        )
    rng = np.random.default_rng(seed)
    match rule.kind:
        case "random":
            assignment = _random(n, k, rng)
        case "stratified":
            assert rule.column is not None
            assignment = _stratified(frame.get_column(rule.column), k, rng)
        case "group":
            assert rule.column is not None
            assignment = _grouped(frame.get_column(rule.column), k, rng)
        case "time":
            assert rule.column is not None
            return _forward_chaining(frame.get_column(rule.column), k)
        case _:
            raise InvalidArgument(f"unknown fold kind {rule.kind!r}", field="study.cv_folds")
    everything = np.arange(n)
    return [Fold(i, everything[assignment != i], everything[assignment == i]) for i in range(k)]


def _random(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    assignment = np.empty(n, dtype=np.int64)
    assignment[rng.permutation(n)] = np.arange(n) % k
    return assignment


def _codes(series: pl.Series) -> np.ndarray:
    """Dense integer codes of a column's values, nulls being one value of their own."""
    return (
        series.cast(pl.String, strict=False)
        .fill_null("\x00null")
        .rank("dense")
        .cast(pl.Int64)
        .to_numpy()
    )


def _stratified(target: pl.Series, k: int, rng: np.random.Generator) -> np.ndarray:
    codes = _codes(target)
    assignment = np.empty(codes.size, dtype=np.int64)
    offset = 0
    for value in np.unique(codes):
        rows = np.flatnonzero(codes == value)
        rng.shuffle(rows)
        # Continue the round-robin where the previous class stopped, so small classes do
        # not all start in fold 0 (fold sizes stay within one row of each other).
        assignment[rows] = (np.arange(rows.size) + offset) % k
        offset = (offset + rows.size) % k
    return assignment


def _grouped(groups: pl.Series, k: int, rng: np.random.Generator) -> np.ndarray:
    codes = _codes(groups)
    unique, inverse, sizes = np.unique(codes, return_inverse=True, return_counts=True)
    if unique.size < k:
        raise InvalidArgument(
            f"column {groups.name!r} has {unique.size} groups; {k} folds need at least {k}",
            field="study.cv_folds",
        )
    order = rng.permutation(unique.size)
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, ties shuffled
    fold_of_group = np.empty(unique.size, dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    for g in order:
        target = int(np.argmin(load))
        fold_of_group[g] = target
        load[target] += sizes[g]
    return fold_of_group[inverse]


def _forward_chaining(times: pl.Series, k: int) -> list[Fold]:
    if times.null_count():
        raise InvalidArgument(
            f"time column {times.name!r} has nulls; forward-chaining folds need every time",
            field="study.cv_folds",
        )
    order = np.argsort(times.to_physical().to_numpy(), kind="stable")
    ranks = times.rank("dense").to_numpy()[order]  # equal times share a rank
    n = order.size
    cuts: list[int] = []
    for b in range(1, k + 1):
        cut = round(n * b / (k + 1))
        # Move the cut forward past rows sharing the timestamp just before it.
        while 0 < cut < n and ranks[cut] == ranks[cut - 1]:
            cut += 1
        cuts.append(cut)
    bounds = [0, *cuts, n]
    folds: list[Fold] = []
    for i in range(k):
        train = order[: bounds[i + 1]]
        valid = order[bounds[i + 1] : bounds[i + 2]]
        if train.size == 0 or valid.size == 0:
            raise InvalidArgument(
                f"time column {times.name!r} has too few distinct times for {k} folds",
                field="study.cv_folds",
            )
        folds.append(Fold(i, np.sort(train), np.sort(valid)))
    return folds


def pool(train: pl.DataFrame, valid: pl.DataFrame | None) -> pl.DataFrame:
    """The rows cross-validation cuts: train then validation (validation's columns aligned)."""
    if valid is None or valid.height == 0:
        return train
    return pl.concat([train, valid.select(train.columns)], how="vertical_relaxed")
