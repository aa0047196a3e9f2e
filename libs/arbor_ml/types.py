"""Plain string enums shared by every module, and their parsers.

The gRPC services map their protobuf enums onto these; parsing lives here so that a bad
value from any caller becomes the same ``InvalidArgument`` naming the same field.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from arbor_core.errors import InvalidArgument


class ModelType(StrEnum):
    """Gradient-boosting library behind a model (CatBoost is the default), or ``ensemble``:
    a blend of models of several trials that an AUTO study registers (``arbor_ml.ensemble``);
    it is never trained directly."""

    CATBOOST = "catboost"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    ENSEMBLE = "ensemble"


#: The libraries a study can train (every model type but ``ensemble``).
LIBRARIES: tuple[ModelType, ...] = (ModelType.CATBOOST, ModelType.XGBOOST, ModelType.LIGHTGBM)


class TaskType(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"

    @property
    def is_classification(self) -> bool:
        return self is not TaskType.REGRESSION


class Device(StrEnum):
    """Where a trainer runs; ``cuda`` falls back to ``cpu`` when it is not available."""

    CPU = "cpu"
    CUDA = "cuda"


class Direction(StrEnum):
    """Optimisation direction of a metric, spelled as Optuna spells it."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


DEFAULT_MODEL_TYPE = ModelType.CATBOOST


E = TypeVar("E", bound=StrEnum)


def _parse(enum: type[E], value: E | str, field: str) -> E:
    if isinstance(value, enum):
        return value
    text = str(value).strip().lower()
    try:
        return enum(text)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise InvalidArgument(
            f"{field} must be one of {allowed}, got {value!r}", field=field
        ) from None


def parse_model_type(value: ModelType | str | None, field: str = "model_type") -> ModelType:
    """``None`` or an empty string mean the default (CatBoost)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_MODEL_TYPE
    return _parse(ModelType, value, field)


def parse_task_type(value: TaskType | str, field: str = "task") -> TaskType:
    return _parse(TaskType, value, field)


def parse_device(value: Device | str | None, field: str = "device") -> Device:
    if value is None or (isinstance(value, str) and not value.strip()):
        return Device.CPU
    return _parse(Device, value, field)
