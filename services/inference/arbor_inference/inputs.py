"""Request rows -> a Polars frame that matches the model's signature, or a precise error.

Three input shapes decode to the same frame, so the same data gives the same predictions:

* ``json_rows``: one ``google.protobuf.Struct`` per row (grpcurl). JSON has one number type,
  so numbers arrive as doubles and are checked to be whole before they fill an integer column.
  A key absent from one row is a missing value in that row.
* ``columns``: typed columns. Values become numpy arrays in one C call per column (no per-row
  Python), ``null_indices`` become a mask.
* ``arrow_ipc``: an Arrow IPC stream (or file); read zero-copy with pyarrow, then Polars.

Validation against the signature (each case is INVALID_ARGUMENT with a ``FieldViolation`` whose
field is ``input.rows[<row>].<column>`` for a value, ``input.<column>`` for a column, and with
``column`` / ``row`` in the ``ErrorInfo`` metadata; every bad column is reported at once):

* no rows, or no ``input`` at all: ``INPUT_EMPTY`` / ``INPUT_REQUIRED`` (Explain treats an empty
  input as "use the stored background sample" before it gets here).
* more rows than ``ARBOR_INFERENCE_MAX_BATCH_ROWS``: ``BATCH_TOO_LARGE``, checked before any
  column is decoded, so an oversized batch costs no memory beyond its message.
* a signature column absent from the input: ``COLUMN_MISSING`` (nullable or not: a column
  that is missing everywhere is almost always a client bug, not missing data).
* a column the signature does not know: dropped under ``EXTRA_COLUMNS_POLICY_IGNORE``
  (and UNSPECIFIED), ``COLUMN_UNEXPECTED`` under ``EXTRA_COLUMNS_POLICY_REJECT``.
* a value of the wrong kind (a string in a numeric column, a number in a string column, a bool
  in a numeric column, a nested list/struct): ``VALUE_WRONG_TYPE`` at the first such row.
  Integers widen to floats; floats fill integer columns only when whole (``VALUE_NOT_INTEGER``)
  and in range (``VALUE_OUT_OF_RANGE``). Datetime columns take ``timestamp_micros``, Arrow
  timestamps/dates, or ISO-8601 strings (``VALUE_UNPARSABLE`` when a string does not parse).
* null (JSON null, an absent key, ``null_indices``, Arrow nulls) and NaN are both "missing":
  accepted (as null; the saved preprocessing fills it) in a nullable column, ``VALUE_MISSING``
  in a non-nullable one. Nullability is the registry signature's ``InputColumn.nullable``; a
  signature that marks no column nullable is read as "not recorded" (every column nullable).
* +inf / -inf: ``VALUE_NOT_FINITE`` in any column; no trained model saw them and libraries
  disagree on where they fall.
* malformed shapes (columns of different lengths, duplicate names, ``null_indices`` out of
  range, bytes that are not Arrow IPC): ``INPUT_MALFORMED``.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from arbor.common.v1 import common_pb2
from arbor_core.errors import FieldViolation, InvalidArgument
from arbor_ml.preprocessing import dtype_from_str

__all__ = [
    "ColumnKind",
    "ColumnSpec",
    "InputSpec",
    "count_rows",
    "decode",
    "parse_dtype",
    "single_row_doubles",
]


# --------------------------------------------------------------------------- signature


class ColumnKind(StrEnum):
    """What a column holds, coarser than a dtype: it decides which inputs may fill it."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"
    DATETIME = "datetime"
    DATE = "date"
    OTHER = "other"


_SIMPLE_DTYPES: dict[str, pl.DataType] = {
    name: getattr(pl, name)()
    for name in (
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "Float32",
        "Float64",
        "Boolean",
        "String",
        "Categorical",
        "Date",
        "Time",
        "Null",
    )
}
_SIMPLE_DTYPES["Utf8"] = pl.String()
_SIMPLE_DTYPES["Bool"] = pl.Boolean()
_DATETIME_RE = re.compile(
    r"^Datetime(?:\(\s*(?:time_unit=)?'?(?P<unit>ns|us|ms)'?"
    r"(?:\s*,\s*(?:time_zone=)?(?P<tz>None|'[^']*'))?\s*\))?$"
)


def parse_dtype(text: str) -> pl.DataType:
    """A Polars dtype from a signature's spelling.

    The ML core writes ``Int64``, ``Datetime[us, UTC]``, ``Enum``...; Polars' own printing
    (``Datetime(time_unit='us', time_zone=None)``) is accepted too. Categorical-like types
    read as String (the preprocessing compares categories as text); anything else unknown
    becomes Null, which ``ColumnSpec`` treats as OTHER (values are cast as given).
    """
    text = text.strip()
    try:
        return dtype_from_str(text)
    except ValueError:
        pass
    if text in _SIMPLE_DTYPES:
        return _SIMPLE_DTYPES[text]
    match = _DATETIME_RE.match(text)
    if match:
        unit = match.group("unit") or "us"
        tz = match.group("tz")
        tz = None if tz in (None, "None") else tz.strip("'")
        return pl.Datetime(unit, tz)  # type: ignore[arg-type]
    if text.startswith(("Enum", "Categorical")):
        return pl.String()
    return pl.Null()


def _kind_of(dtype: pl.DataType) -> ColumnKind:
    if dtype.is_float():
        return ColumnKind.FLOAT
    if dtype.is_integer():
        return ColumnKind.INT
    if dtype == pl.Boolean:
        return ColumnKind.BOOL
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return ColumnKind.STRING
    if isinstance(dtype, pl.Datetime):
        return ColumnKind.DATETIME
    if dtype == pl.Date:
        return ColumnKind.DATE
    return ColumnKind.OTHER


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One signature column, parsed once per model version."""

    name: str
    dtype: pl.DataType
    kind: ColumnKind
    nullable: bool
    categorical: bool


@dataclass(frozen=True)
class InputSpec:
    """The input part of a model signature, in the model's column order."""

    columns: tuple[ColumnSpec, ...]
    by_name: dict[str, ColumnSpec] = field(repr=False)
    #: float and Int64 columns: numbers for them are checked together, vectorised
    float_group: frozenset[str] = field(default=frozenset(), repr=False)
    #: every column is float or integer (JSON rows then decode into one matrix)
    all_numeric: bool = field(default=False, repr=False)
    float32: frozenset[str] = field(default=frozenset(), repr=False)
    #: every column is Float64: typed columns of doubles decode in one step (``_decode_doubles``)
    all_float64: bool = field(default=False, repr=False)
    name_list: list[str] = field(default_factory=list, repr=False)
    #: the names as UTF-8, compared with the request's bytes (``wire_doubles``)
    name_bytes: list[bytes] = field(default_factory=list, repr=False)
    #: ``_wire_layouts``' cache: serialized size -> layout of a small all-double batch
    layouts: dict[int, _WireLayout | None] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, columns: Iterable[ColumnSpec]) -> InputSpec:
        cols = tuple(columns)
        group = frozenset(c.name for c in cols if c.kind is ColumnKind.FLOAT or c.dtype == pl.Int64)
        numeric = all(c.kind in (ColumnKind.FLOAT, ColumnKind.INT) for c in cols)
        float32 = frozenset(c.name for c in cols if c.dtype == pl.Float32)
        float64 = bool(cols) and all(
            c.kind is ColumnKind.FLOAT and c.dtype == pl.Float64 for c in cols
        )
        names = [c.name for c in cols]
        return cls(
            cols,
            {c.name: c for c in cols},
            group,
            numeric,
            float32,
            float64,
            names,
            [n.encode() for n in names],
        )

    @classmethod
    def from_signature(cls, signature: Any) -> InputSpec:
        """From a ``ModelSignature`` message (or anything with ``inputs`` of that shape)."""
        specs = []
        for col in signature.inputs:
            dtype = parse_dtype(col.dtype)
            kind = _kind_of(dtype)
            if kind is ColumnKind.STRING:
                dtype = pl.String()
            if col.categorical and kind is ColumnKind.OTHER:
                dtype, kind = pl.String(), ColumnKind.STRING
            specs.append(ColumnSpec(col.name, dtype, kind, bool(col.nullable), col.categorical))
        return cls.of(specs)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


