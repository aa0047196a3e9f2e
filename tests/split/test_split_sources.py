"""Every source kind and file format, and the path rules for local and gs:// URIs."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import polars as pl
import pytest
from split_support import DATASETS, Splitter, classification_frame, read_parts

from arbor_core.errors import InvalidArgument, PermissionDenied
from arbor_core.testing import GcsEmulator
from arbor_split.domain import (
    DataAccess,
    DataFormat,
    Fractions,
    InlineColumn,
    InlineSource,
    RandomStrategy,
    SplitSpec,
    UriSource,
    execute_split,
    frame_from_arrow_ipc,
    frame_from_columns,
    frame_from_rows,
)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".ndjson", ".jsonl"])
def test_each_file_format_by_extension(splitter: Splitter, suffix: str) -> None:
    frame = classification_frame(120).drop("when")
    out = splitter.run(splitter.file(frame, f"data{suffix}"))
    parts = read_parts(out)
    assert sum(df.height for df in parts.values()) == 120
    assert set(parts["train"].columns) == set(frame.columns)


def test_explicit_format_overrides_the_extension(splitter: Splitter) -> None:
    path = splitter.root / "export.txt"
    classification_frame(60).drop("when").write_csv(path)
    out = splitter.run(UriSource(str(path), DataFormat.CSV))
    assert out.row_count == 60


def test_file_uri_is_accepted(splitter: Splitter) -> None:
    path = splitter.file(classification_frame(60))
    out = splitter.run(f"file://{path}")
    assert out.row_count == 60


def test_csv_and_parquet_of_the_same_rows_split_the_same_way(splitter: Splitter) -> None:
    frame = classification_frame(200).drop("when")
    a = read_parts(splitter.run(splitter.file(frame, "a.parquet")))
    b = read_parts(splitter.run(splitter.file(frame, "b.csv")))
    for name in a:
        assert a[name].get_column("x1").to_list() == b[name].get_column("x1").to_list()


def test_json_rows_become_a_typed_frame() -> None:
    rows = [
        {"age": 31, "income": 1200.5, "city": "Oslo", "ok": True},
        {"age": 40.0, "income": None, "city": "Rome", "ok": False},
    ]
    frame = frame_from_rows(rows)
    assert frame.schema == pl.Schema(
        {"age": pl.Int64, "income": pl.Float64, "city": pl.String, "ok": pl.Boolean}
    )
    assert frame.get_column("income").null_count() == 1


def test_inline_json_rows_split(splitter: Splitter) -> None:
    rows = [{"x": float(i), "label": "a" if i % 3 else "b"} for i in range(30)]
    frame = frame_from_rows(rows)
    out = splitter.run(InlineSource(frame, "json_rows", "sha"), fractions=Fractions(0.8, 0.2))
    assert [p.row_count for p in out.parts] == [24, 6]


def test_columnar_inline_data_with_nulls_and_timestamps() -> None:
    frame = frame_from_columns(
        [
            InlineColumn("x", "double", [1.0, 2.0, 3.0], null_indices=[1]),
            InlineColumn("n", "int64", [1, 2, 3]),
            InlineColumn("s", "string", ["a", "b", "c"]),
            InlineColumn("b", "bool", [True, False, True]),
            InlineColumn("t", "timestamp_micros", [0, 1_000_000, 2_000_000]),
        ]
    )
    assert frame.get_column("x").to_list() == [1.0, None, 3.0]
    assert frame.schema["t"] == pl.Datetime("us", "UTC")
    assert frame.get_column("t")[1] == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)


def test_arrow_ipc_stream_and_file() -> None:
    frame = classification_frame(20)
    stream, file = io.BytesIO(), io.BytesIO()
    frame.write_ipc_stream(stream)
    frame.write_ipc(file)
    assert frame_from_arrow_ipc(stream.getvalue()).equals(frame)
    assert frame_from_arrow_ipc(file.getvalue()).equals(frame)


def test_shared_dataset_path_is_allowed(splitter: Splitter) -> None:
    out = splitter.run(str(DATASETS / "hpc_data.parquet"), target="class")
    assert out.task_type.value == "multiclass"


def test_gcs_source_is_downloaded_and_split(
    gcs_emulator: GcsEmulator, run_id: str, tmp_path: Path
) -> None:
    bucket = f"arbor-src-{run_id}"
    gcs_emulator.create_bucket(bucket)
    data = io.BytesIO()
    classification_frame(100).drop("when").write_csv(data)
    client = gcs_emulator.client()
    client.bucket(bucket).blob("in/data.csv").upload_from_string(data.getvalue())
    access = DataAccess([str(tmp_path)], client)
    spec = SplitSpec(
        UriSource(f"gs://{bucket}/in/data.csv"), "label", RandomStrategy(), Fractions(0.5, 0.5), 1
    )
    out = execute_split(spec, access, tmp_path / "w")
    assert out.row_count == 100
    missing = SplitSpec(
        UriSource(f"gs://{bucket}/in/nope.csv"), "label", RandomStrategy(), Fractions(0.5, 0.5), 1
    )
    with pytest.raises(InvalidArgument) as info:
        execute_split(missing, access, tmp_path / "w2")
    assert info.value.reason == "SOURCE_NOT_FOUND"
    # gs:// roots in the allow-list restrict buckets.
    narrow = DataAccess([f"gs://{bucket}/other/"], client)
    with pytest.raises(PermissionDenied):
        execute_split(spec, narrow, tmp_path / "w3")


# --------------------------------------------------------------------------- path rules


def _fails(splitter: Splitter, uri: str) -> InvalidArgument | PermissionDenied:
    with pytest.raises((InvalidArgument, PermissionDenied)) as info:
        splitter.run(uri)
    return info.value  # type: ignore[return-value]


def test_parent_segments_are_refused(splitter: Splitter) -> None:
    splitter.file(classification_frame(20))
    err = _fails(splitter, f"{splitter.root}/../data/data.parquet")
    assert isinstance(err, InvalidArgument)
    assert err.reason == "PATH_TRAVERSAL"
    assert err.violations[0].field == "split.source.uri"


def test_paths_outside_the_roots_are_denied(splitter: Splitter, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "x.parquet"
    outside.parent.mkdir()
    classification_frame(20).write_parquet(outside)
    err = _fails(splitter, str(outside))
    assert isinstance(err, PermissionDenied)
    assert err.reason == "DATA_PATH_NOT_ALLOWED"


def test_symlinks_are_resolved_before_the_check(splitter: Splitter, tmp_path: Path) -> None:
    outside = tmp_path / "secret.parquet"
    classification_frame(20).write_parquet(outside)
    link = splitter.root / "innocent.parquet"
    os.symlink(outside, link)
    assert isinstance(_fails(splitter, str(link)), PermissionDenied)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("relative/data.parquet", "RELATIVE_PATH"),
        ("s3://bucket/data.parquet", "UNSUPPORTED_URI"),
        ("file://remote-host/data.parquet", "UNSUPPORTED_URI"),
        ("gs://bucket-only", "INVALID_URI"),
    ],
)
def test_unsupported_uris(splitter: Splitter, uri: str, reason: str) -> None:
    err = _fails(splitter, uri)
    assert isinstance(err, InvalidArgument)
    assert err.reason == reason
