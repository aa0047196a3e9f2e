"""Preprocessing: missing values, encoding, column order, casting, unseen categories, missing
columns, datetime parts, dropped columns and the JSON artifact."""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import polars as pl
import pytest

from arbor_core.errors import InvalidArgument
from arbor_ml import ModelType, PreprocessingOptions, Preprocessor

MISSING = "__missing__"
UNKNOWN = "__unknown__"


@pytest.fixture
def small() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "x": [1.0, None, 3.0, float("nan"), 5.0, 7.0],
            "n": [10, 20, 30, 40, None, 60],
            "color": ["red", None, "blue", "red", "green", "blue"],
            "when": [dt.date(2024, m, 2 * m) for m in range(1, 7)],
            "ok": [True, False, None, True, True, False],
            "same": [4, 4, 4, 4, 4, 4],
            "nothing": pl.Series([None] * 6, dtype=pl.String),
            "y": [0, 1, 0, 1, 0, 1],
        }
    )


def fit(frame: pl.DataFrame, model_type: str = "lightgbm", **options: object) -> Preprocessor:
    return Preprocessor.fit(
        frame, model_type=model_type, target="y", options=PreprocessingOptions(**options)
    )


# --- missing values --------------------------------------------------------------------------


def test_numeric_missing_native_keeps_nan(small: pl.DataFrame) -> None:
    out = fit(small).transform(small)
    x = out.get_column("x").to_numpy()
    assert np.isnan(x[1]) and np.isnan(x[3])  # null and NaN are both missing
    assert out.get_column("x").dtype == pl.Float64
    assert np.isnan(out.get_column("ok").to_numpy()[2])


def test_numeric_missing_median_and_constant_per_column(small: pl.DataFrame) -> None:
    pre = fit(
        small,
        numeric_missing="median",
        column_missing={"n": "constant", "ok": "native"},
        fill_values={"n": -1.0},
    )
    out = pre.transform(small)
    # Median of the train values 1, 3, 5, 7 (null and NaN ignored).
    assert out.get_column("x").to_list() == [1.0, 4.0, 3.0, 4.0, 5.0, 7.0]
    assert out.get_column("n").to_list() == [10.0, 20.0, 30.0, 40.0, -1.0, 60.0]
    assert np.isnan(out.get_column("ok").to_numpy()[2])
    # The medians are learned on the train part: a new frame gets the same fill.
    new = small.with_columns(pl.lit(None, dtype=pl.Float64).alias("x"))
    assert pre.transform(new).get_column("x").to_list() == [4.0] * 6


def test_categorical_missing_becomes_its_own_category(small: pl.DataFrame) -> None:
    pre = fit(small, model_type="catboost")
    out = pre.transform(small)
    assert out.get_column("color").to_list() == ["red", MISSING, "blue", "red", "green", "blue"]
    codes = fit(small).transform(small).get_column("color").to_list()
    vocabulary = [MISSING, "blue", "green", "red"]  # sorted, missing included
    assert codes == [vocabulary.index(v) for v in ["red", MISSING, "blue", "red", "green", "blue"]]


# --- encoding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "encoding", "dtype", "native"),
    [
        ("catboost", "auto", pl.String, True),
        ("xgboost", "auto", pl.Int32, True),
        ("lightgbm", "native", pl.Int32, True),
        ("catboost", "ordinal", pl.Int32, False),
        ("lightgbm", "ordinal", pl.Int32, False),
    ],
)
def test_categorical_encoding_follows_the_model_type(
    small: pl.DataFrame, model_type: str, encoding: str, dtype: pl.DataType, native: bool
) -> None:
    pre = fit(small, model_type=model_type, categorical_encoding=encoding)
    out = pre.transform(small)
    assert out.get_column("color").dtype == dtype
    assert pre.categorical_features == (["color"] if native else [])
    assert pre.model_type is ModelType(model_type)


def test_forced_categorical_numeric_column(small: pl.DataFrame) -> None:
    pre = fit(small, categorical_columns=("n",))
    assert pre.categorical_columns == ["n", "color"]  # training order
    assert pre.category_codes("n") == {
        "10": 0,
        "20": 1,
        "30": 2,
        "40": 3,
        "60": 4,
        MISSING: 5,  # "_" sorts after digits
        UNKNOWN: 6,
    }
    assert (
        pre.transform(small.with_columns(pl.lit(99).alias("n"))).get_column("n").to_list()
        == [6] * 6
    )


# --- column order, dropped columns, datetime parts -------------------------------------------


