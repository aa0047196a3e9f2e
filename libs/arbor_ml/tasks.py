"""Guess the task from a target column when an experiment does not name one."""

from __future__ import annotations

import polars as pl

from arbor_core.errors import InvalidArgument
from arbor_ml.types import TaskType

#: An integer or string target with more distinct values than this is not multiclass.
MAX_INFERRED_CLASSES = 20


def infer_task(
    target: pl.Series, *, max_classes: int = MAX_INFERRED_CLASSES, field: str = "target"
) -> TaskType:
    """binary / multiclass / regression from the target's dtype and distinct values.

    Rules, nulls ignored: boolean -> binary; exactly two distinct values (any dtype) ->
    binary; string, categorical or enum -> multiclass; integers with at most
    ``max_classes`` distinct values -> multiclass; everything else numeric -> regression.
    Floats are never multiclass (``1.0, 2.0, 3.0`` is more likely a measurement).
    Raises ``InvalidArgument(field=field)`` for an empty/all-null target, a single value,
    or a dtype that cannot be a target (dates, lists, ...).
    """
    values = target.drop_nulls()
    if values.dtype.is_float():
        values = values.filter(values.is_not_nan())
    if values.len() == 0:
        raise InvalidArgument(f"target {target.name!r} has no non-null values", field=field)
    dtype = values.dtype
    n_unique = values.n_unique()
    is_label_like = dtype in (pl.String, pl.Categorical, pl.Boolean) or isinstance(dtype, pl.Enum)
    if not (is_label_like or dtype.is_numeric()):
        raise InvalidArgument(
            f"target {target.name!r} has dtype {dtype}, which is neither a label nor a number",
            field=field,
        )
    if n_unique < 2:
        raise InvalidArgument(
            f"target {target.name!r} has a single distinct value; nothing to learn",
            field=field,
        )
    if dtype == pl.Boolean or n_unique == 2:
        return TaskType.BINARY
    if is_label_like:
        return TaskType.MULTICLASS
    if dtype.is_integer() and n_unique <= max_classes:
        return TaskType.MULTICLASS
    return TaskType.REGRESSION
