"""One call from two frames to a :class:`~arbor_ml.bundle.ModelBundle` (no tuning).

A study (the training service) uses the pieces instead: :func:`prepare_data` once,
:meth:`Trainer.fit` per trial, :func:`build_bundle` for the best one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from arbor_ml.bundle import ModelBundle, build_bundle
from arbor_ml.data import prepare_data
from arbor_ml.postprocessing import PostprocessingOptions
from arbor_ml.preprocessing import PreprocessingOptions
from arbor_ml.trainers.base import FitSettings
from arbor_ml.trainers.dispatch import get_trainer
from arbor_ml.types import ModelType, TaskType


def train(
    train: pl.DataFrame,
    valid: pl.DataFrame | None = None,
    *,
    target: str,
    model_type: ModelType | str | None = None,
    task: TaskType | str | None = None,
    metric: str | None = None,
    params: Mapping[str, Any] | None = None,
    settings: FitSettings | None = None,
    preprocessing: PreprocessingOptions | None = None,
    postprocessing: PostprocessingOptions | None = None,
    weight_column: str | None = None,
    positive_class: Any = None,
    target_transform: str = "none",
    extra_metadata: Mapping[str, Any] | None = None,
) -> ModelBundle:
    """Fit one model (``params=None``: the library's defaults) and package it."""
    data = prepare_data(
        train,
        valid,
        target=target,
        task=task,
        model_type=model_type,
        weight_column=weight_column,
        preprocessing=preprocessing,
        positive_class=positive_class,
        target_transform=target_transform,
    )
    trainer = get_trainer(data.model_type, data.task, metric=metric)
    result = trainer.fit(data, params, settings)
    return build_bundle(data, result, postprocessing=postprocessing, extra_metadata=extra_metadata)
