"""Turn train/validation frames into what a trainer consumes, once per study.

:func:`prepare_data` fits the preprocessing on the train part, applies it to both parts,
encodes the target (class indices, or a transformed regression target) and extracts the
sample weights. A study prepares its data once and fits one model per trial from it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from arbor_core.errors import InvalidArgument
from arbor_ml import _convert
from arbor_ml.postprocessing import TARGET_TRANSFORMS, ClassValue
from arbor_ml.preprocessing import PreprocessingOptions, Preprocessor, dtype_to_str
from arbor_ml.tasks import infer_task
from arbor_ml.types import ModelType, TaskType, parse_model_type, parse_task_type

logger = logging.getLogger("arbor_ml")


@dataclass(frozen=True)
class TargetInfo:
    """The target column and how its values map to the model's label space.

    Classification: ``classes`` are the original values in model order (class ``i`` is
    ``classes[i]``; for binary, ``classes[1]`` is the positive class). Regression:
    ``transform`` is applied to the target before training (``none``/``log1p``/``log``).
    """

    name: str
    task: TaskType
    dtype: str
    classes: tuple[ClassValue, ...] = ()
    transform: str = "none"

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def label_dtype(self) -> str:
        return "String" if self.dtype in ("Categorical", "Enum") else self.dtype

    def encode(self, series: pl.Series) -> np.ndarray:
        """Model-space labels: class indices (int64) or (transformed) float64 values."""
        if self.task.is_classification:
            values = _label_values(series)
            codes = values.replace_strict(
                list(self.classes),
                list(range(len(self.classes))),
                default=None,
                return_dtype=pl.Int64,
            )
            unknown = codes.is_null() & values.is_not_null()
            if unknown.any():
                row = int(unknown.arg_true()[0])
                raise InvalidArgument(
                    f"target {self.name!r} row {row}: class {values[row]!r} is not one of "
                    f"{list(self.classes)!r}",
                    field=self.name,
                )
            return _convert.series_to_numpy(codes, "target", np.int64)
        y = _convert.series_to_numpy(series.cast(pl.Float64), "target", np.float64)
        if self.transform == "log1p":
            return np.log1p(y)
        if self.transform == "log":
            return np.log(y)
        return y


def _label_values(series: pl.Series) -> pl.Series:
    if series.dtype == pl.Categorical or isinstance(series.dtype, pl.Enum):
        return series.cast(pl.String)
    return series


@dataclass(frozen=True)
class PreparedData:
    """Preprocessed parts plus encoded labels and weights; validation is optional.

    ``y_*`` are in model space (class indices; transformed regression target);
    ``y_valid_target`` is the validation target in its own units, for metrics.
    """

    task: TaskType
    model_type: ModelType
    target: TargetInfo
    preprocessor: Preprocessor
    x_train: pl.DataFrame
    y_train: np.ndarray
    w_train: np.ndarray | None
    x_valid: pl.DataFrame | None = None
    y_valid: np.ndarray | None = None
    w_valid: np.ndarray | None = None
    y_valid_target: np.ndarray | None = None

    @property
    def train_rows(self) -> int:
        return self.x_train.height

    @property
    def valid_rows(self) -> int:
        return 0 if self.x_valid is None else self.x_valid.height


def prepare_data(
    train: pl.DataFrame,
    valid: pl.DataFrame | None = None,
    *,
    target: str,
    task: TaskType | str | None = None,
    model_type: ModelType | str | None = None,
    weight_column: str | None = None,
    preprocessing: PreprocessingOptions | None = None,
    positive_class: Any = None,
    target_transform: str = "none",
) -> PreparedData:
    """Fit preprocessing on ``train`` and encode both parts for ``model_type``.

    ``task=None`` infers it from the train target. Rows whose target is null (or NaN)
    are dropped from both parts, with a warning. Classes are the sorted distinct target
    values of both parts, so a class seen only in validation still gets an index;
    ``positive_class`` (binary only) makes that value ``classes[1]``. Raises
    ``InvalidArgument`` naming the field for a missing target/weight column, a target
    that does not fit the task, negative or null weights, or a bad ``target_transform``.
    """
    model = parse_model_type(model_type)
    for frame, part in ((train, "train"), (valid, "valid")):
        if frame is None:
            continue
        if target not in frame.columns:
            raise InvalidArgument(
                f"target column {target!r} is not in the {part} part", field="target"
            )
        if weight_column and weight_column not in frame.columns:
            raise InvalidArgument(
                f"weight column {weight_column!r} is not in the {part} part", field="weight_column"
            )
    train = _drop_null_targets(train, target, "train")
    valid = _drop_null_targets(valid, target, "valid") if valid is not None else None
    if train.height == 0:
        raise InvalidArgument(
            f"target {target!r} has no non-null value in the train part", field="target"
        )
    resolved = infer_task(train.get_column(target)) if task is None else parse_task_type(task)
    info = _target_info(train, valid, target, resolved, positive_class, target_transform)

    pre = Preprocessor.fit(
        train, model_type=model, target=target, weight_column=weight_column, options=preprocessing
    )
    x_train = pre.transform(train)
    y_train = info.encode(train.get_column(target))
    w_train = _weights(train, weight_column)
    if valid is None or valid.height == 0:
        return PreparedData(resolved, model, info, pre, x_train, y_train, w_train)
    y_valid_target: np.ndarray | None = None
    if not resolved.is_classification:
        y_valid_target = _convert.series_to_numpy(
            valid.get_column(target).cast(pl.Float64), "target", np.float64
        )
    return PreparedData(
        resolved,
        model,
        info,
        pre,
        x_train,
        y_train,
        w_train,
        x_valid=pre.transform(valid),
        y_valid=info.encode(valid.get_column(target)),
        w_valid=_weights(valid, weight_column),
        y_valid_target=y_valid_target,
    )


def _drop_null_targets(frame: pl.DataFrame, target: str, part: str) -> pl.DataFrame:
    column = pl.col(target)
    mask = column.is_null()
    if frame.schema[target].is_float():
        mask = mask | column.is_nan()
    dropped = frame.select(mask.sum()).item()
    if dropped:
        logger.warning(
            "dropping %d %s rows whose target %r is missing",
            dropped,
            part,
            target,
            extra={"part": part, "rows": dropped},
        )
        frame = frame.filter(~mask)
    return frame


def _target_info(
    train: pl.DataFrame,
    valid: pl.DataFrame | None,
    target: str,
    task: TaskType,
    positive_class: Any,
    target_transform: str,
) -> TargetInfo:
    series = train.get_column(target)
    dtype = dtype_to_str(series.dtype)
    if not task.is_classification:
        if target_transform not in TARGET_TRANSFORMS:
            raise InvalidArgument(
                f"target_transform must be one of {', '.join(TARGET_TRANSFORMS)}",
                field="target_transform",
            )
        if not series.dtype.is_numeric():
            raise InvalidArgument(
                f"a regression target must be numeric; {target!r} is {series.dtype}", field="target"
            )
        values = series if valid is None else pl.concat([series, valid.get_column(target)])
        values = values.cast(pl.Float64)
        if not values.is_finite().all():
            raise InvalidArgument(f"target {target!r} has infinite values", field="target")
        low = values.min()
        assert isinstance(low, float)
        if target_transform == "log1p" and low <= -1:
            raise InvalidArgument("log1p needs every target value > -1", field="target_transform")
        if target_transform == "log" and low <= 0:
            raise InvalidArgument("log needs every target value > 0", field="target_transform")
        return TargetInfo(target, task, dtype, transform=target_transform)

    if target_transform != "none":
        raise InvalidArgument(
            "a target transform applies to regression only", field="target_transform"
        )
    if series.dtype.is_float():
        # 0.0/1.0 labels are fine; 0.5 is not a class.
        values = series.drop_nulls()
        if not (values == values.floor()).all():
            raise InvalidArgument(
                f"target {target!r} has fractional values; it cannot be a class label",
                field="target",
            )
    elif not (
        series.dtype.is_integer()
        or series.dtype in (pl.String, pl.Boolean, pl.Categorical)
        or isinstance(series.dtype, pl.Enum)
    ):
        raise InvalidArgument(
            f"target {target!r} of dtype {series.dtype} cannot be a class label", field="target"
        )
    labels = _label_values(series)
    if valid is not None:
        labels = pl.concat([labels, _label_values(valid.get_column(target)).cast(labels.dtype)])
    classes: list[ClassValue] = labels.unique().sort().to_list()
    if len(classes) < 2:
        raise InvalidArgument(
            f"target {target!r} has a single class {classes!r}; nothing to learn", field="target"
        )
    if task is TaskType.BINARY and len(classes) != 2:
        raise InvalidArgument(
            f"a binary task needs exactly 2 classes; target {target!r} has {len(classes)}",
            field="task",
        )
    if positive_class is not None:
        if task is not TaskType.BINARY:
            raise InvalidArgument(
                "positive_class applies to binary tasks only", field="positive_class"
            )
        match = [c for c in classes if _same_label(c, positive_class)]
        if not match:
            raise InvalidArgument(
                f"positive_class {positive_class!r} is not one of {classes!r}",
                field="positive_class",
            )
        classes = [c for c in classes if c != match[0]] + [match[0]]
    return TargetInfo(target, task, dtype, tuple(classes))


def _same_label(value: ClassValue, given: Any) -> bool:
    """Whether a caller's label (often a string from a request) names a class value."""
    if isinstance(value, bool):
        return str(given).strip().lower() in (("true", "1") if value else ("false", "0"))
    if isinstance(value, float) and not isinstance(given, bool):
        try:
            return math.isclose(float(given), value)
        except (TypeError, ValueError):
            return False
    return value == given or str(value) == str(given)


def _weights(frame: pl.DataFrame, column: str | None) -> np.ndarray | None:
    if not column:
        return None
    series = frame.get_column(column)
    if not series.dtype.is_numeric():
        raise InvalidArgument(f"weight column {column!r} must be numeric", field="weight_column")
    weights = series.cast(pl.Float64)
    bad = weights.is_null() | ~weights.is_finite() | (weights < 0)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise InvalidArgument(
            f"weight column {column!r} row {row}: weights must be finite and >= 0",
            field="weight_column",
        )
    return _convert.series_to_numpy(weights, "weights", np.float64)
