"""From model output to what a caller sees, stored as ``postprocessing.json`` with a model.

Classification: the probability threshold of a binary model (``p(classes[1]) >= t``) and
the mapping from class index back to the original class value, with its original dtype
(strings, integers, booleans). Regression, applied in this order: the inverse of the
training target transform (``log1p`` -> ``expm1``, ``log`` -> ``exp``), a unit transform
``value * scale + offset``, clipping to ``[clip_min, clip_max]``, rounding to
``round_digits`` decimals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from arbor_core.errors import FieldViolation, InvalidArgument
from arbor_ml.preprocessing import dtype_from_str
from arbor_ml.types import TaskType, parse_task_type

POSTPROCESSING_FORMAT = "arbor.postprocessing/1"

#: A class label as it appears in the training data.
ClassValue = str | int | float | bool

TARGET_TRANSFORMS = ("none", "log1p", "log")
_INVERSE = {"none": "none", "log1p": "expm1", "log": "exp"}


def inverse_target_transform(transform: str, values: np.ndarray) -> np.ndarray:
    """Undo a training target transform (``log1p``/``log``/``none``)."""
    return _apply_inverse(_INVERSE[transform], values)


def _apply_inverse(inverse: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if inverse == "expm1":
        return np.expm1(values)
    if inverse == "exp":
        return np.exp(values)
    return values


@dataclass(frozen=True)
class PostprocessingOptions:
    """What a caller may ask for; the rest (classes, inverse) comes from training."""

    threshold: float = 0.5
    clip_min: float | None = None
    clip_max: float | None = None
    round_digits: int | None = None
    scale: float = 1.0
    offset: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PostprocessingOptions:
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidArgument(
                f"unknown postprocessing option {unknown[0]!r}",
                field=f"postprocessing.{unknown[0]}",
            )
        options = cls(**data)
        options.validate()
        return options

    def validate(self) -> None:
        violations: list[FieldViolation] = []

        def bad(path: str, message: str) -> None:
            violations.append(FieldViolation(f"postprocessing.{path}", message))

        if not (_finite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            bad("threshold", "must be a number in [0, 1]")
        for name in ("clip_min", "clip_max"):
            value = getattr(self, name)
            if value is not None and not _finite(value):
                bad(name, "must be a finite number")
        if (
            self.clip_min is not None
            and self.clip_max is not None
            and _finite(self.clip_min)
            and _finite(self.clip_max)
            and self.clip_min > self.clip_max
        ):
            bad("clip_max", "must not be below clip_min")
        if self.round_digits is not None and (
            not isinstance(self.round_digits, int)
            or isinstance(self.round_digits, bool)
            or not -10 <= self.round_digits <= 15
        ):
            bad("round_digits", "must be an integer in [-10, 15]")
        if not _finite(self.scale) or self.scale == 0:
            bad("scale", "must be a finite, non-zero number")
        if not _finite(self.offset):
            bad("offset", "must be a finite number")
        if violations:
            first = violations[0]
            raise InvalidArgument(f"{first.field}: {first.description}", violations=violations)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Postprocessor:
    """Fitted postprocessing; build with :meth:`for_classification`/:meth:`for_regression`."""

    task: TaskType
    classes: tuple[ClassValue, ...] = ()
    label_dtype: str | None = None
    threshold: float = 0.5
    inverse: str = "none"
    scale: float = 1.0
    offset: float = 0.0
    clip_min: float | None = None
    clip_max: float | None = None
    round_digits: int | None = None
    _class_series: pl.Series | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.task.is_classification:
            dtype = dtype_from_str(self.label_dtype or "String")
            if dtype == pl.Categorical:
                dtype = pl.String()
            object.__setattr__(self, "_class_series", pl.Series("label", self.classes, dtype))

    @classmethod
    def for_classification(
        cls,
        task: TaskType,
        classes: tuple[ClassValue, ...],
        label_dtype: str,
        options: PostprocessingOptions | None = None,
    ) -> Postprocessor:
        options = options or PostprocessingOptions()
        options.validate()
        return cls(
            task=task, classes=tuple(classes), label_dtype=label_dtype, threshold=options.threshold
        )

    @classmethod
    def for_regression(
        cls, target_transform: str = "none", options: PostprocessingOptions | None = None
    ) -> Postprocessor:
        options = options or PostprocessingOptions()
        options.validate()
        return cls(
            task=TaskType.REGRESSION,
            inverse=_INVERSE[target_transform],
            scale=float(options.scale),
            offset=float(options.offset),
            clip_min=options.clip_min,
            clip_max=options.clip_max,
            round_digits=options.round_digits,
        )

    # -- classification -------------------------------------------------------------------

    def label_indices(self, proba: np.ndarray) -> np.ndarray:
        """Class index per row: ``p1 >= threshold`` for binary, argmax for multiclass."""
        if self.task is TaskType.BINARY:
            return (proba[:, 1] >= self.threshold).astype(np.int64)
        return np.argmax(proba, axis=1)

    def labels(self, proba: np.ndarray) -> pl.Series:
        """Original class values (their training dtype) for ``(n, K)`` probabilities."""
        assert self._class_series is not None
        return self._class_series.gather(self.label_indices(proba))

    # -- regression ---------------------------------------------------------------------

    def undo_target_transform(self, values: np.ndarray) -> np.ndarray:
        """Model output in the target's units (metrics are computed on these)."""
        return _apply_inverse(self.inverse, values)

    def values(self, raw: np.ndarray) -> np.ndarray:
        out = self.undo_target_transform(raw)
        if self.scale != 1.0 or self.offset != 0.0:
            out = out * self.scale + self.offset
        if self.clip_min is not None or self.clip_max is not None:
            out = np.clip(out, self.clip_min, self.clip_max)
        if self.round_digits is not None:
            out = np.round(out, self.round_digits)
        return out

    # -- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": POSTPROCESSING_FORMAT, "task": self.task.value}
        if self.task.is_classification:
            out |= {
                "classes": list(self.classes),
                "label_dtype": self.label_dtype,
                "threshold": self.threshold,
            }
        else:
            out |= {
                "inverse": self.inverse,
                "scale": self.scale,
                "offset": self.offset,
                "clip_min": self.clip_min,
                "clip_max": self.clip_max,
                "round_digits": self.round_digits,
            }
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Postprocessor:
        if data.get("format") != POSTPROCESSING_FORMAT:
            raise InvalidArgument(
                f"unsupported postprocessing format {data.get('format')!r}",
                field="postprocessing.format",
            )
        task = parse_task_type(data["task"])
        if task.is_classification:
            return cls(
                task=task,
                classes=tuple(data["classes"]),
                label_dtype=data["label_dtype"],
                threshold=float(data["threshold"]),
            )
        return cls(
            task=task,
            inverse=data["inverse"],
            scale=float(data["scale"]),
            offset=float(data["offset"]),
            clip_min=data["clip_min"],
            clip_max=data["clip_max"],
            round_digits=data["round_digits"],
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Postprocessor:
        return cls.from_dict(json.loads(text))
