"""Bad input: the right error class, reason and field path for each case in the issue."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from split_support import Splitter, classification_frame

from arbor_core.errors import ArborError, InvalidArgument
from arbor_split.domain import (
    DataFormat,
    EntityStrategy,
    Fractions,
    InlineColumn,
    RandomStrategy,
    TimeStrategy,
    UriSource,
    frame_from_arrow_ipc,
    frame_from_columns,
    frame_from_rows,
    validate_fractions,
)


def _field(err: ArborError) -> str:
    assert isinstance(err, InvalidArgument), err
    assert err.violations, "an InvalidArgument must name the field"
    return err.violations[0].field


def _error(fn, *args, **kwargs) -> InvalidArgument:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as info:
        fn(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- columns


def test_missing_target_column(splitter: Splitter) -> None:
    err = _error(splitter.run, splitter.file(classification_frame(50)), target="")
    assert (_field(err), err.reason) == ("split.target_column", "REQUIRED")


def test_unknown_target_column(splitter: Splitter) -> None:
    err = _error(splitter.run, splitter.file(classification_frame(50)), target="nope")
    assert (_field(err), err.reason) == ("split.target_column", "UNKNOWN_COLUMN")
    assert "label" in err.message  # the message lists the real columns


def test_constant_target(splitter: Splitter) -> None:
    frame = classification_frame(50).with_columns(pl.lit("same").alias("label"))
    err = _error(splitter.run, splitter.file(frame))
    assert (_field(err), err.reason) == ("split.target_column", "CONSTANT_TARGET")


def test_stratify_needs_classes(splitter: Splitter) -> None:
    err = _error(
        splitter.run,
        splitter.file(classification_frame(50)),
        target="x1",
        strategy=RandomStrategy(stratify=True),
    )
    assert _field(err) == "split.strategy.random.stratify"


# --------------------------------------------------------------------------- fractions


@pytest.mark.parametrize(
    ("fractions", "field"),
    [
        (Fractions(0.5, 0.2, 0.2), "split.fractions"),
        (Fractions(0.7, 0.4, 0.0), "split.fractions"),
        (Fractions(1.0, 0.0, 0.0), "split.fractions.train"),
        (Fractions(0.9, 0.0, 0.1), "split.fractions.validation"),
        (Fractions(0.6, 0.6, -0.2), "split.fractions.test"),
        (Fractions(float("nan"), 0.5, 0.5), "split.fractions.train"),
    ],
)
def test_bad_fractions(fractions: Fractions, field: str) -> None:
    assert _field(_error(validate_fractions, fractions)) == field


def test_unset_fractions_default_to_80_20() -> None:
    assert validate_fractions(Fractions(0, 0, 0)) == Fractions(0.8, 0.2, 0.0)


def test_a_part_that_would_be_empty(splitter: Splitter) -> None:
    tiny = pl.DataFrame({"x": [1.0, 2.0, 3.0], "label": ["a", "b", "a"]})
    err = _error(splitter.run, splitter.file(tiny), fractions=Fractions(0.9, 0.05, 0.05))
    assert err.reason == "EMPTY_PART"
    assert _field(err).startswith("split.fractions.")


def test_cutoff_after_all_rows_empties_validation(splitter: Splitter) -> None:
    strategy = TimeStrategy("when", "cutoffs", validation_start=dt.datetime(2100, 1, 1))
    err = _error(splitter.run, splitter.file(classification_frame(50)), strategy=strategy)
    assert (_field(err), err.reason) == (
        "split.strategy.time.cutoffs.validation_start",
        "EMPTY_PART",
    )


# --------------------------------------------------------------------------- time and entity


def test_time_column_that_is_not_temporal(splitter: Splitter) -> None:
    err = _error(splitter.run, splitter.file(classification_frame(50)), strategy=TimeStrategy("x2"))
    assert (_field(err), err.reason) == (
        "split.strategy.time.time_column",
        "TIME_COLUMN_NOT_TEMPORAL",
    )


def test_string_time_column_that_does_not_parse(splitter: Splitter) -> None:
    err = _error(
        splitter.run, splitter.file(classification_frame(50)), strategy=TimeStrategy("color")
    )
    assert err.reason == "TIME_COLUMN_NOT_TEMPORAL"


def test_unknown_time_column(splitter: Splitter) -> None:
    err = _error(
        splitter.run, splitter.file(classification_frame(50)), strategy=TimeStrategy("nope")
    )
    assert (_field(err), err.reason) == ("split.strategy.time.time_column", "UNKNOWN_COLUMN")


def test_entity_column_with_a_single_entity(splitter: Splitter) -> None:
    frame = classification_frame(50).with_columns(pl.lit(7).alias("customer"))
    err = _error(splitter.run, splitter.file(frame), strategy=EntityStrategy("customer"))
    assert (_field(err), err.reason) == ("split.strategy.entity.entity_column", "SINGLE_ENTITY")


# --------------------------------------------------------------------------- files


def test_unreadable_file(splitter: Splitter) -> None:
    path = splitter.root / "missing.parquet"
    err = _error(splitter.run, str(path))
    assert (_field(err), err.reason) == ("split.source.uri", "SOURCE_NOT_FOUND")


def test_directory_is_not_a_file(splitter: Splitter) -> None:
    (splitter.root / "dir.parquet").mkdir()
    err = _error(splitter.run, str(splitter.root / "dir.parquet"))
    assert err.reason == "SOURCE_NOT_FILE"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.parquet", b"this is not parquet"),
        ("broken.ndjson", b'{"x": 1, "label": "a"}\n{"x": 2, "label"\n'),
        ("ragged.csv", b"x,label\n" + b"1,a\n2,b\n" * 20 + b"2,b,extra,fields\n"),
    ],
)
def test_malformed_files(splitter: Splitter, name: str, content: bytes) -> None:
    (splitter.root / name).write_bytes(content)
    err = _error(splitter.run, str(splitter.root / name))
    assert (_field(err), err.reason) == ("split.source", "SOURCE_UNREADABLE")


def test_unsupported_format(splitter: Splitter) -> None:
    (splitter.root / "data.xlsx").write_bytes(b"PK")
    err = _error(splitter.run, str(splitter.root / "data.xlsx"))
    assert (_field(err), err.reason) == ("split.source.format", "UNSUPPORTED_FORMAT")


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.csv", b""), ("header.csv", b"x,label\n"), ("empty.ndjson", b"")],
)
def test_empty_dataset(splitter: Splitter, name: str, content: bytes) -> None:
    (splitter.root / name).write_bytes(content)
    err = _error(splitter.run, str(splitter.root / name))
    assert err.reason in {"EMPTY_DATASET", "UNKNOWN_COLUMN"}
    assert _field(err) in {"split.source", "split.target_column"}


def test_empty_parquet(splitter: Splitter) -> None:
    path = splitter.file(classification_frame(10).head(0))
    err = _error(splitter.run, path)
    assert (_field(err), err.reason) == ("split.source", "EMPTY_DATASET")


def test_wrong_explicit_format(splitter: Splitter) -> None:
    path = splitter.file(classification_frame(10), "data.parquet")
    err = _error(splitter.run, UriSource(path, DataFormat.NDJSON))
    assert err.reason == "SOURCE_UNREADABLE"


# --------------------------------------------------------------------------- inline rows


def test_json_rows_with_inconsistent_columns() -> None:
    err = _error(frame_from_rows, [{"a": 1, "b": 2}, {"a": 1}, {"a": 1, "b": 2}])
    assert (_field(err), err.reason) == (
        "split.source.inline.json_rows.rows[1]",
        "INCONSISTENT_COLUMNS",
    )
    assert "missing ['b']" in err.message


def test_json_rows_mixing_types_in_a_column() -> None:
    err = _error(frame_from_rows, [{"a": 1}, {"a": "one"}])
    assert err.reason == "INCONSISTENT_COLUMN_TYPES"
    assert err.metadata == {"column": "a"}


def test_json_rows_empty_and_nested() -> None:
    assert _error(frame_from_rows, []).reason == "EMPTY_DATASET"
    assert _error(frame_from_rows, [{"a": {"b": 1}}]).reason == "UNSUPPORTED_VALUE"


def test_columns_of_different_lengths() -> None:
    err = _error(
        frame_from_columns,
        [InlineColumn("a", "double", [1.0, 2.0]), InlineColumn("b", "double", [1.0])],
    )
    assert (_field(err), err.reason) == (
        "split.source.inline.columns.columns[1].values",
        "INCONSISTENT_COLUMNS",
    )


def test_columns_with_bad_null_index_or_duplicate_name() -> None:
    bad_null = _error(frame_from_columns, [InlineColumn("a", "int64", [1], null_indices=[5])])
    assert _field(bad_null) == "split.source.inline.columns.columns[0].null_indices"
    twice = _error(
        frame_from_columns, [InlineColumn("a", "int64", [1]), InlineColumn("a", "int64", [1])]
    )
    assert twice.reason == "DUPLICATE_COLUMN"


def test_garbage_arrow_ipc() -> None:
    err = _error(frame_from_arrow_ipc, b"\x00\x01 not arrow")
    assert (_field(err), err.reason) == ("split.source.inline.arrow_ipc", "SOURCE_UNREADABLE")


def test_reserved_column_names(splitter: Splitter, tmp_path: Path) -> None:
    frame = classification_frame(30).with_columns(pl.lit(1).alias("__arbor_row"))
    err = _error(splitter.run, splitter.file(frame))
    assert err.reason == "RESERVED_COLUMN_NAME"