# --------------------------------------------------------------------------- errors


@dataclass(slots=True)
class _Problem:
    reason: str
    column: str
    row: int | None
    description: str

    @property
    def field(self) -> str:
        if self.row is None:
            return f"input.{self.column}" if self.column else "input"
        return f"input.rows[{self.row}].{self.column}"


def _raise(problems: Sequence[_Problem]) -> None:
    first = problems[0]
    summary = f"{first.field}: {first.description}"
    if len(problems) > 1:
        summary += f" (and {len(problems) - 1} more)"
    metadata = {"column": first.column}
    if first.row is not None:
        metadata["row"] = str(first.row)
    raise InvalidArgument(
        summary,
        violations=[FieldViolation(p.field, p.description) for p in problems],
        reason=first.reason,
        metadata=metadata,
    )


def _malformed(message: str, field_path: str = "input") -> InvalidArgument:
    return InvalidArgument(message, field=field_path, reason="INPUT_MALFORMED")


# --------------------------------------------------------------------------- raw columns
#
# Decoders turn each shape into ``_Raw`` columns: numbers and bools as numpy arrays with a
# missing-value mask, strings and temporal values as Polars series. ``_conform`` then checks
# and casts each one against its ``ColumnSpec`` with vectorised numpy / Polars operations.


class _Src(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"
    DATETIME = "datetime"
    DATE = "date"
    NULL = "null"
    MIXED = "mixed"
    OTHER = "other"


@dataclass(slots=True)
class _Raw:
    name: str
    src: _Src
    # numpy array for FLOAT/INT/BOOL, pl.Series otherwise
    values: Any
    # True where missing; only for numpy values
    mask: np.ndarray | None = None
    # JSON rows only: the first row whose value had a kind the column cannot take
    bad_row: int | None = None
    bad_kind: str = ""


_SRC_OF_POLARS: list[tuple[Callable[[pl.DataType], bool], _Src]] = [
    (lambda d: d.is_float(), _Src.FLOAT),
    (lambda d: d.is_integer(), _Src.INT),
    (lambda d: d == pl.Boolean, _Src.BOOL),
    (lambda d: d in (pl.String, pl.Categorical) or isinstance(d, pl.Enum), _Src.STRING),
    (lambda d: isinstance(d, pl.Datetime), _Src.DATETIME),
    (lambda d: d == pl.Date, _Src.DATE),
    (lambda d: d == pl.Null, _Src.NULL),
]


def _raw_from_series(series: pl.Series) -> _Raw:
    dtype = series.dtype
    src = next((kind for test, kind in _SRC_OF_POLARS if test(dtype)), _Src.OTHER)
    if src in (_Src.FLOAT, _Src.INT, _Src.BOOL):
        mask = series.is_null().to_numpy() if series.null_count() else None
        if mask is not None:
            fill: Any = False if src is _Src.BOOL else 0
            values = series.fill_null(fill).to_numpy()
        else:
            values = series.to_numpy()
        return _Raw(series.name, src, values, mask)
    if src is _Src.STRING and dtype != pl.String:
        series = series.cast(pl.String)
    return _Raw(series.name, src, series)


# --------------------------------------------------------------------------- counting


def count_rows(data: common_pb2.InlineData) -> int:
    """Rows in ``data`` without decoding values (Arrow: reads only the batch headers).

    Typed columns: the first column's length (``decode`` refuses columns of other lengths).
    """
    shape = data.WhichOneof("data")
    if shape == "json_rows":
        return len(data.json_rows.rows)
    if shape == "columns":
        columns = data.columns.columns
        return _column_length(columns[0]) if len(columns) else 0
    if shape == "arrow_ipc":
        return _read_arrow(data.arrow_ipc).num_rows
    return 0


def _column_length(column: common_pb2.Column) -> int:
    kind = column.WhichOneof("values")
    if kind is None:
        return 0
    return len(getattr(column, kind).values)


# --------------------------------------------------------------------------- decode


@dataclass(slots=True)
class NumericColumn:
    """A conformed number/bool column: values in the column's numpy dtype, True = missing."""

    values: np.ndarray
    mask: np.ndarray | None

    def series(self, name: str) -> pl.Series:
        if self.mask is None:
            return pl.Series(name, self.values)
        return pl.from_arrow(pa.array(self.values, mask=self.mask)).alias(name)  # type: ignore[union-attr]


Column = NumericColumn | pl.Series


@dataclass(slots=True)
class Table:
    """Validated rows: exactly the signature's columns, in its order, with its dtypes.

    Numbers and bools stay numpy arrays (what a small-batch fast path wants); ``frame()``
    builds the Polars frame the saved preprocessing takes, once.
    """

    height: int
    _columns: dict[str, Column] | None
    _frame: pl.DataFrame | None = None
    #: all-Float64 input without missing values: the values as one (columns, rows) matrix in
    #: the signature's order (``columns`` are views of its rows, built when first asked for)
    matrix: np.ndarray | None = None
    _names: list[str] | None = None

    @property
    def columns(self) -> dict[str, Column]:
        if self._columns is None:
            assert self.matrix is not None and self._names is not None
            self._columns = dict(zip(self._names, map(_present, self.matrix), strict=True))
        return self._columns

    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            series = [
                col.series(name) if isinstance(col, NumericColumn) else col
                for name, col in self.columns.items()
            ]
            self._frame = pl.DataFrame(series, height=self.height)
        return self._frame

    @classmethod
    def from_matrix(cls, names: list[str], by_column: np.ndarray) -> Table:
        """A table of present (finite) float64 values: ``by_column`` is (columns, rows), in
        the signature's order; the columns are views of its rows. (float32 only for a fast
        path that reads float32: ``FastPath.matrix_dtype``.)"""
        return cls(by_column.shape[1], None, matrix=by_column, _names=names)

    @classmethod
    def from_finite_matrix(cls, names: list[str], by_column: np.ndarray) -> Table | None:
        """:meth:`from_matrix`, or None when a value is NaN or infinite (a missing value, or
        a double beyond float32's range read as float32): the general decoder then applies
        the nullability rules and names any problem."""
        if not np.isfinite(by_column).all():
            return None
        return cls.from_matrix(names, by_column)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, spec: InputSpec) -> Table:
        """A table from a frame that already has the signature's dtypes (tests, self-checks)."""
        raws = {s.name: _raw_from_series(s) for s in frame.select(spec.names).get_columns()}
        columns: dict[str, Column] = {}
        for col in spec.columns:
            result = _conform(raws[col.name], col)
            if isinstance(result, _Problem):
                _raise([result])
            columns[col.name] = result  # type: ignore[assignment]
        return cls(frame.height, columns)


