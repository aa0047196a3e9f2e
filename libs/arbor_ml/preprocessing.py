"""Polars preprocessing: fit on the train part, apply to any frame, save as plain JSON.

What a fitted :class:`Preprocessor` does to a frame, in order:

1. **Columns.** Every input column it was fitted with must be present (extra columns are
   ignored); a missing one is ``InvalidArgument(field=<column>)``.
2. **Casting.** Each column is cast to its training dtype. A value that cannot be cast
   (``"abc"`` for an integer, ``1.5`` for an integer, an unparsable date) is
   ``InvalidArgument(field=<column>)`` whose message names the row.
3. **Encoding**, one output block per kind, always in this fixed order: numeric and
   boolean columns (Float64), datetime parts (``<col>__year`` ...; Float64), then
   categorical columns. Within a block, the order of the training columns is kept, so the
   order of columns in the frame given at predict time never matters.

   * numeric missing values: ``median`` (of the train part), ``constant``, or ``native``
     (left as NaN for the library's own missing-value handling), per column;
   * categorical: nulls become the *missing category* (``__missing__``); a value not seen
     in training becomes the *unknown category* (``__unknown__``). The output is either
     the string itself (CatBoost native ``cat_features``) or an integer code (index into
     the sorted training vocabulary, with the missing category coded like any seen value
     and ``len(vocabulary)`` as the unknown bucket) that LightGBM and XGBoost consume as
     native categoricals, or that any library consumes as an ordinal number
     (``categorical_encoding="ordinal"``);
   * datetime parts keep nulls as NaN.

Columns that are all null, or hold a single value and no nulls, are dropped at fit time
(and are then not required at predict time); so are datetime parts that do not vary.

The fitted state is a JSON document (:meth:`Preprocessor.to_json`) and nothing else: no
pickle, so a bundle can be inspected and loaded by any version that knows the format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

import polars as pl

from arbor_core.errors import FieldViolation, InvalidArgument
from arbor_ml.types import ModelType, parse_model_type

PREPROCESSING_FORMAT = "arbor.preprocessing/1"

NumericMissing = Literal["native", "median", "constant"]
CategoricalEncoding = Literal["auto", "native", "ordinal"]
ColumnKind = Literal["numeric", "boolean", "categorical", "datetime"]

NUMERIC_MISSING = ("native", "median", "constant")
CATEGORICAL_ENCODINGS = ("auto", "native", "ordinal")
DATETIME_PARTS = (
    "year",
    "quarter",
    "month",
    "day",
    "weekday",
    "dayofyear",
    "hour",
    "minute",
    "epoch",
)
#: ``epoch`` (days since 1970-01-01, with the time of day as a fraction) puts every moment on
#: one axis: a tree can then single out a stretch of days or one bad hour (a storm, an outage),
#: which month/day/hour parts only reach through several splits.
DEFAULT_DATETIME_PARTS = ("year", "month", "day", "weekday", "dayofyear", "hour", "epoch")
_TIME_OF_DAY_PARTS = frozenset({"hour", "minute"})


@dataclass(frozen=True)
class PreprocessingOptions:
    """How to fit a :class:`Preprocessor`; every field has a safe default.

    ``features``: the input columns, in order (``None``: every column of the train frame
    except the target, the weight column and ``exclude``). ``numeric_missing`` is the
    default strategy for numeric and boolean columns and ``column_missing`` overrides it
    per column; ``constant`` fills with ``fill_values[column]`` or ``fill_value``.
    ``categorical_columns`` forces numeric columns (integer codes, say) to be treated as
    categories. ``categorical_encoding``: ``auto``/``native`` use the library's native
    categorical support, ``ordinal`` feeds integer codes as plain numbers.
    """

    features: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    numeric_missing: NumericMissing = "native"
    column_missing: Mapping[str, NumericMissing] = field(default_factory=dict)
    fill_value: float = 0.0
    fill_values: Mapping[str, float] = field(default_factory=dict)
    categorical_encoding: CategoricalEncoding = "auto"
    categorical_columns: tuple[str, ...] = ()
    missing_category: str = "__missing__"
    unknown_category: str = "__unknown__"
    datetime_parts: tuple[str, ...] = DEFAULT_DATETIME_PARTS
    drop_constant: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PreprocessingOptions:
        """From JSON-like options (the training service's request); validates them."""
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(
                f"unknown preprocessing option {unknown[0]!r}",
                field=f"preprocessing.{unknown[0]}",
            )
        for key in ("features", "exclude", "categorical_columns", "datetime_parts"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        options = cls(**data)
        options.validate()
        return options

    def validate(self) -> None:
        violations: list[FieldViolation] = []

        def bad(path: str, message: str) -> None:
            violations.append(FieldViolation(f"preprocessing.{path}", message))

        if self.numeric_missing not in NUMERIC_MISSING:
            bad("numeric_missing", f"must be one of {', '.join(NUMERIC_MISSING)}")
        for column, strategy in self.column_missing.items():
            if strategy not in NUMERIC_MISSING:
                bad(f"column_missing.{column}", f"must be one of {', '.join(NUMERIC_MISSING)}")
        if not _is_finite_number(self.fill_value):
            bad("fill_value", "must be a finite number")
        for column, value in self.fill_values.items():
            if not _is_finite_number(value):
                bad(f"fill_values.{column}", "must be a finite number")
        if self.categorical_encoding not in CATEGORICAL_ENCODINGS:
            bad("categorical_encoding", f"must be one of {', '.join(CATEGORICAL_ENCODINGS)}")
        for part in self.datetime_parts:
            if part not in DATETIME_PARTS:
                bad("datetime_parts", f"unknown part {part!r}; known: {', '.join(DATETIME_PARTS)}")
        if not self.missing_category or not self.unknown_category:
            bad("missing_category", "the missing and unknown categories must be non-empty")
        elif self.missing_category == self.unknown_category:
            bad("unknown_category", "must differ from missing_category")
        if self.features is not None and len(set(self.features)) != len(self.features):
            bad("features", "lists a column twice")
        if violations:
            first = violations[0]
            raise InvalidArgument(f"{first.field}: {first.description}", violations=violations)


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- dtypes as plain strings -------------------------------------------------------------

_SIMPLE_DTYPES: dict[str, pl.DataType] = {
    "Int8": pl.Int8(),
    "Int16": pl.Int16(),
    "Int32": pl.Int32(),
    "Int64": pl.Int64(),
    "UInt8": pl.UInt8(),
    "UInt16": pl.UInt16(),
    "UInt32": pl.UInt32(),
    "UInt64": pl.UInt64(),
    "Float32": pl.Float32(),
    "Float64": pl.Float64(),
    "Boolean": pl.Boolean(),
    "String": pl.String(),
    "Categorical": pl.Categorical(),
    "Date": pl.Date(),
    "Null": pl.Null(),
}


def dtype_to_str(dtype: pl.DataType) -> str:
    """A stable spelling of a Polars dtype: ``Int64``, ``Datetime[us, UTC]``, ``Enum``..."""
    if isinstance(dtype, pl.Datetime):
        tz = f", {dtype.time_zone}" if dtype.time_zone else ""
        return f"Datetime[{dtype.time_unit}{tz}]"
    if isinstance(dtype, pl.Enum):
        return "Enum"
    if isinstance(dtype, pl.Decimal):
        return "Decimal"
    for name, simple in _SIMPLE_DTYPES.items():
        if dtype == simple:
            return name
    return str(dtype)


def dtype_from_str(text: str) -> pl.DataType:
    if text in _SIMPLE_DTYPES:
        return _SIMPLE_DTYPES[text]
    if text in ("Enum", "Decimal"):
        # Only their values matter here: categories as strings, decimals as floats.
        return pl.String() if text == "Enum" else pl.Float64()
    if text.startswith("Datetime[") and text.endswith("]"):
        unit, _, tz = text[len("Datetime[") : -1].partition(", ")
        return pl.Datetime(unit, tz or None)  # type: ignore[arg-type]
    raise ValueError(f"unsupported dtype {text!r}")


# --- the fitted state ----------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnSpec:
    """One input column kept by the preprocessor, with everything needed to encode it.

    ``dtype`` is the training dtype (the signature shows it); ``fill`` is the numeric fill
    value (``None`` keeps NaN); ``categories`` is the sorted categorical vocabulary;
    ``parts`` are the datetime parts kept.
    """

    name: str
    dtype: str
    kind: ColumnKind
    missing: str = "native"
    fill: float | None = None
    categories: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "kind": self.kind}
        if self.kind in ("numeric", "boolean"):
            out["missing"] = self.missing
            out["fill"] = self.fill
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        if self.kind == "datetime":
            out["parts"] = list(self.parts)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        return cls(
            name=data["name"],
            dtype=data["dtype"],
            kind=data["kind"],
            missing=data.get("missing", "native"),
            fill=data.get("fill"),
            categories=tuple(data.get("categories", ())),
            parts=tuple(data.get("parts", ())),
        )

    @property
    def cast_dtype(self) -> pl.DataType:
        """What an input value is cast to before encoding (categories compare as strings)."""
        if self.kind == "categorical" and self.dtype in ("String", "Categorical", "Enum"):
            return pl.String()
        return dtype_from_str(self.dtype)


@dataclass(frozen=True)
class DroppedColumn:
    name: str
    dtype: str
    reason: str  # all_null | constant | unsupported_dtype


def _datetime_part(expr: pl.Expr, part: str) -> pl.Expr:
    match part:
        case "year":
            return expr.dt.year()
        case "quarter":
            return expr.dt.quarter()
        case "month":
            return expr.dt.month()
        case "day":
            return expr.dt.day()
        case "weekday":
            return expr.dt.weekday()
        case "dayofyear":
            return expr.dt.ordinal_day()
        case "hour":
            return expr.dt.hour()
        case "minute":
            return expr.dt.minute()
        case "epoch":
            return expr.dt.epoch("s") / 86400.0
    raise ValueError(f"unknown datetime part {part!r}")


def _encoding_for(model_type: ModelType, option: str) -> tuple[bool, str]:
    """(native categorical?, output kind) for a model type and an encoding option."""
    native = option in ("auto", "native")
    match model_type, native:
        case ModelType.CATBOOST, True:
            return True, "string"
        case _, True:
            return True, "codes"
        case _:
            return False, "codes"


class Preprocessor:
    """A fitted preprocessing: build it with :meth:`fit` or :meth:`from_json`.

    ``feature_names`` are the output columns in order; ``categorical_features`` the ones a
    library must treat as native categoricals (empty for ordinal encoding);
    ``categorical_output`` says whether those hold strings (CatBoost) or integer codes.
    """

    def __init__(
        self,
        *,
        model_type: ModelType,
        columns: Sequence[ColumnSpec],
        dropped: Sequence[DroppedColumn] = (),
        native_categorical: bool = True,
        categorical_output: str = "codes",
        missing_category: str = "__missing__",
        unknown_category: str = "__unknown__",
    ) -> None:
        self.model_type = model_type
        self.columns: tuple[ColumnSpec, ...] = tuple(columns)
        self.dropped: tuple[DroppedColumn, ...] = tuple(dropped)
        self.native_categorical = native_categorical
        self.categorical_output = categorical_output
        self.missing_category = missing_category
        self.unknown_category = unknown_category
        numeric = [c for c in self.columns if c.kind in ("numeric", "boolean")]
        dates = [c for c in self.columns if c.kind == "datetime"]
        cats = [c for c in self.columns if c.kind == "categorical"]
        self._ordered = (*numeric, *dates, *cats)
        self.numeric_features: list[str] = [c.name for c in numeric] + [
            f"{c.name}__{part}" for c in dates for part in c.parts
        ]
        self.categorical_columns: list[str] = [c.name for c in cats]
        self.feature_names: list[str] = self.numeric_features + self.categorical_columns
        self.categorical_features: list[str] = (
            list(self.categorical_columns) if native_categorical else []
        )
        self.input_columns: list[str] = [c.name for c in self.columns]
        self._cast_dtypes = {c.name: c.cast_dtype for c in self.columns}
        self._exprs = [expr for c in self._ordered for expr in self._encode(c)]

    # -- fitting -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        frame: pl.DataFrame,
        *,
        model_type: ModelType | str | None = None,
        target: str | None = None,
        weight_column: str | None = None,
        options: PreprocessingOptions | None = None,
    ) -> Preprocessor:
        """Learn columns, dtypes, fill values and vocabularies from the train part."""
        options = options or PreprocessingOptions()
        options.validate()
        model = parse_model_type(model_type)
        if frame.height == 0:
            raise InvalidArgument("the train part has no rows", field="train")
        reserved = {c for c in (target, weight_column) if c}
        if options.features is not None:
            names = list(options.features)
            for name in names:
                if name not in frame.columns:
                    raise InvalidArgument(
                        f"feature column {name!r} is not in the train part", field=name
                    )
                if name in reserved:
                    raise InvalidArgument(
                        f"column {name!r} is the target or weight, not a feature",
                        field="preprocessing.features",
                    )
        else:
            skip = reserved | set(options.exclude)
            names = [name for name in frame.columns if name not in skip]
        forced_categorical = set(options.categorical_columns)
        for name in forced_categorical:
            if name not in names:
                raise InvalidArgument(
                    f"categorical column {name!r} is not a feature",
                    field="preprocessing.categorical_columns",
                )

        specs: list[ColumnSpec] = []
        dropped: list[DroppedColumn] = []
        for name in names:
            series = frame.get_column(name)
            spec_or_reason = _fit_column(series, options, forced=name in forced_categorical)
            if isinstance(spec_or_reason, str):
                if spec_or_reason == "unsupported_dtype" and options.features is not None:
                    raise InvalidArgument(
                        f"column {name!r} has dtype {series.dtype}, which is not supported",
                        field=name,
                    )
                dropped.append(DroppedColumn(name, dtype_to_str(series.dtype), spec_or_reason))
                continue
            specs.append(spec_or_reason)
        if not specs:
            raise InvalidArgument(
                "no usable feature column is left after dropping constant and all-null ones",
                field="preprocessing.features",
            )
        native, output = _encoding_for(model, options.categorical_encoding)
        outputs = [c.name for c in specs if c.kind != "datetime"] + [
            f"{c.name}__{part}" for c in specs if c.kind == "datetime" for part in c.parts
        ]
        clashes = sorted({name for name in outputs if outputs.count(name) > 1})
        if clashes:
            raise InvalidArgument(
                f"datetime part {clashes[0]!r} clashes with a column of the same name",
                field=clashes[0],
            )
        return cls(
            model_type=model,
            columns=specs,
            dropped=dropped,
            native_categorical=native,
            categorical_output=output,
            missing_category=options.missing_category,
            unknown_category=options.unknown_category,
        )

    # -- applying ------------------------------------------------------------------------

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The model's input: ``feature_names`` in order, Float64 numbers, then categoricals."""
        missing = [name for name in self.input_columns if name not in frame.columns]
        if missing:
            raise InvalidArgument(
                f"missing input column{'s' if len(missing) > 1 else ''}: "
                + ", ".join(repr(m) for m in missing),
                violations=[FieldViolation(m, "required input column is missing") for m in missing],
                reason="MISSING_INPUT_COLUMN",
                metadata={"columns": ",".join(missing)},
            )
        schema = frame.schema
        casts = [name for name, dtype in self._cast_dtypes.items() if schema[name] != dtype]
        if casts:
            frame = frame.with_columns(
                [_cast_checked(frame.get_column(name), self._cast_dtypes[name]) for name in casts]
            )
        return frame.select(self._exprs)

    def _encode(self, spec: ColumnSpec) -> list[pl.Expr]:
        col = pl.col(spec.name)
        if spec.kind in ("numeric", "boolean"):
            expr = col.cast(pl.Float64).fill_nan(None)
            fill = float("nan") if spec.fill is None else spec.fill
            return [expr.fill_null(fill).alias(spec.name)]
        if spec.kind == "datetime":
            return [
                _datetime_part(col, part)
                .cast(pl.Float64)
                .fill_null(float("nan"))
                .alias(f"{spec.name}__{part}")
                for part in spec.parts
            ]
        text = col.cast(pl.String).fill_null(self.missing_category)
        vocabulary = list(spec.categories)
        if self.categorical_output == "string":
            expr = (
                pl.when(text.is_in(vocabulary)).then(text).otherwise(pl.lit(self.unknown_category))
            )
        else:
            expr = text.replace_strict(
                vocabulary,
                list(range(len(vocabulary))),
                default=len(vocabulary),
                return_dtype=pl.Int32,
            )
        return [expr.alias(spec.name)]

    # -- description -----------------------------------------------------------------------

    @property
    def input_schema(self) -> list[tuple[str, str]]:
        """(column, training dtype) of each required input column, in training order."""
        return [(c.name, c.dtype) for c in self.columns]

    def category_codes(self, column: str) -> dict[str, int]:
        """The integer code of each category of ``column`` (the unknown bucket included)."""
        spec = next(c for c in self.columns if c.name == column and c.kind == "categorical")
        codes = {value: i for i, value in enumerate(spec.categories)}
        codes[self.unknown_category] = len(spec.categories)
        return codes

    # -- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREPROCESSING_FORMAT,
            "model_type": self.model_type.value,
            "native_categorical": self.native_categorical,
            "categorical_output": self.categorical_output,
            "missing_category": self.missing_category,
            "unknown_category": self.unknown_category,
            "columns": [c.to_dict() for c in self.columns],
            "dropped": [
                {"name": d.name, "dtype": d.dtype, "reason": d.reason} for d in self.dropped
            ],
            "feature_names": self.feature_names,
            "categorical_features": self.categorical_features,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        if data.get("format") != PREPROCESSING_FORMAT:
            raise InvalidArgument(
                f"unsupported preprocessing format {data.get('format')!r}",
                field="preprocessing.format",
            )
        pre = cls(
            model_type=parse_model_type(data["model_type"]),
            columns=[ColumnSpec.from_dict(c) for c in data["columns"]],
            dropped=[DroppedColumn(d["name"], d["dtype"], d["reason"]) for d in data["dropped"]],
            native_categorical=bool(data["native_categorical"]),
            categorical_output=data["categorical_output"],
            missing_category=data["missing_category"],
            unknown_category=data["unknown_category"],
        )
        if pre.feature_names != list(data["feature_names"]):
            raise InvalidArgument(
                "preprocessing feature_names do not match its columns",
                field="preprocessing.feature_names",
            )
        return pre

    @classmethod
    def from_json(cls, text: str | bytes) -> Preprocessor:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocessor) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return (
            f"Preprocessor(model_type={self.model_type.value!r}, "
            f"features={self.feature_names!r}, categorical={self.categorical_features!r})"
        )


