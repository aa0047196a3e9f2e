"""Prediction latency of a trained model, measured the same way for every trial.

A study's leaderboard shows, beside each trial's score, what its model costs to serve:
:func:`predict_ms_per_1k_rows` times ``TrainedModel.predict_output`` on 1,000 preprocessed
validation rows (rows are repeated when the part is smaller), best of a few runs after one
warm-up call, in milliseconds. Preprocessing is left out: it is the same for every trial of
a library. The registry's promotion gate reads the same number from the version's metrics
(``predict_ms_per_1k_rows``).
"""

from __future__ import annotations

import time

import polars as pl

from arbor_ml.trainers.base import TrainedModel

#: The metric key under which a model version records this latency.
LATENCY_METRIC = "predict_ms_per_1k_rows"


def sample_rows(x: pl.DataFrame, rows: int = 1000) -> pl.DataFrame:
    """Exactly ``rows`` rows of ``x``: its head, repeated when it is shorter."""
    if x.height == 0:
        return x
    if x.height >= rows:
        return x.head(rows)
    repeats = -(-rows // x.height)
    return pl.concat([x] * repeats).head(rows)


def predict_ms_per_1k_rows(
    model: TrainedModel,
    x: pl.DataFrame,
    *,
    rows: int = 1000,
    repeats: int = 3,
    max_seconds: float = 0.25,
) -> float | None:
    """Milliseconds ``model`` takes to predict 1,000 rows of ``x`` (None without rows).

    Bounded by ``max_seconds``: a model slow enough that the runs would take longer (tens of
    thousands of trees) is timed once, on fewer rows, and scaled; its 1,000-row figure is
    seconds, and measuring it three times would eat a study's budget for nothing.
    """
    batch = sample_rows(x, rows)
    if batch.height == 0:
        return None
    warm = batch.head(8)
    started = time.perf_counter()
    model.predict_output(warm)  # warm-up: lazy initialisation, caches
    per_row = (time.perf_counter() - started) / warm.height
    if per_row * batch.height * repeats > max_seconds:
        batch = batch.head(max(warm.height, min(batch.height, int(max_seconds / per_row))))
        repeats = 1
    best = float("inf")
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        model.predict_output(batch)
        best = min(best, time.perf_counter() - started)
    return round(best * 1000.0 * 1000 / batch.height, 3)


def importance_rows_within(
    model: TrainedModel,
    x: pl.DataFrame,
    seconds: float,
    *,
    max_rows: int = 500,
    min_rows: int = 20,
) -> int:
    """How many rows the bundle's global SHAP ranking can use within ``seconds``.

    TreeSHAP costs grow with trees x leaves x depth per row: 500 rows of a 300-tree, depth-10
    CatBoost model take about a minute, which a study's time budget cannot absorb. The cost of
    10 rows is measured and the rest scaled, between ``min_rows`` and ``max_rows``.
    """
    probe = x.head(10)
    if probe.height == 0:
        return max_rows
    started = time.perf_counter()
    try:
        model.native_contributions(probe)
    except Exception:  # a model without native SHAP: the explainer falls back by itself
        return min_rows
    per_row = (time.perf_counter() - started) / probe.height
    if per_row <= 0:
        return max_rows
    return int(min(max_rows, max(min_rows, seconds / per_row)))