def decode(
    data: common_pb2.InlineData,
    spec: InputSpec,
    *,
    max_rows: int,
    reject_extra: bool = False,
) -> Table:
    """Decode ``data`` and conform it to ``spec``.

    Raises ``InvalidArgument`` as the module docstring describes.
    """
    shape = data.WhichOneof("data")
    if shape is None:
        raise InvalidArgument("input is required", field="input", reason="INPUT_REQUIRED")
    if shape == "arrow_ipc":
        return decode_arrow(
            _read_arrow(data.arrow_ipc), spec, max_rows=max_rows, reject_extra=reject_extra
        )
    if shape == "json_rows":
        rows = data.json_rows.rows
        _check_count(len(rows), max_rows)
        raws, extra, height = _decode_json(rows, spec)
    else:
        if spec.all_float64:
            fast = _decode_doubles(data.columns, spec, max_rows)
            if fast is not None:
                return fast
        raws, extra, height = _decode_columns(data.columns, spec, max_rows)
    return _conformed(raws, extra, height, spec, reject_extra)


def decode_arrow(
    table: pa.Table,
    spec: InputSpec,
    *,
    max_rows: int,
    reject_extra: bool = False,
    dtype: type[np.floating[Any]] = np.float64,
) -> Table:
    """:func:`decode` for an Arrow input already read (from the message, or in place from
    the request's bytes: ``WireInput``); ``dtype`` as for :func:`wire_doubles`."""
    _check_count(table.num_rows, max_rows)
    if spec.all_float64:
        matrix = _arrow_doubles(table, spec, dtype)
        if matrix is not None:
            return matrix
    raws, extra, height = _decode_arrow(table, spec)
    return _conformed(raws, extra, height, spec, reject_extra)


def _conformed(
    raws: dict[str, _Raw], extra: list[str], height: int, spec: InputSpec, reject_extra: bool
) -> Table:
    """The decoded columns conformed to ``spec``, or every problem at once."""
    problems: list[_Problem] = []
    if reject_extra and extra:
        problems.extend(
            _Problem("COLUMN_UNEXPECTED", name, None, f"column {name!r} is not in the signature")
            for name in extra
        )
    missing = [c.name for c in spec.columns if c.name not in raws]
    problems.extend(
        _Problem("COLUMN_MISSING", name, None, f"required column {name!r} is missing")
        for name in missing
    )
    if problems:
        _raise(problems)
    conformed = _conform_all(raws, spec)
    problems = [c for c in conformed.values() if isinstance(c, _Problem)]
    if problems:
        _raise(problems)
    return Table(height, conformed)  # type: ignore[arg-type]


def _conform_all(raws: dict[str, _Raw], spec: InputSpec) -> dict[str, Column | _Problem]:
    """Conform every column; float-valued numeric columns are checked together in one
    vectorised pass (one numpy call per check instead of one per column and check)."""
    group = [
        col
        for col in spec.columns
        if col.name in spec.float_group
        and raws[col.name].src is _Src.FLOAT
        and raws[col.name].bad_row is None
    ]
    out: dict[str, Column | _Problem] = {}
    if len(group) > 1:
        out.update(_conform_float_group([raws[c.name] for c in group], group, spec.float32))
    for col in spec.columns:
        if col.name not in out:
            out[col.name] = _conform(raws[col.name], col)
    return {col.name: out[col.name] for col in spec.columns}


def _check_count(n: int, max_rows: int) -> None:
    if n == 0:
        raise InvalidArgument("input has no rows", field="input", reason="INPUT_EMPTY")
    if n > max_rows:
        raise InvalidArgument(
            f"input has {n} rows, more than the limit of {max_rows}; split the batch",
            field="input",
            reason="BATCH_TOO_LARGE",
            metadata={"rows": str(n), "max_rows": str(max_rows)},
        )


# ---- JSON rows -------------------------------------------------------------------

# Which Struct value kinds each column kind takes; "number" in an INT column is checked later.
_JSON_OK: dict[ColumnKind, frozenset[str]] = {
    ColumnKind.FLOAT: frozenset({"number_value"}),
    ColumnKind.INT: frozenset({"number_value"}),
    ColumnKind.BOOL: frozenset({"bool_value"}),
    ColumnKind.STRING: frozenset({"string_value"}),
    ColumnKind.DATETIME: frozenset({"string_value"}),
    ColumnKind.DATE: frozenset({"string_value"}),
    ColumnKind.OTHER: frozenset({"number_value", "string_value", "bool_value"}),
}
_JSON_KIND_NAMES = {
    "number_value": "a number",
    "string_value": "a string",
    "bool_value": "a bool",
    "struct_value": "an object",
    "list_value": "a list",
}


def _decode_json(rows: Sequence[Any], spec: InputSpec) -> tuple[dict[str, _Raw], list[str], int]:
    """Per-row Python, but only over the signature's columns and with one pass per row."""
    n = len(rows)
    cols = spec.columns
    values: list[list[Any]] = [[None] * n for _ in cols]
    allowed = [_JSON_OK[c.kind] for c in cols]
    seen = [False] * len(cols)
    bad: list[tuple[int, str] | None] = [None] * len(cols)
    extra: dict[str, None] = {}
    names = spec.by_name
    for i, row in enumerate(rows):
        fields = row.fields
        found = 0
        for j, col in enumerate(cols):
            value = fields.get(col.name)
            if value is None:
                continue
            found += 1
            seen[j] = True
            kind = value.WhichOneof("kind")
            if kind is None or kind == "null_value":
                continue
            if kind not in allowed[j]:
                if bad[j] is None:
                    bad[j] = (i, _JSON_KIND_NAMES.get(kind, kind))
                continue
            values[j][i] = getattr(value, kind)
        if found != len(fields):  # some key is not a signature column
            extra.update((key, None) for key in fields if key not in names)
    raws: dict[str, _Raw] = {}
    if spec.all_numeric and all(seen) and not any(bad):
        # one C call for every column (None becomes NaN, which means missing anyway)
        matrix = np.array(values, dtype=np.float64)
        for j, col in enumerate(cols):
            raws[col.name] = _Raw(col.name, _Src.FLOAT, matrix[j], None)
        return raws, list(extra), n
    for j, col in enumerate(cols):
        if not seen[j]:
            continue
        raw = _json_column(col, values[j])
        if bad[j] is not None:
            raw.bad_row, raw.bad_kind = bad[j]  # type: ignore[misc]
        raws[col.name] = raw
    return raws, list(extra), n


