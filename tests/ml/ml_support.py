"""Helpers for the arbor_ml tests: tiny generated tables and fast fit settings.

Everything is small (300 rows, 30 boosting rounds, one thread) so the whole ``tests/ml`` run
stays well under a minute on two shared cores.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from arbor_ml import FitSettings

FAST = FitSettings(iterations=30, early_stopping_rounds=10, seed=7, threads=1)
TARGETS = {"binary": "y_binary", "multiclass": "y_multi", "regression": "y_reg"}
MODEL_TYPES = ("catboost", "xgboost", "lightgbm")
TASKS = ("binary", "multiclass", "regression")
DATASETS = Path("/work/shared/datasets")


def make_frame(n: int = 300, seed: int = 0) -> pl.DataFrame:
    """Numeric (with nulls and a NaN), integer, string categoricals (with nulls), boolean and
    datetime features, a constant and an all-null column, and one target per task."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(100.0, 30.0, n)
    count = rng.integers(0, 20, n)
    color = rng.choice(["red", "green", "blue", "black"], n)
    city = rng.choice(["paris", "oslo", "rome", "lima", "kyiv", "baku"], n)
    flag = rng.random(n) < 0.4
    signup = [
        dt.datetime(2023, 1, 1) + dt.timedelta(hours=int(h)) for h in rng.integers(0, 9000, n)
    ]
    month = np.array([d.month for d in signup])
    score = (
        (amount - 100.0) / 30.0
        + 1.2 * (color == "red")
        - 0.8 * (city == "oslo")
        + 0.6 * flag
        + 0.15 * (month - 6)
        + rng.normal(0.0, 0.7, n)
    )
    amount_col = np.where(np.arange(n) % 10 == 3, np.nan, amount)  # NaN: missing too
    frame = pl.DataFrame(
        {
            "amount": amount_col,
            "count": count,
            "color": color,
            "city": city,
            "flag": flag,
            "signup": signup,
            "constant": ["same"] * n,
            "empty": pl.Series([None] * n, dtype=pl.Float64),
            "y_binary": np.where(score > 0.3, "yes", "no"),
            "y_multi": np.array(["low", "mid", "high"])[np.digitize(score, [-0.5, 0.8])],
            "y_reg": 3.0 * score + 10.0,
        }
    )
    index = pl.int_range(pl.len())
    return frame.with_columns(
        pl.when(index % 7 == 0).then(None).otherwise(pl.col("amount")).alias("amount"),
        pl.when(index % 12 == 5).then(None).otherwise(pl.col("color")).alias("color"),
        pl.when(index % 17 == 2).then(None).otherwise(pl.col("signup")).alias("signup"),
    )


def features(frame: pl.DataFrame, task: str) -> pl.DataFrame:
    """The frame with only the target of ``task``."""
    return frame.drop([t for k, t in TARGETS.items() if k != task])