# --- fitting helpers -----------------------------------------------------------------------


def _kind_of(dtype: pl.DataType, forced: bool) -> ColumnKind | None:
    if dtype == pl.Boolean:
        return "categorical" if forced else "boolean"
    if dtype.is_numeric():
        return "categorical" if forced else "numeric"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "categorical"
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return "datetime"
    return None


def _fit_column(
    series: pl.Series, options: PreprocessingOptions, *, forced: bool
) -> ColumnSpec | str:
    """The column's spec, or why it is dropped."""
    dtype = series.dtype
    if dtype == pl.Null:
        return "all_null"
    kind = _kind_of(dtype, forced)
    if kind is None:
        return "unsupported_dtype"
    values = series
    if dtype.is_float():
        values = series.fill_nan(None)
    null_count = values.null_count()
    if null_count == values.len():
        return "all_null"
    if options.drop_constant and null_count == 0 and values.n_unique() == 1:
        return "constant"
    dtype_text = dtype_to_str(dtype)
    name = series.name
    if kind in ("numeric", "boolean"):
        strategy = options.column_missing.get(name, options.numeric_missing)
        fill: float | None = None
        if strategy == "median":
            fill = float(values.cast(pl.Float64).median())  # type: ignore[arg-type]
        elif strategy == "constant":
            fill = float(options.fill_values.get(name, options.fill_value))
        return ColumnSpec(name, dtype_text, kind, missing=strategy, fill=fill)
    if kind == "categorical":
        vocabulary = (
            values.cast(pl.String).fill_null(options.missing_category).unique().sort().to_list()
        )
        return ColumnSpec(name, dtype_text, "categorical", categories=tuple(vocabulary))
    parts = [
        part
        for part in options.datetime_parts
        if not (dtype == pl.Date and part in _TIME_OF_DAY_PARTS)
    ]
    frame = series.to_frame().select(
        [_datetime_part(pl.col(name), part).alias(part) for part in parts]
    )
    if options.drop_constant:
        # Nulls do not count: a null date is already visible in every other part.
        parts = [part for part in parts if frame.get_column(part).drop_nulls().n_unique() > 1]
    if not parts:
        return "constant"
    return ColumnSpec(name, dtype_text, "datetime", parts=tuple(parts))