def _json_column(col: ColumnSpec, column: list[Any]) -> _Raw:
    if col.kind in (ColumnKind.FLOAT, ColumnKind.INT):
        mask = np.fromiter((v is None for v in column), dtype=bool, count=len(column))
        if mask.any():
            arr = np.array([0.0 if v is None else v for v in column], dtype=np.float64)
            return _Raw(col.name, _Src.FLOAT, arr, mask)
        return _Raw(col.name, _Src.FLOAT, np.array(column, dtype=np.float64), None)
    if col.kind is ColumnKind.BOOL:
        mask = np.fromiter((v is None for v in column), dtype=bool, count=len(column))
        arr = np.array([bool(v) for v in column], dtype=bool)
        return _Raw(col.name, _Src.BOOL, arr, mask if mask.any() else None)
    if col.kind is ColumnKind.OTHER:
        series = pl.Series(col.name, column, strict=False)
        return _raw_from_series(series)
    series = pl.Series(col.name, column, dtype=pl.String)
    return _Raw(col.name, _Src.STRING if series.null_count() < len(column) else _Src.NULL, series)


# ---- typed columns ---------------------------------------------------------------


def _decode_columns(
    data: common_pb2.ColumnarData, spec: InputSpec, max_rows: int
) -> tuple[dict[str, _Raw], list[str], int]:
    columns = data.columns
    if len(columns) == 0:
        raise InvalidArgument("input has no columns", field="input", reason="INPUT_EMPTY")
    lengths = [_column_length(c) for c in columns]
    height = lengths[0]
    for j, (column, length) in enumerate(zip(columns, lengths, strict=True)):
        if length != height:
            raise _malformed(
                f"column {column.name!r} has {length} values, column {columns[0].name!r} "
                f"has {height}; all columns must have the same length",
                f"input.columns.columns[{j}]",
            )
    _check_count(height, max_rows)
    raws: dict[str, _Raw] = {}
    extra: list[str] = []
    small: list[tuple[str, Any]] = []  # tiny double columns without nulls: converted at once
    for j, column in enumerate(columns):
        name = column.name
        if not name:
            raise _malformed("column name must not be empty", f"input.columns.columns[{j}].name")
        if name in raws or name in extra:
            raise _malformed(f"column {name!r} appears twice", f"input.columns.columns[{j}].name")
        if name not in spec.by_name:
            extra.append(name)
            continue
        if (
            height <= _SMALL_FIELD
            and not column.null_indices
            and column.WhichOneof("values") == "double_values"
        ):
            small.append((name, column.double_values.values))
            raws[name] = None  # type: ignore[assignment]  # filled below, order kept
            continue
        raws[name] = _columnar_raw(column, height, j)
    if small:
        matrix = np.array([list(values) for _, values in small], dtype=np.float64)
        for (name, _), row in zip(small, matrix, strict=True):
            raws[name] = _Raw(name, _Src.FLOAT, row, None)
    return raws, extra, height


#: Up to this many values, a repeated field converts faster through a list (numpy's direct
#: conversion has ~10 us of fixed cost per field, then runs at C speed).
_SMALL_FIELD = 16


class _WireLayout(NamedTuple):
    """How one small all-double batch is laid out in its serialized ColumnarData: the bytes
    that are not values (tags, lengths, names) and the values, as two precompiled structs."""

    rows: int
    structure: struct.Struct  # the non-value runs as bytes fields, the values skipped
    expected: tuple[bytes, ...]  # what those runs must be
    values: struct.Struct  # the values as little-endian doubles, column by column


def _runs(is_value: list[bool]) -> list[tuple[bool, int]]:
    runs: list[tuple[bool, int]] = []
    for flag in is_value:
        if runs and runs[-1][0] == flag:
            runs[-1] = (flag, runs[-1][1] + 1)
        else:
            runs.append((flag, 1))
    return runs


def _wire_layouts(spec: InputSpec) -> dict[int, _WireLayout | None]:
    """Per serialized size, the layout of exactly the signature's columns, in order, each
    with ``rows`` (1 to ``_SMALL_FIELD``) doubles and nothing else (built once per model;
    key -1 marks it built)."""
    layouts = spec.layouts
    if layouts:
        return layouts
    built: dict[int, _WireLayout | None] = {-1: None}
    ones = struct.unpack("<d", b"\x11" * 8)[0]  # every byte differs from 0.0's
    for rows in range(1, _SMALL_FIELD + 1):
        encoded = []
        for fill in (0.0, ones):
            message = common_pb2.ColumnarData()
            for name in spec.name_list:
                message.columns.add(name=name).double_values.values.extend([fill] * rows)
            encoded.append(message.SerializeToString())
        zeros, marked = encoded
        if len(zeros) != len(marked) or len(zeros) in built:
            break  # cannot happen for packed doubles; larger batches take the other path
        runs = _runs([x != y for x, y in zip(zeros, marked, strict=True)])
        if any(flag and length % 8 for flag, length in runs):
            break
        structure = "<" + "".join(f"{n}x" if flag else f"{n}s" for flag, n in runs)
        values = "<" + "".join(f"{n // 8}d" if flag else f"{n}x" for flag, n in runs)
        layout = _WireLayout(rows, struct.Struct(structure), (), struct.Struct(values))
        built[len(zeros)] = layout._replace(expected=layout.structure.unpack(zeros))
    layouts.update(built)
    return layouts


def single_row_doubles(data: common_pb2.InlineData, spec: InputSpec) -> tuple[float, ...] | None:
    """One row of exactly the signature's double columns, all finite, as floats: typed
    columns in the signature's order (checked against the expected wire layout, as
    ``_decode_small_doubles`` checks a batch) or one JSON row of numbers; None for anything
    else (more rows, a null, NaN, Arrow: the general decoder takes those and names any
    problem)."""
    if not spec.all_float64:
        return None
    shape = data.WhichOneof("data")
    if shape == "json_rows":
        return _json_row_doubles(data.json_rows.rows, spec.name_list)
    if shape != "columns":
        return None
    wire = data.columns.SerializeToString()
    layout = _wire_layouts(spec).get(len(wire))
    if layout is None or layout.rows != 1 or layout.structure.unpack(wire) != layout.expected:
        return None
    values: tuple[float, ...] = layout.values.unpack(wire)
    return values if all(map(math.isfinite, values)) else None


