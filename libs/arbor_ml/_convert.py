"""The only place Polars data turns into numpy or pandas, so every conversion is logged.

Conversions happen at a model library's boundary only. Each one logs its row count and
memory size on the ``arbor_ml`` logger at DEBUG level; the size is computed only when that
level is enabled, which keeps the 1-row inference path cheap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("arbor_ml")


def _log(kind: str, purpose: str, frame: pl.DataFrame | pl.Series, out_bytes: int) -> None:
    if not logger.isEnabledFor(logging.DEBUG):
        return
    logger.debug(
        "polars->%s for %s: %d rows, %d columns, %d bytes in, %d bytes out",
        kind,
        purpose,
        frame.height if isinstance(frame, pl.DataFrame) else frame.len(),
        frame.width if isinstance(frame, pl.DataFrame) else 1,
        frame.estimated_size(),
        out_bytes,
        extra={
            "conversion": kind,
            "purpose": purpose,
            "rows": frame.height if isinstance(frame, pl.DataFrame) else frame.len(),
            "bytes": frame.estimated_size(),
        },
    )


def to_numpy(
    frame: pl.DataFrame, purpose: str, dtype: Any = np.float64, order: Literal["C", "F"] = "C"
) -> np.ndarray:
    """A contiguous 2-D array of ``dtype`` (nulls become NaN for float dtypes), row-major
    (``order="C"``) or column-major (``"F"``: what CatBoost reads without a copy)."""
    if frame.width == 0:
        out = np.empty((frame.height, 0), dtype=dtype, order=order)
    elif order == "F":
        out = np.asfortranarray(frame.to_numpy(), dtype=dtype)
    else:
        out = np.ascontiguousarray(frame.to_numpy(), dtype=dtype)
    _log("numpy", purpose, frame, out.nbytes)
    return out


def series_to_numpy(series: pl.Series, purpose: str, dtype: Any = None) -> np.ndarray:
    out = series.to_numpy()
    if dtype is not None:
        out = np.asarray(out, dtype=dtype)
    _log("numpy", purpose, series, out.nbytes)
    return out


def to_object_array(frame: pl.DataFrame, purpose: str) -> np.ndarray:
    """A 2-D ``object`` array of Python strings, for CatBoost's categorical features."""
    if frame.width == 0:
        out = np.empty((frame.height, 0), dtype=object)
    else:
        out = np.empty((frame.height, frame.width), dtype=object)
        for i, column in enumerate(frame.get_columns()):
            out[:, i] = column.to_list()
    _log("numpy[object]", purpose, frame, out.nbytes)
    return out


def to_pandas(frame: pl.DataFrame, purpose: str) -> pd.DataFrame:
    out = frame.to_pandas()
    if logger.isEnabledFor(logging.DEBUG):
        _log("pandas", purpose, frame, int(out.memory_usage(deep=True).sum()))
    return out
