"""Fixtures for the arbor_ml tests: a generated table, cached trained models, a store.

A model is trained once per (library, task) per session and reused by every test that only
reads it; tests that change training train their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from ml_support import DATASETS, FAST, TARGETS, features, make_frame

from arbor_core.artifacts import LocalArtifactStore
from arbor_ml import FitResult, ModelBundle, PreparedData, build_bundle, get_trainer, prepare_data


@pytest.fixture(scope="session")
def frame() -> pl.DataFrame:
    return make_frame()


@pytest.fixture(scope="session")
def parts(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    return frame[:220], frame[220:]


TrainedCase = tuple[PreparedData, FitResult, ModelBundle]


@pytest.fixture(scope="session")
def trained(parts: tuple[pl.DataFrame, pl.DataFrame]) -> Callable[[str, str], TrainedCase]:
    """``trained(model_type, task)``: (data, fit result, bundle), trained once per session."""
    cache: dict[tuple[str, str], TrainedCase] = {}

    def get(model_type: str, task: str) -> TrainedCase:
        if (model_type, task) not in cache:
            train, valid = (features(p, task) for p in parts)
            data = prepare_data(train, valid, target=TARGETS[task], model_type=model_type)
            result = get_trainer(model_type, task).fit(data, settings=FAST)
            cache[(model_type, task)] = (data, result, build_bundle(data, result))
        return cache[(model_type, task)]

    return get


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture(scope="session")
def credit_slice() -> pl.DataFrame:
    """500 rows of a real credit-scoring table: string categoricals and missing values."""
    path = DATASETS / "credit_data.parquet"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return pl.read_parquet(path).head(500)