def test_fixed_column_order_whatever_the_input_order(small: pl.DataFrame) -> None:
    pre = fit(small)
    assert pre.feature_names == [
        "x",
        "n",
        "ok",
        "when__month",
        "when__day",
        "when__weekday",
        "when__dayofyear",
        "when__epoch",
        "color",
    ]
    shuffled = small.select(["color", "y", "ok", "when", "n", "x"])
    assert pre.transform(shuffled).equals(pre.transform(small))
    assert pre.transform(small.with_columns(pl.lit(1).alias("extra"))).columns == pre.feature_names


def test_explicit_feature_selection_keeps_its_order(small: pl.DataFrame) -> None:
    pre = fit(small, features=("n", "x"))
    assert pre.input_columns == ["n", "x"]
    assert pre.transform(small).columns == ["n", "x"]
    with pytest.raises(InvalidArgument) as err:
        fit(small, features=("x", "nope"))
    assert err.value.violations[0].field == "nope"
    with pytest.raises(InvalidArgument) as err:
        fit(small, features=("x", "y"))
    assert err.value.violations[0].field == "preprocessing.features"


def test_constant_and_all_null_columns_are_dropped_and_not_required(small: pl.DataFrame) -> None:
    pre = fit(small)
    assert {(d.name, d.reason) for d in pre.dropped} == {
        ("same", "constant"),
        ("nothing", "all_null"),
    }
    assert "same" not in pre.input_columns and "nothing" not in pre.input_columns
    pre.transform(small.drop("same", "nothing"))  # no error
    kept = fit(small, drop_constant=False)
    assert "same" in kept.input_columns


def test_datetime_columns_become_numeric_parts(small: pl.DataFrame) -> None:
    pre = fit(small)
    # Dates: no hour; the year is constant in this frame and is dropped.
    spec = next(c for c in pre.columns if c.name == "when")
    assert spec.parts == ("month", "day", "weekday", "dayofyear", "epoch")
    out = pre.transform(small)
    assert out.get_column("when__month").to_list() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert out.get_column("when__day").to_list() == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    assert out.get_column("when__weekday").to_list() == [2.0, 7.0, 3.0, 1.0, 5.0, 3.0]  # ISO
    stamps = pl.DataFrame(
        {"t": [dt.datetime(2024, 1, 1, h) for h in (1, 5, 9)] + [None], "y": [0, 1, 0, 1]}
    )
    pre = Preprocessor.fit(
        stamps, target="y", options=PreprocessingOptions(datetime_parts=("hour", "weekday"))
    )
    assert pre.feature_names == ["t__hour"]  # weekday is constant (the null aside)
    hours = pre.transform(stamps).get_column("t__hour").to_numpy()
    assert hours[:3].tolist() == [1.0, 5.0, 9.0] and np.isnan(hours[3])


# --- casting ---------------------------------------------------------------------------------


def test_values_are_cast_to_the_training_schema(small: pl.DataFrame) -> None:
    pre = fit(small)
    rows = pl.DataFrame(
        {
            "x": ["2.5"],  # string -> Float64
            "n": [7.0],  # integral float -> Int64
            "color": ["red"],
            "when": ["2024-03-06"],  # ISO string -> Date
            "ok": ["true"],
        }
    )
    out = pre.transform(rows)
    assert out.row(0, named=True) | {"color": 0} == {
        "x": 2.5,
        "n": 7.0,
        "ok": 1.0,
        "when__month": 3.0,
        "when__day": 6.0,
        "when__weekday": 3.0,
        "when__dayofyear": 66.0,
        "when__epoch": 19788.0,  # days from 1970-01-01 to 2024-03-06
        "color": 0,
    }
    assert out.get_column("color").item() == pre.category_codes("color")["red"]


@pytest.mark.parametrize(
    ("column", "values", "bad_row"),
    [
        ("n", [1, 2, "abc"], 2),
        ("n", [1.0, 1.5, 2.0], 1),
        ("x", ["1.0", "one", "3"], 1),
        ("when", ["2024-01-01", "not a date", None], 1),
        ("when", [1, 2, 3], 0),
        ("ok", [1, 0, 2], 2),
    ],
)
def test_a_value_that_cannot_be_cast_names_column_and_row(
    small: pl.DataFrame, column: str, values: list[object], bad_row: int
) -> None:
    pre = fit(small)
    frame = small.head(3).with_columns(pl.Series(column, values, strict=False))
    with pytest.raises(InvalidArgument) as err:
        pre.transform(frame)
    assert err.value.violations[0].field == column
    assert f"row {bad_row}" in err.value.message
    assert err.value.metadata == {"column": column, "row": str(bad_row)}


# --- unseen categories, missing columns ----------------------------------------------------------


