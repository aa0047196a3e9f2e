"""The one place that maps (model type, task) to a trainer.

Library modules are imported inside the match arms, so importing :mod:`arbor_ml` does not
load CatBoost, XGBoost and LightGBM; an inference process loads only the one it serves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from arbor_core.errors import InvalidArgument
from arbor_ml.trainers.base import TrainedModel, Trainer
from arbor_ml.types import ModelType, TaskType, parse_model_type, parse_task_type


def get_trainer(
    model_type: ModelType | str | None = None,
    task: TaskType | str = TaskType.BINARY,
    *,
    metric: str | None = None,
    search_space: Mapping[str, Any] | None = None,
) -> Trainer:
    """The trainer for a library and a task; CatBoost when ``model_type`` is unset.

    Raises ``InvalidArgument`` naming ``model_type``, ``task``, ``metric`` (one that does
    not fit the task) or ``search_space.<param>`` (a bad override).
    """
    model = parse_model_type(model_type)
    kind = parse_task_type(task)
    options: dict[str, Any] = {"metric": metric, "search_space": search_space}
    _trainable(model)
    match model, kind:
        case ModelType.CATBOOST, TaskType.BINARY | TaskType.MULTICLASS | TaskType.REGRESSION:
            from arbor_ml.trainers.catboost import CatBoostTrainer

            return CatBoostTrainer(kind, **options)
        case ModelType.XGBOOST, TaskType.BINARY | TaskType.MULTICLASS | TaskType.REGRESSION:
            from arbor_ml.trainers.xgboost import XGBoostTrainer

            return XGBoostTrainer(kind, **options)
        case ModelType.LIGHTGBM, TaskType.BINARY | TaskType.MULTICLASS | TaskType.REGRESSION:
            from arbor_ml.trainers.lightgbm import LightGBMTrainer

            return LightGBMTrainer(kind, **options)
        case _:
            raise InvalidArgument(
                f"{model.value} does not support a {kind.value} task", field="task"
            )


def trainer_class(model_type: ModelType | str | None) -> type[Trainer]:
    """The trainer class of a library (for class-level questions such as CUDA support)."""
    match _trainable(parse_model_type(model_type)):
        case ModelType.CATBOOST:
            from arbor_ml.trainers.catboost import CatBoostTrainer

            return CatBoostTrainer
        case ModelType.XGBOOST:
            from arbor_ml.trainers.xgboost import XGBoostTrainer

            return XGBoostTrainer
        case ModelType.LIGHTGBM:
            from arbor_ml.trainers.lightgbm import LightGBMTrainer

            return LightGBMTrainer
    raise InvalidArgument(f"unknown model type {model_type!r}", field="model_type")


def model_class(model_type: ModelType | str | None) -> type[TrainedModel]:
    """The :class:`TrainedModel` that loads this library's native files."""
    match parse_model_type(model_type):
        case ModelType.CATBOOST:
            from arbor_ml.trainers.catboost import CatBoostModel

            return CatBoostModel
        case ModelType.XGBOOST:
            from arbor_ml.trainers.xgboost import XGBoostModel

            return XGBoostModel
        case ModelType.LIGHTGBM:
            from arbor_ml.trainers.lightgbm import LightGBMModel

            return LightGBMModel
        case ModelType.ENSEMBLE:
            from arbor_ml.ensemble import EnsembleModel

            return EnsembleModel
    raise InvalidArgument(f"unknown model type {model_type!r}", field="model_type")


def model_from_bytes(
    model_type: ModelType | str | None,
    data: bytes,
    *,
    task: TaskType,
    feature_names: list[str],
    categorical_features: list[str],
    n_classes: int,
) -> TrainedModel:
    """A model loaded from its file, with the file's SHA-256 (which keys the compiled cache)."""
    model = model_class(model_type).from_bytes(
        data,
        task=task,
        feature_names=feature_names,
        categorical_features=categorical_features,
        n_classes=n_classes,
    )
    model.source_sha256 = hashlib.sha256(data).hexdigest()
    return model


def _trainable(model: ModelType) -> ModelType:
    if model is ModelType.ENSEMBLE:
        raise InvalidArgument(
            "an ensemble is blended from a study's trials, not trained by one library",
            field="model_type",
        )
    return model