def _json_row_doubles(rows: Any, names: list[str]) -> tuple[float, ...] | None:
    """One JSON row whose fields are exactly ``names``, each a number (a null, a string, a
    missing or an extra field: None, for the general decoder)."""
    if len(rows) != 1:
        return None
    fields = rows[0].fields
    if len(fields) != len(names):
        return None
    values = []
    for name in names:
        value = fields.get(name)
        if value is None or value.WhichOneof("kind") != "number_value":
            return None
        values.append(value.number_value)
    return tuple(values) if all(map(math.isfinite, values)) else None


def _decode_small_doubles(
    data: common_pb2.ColumnarData, spec: InputSpec, max_rows: int
) -> Table | None:
    """A small all-double batch from its wire bytes: serialize once (C), check every byte
    but the values against the expected layout (so names, order, kinds, lengths, the absence
    of nulls and of anything else are all verified at once), then unpack the values. Reading
    the same through 30 protobuf column objects costs ~10x more."""
    columns = data.columns
    if not columns or len(columns[0].double_values.values) > _SMALL_FIELD:
        return None  # not small: serializing a large batch would only cost (0.6 ms at 10k rows)
    wire = data.SerializeToString()
    layout = _wire_layouts(spec).get(len(wire))
    if layout is None or layout.rows > max_rows:
        return None
    if layout.structure.unpack(wire) != layout.expected:
        return None
    values = layout.values.unpack(wire)
    if not all(map(math.isfinite, values)):
        return None
    matrix = np.array(values, dtype=np.float64).reshape(len(spec.columns), layout.rows)
    return Table.from_matrix(spec.name_list, matrix)


def _decode_doubles(data: common_pb2.ColumnarData, spec: InputSpec, max_rows: int) -> Table | None:
    """The common case in one step: exactly the signature's Float64 columns, in its order, all
    ``double_values`` of one length, no nulls, all finite. One ``np.array`` over the values
    and one finiteness check on the matrix, instead of per-column decoding and conforming.
    None when anything differs: the general path then decodes (and names any problem)."""
    small = _decode_small_doubles(data, spec, max_rows)
    if small is not None:
        return small
    columns = data.columns
    names = [c.name for c in columns]
    if names != spec.name_list:
        return None
    values = [c.double_values.values for c in columns]
    height = len(values[0])
    if not 0 < height <= max_rows or any(len(v) != height for v in values):
        return None  # other value kinds (their double_values are empty), ragged, empty, big
    if any(len(c.null_indices) for c in columns):
        return None
    if height <= _SMALL_FIELD:
        matrix = np.array([x for v in values for x in v], dtype=np.float64)
        matrix = matrix.reshape(len(values), height)
    else:
        matrix = np.array(values, dtype=np.float64)
    return Table.from_finite_matrix(names, matrix)


# ------------------------------------------------------------ typed columns from wire bytes
#
# A 10,000 x 30 batch of doubles is 2.4 MB of packed little-endian values in the request's
# bytes. Reading them through protobuf's repeated containers into numpy costs ~0.5 ms; the
# same values straight from the bytes (``np.frombuffer`` at their offsets, one copy into the
# matrix) ~0.1 ms. The walk below reads only field keys and lengths (a few hundred varints)
# and gives up, falling back to the message, on anything but the plain layout: exactly the
# signature's columns in order, each a name and one packed run of doubles of one length.


class WireInput(NamedTuple):
    """A request's serialized bytes and where its ``InlineData`` sits in them (``key`` is
    where the field's key starts), with its rows: typed columns (the rows of the first
    column) or an Arrow IPC stream (``arrow``: read in place, without a copy)."""

    raw: bytes
    key: int
    start: int
    end: int
    rows: int
    #: where the ``columns`` message sits (typed columns; the Arrow stream is ``arrow``)
    body: tuple[int, int] = (0, 0)
    arrow: pa.Table | None = None

    @classmethod
    def of(cls, raw: bytes, input_field: int) -> WireInput | None:
        """The request's ``input`` field (number ``input_field``) when it appears once and
        holds typed columns whose first column is a packed run of doubles, or a readable
        Arrow stream; else None (protobuf then parses it all, and decoding names problems)."""
        fields = _wire_fields(raw, 0, len(raw))
        if fields is None:
            return None
        found = [f for f in fields if f[0] == input_field]
        if len(found) != 1 or found[0][1] != _LEN:
            return None
        _, _, start, end = found[0]
        inline = _wire_fields(raw, start, end)
        if inline is None or len(inline) != 1 or inline[0][1] != _LEN:
            return None
        key = start - len(encode_varint(end - start)) - len(encode_varint(input_field << 3 | _LEN))
        number, _, value_start, value_end = inline[0]
        if number == _ARROW_FIELD:
            try:  # the stream's buffers stay views of the request's bytes
                arrow = _read_arrow(memoryview(raw)[value_start:value_end])
            except InvalidArgument:
                return None
            return cls(raw, key, start, end, arrow.num_rows, arrow=arrow)
        if number != _COLUMNS_FIELD:
            return None
        rows = _first_column_doubles(raw, value_start, value_end)
        if rows is None:
            return None
        return cls(raw, key, start, end, rows, (value_start, value_end))

    def decode(
        self,
        spec: InputSpec,
        *,
        max_rows: int,
        reject_extra: bool = False,
        dtype: type[np.floating[Any]] = np.float64,
    ) -> Table | None:
        """The input decoded straight from the bytes, or None: typed columns in another
        layout than the plain one go through :meth:`message` and :func:`decode`. ``dtype``:
        what typed columns of doubles are read as (see :func:`wire_doubles`)."""
        if self.arrow is not None:
            return decode_arrow(
                self.arrow, spec, max_rows=max_rows, reject_extra=reject_extra, dtype=dtype
            )
        return wire_doubles(self, spec, max_rows, dtype) if spec.all_float64 else None

    def head(self) -> bytes:
        """The request without its input: what protobuf still parses (a few bytes)."""
        return self.raw[: self.key] + self.raw[self.end :]

    def message(self) -> common_pb2.InlineData:
        """The input as a message, for the general decoder (parsed on demand)."""
        try:
            return common_pb2.InlineData.FromString(self.raw[self.start : self.end])
        except Exception as exc:  # DecodeError, or a bad UTF-8 string
            raise InvalidArgument(
                f"the request is not a valid protobuf message: {str(exc)[:300]}",
                field="input",
                reason="MALFORMED_REQUEST",
            ) from None