# --- casting ---------------------------------------------------------------------------------


def _cast_checked(series: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Cast to the training dtype; a value that does not fit names its column and row.

    Casting is lenient where no information is lost (``"12"`` -> 12, ``2.0`` -> 2, ISO
    date strings -> dates, ``"true"``/``0``/``1`` -> booleans, NaN -> null) and strict
    otherwise (``1.5`` is not an integer, an int is not a date).
    """
    name = series.name
    source = series.dtype
    if source == pl.Null:
        return series.cast(dtype)
    if dtype.is_temporal() and not (source.is_temporal() or source == pl.String):
        _raise_cast(series, dtype, _first_non_null(series))
    try:
        if dtype.is_temporal() and source == pl.String:
            if isinstance(dtype, pl.Datetime):
                result = series.str.to_datetime(
                    time_unit=dtype.time_unit, time_zone=dtype.time_zone, strict=False
                )
            else:
                result = series.str.to_date(strict=False)
        elif dtype == pl.Boolean and source == pl.String:
            result = series.str.to_lowercase().replace_strict(
                ["true", "false", "1", "0"],
                [True, False, True, False],
                default=None,
                return_dtype=pl.Boolean,
            )
        else:
            result = series.cast(dtype, strict=False)
    except pl.exceptions.PolarsError:
        _raise_cast(series, dtype, _first_non_null(series))
    bad = result.is_null() & series.is_not_null()
    if source.is_float():
        finite = series.is_not_null() & ~series.is_nan()
        bad = bad & ~series.is_nan()
        if dtype.is_integer():
            bad = bad | (finite & (series != series.floor()))
    if source.is_numeric() and dtype == pl.Boolean:
        bad = bad | (series.is_not_null() & ~series.is_in([0, 1]))
    if bad.any():
        _raise_cast(series, dtype, int(bad.arg_true()[0]))
    return result.alias(name)


def _first_non_null(series: pl.Series) -> int | None:
    rows = series.is_not_null().arg_true()
    return int(rows[0]) if rows.len() else None


def _raise_cast(series: pl.Series, dtype: pl.DataType, row: int | None) -> NoReturn:
    value = series[row] if row is not None else None
    where = f" at row {row}" if row is not None else ""
    raise InvalidArgument(
        f"column {series.name!r}{where}: value {value!r} ({series.dtype}) cannot be cast to "
        f"the training dtype {dtype_to_str(dtype)}",
        field=series.name,
        reason="INVALID_COLUMN_VALUE",
        metadata={"column": series.name, "row": "" if row is None else str(row)},
    )