@pytest.mark.parametrize("model_type", ["catboost", "xgboost", "lightgbm"])
def test_unseen_category_goes_to_the_unknown_bucket(small: pl.DataFrame, model_type: str) -> None:
    pre = fit(small, model_type=model_type)
    frame = small.head(3).with_columns(pl.Series("color", ["purple", None, "red"]))
    out = pre.transform(frame).get_column("color").to_list()
    if model_type == "catboost":
        assert out == [UNKNOWN, MISSING, "red"]
    else:
        codes = pre.category_codes("color")
        assert out == [codes[UNKNOWN], codes[MISSING], codes["red"]]
        assert codes[UNKNOWN] == 4  # after the 4 training categories


def test_missing_category_unseen_in_training_is_unknown() -> None:
    frame = pl.DataFrame({"c": ["a", "b", "a", "b"], "y": [0, 1, 0, 1]})
    pre = Preprocessor.fit(frame, model_type="xgboost", target="y")
    codes = pre.category_codes("c")
    assert MISSING not in codes
    out = pre.transform(pl.DataFrame({"c": [None, "a"]}, schema={"c": pl.String}))
    assert out.get_column("c").to_list() == [codes[UNKNOWN], codes["a"]]


def test_a_missing_column_is_an_error_naming_it(small: pl.DataFrame) -> None:
    pre = fit(small)
    with pytest.raises(InvalidArgument) as err:
        pre.transform(small.drop("color"))
    assert err.value.violations[0].field == "color"
    assert "color" in err.value.message
    assert err.value.reason == "MISSING_INPUT_COLUMN"
    with pytest.raises(InvalidArgument) as err:
        pre.transform(small.drop("color", "x"))
    assert [v.field for v in err.value.violations] == ["x", "color"]


def test_an_all_null_input_column_is_accepted(small: pl.DataFrame) -> None:
    """JSON rows often carry a column of nulls only (Polars dtype Null)."""
    pre = fit(small)
    frame = small.head(2).with_columns(pl.lit(None).alias("color"), pl.lit(None).alias("x"))
    out = pre.transform(frame)
    assert out.get_column("color").to_list() == [pre.category_codes("color")[MISSING]] * 2
    assert np.isnan(out.get_column("x").to_numpy()).all()


# --- the artifact ----------------------------------------------------------------------------


def test_json_round_trip_is_plain_and_equal(small: pl.DataFrame) -> None:
    pre = fit(small, numeric_missing="median", model_type="catboost")
    text = pre.to_json()
    data = json.loads(text)
    assert data["format"] == "arbor.preprocessing/1"
    assert data["feature_names"] == pre.feature_names
    again = Preprocessor.from_json(text)
    assert again == pre
    assert again.transform(small).equals(pre.transform(small))
    with pytest.raises(InvalidArgument):
        Preprocessor.from_json(json.dumps(data | {"format": "arbor.preprocessing/99"}))


def test_options_are_validated() -> None:
    with pytest.raises(InvalidArgument) as err:
        PreprocessingOptions.from_dict({"numeric_missing": "mean"})
    assert err.value.violations[0].field == "preprocessing.numeric_missing"
    with pytest.raises(InvalidArgument) as err:
        PreprocessingOptions.from_dict({"datetime_parts": ["year", "century"]})
    assert err.value.violations[0].field == "preprocessing.datetime_parts"
    with pytest.raises(InvalidArgument) as err:
        PreprocessingOptions.from_dict({"colour": 1})
    assert err.value.violations[0].field == "preprocessing.colour"
    options = PreprocessingOptions.from_dict({"features": ["a"], "categorical_encoding": "ordinal"})
    assert options.features == ("a",)


def test_unsupported_dtypes_are_dropped_or_refused() -> None:
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0], "tags": [[1], [2], [3]], "y": [0, 1, 0]})
    pre = Preprocessor.fit(frame, target="y")
    assert [(d.name, d.reason) for d in pre.dropped] == [("tags", "unsupported_dtype")]
    with pytest.raises(InvalidArgument) as err:
        Preprocessor.fit(frame, target="y", options=PreprocessingOptions(features=("x", "tags")))
    assert err.value.violations[0].field == "tags"


def test_conversions_to_numpy_are_logged(trained, parts, caplog: pytest.LogCaptureFixture) -> None:
    _, _, bundle = trained("xgboost", "regression")
    with caplog.at_level(logging.DEBUG, logger="arbor_ml"):
        bundle.predict(parts[1].head(4))
    records = [r for r in caplog.records if getattr(r, "conversion", None)]
    assert records, "no conversion was logged"
    assert records[0].rows == 4 and records[0].bytes > 0
    assert "4 rows" in records[0].getMessage()


def test_a_datetime_part_may_not_clash_with_a_column() -> None:
    frame = pl.DataFrame(
        {"d": [dt.date(2024, m, 1) for m in (1, 2, 3)], "d__month": [1.0, 2.0, 5.0], "y": [0, 1, 0]}
    )
    with pytest.raises(InvalidArgument) as err:
        Preprocessor.fit(frame, target="y")
    assert err.value.violations[0].field == "d__month"