def _first_column_doubles(raw: bytes, start: int, end: int) -> int | None:
    """How many doubles the first column of ``ColumnarData`` at ``raw[start:end]`` holds as
    one packed run (None: another layout)."""
    pos = start
    try:
        key, pos = _wire_varint(raw, pos)
        if key != (_COLUMN_FIELD << 3 | _LEN):
            return None
        length, pos = _wire_varint(raw, pos)
    except IndexError:
        return None
    parts = _wire_fields(raw, pos, min(pos + length, end))
    if parts is None:
        return None
    doubles = [p for p in parts if p[:2] == (_DOUBLES_FIELD, _LEN)]
    if len(doubles) != 1:
        return None
    run = _wire_fields(raw, doubles[0][2], doubles[0][3])
    if run is None or len(run) != 1 or run[0][:2] != (_VALUES_FIELD, _LEN):
        return None
    size = run[0][3] - run[0][2]
    return size // 8 if size % 8 == 0 else None


def encode_varint(n: int) -> bytes:
    """``n`` as a protobuf varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


_LEN = 2
_COLUMNS_FIELD = common_pb2.InlineData.DESCRIPTOR.fields_by_name["columns"].number
_ARROW_FIELD = common_pb2.InlineData.DESCRIPTOR.fields_by_name["arrow_ipc"].number
_COLUMN_FIELD = common_pb2.ColumnarData.DESCRIPTOR.fields_by_name["columns"].number
_NAME_FIELD = common_pb2.Column.DESCRIPTOR.fields_by_name["name"].number
_DOUBLES_FIELD = common_pb2.Column.DESCRIPTOR.fields_by_name["double_values"].number
_VALUES_FIELD = common_pb2.DoubleValues.DESCRIPTOR.fields_by_name["values"].number


def _wire_fields(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]] | None:
    """``(number, wire type, value start, value end)`` of each field in ``buf[start:end]``
    (varints: ``(number, 0, value, 0)``), or None when it is not well-formed."""
    out: list[tuple[int, int, int, int]] = []
    pos = start
    try:
        while pos < end:
            key, pos = _wire_varint(buf, pos)
            number, kind = key >> 3, key & 7
            if kind == 0:
                value, pos = _wire_varint(buf, pos)
                out.append((number, 0, value, 0))
            elif kind == _LEN:
                length, pos = _wire_varint(buf, pos)
                out.append((number, _LEN, pos, pos + length))
                pos += length
            elif kind in (1, 5):  # fixed 64 / 32 bits
                width = 8 if kind == 1 else 4
                out.append((number, kind, pos, pos + width))
                pos += width
            else:
                return None
    except IndexError:
        return None
    return out if pos == end else None


def _wire_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def wire_doubles(
    wire: WireInput,
    spec: InputSpec,
    max_rows: int,
    dtype: type[np.floating[Any]] = np.float64,
) -> Table | None:
    """Exactly the signature's Float64 columns, read from the request bytes (see above), or
    None: then the message is decoded as usual (and names any problem).

    ``dtype=np.float32`` reads the doubles as the float32 values a model that compares
    float32 features (CatBoost, XGBoost) would cast them to anyway, in the same copy: one
    pass over the bytes instead of two, and half the matrix to check (10,000 x 30: ~0.25 ms
    less per call). A double beyond float32's range becomes infinite there and the batch goes
    the general way, as any infinite value does.
    """
    raw = wire.raw
    columns = _wire_fields(raw, *wire.body) if wire.arrow is None else None
    names = spec.name_bytes
    if columns is None or len(columns) != len(names):
        return None
    with np.errstate(over="ignore", invalid="ignore"):  # float32: checked below
        matrix = _read_double_columns(raw, columns, names, max_rows, dtype)
    return None if matrix is None else Table.from_finite_matrix(spec.name_list, matrix)


def _read_double_columns(
    raw: bytes,
    columns: list[tuple[int, int, int, int]],
    names: list[bytes],
    max_rows: int,
    dtype: type[np.floating[Any]],
) -> np.ndarray | None:
    """The (columns, rows) matrix of ``wire_doubles``, or None for another layout."""
    matrix: np.ndarray | None = None
    for j, (number, kind, start, end) in enumerate(columns):
        if (number, kind) != (_COLUMN_FIELD, _LEN):
            return None
        parts = _wire_fields(raw, start, end)
        if parts is None or len(parts) != 2:
            return None
        by_number = {(p[0], p[1]): p for p in parts}
        name = by_number.get((_NAME_FIELD, _LEN))
        doubles = by_number.get((_DOUBLES_FIELD, _LEN))
        if name is None or doubles is None or raw[name[2] : name[3]] != names[j]:
            return None
        run = _wire_fields(raw, doubles[2], doubles[3])
        if run is None or len(run) != 1 or run[0][:2] != (_VALUES_FIELD, _LEN):
            return None
        offset, size = run[0][2], run[0][3] - run[0][2]
        if size % 8:
            return None
        if matrix is None:
            if not _SMALL_FIELD < size // 8 <= max_rows:
                return None  # small batches have their own path; too many rows: refused there
            matrix = np.empty((len(names), size // 8), dtype=dtype)
        elif size // 8 != matrix.shape[1]:
            return None
        matrix[j] = np.frombuffer(raw, dtype="<f8", count=size // 8, offset=offset)
    return matrix


def _present(values: np.ndarray) -> NumericColumn:
    return NumericColumn(values, None)


def _array(values: Any, dtype: Any) -> np.ndarray:
    return np.array(list(values) if len(values) <= _SMALL_FIELD else values, dtype)


def _columnar_raw(column: common_pb2.Column, height: int, j: int) -> _Raw:
    kind = column.WhichOneof("values")
    name = column.name
    mask: np.ndarray | None = None
    if len(column.null_indices):
        idx = np.array(column.null_indices, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= height:
            raise _malformed(
                f"column {name!r}: null_indices must be in [0, {height})",
                f"input.columns.columns[{j}].null_indices",
            )
        mask = np.zeros(height, dtype=bool)
        mask[idx] = True
    if kind is None:
        return _Raw(name, _Src.NULL, pl.Series(name, [None] * height, dtype=pl.Null))
    if kind == "double_values":
        return _Raw(name, _Src.FLOAT, _array(column.double_values.values, np.float64), mask)
    if kind == "int64_values":
        return _Raw(name, _Src.INT, _array(column.int64_values.values, np.int64), mask)
    if kind == "bool_values":
        return _Raw(name, _Src.BOOL, _array(column.bool_values.values, bool), mask)
    if kind == "timestamp_micros":
        micros = np.array(column.timestamp_micros.values, np.int64)
        series = pl.Series(name, micros.view("datetime64[us]"))
        if mask is not None and mask.any():
            series = series.scatter(np.flatnonzero(mask), None)
        return _Raw(name, _Src.DATETIME, series)
    series = pl.Series(name, list(column.string_values.values), dtype=pl.String)
    if mask is not None and mask.any():
        series = series.scatter(np.flatnonzero(mask), None)
    return _Raw(name, _Src.STRING, series)


# ---- Arrow IPC -------------------------------------------------------------------


def _read_arrow(data: bytes | memoryview) -> pa.Table:
    buffer = pa.py_buffer(data)
    try:
        return pa.ipc.open_stream(buffer).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as stream_error:
        try:
            return pa.ipc.open_file(buffer).read_all()
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError):
            raise _malformed(
                f"arrow_ipc is not an Arrow IPC stream or file: {stream_error}", "input.arrow_ipc"
            ) from None


def _arrow_doubles(
    table: pa.Table, spec: InputSpec, dtype: type[np.floating[Any]] = np.float64
) -> Table | None:
    """The common Arrow case in one step, as ``_decode_doubles`` for typed columns: exactly
    the signature's columns, in order, all float64 or float32 without nulls and finite, read
    straight from the Arrow buffers into one matrix of ``dtype`` (no Polars frame, no
    per-column conforming). None when anything differs: the general path then decodes (and
    names any problem).

    float32 columns are the cheap way to send a big batch (half the bytes of doubles): read
    into a float32 matrix for a model that compares float32 features, without a conversion,
    or widened (exactly, as the general path would) into float64 for the others."""
    if table.num_rows == 0 or table.column_names != spec.name_list:
        return None
    columns = table.columns
    if any(c.type not in _ARROW_FLOATS or c.null_count for c in columns):
        return None
    matrix = np.empty((len(columns), table.num_rows), dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 into float32: checked below
        for j, column in enumerate(columns):
            element = _ARROW_FLOATS[column.type]
            offset = 0
            for chunk in column.chunks:
                # the values buffer as is (no nulls, so the validity buffer does not matter);
                # ``to_numpy`` costs ~15 us per column for the same view
                n = len(chunk)
                values = np.frombuffer(
                    chunk.buffers()[1], element, n, chunk.offset * element().itemsize
                )
                matrix[j, offset : offset + n] = values
                offset += n
    return Table.from_finite_matrix(spec.name_list, matrix)


#: Arrow float types the one-step path reads, and their numpy element types
_ARROW_FLOATS: dict[pa.DataType, type[np.floating[Any]]] = {
    pa.float64(): np.float64,
    pa.float32(): np.float32,
}


def _decode_arrow(table: pa.Table, spec: InputSpec) -> tuple[dict[str, _Raw], list[str], int]:
    names = table.column_names
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise _malformed(f"column {dup!r} appears twice", "input.arrow_ipc")
    extra = [n for n in names if n not in spec.by_name]
    keep = [n for n in names if n in spec.by_name]
    raws: dict[str, _Raw] = {}
    if keep:
        try:
            frame = pl.from_arrow(table.select(keep), rechunk=True)
        except Exception as exc:  # an Arrow type Polars cannot take (e.g. a union)
            raise _malformed(f"arrow_ipc has a column type Polars cannot read: {exc}") from None
        assert isinstance(frame, pl.DataFrame)
        for series in frame.get_columns():
            raws[series.name] = _raw_from_series(series)
    return raws, extra, table.num_rows


# --------------------------------------------------------------------------- conform

_NUMPY_INT: dict[type[pl.DataType], type[np.integer[Any]]] = {
    pl.Int8: np.int8,
    pl.Int16: np.int16,
    pl.Int32: np.int32,
    pl.Int64: np.int64,
    pl.UInt8: np.uint8,
    pl.UInt16: np.uint16,
    pl.UInt32: np.uint32,
    pl.UInt64: np.uint64,
}
_INT_RANGE = {
    dtype: (int(np.iinfo(np_type).min), int(np.iinfo(np_type).max))
    for dtype, np_type in _NUMPY_INT.items()
}
_SRC_NAMES = {
    _Src.FLOAT: "a float",
    _Src.INT: "an integer",
    _Src.BOOL: "a bool",
    _Src.STRING: "a string",
    _Src.DATETIME: "a datetime",
    _Src.DATE: "a date",
    _Src.OTHER: "an unsupported type",
}
# Which source kinds each column kind takes (NULL fits everything).
_ACCEPTS: dict[ColumnKind, frozenset[_Src]] = {
    ColumnKind.FLOAT: frozenset({_Src.FLOAT, _Src.INT}),
    ColumnKind.INT: frozenset({_Src.FLOAT, _Src.INT}),
    ColumnKind.BOOL: frozenset({_Src.BOOL}),
    ColumnKind.STRING: frozenset({_Src.STRING}),
    ColumnKind.DATETIME: frozenset({_Src.DATETIME, _Src.DATE, _Src.STRING}),
    ColumnKind.DATE: frozenset({_Src.DATE, _Src.DATETIME, _Src.STRING}),
    ColumnKind.OTHER: frozenset(_Src) - {_Src.MIXED},
}


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _conform(raw: _Raw, col: ColumnSpec) -> Column | _Problem:
    """Check one column against its spec and cast it; a ``_Problem`` names the first bad row."""
    name = col.name
    expected = str(col.dtype)
    if raw.bad_row is not None:
        return _Problem(
            "VALUE_WRONG_TYPE", name, raw.bad_row, f"expected {expected}, got {raw.bad_kind}"
        )
    if raw.src is _Src.NULL:
        if not col.nullable and raw.values.len():
            return _Problem("VALUE_MISSING", name, 0, "value is missing in a non-nullable column")
        n = raw.values.len()
        if col.kind in (ColumnKind.FLOAT, ColumnKind.INT, ColumnKind.BOOL):
            return NumericColumn(np.zeros(n, dtype=_numpy_dtype(col)), np.ones(n, dtype=bool))
        return pl.Series(name, [None] * n, dtype=col.dtype)
    if raw.src not in _ACCEPTS[col.kind]:
        row = _first_present_row(raw)
        return _Problem(
            "VALUE_WRONG_TYPE", name, row, f"expected {expected}, got {_SRC_NAMES[raw.src]}"
        )
    if isinstance(raw.values, np.ndarray):
        return _conform_numpy(raw, col)
    return _conform_series(raw.values, col)


def _conform_float_group(
    raws: list[_Raw], cols: list[ColumnSpec], spec_float32: frozenset[str] = frozenset()
) -> dict[str, Column | _Problem]:
    """``_conform_numpy`` for many float-valued columns (float or Int64 targets) at once:
    the same rules; on any problem the per-column path runs to name it."""
    n = len(raws[0].values)
    matrix = _stack([r.values for r in raws], n)
    masks = [r.mask for r in raws]
    missing = np.isnan(matrix)
    if any(m is not None for m in masks):
        missing |= _stack([np.zeros(n, bool) if m is None else m for m in masks], n)
    bad = np.isinf(matrix)
    ints = [j for j, c in enumerate(cols) if c.kind is ColumnKind.INT]
    if ints:
        sub = matrix[:, ints]
        with np.errstate(invalid="ignore"):
            bad[:, ints] |= (sub != np.floor(sub)) | (np.abs(sub) > 2.0**63)
        bad[:, ints] &= ~missing[:, ints]
    any_missing = missing.any(axis=0)
    if bad.any() or any(
        any_missing[j] and not col.nullable for j, col in enumerate(cols)
    ):  # something is wrong: let the per-column rules name it
        return {col.name: _conform_numpy(raw, col) for raw, col in zip(raws, cols, strict=True)}
    out: dict[str, Column | _Problem] = {}
    for j, col in enumerate(cols):
        values = matrix[:, j]
        mask = missing[:, j] if any_missing[j] else None
        if col.kind is ColumnKind.INT:
            values = (values if mask is None else np.where(mask, 0.0, values)).astype(np.int64)
        elif col.name in spec_float32:
            values = values.astype(np.float32)
        out[col.name] = NumericColumn(values, mask)
    return out


def _stack(arrays: list[np.ndarray], n: int) -> np.ndarray:
    """(n, k) from k arrays of length n; one C call (``column_stack`` loops in Python)."""
    return np.array(arrays).T if n else np.empty((0, len(arrays)))


def _numpy_dtype(col: ColumnSpec) -> Any:
    if col.kind is ColumnKind.BOOL:
        return bool
    if col.kind is ColumnKind.INT:
        return _NUMPY_INT.get(type(col.dtype), np.int64)
    return np.float32 if col.dtype == pl.Float32 else np.float64


def _first_present_row(raw: _Raw) -> int:
    if raw.mask is not None and not raw.mask.all():
        return _first(~raw.mask)
    if isinstance(raw.values, pl.Series) and raw.values.null_count():
        present = raw.values.is_not_null().arg_true()
        return int(present[0]) if present.len() else 0
    return 0


def _conform_numpy(raw: _Raw, col: ColumnSpec) -> Column | _Problem:
    name = col.name
    values: np.ndarray = raw.values
    mask = raw.mask
    if raw.src is _Src.FLOAT:
        finite = np.isfinite(values)
        if not finite.all():
            nan = np.isnan(values)
            if mask is not None:
                nan &= ~mask
            inf = ~finite & ~nan
            if mask is not None:
                inf &= ~mask
            if inf.any():
                return _Problem(
                    "VALUE_NOT_FINITE", name, _first(inf), "infinite values are not accepted"
                )
            if nan.any():
                mask = nan if mask is None else (mask | nan)
    if mask is not None and not mask.any():
        mask = None
    if mask is not None and not col.nullable:
        return _Problem(
            "VALUE_MISSING", name, _first(mask), "value is missing in a non-nullable column"
        )
    target = col.dtype
    if col.kind is ColumnKind.INT:
        present = values if mask is None else values[~mask]
        if raw.src is _Src.FLOAT:
            fractional = present != np.floor(present)
            if fractional.any():
                row = _row_of(fractional, mask)
                description = f"expected {target}, got a fraction"
                return _Problem("VALUE_NOT_INTEGER", name, row, description)
        lo, hi = _INT_RANGE.get(type(target), (None, None))
        if lo is not None and present.size:
            out = (present < lo) | (present > hi)
            if out.any():
                row = _row_of(out, mask)
                return _Problem(
                    "VALUE_OUT_OF_RANGE", name, row, f"value does not fit {target} [{lo}, {hi}]"
                )
        if mask is not None:
            values = np.where(mask, 0, values)
        values = values.astype(_NUMPY_INT.get(type(target), np.int64), copy=False)
    elif col.kind is ColumnKind.FLOAT:
        np_type = np.float32 if target == pl.Float32 else np.float64
        values = values.astype(np_type, copy=False)
    elif col.kind is ColumnKind.OTHER:
        series = pl.Series(name, values)
        if mask is not None:
            series = series.scatter(np.flatnonzero(mask), None)
        return _conform_series(series, col)
    return NumericColumn(values, mask)


def _row_of(flags_of_present: np.ndarray, mask: np.ndarray | None) -> int:
    """Row index of the first True in ``flags_of_present`` (which skips masked rows)."""
    if mask is None:
        return _first(flags_of_present)
    rows = np.flatnonzero(~mask)
    return int(rows[_first(flags_of_present)])


def _conform_series(series: pl.Series, col: ColumnSpec) -> pl.Series | _Problem:
    name = col.name
    target = col.dtype
    nulls_before = series.null_count()
    if col.kind is ColumnKind.STRING:
        # Categories compare as text downstream, so every categorical-like dtype is String.
        out = series if series.dtype == pl.String else series.cast(pl.String)
    else:
        try:
            out = _cast_series(series, col)
        except pl.exceptions.PolarsError:
            # Polars infers a date format from the first value; none fits it.
            row = _first_present_row(_Raw(name, _Src.OTHER, series))
            return _Problem(
                "VALUE_UNPARSABLE", name, row, f"cannot read {series[row]!r} as {target}"
            )
    if out.null_count() != nulls_before:
        lost = (out.is_null() & series.is_not_null()).arg_true()
        row = int(lost[0])
        return _Problem(
            "VALUE_UNPARSABLE",
            name,
            row,
            f"cannot read {series[row]!r} as {target}",
        )
    if nulls_before and not col.nullable:
        row = int(series.is_null().arg_true()[0])
        return _Problem("VALUE_MISSING", name, row, "value is missing in a non-nullable column")
    return out.alias(name)


def _cast_series(series: pl.Series, col: ColumnSpec) -> pl.Series:
    target = col.dtype
    if col.kind is ColumnKind.DATETIME:
        assert isinstance(target, pl.Datetime)
        return _to_datetime(series, target)
    if col.kind is ColumnKind.DATE:
        if series.dtype == pl.String:
            return series.str.to_date(strict=False)
        if isinstance(series.dtype, pl.Datetime):
            return series.dt.date()
    return series.cast(target, strict=False)


def _to_datetime(series: pl.Series, target: pl.Datetime) -> pl.Series:
    unit = target.time_unit or "us"
    tz = target.time_zone
    if series.dtype == pl.String:
        # Mixed offsets parse to UTC; naive strings are read in the target's zone.
        parsed = series.str.to_datetime(time_unit=unit, strict=False)
    elif series.dtype == pl.Date:
        parsed = series.cast(pl.Datetime(unit))
    else:
        parsed = series.cast(pl.Datetime(unit, series.dtype.time_zone))  # type: ignore[attr-defined]
    src_tz = parsed.dtype.time_zone  # type: ignore[attr-defined]
    if tz is None:
        if src_tz is not None:
            parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return parsed
    if src_tz is None:
        return parsed.dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
    return parsed.dt.convert_time_zone(tz)
