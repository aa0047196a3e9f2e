"""Trainers, one module per library; :func:`get_trainer` picks one."""

from arbor_ml.trainers.base import (
    EvalMetric,
    FitResult,
    FitSettings,
    OnIteration,
    TrainedModel,
    Trainer,
    evaluate_model,
)
from arbor_ml.trainers.dispatch import get_trainer, model_class, trainer_class

__all__ = [
    "EvalMetric",
    "FitResult",
    "FitSettings",
    "OnIteration",
    "TrainedModel",
    "Trainer",
    "evaluate_model",
    "get_trainer",
    "model_class",
    "trainer_class",
]
