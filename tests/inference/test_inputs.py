"""Decoding and validation of the three input shapes, without servers (fast)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from google.protobuf import struct_pb2
from inference_support import arrow_ipc, columnar, ipc_bytes, json_rows

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2 as pb
from arbor.registry.v1 import registry_service_pb2 as reg_pb
from arbor_core.errors import InvalidArgument
from arbor_inference.inputs import (
    InputSpec,
    NumericColumn,
    WireInput,
    _arrow_doubles,
    decode,
    decode_arrow,
    encode_varint,
    parse_dtype,
    wire_doubles,
)

SPEC = InputSpec.from_signature(
    reg_pb.ModelSignature(
        inputs=[
            reg_pb.InputColumn(name="x", dtype="Float64", nullable=True),
            reg_pb.InputColumn(name="n", dtype="Int64", nullable=False),
            reg_pb.InputColumn(name="s", dtype="String", nullable=True, categorical=True),
            reg_pb.InputColumn(name="b", dtype="Boolean", nullable=False),
            reg_pb.InputColumn(name="t", dtype="Datetime[us]", nullable=True),
        ]
    )
)
NUMERIC = InputSpec.from_signature(
    reg_pb.ModelSignature(
        inputs=[
            reg_pb.InputColumn(name=f"f{i}", dtype="Float64", nullable=i % 2 == 0) for i in range(6)
        ]
        + [reg_pb.InputColumn(name="k", dtype="Int64", nullable=True)]
    )
)
FRAME = pl.DataFrame(
    {
        "x": [1.5, None, 3.0],
        "n": [2, 3, -4],
        "s": ["a", None, "c"],
        "b": [True, False, True],
        "t": [dt.datetime(2020, 1, 1), None, dt.datetime(2021, 6, 30, 12)],
    },
    schema_overrides={"t": pl.Datetime("us")},
)


def rows(*items: dict[str, Any]) -> common_pb2.InlineData:
    data = common_pb2.InlineData()
    for item in items:
        struct = struct_pb2.Struct()
        struct.update(item)
        data.json_rows.rows.append(struct)
    return data


def problem(data: common_pb2.InlineData, spec: InputSpec = SPEC, **kw: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        decode(data, spec, max_rows=kw.pop("max_rows", 100), **kw)
    return caught.value


@pytest.mark.parametrize("shape", [json_rows, columnar, arrow_ipc])
def test_every_shape_decodes_to_the_same_frame(shape: Any) -> None:
    iso = FRAME.with_columns(pl.col("t").dt.strftime("%Y-%m-%dT%H:%M:%S"))
    data = shape(iso if shape is json_rows else FRAME)  # JSON has no timestamps: ISO strings
    frame = decode(data, SPEC, max_rows=10).frame()
    assert frame.equals(FRAME)
    assert frame.schema == FRAME.schema


@pytest.mark.parametrize("shape", [json_rows, columnar, arrow_ipc])
@pytest.mark.parametrize("height", [3, 40])  # the small-batch matrix path and the general one
def test_numeric_models_block_path_keeps_nulls_nan_and_integers(shape: Any, height: int) -> None:
    rng = np.random.default_rng(height)
    data = {f"f{i}": rng.normal(size=height) for i in range(6)}
    frame = pl.DataFrame(data).with_columns(
        pl.when(pl.int_range(height) == 1).then(None).otherwise(pl.col("f0")).alias("f0"),
        pl.Series("k", np.arange(height), dtype=pl.Int64),
    )
    table = decode(shape(frame), NUMERIC, max_rows=100)
    out = table.frame()
    assert out.schema["k"] == pl.Int64
    assert out["f0"].null_count() == 1 and out["f0"][1] is None
    assert out.drop("f0").equals(frame.drop("f0"))


def test_nan_is_missing_and_refused_in_a_non_nullable_column() -> None:
    frame = pl.DataFrame({f"f{i}": [0.0, 1.0] for i in range(6)}).with_columns(
        pl.Series("f2", [float("nan"), 1.0]), pl.Series("k", [1, 2])
    )
    assert decode(columnar(frame), NUMERIC, max_rows=10).frame()["f2"].null_count() == 1
    bad = frame.with_columns(pl.Series("f1", [0.0, float("nan")]))
    error = problem(columnar(bad), NUMERIC)
    assert (error.reason, error.metadata) == ("VALUE_MISSING", {"column": "f1", "row": "1"})


def test_every_bad_column_is_reported_at_once() -> None:
    error = problem(rows({"x": "a", "n": 1.5, "s": "q", "b": True, "t": None}))
    assert error.reason == "VALUE_WRONG_TYPE"
    assert [v.field for v in error.violations] == ["input.rows[0].x", "input.rows[0].n"]


def test_integer_range_and_int_columns() -> None:
    spec = InputSpec.from_signature(
        reg_pb.ModelSignature(inputs=[reg_pb.InputColumn(name="a", dtype="Int8")])
    )
    error = problem(rows({"a": 1}, {"a": 300}), spec)
    assert (error.reason, error.metadata["row"]) == ("VALUE_OUT_OF_RANGE", "1")
    assert decode(rows({"a": 5}), spec, max_rows=1).frame()["a"].dtype == pl.Int8


def test_timestamps_and_iso_strings_fill_datetime_columns() -> None:
    micros = int(dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
    data = columnar(FRAME)
    data.columns.columns[4].ClearField("timestamp_micros")
    data.columns.columns[4].timestamp_micros.values.extend([micros, 0, micros])
    frame = decode(data, SPEC, max_rows=10).frame()
    assert frame["t"][0] == dt.datetime(2020, 1, 1)
    error = problem(rows({"x": 1.0, "n": 1, "s": "a", "b": True, "t": "2020-13-45"}))
    assert error.reason == "VALUE_UNPARSABLE"


def test_extra_columns_are_ignored_unless_rejected() -> None:
    data = rows({"x": 1.0, "n": 1, "s": "a", "b": True, "t": None, "zz": 1})
    assert decode(data, SPEC, max_rows=1).frame().columns == ["x", "n", "s", "b", "t"]
    error = problem(data, reject_extra=True)
    assert (error.reason, error.violations[0].field) == ("COLUMN_UNEXPECTED", "input.zz")


def test_extra_key_replacing_a_column_in_one_row_is_still_seen() -> None:
    data = rows(
        {"x": 1.0, "n": 1, "s": "a", "b": True, "t": None},
        {"x": 1.0, "n": 1, "s": "a", "b": True, "typo": None},
    )
    assert problem(data, reject_extra=True).reason == "COLUMN_UNEXPECTED"


def test_batch_limits() -> None:
    assert problem(rows(*[{"x": 1.0}] * 3), max_rows=2).reason == "BATCH_TOO_LARGE"
    assert problem(columnar(FRAME), max_rows=2).reason == "BATCH_TOO_LARGE"
    assert problem(arrow_ipc(FRAME), max_rows=2).reason == "BATCH_TOO_LARGE"
    assert problem(common_pb2.InlineData(columns=common_pb2.ColumnarData())).reason == "INPUT_EMPTY"


def test_malformed_columnar_inputs() -> None:
    data = columnar(FRAME)
    data.columns.columns[0].null_indices.append(7)
    assert problem(data).reason == "INPUT_MALFORMED"
    data = columnar(FRAME)
    data.columns.columns[1].name = "x"
    assert problem(data).reason == "INPUT_MALFORMED"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Int64", pl.Int64()),
        ("Datetime[us, UTC]", pl.Datetime("us", "UTC")),
        ("Datetime(time_unit='ns', time_zone=None)", pl.Datetime("ns")),
        ("Enum", pl.String()),
        ("Categorical", pl.Categorical()),
    ],
)
def test_parse_dtype_reads_both_spellings(text: str, expected: pl.DataType) -> None:
    assert parse_dtype(text) == expected


FLOATS = InputSpec.from_signature(
    reg_pb.ModelSignature(
        inputs=[
            reg_pb.InputColumn(name=f"f{i}", dtype="Float64", nullable=i != 1) for i in range(4)
        ]
    )
)


@pytest.mark.parametrize("height", [1, 16, 17, 300])  # list conversion, then numpy's
def test_all_double_columns_decode_in_one_step_like_the_general_path(height: int) -> None:
    rng = np.random.default_rng(height)
    frame = pl.DataFrame({f"f{i}": rng.normal(size=height) for i in range(4)})
    fast = decode(columnar(frame), FLOATS, max_rows=1000)
    assert fast.matrix is not None and fast.matrix.shape == (4, height)
    # another column order takes the general path: same table
    general = decode(columnar(frame.select(["f3", "f2", "f1", "f0"])), FLOATS, max_rows=1000)
    assert general.matrix is None
    assert fast.frame().equals(general.frame()) and fast.frame().equals(frame)
    for name in frame.columns:
        column = fast.columns[name]
        assert isinstance(column, NumericColumn) and column.mask is None
        np.testing.assert_array_equal(column.values, frame[name].to_numpy())


def test_all_double_columns_fall_back_for_every_rule() -> None:
    frame = pl.DataFrame({f"f{i}": [0.5, 1.5, 2.5] for i in range(4)})
    nan = frame.with_columns(pl.Series("f0", [0.5, float("nan"), 2.5]))
    table = decode(columnar(nan), FLOATS, max_rows=10)
    assert table.matrix is None and table.frame()["f0"].null_count() == 1
    error = problem(columnar(frame.with_columns(pl.Series("f1", [0.0, float("nan"), 1.0]))), FLOATS)
    assert (error.reason, error.metadata) == ("VALUE_MISSING", {"column": "f1", "row": "1"})
    error = problem(columnar(frame.with_columns(pl.Series("f2", [0.0, 1.0, float("inf")]))), FLOATS)
    assert (error.reason, error.metadata) == ("VALUE_NOT_FINITE", {"column": "f2", "row": "2"})
    ragged = columnar(frame)
    ragged.columns.columns[2].double_values.values.append(1.0)
    assert problem(ragged, FLOATS).reason == "INPUT_MALFORMED"
    ints = columnar(frame.with_columns(pl.Series("f3", [1, 2, 3])))
    assert decode(ints, FLOATS, max_rows=10).frame()["f3"].to_list() == [1.0, 2.0, 3.0]
    assert problem(columnar(frame), FLOATS, max_rows=2).reason == "BATCH_TOO_LARGE"
    with_null = columnar(frame)
    with_null.columns.columns[0].null_indices.append(1)
    assert decode(with_null, FLOATS, max_rows=10).frame()["f0"].null_count() == 1
    missing = columnar(frame.drop("f3"))
    assert problem(missing, FLOATS).reason == "COLUMN_MISSING"


def test_small_double_batches_are_read_from_the_wire_bytes_only_when_the_layout_matches() -> None:
    from arbor_inference.inputs import _decode_small_doubles

    frame = pl.DataFrame({f"f{i}": [0.25 * i, -1.5] for i in range(4)})
    table = _decode_small_doubles(columnar(frame).columns, FLOATS, max_rows=10)
    assert table is not None and table.frame().equals(frame)
    assert _decode_small_doubles(columnar(frame).columns, FLOATS, max_rows=1) is None
    renamed = columnar(frame)
    renamed.columns.columns[1].name = "g1"  # same length, other bytes
    assert _decode_small_doubles(renamed.columns, FLOATS, max_rows=10) is None
    nulls = columnar(frame)
    nulls.columns.columns[3].null_indices.append(0)
    assert _decode_small_doubles(nulls.columns, FLOATS, max_rows=10) is None
    inf = columnar(frame.with_columns(pl.Series("f2", [float("inf"), 1.0])))
    assert _decode_small_doubles(inf.columns, FLOATS, max_rows=10) is None


INPUT_FIELD = pb.PredictRequest.DESCRIPTOR.fields_by_name["input"].number


def _request_wire(data: common_pb2.InlineData) -> WireInput | None:
    """The bytes of a PredictRequest around ``data``, as the Predict handler keeps them."""
    raw = pb.PredictRequest(input=data, include_probabilities=True).SerializeToString()
    return WireInput.of(raw, INPUT_FIELD)


def test_large_double_batches_are_read_from_the_request_bytes_like_the_message() -> None:
    rng = np.random.default_rng(3)
    frame = pl.DataFrame({f"f{i}": rng.normal(size=500) for i in range(4)})
    wire = _request_wire(columnar(frame))
    assert wire is not None
    table = wire_doubles(wire, FLOATS, max_rows=1000)
    assert table is not None and table.frame().equals(frame)
    via_message = decode(columnar(frame), FLOATS, max_rows=1000)
    np.testing.assert_array_equal(table.matrix, via_message.matrix)
    # what protobuf still parses is the request without its input; the input parses on demand
    assert wire.rows == 500 and wire.message() == columnar(frame)
    head = pb.PredictRequest.FromString(wire.head())
    assert head.include_probabilities and not head.HasField("input")


def test_large_double_batches_may_be_read_as_float32_in_the_same_copy() -> None:
    rng = np.random.default_rng(4)
    frame = pl.DataFrame({f"f{i}": rng.normal(size=300) * 10**i for i in range(4)})
    wire = _request_wire(columnar(frame))
    assert wire is not None
    table = wire_doubles(wire, FLOATS, max_rows=1000, dtype=np.float32)
    assert table is not None and table.matrix is not None and table.matrix.dtype == np.float32
    # exactly numpy's rounding of each double, as a model's own float32 cast would give
    np.testing.assert_array_equal(table.matrix, frame.to_numpy().T.astype(np.float32))
    # a finite double beyond float32's range is not silently made infinite: general path
    huge = frame.with_columns(pl.Series("f3", [1e300] + [0.0] * 299))
    wire = _request_wire(columnar(huge))
    assert wire is not None
    assert wire_doubles(wire, FLOATS, max_rows=1000, dtype=np.float32) is None
    assert wire_doubles(wire, FLOATS, max_rows=1000) is not None


def test_the_request_bytes_are_used_only_for_the_plain_layout() -> None:
    frame = pl.DataFrame({f"f{i}": np.linspace(0, 1, 40) + i for i in range(4)})

    def via_wire(data: common_pb2.InlineData, max_rows: int = 1000) -> Any:
        wire = _request_wire(data)
        return None if wire is None else wire_doubles(wire, FLOATS, max_rows=max_rows)

    assert via_wire(columnar(frame)) is not None
    assert via_wire(columnar(frame), max_rows=39) is None  # refused by the general path
    assert via_wire(columnar(frame.head(16))) is None  # small: the small-batch path
    assert via_wire(columnar(frame.select(["f1", "f0", "f2", "f3"]))) is None
    nan = frame.with_columns(pl.Series("f2", [float("nan")] + [0.0] * 39))
    assert via_wire(columnar(nan)) is None
    nulls = columnar(frame)
    nulls.columns.columns[0].null_indices.append(3)
    assert via_wire(nulls) is None
    ragged = columnar(frame)
    ragged.columns.columns[3].double_values.values.append(1.0)
    assert via_wire(ragged) is None
    ints = columnar(frame.with_columns(pl.Series("f3", list(range(40)))))
    assert via_wire(ints) is None
    assert via_wire(arrow_ipc(frame)) is None
    assert WireInput.of(b"\xff\xff", 2) is None  # not protobuf
    # the first column is not doubles: no bytes kept, protobuf parses the whole request
    first_ints = columnar(frame.with_columns(pl.Series("f0", list(range(40)))))
    assert _request_wire(first_ints) is None


def test_a_large_arrow_input_is_read_in_place_from_the_request_bytes() -> None:
    rng = np.random.default_rng(9)
    frame = pl.DataFrame({f"f{i}": rng.normal(size=300) for i in range(4)})
    frame = frame.with_columns(
        pl.when(pl.int_range(300) % 7 == 0).then(None).otherwise(pl.col("f0")).alias("f0")
    )
    wire = _request_wire(arrow_ipc(frame))
    assert wire is not None and wire.arrow is not None and wire.rows == 300
    assert wire.message() == arrow_ipc(frame)
    assert not pb.PredictRequest.FromString(wire.head()).HasField("input")
    # the same table as from the message (nulls in f0 take the general path here)
    from_bytes = decode_arrow(wire.arrow, FLOATS, max_rows=1000)
    assert from_bytes.frame().equals(decode(arrow_ipc(frame), FLOATS, max_rows=1000).frame())
    assert from_bytes.frame()["f0"].null_count() == 43
    with pytest.raises(InvalidArgument) as caught:
        decode_arrow(wire.arrow, FLOATS, max_rows=100)
    assert caught.value.reason == "BATCH_TOO_LARGE"
    # bytes that are not an Arrow stream stay with protobuf, and decoding names the problem
    assert _request_wire(common_pb2.InlineData(arrow_ipc=b"not arrow" * 10)) is None


def test_an_input_kept_as_bytes_that_protobuf_refuses_is_malformed() -> None:
    frame = pl.DataFrame({f"f{i}": np.linspace(0, 1, 40) for i in range(4)})
    raw = pb.PredictRequest(input=columnar(frame)).SerializeToString()
    broken = raw.replace(b"\x0a\x02f3", b"\x0a\x02\xff\xfe")  # a name that is not UTF-8
    wire = WireInput.of(broken, INPUT_FIELD)
    assert wire is not None and wire_doubles(wire, FLOATS, max_rows=100) is None
    with pytest.raises(InvalidArgument) as caught:
        wire.message()
    assert caught.value.reason == "MALFORMED_REQUEST"


def test_doubles_sent_unpacked_take_the_message_path() -> None:
    """Protobuf also allows a repeated double as one field per value: still decoded, by the
    message path, to the same numbers."""

    def field(number: int, payload: bytes) -> bytes:
        return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload

    values = np.linspace(-2, 2, 50)
    packed = field(1, values.astype("<f8").tobytes())
    unpacked = b"".join(b"\x09" + v.tobytes() for v in values.astype("<f8"))

    def request(column_1: bytes) -> bytes:
        columns = b"".join(
            field(1, field(1, f"f{i}".encode()) + field(2, column_1 if i == 1 else packed))
            for i in range(4)
        )
        return field(INPUT_FIELD, field(2, columns))  # input -> InlineData.columns

    for raw, read_from_bytes in ((request(packed), True), (request(unpacked), False)):
        message = pb.PredictRequest.FromString(raw)
        assert list(message.input.columns.columns[1].double_values.values) == list(values)
        wire = WireInput.of(raw, INPUT_FIELD)
        assert wire is not None
        table = wire_doubles(wire, FLOATS, max_rows=100)
        assert (table is not None) is read_from_bytes
        assert wire.message() == message.input
        decoded = decode(wire.message(), FLOATS, max_rows=100)
        np.testing.assert_array_equal(decoded.frame()["f1"].to_numpy(), values)


def test_all_double_arrow_batches_decode_into_one_matrix() -> None:
    rng = np.random.default_rng(5)
    frame = pl.DataFrame({f"f{i}": rng.normal(size=200) for i in range(4)})
    table = decode(arrow_ipc(frame), FLOATS, max_rows=1000)
    assert table.matrix is not None and table.frame().equals(frame)
    # several record batches, one of them cut from the middle of another array
    arrow = frame.to_arrow()
    pieces = pa.Table.from_batches([*arrow.slice(0, 70).to_batches(), *arrow[70:].to_batches()])
    chunked = decode(common_pb2.InlineData(arrow_ipc=ipc_bytes(pieces)), FLOATS, max_rows=1000)
    assert chunked.matrix is not None and chunked.frame().equals(frame)
    sliced = _arrow_doubles(arrow.slice(30, 100), FLOATS)  # arrays that start at an offset
    assert sliced is not None and sliced.frame().equals(frame[30:130])
    for other in (
        frame.select(["f3", "f2", "f1", "f0"]),
        frame.with_columns(pl.Series("f0", [None] * 200, dtype=pl.Float64)),
        frame.with_columns(pl.col("f2").cast(pl.Int64)),
    ):
        general = decode(arrow_ipc(other), FLOATS, max_rows=1000)
        assert general.matrix is None
        assert general.frame().equals(other.select(FLOATS.names).cast(pl.Float64))


def test_float32_arrow_batches_take_the_matrix_path_too() -> None:
    """Half the bytes of doubles: read as they are for a model that compares float32, and
    widened exactly, to what the general path makes of them, for the others."""
    rng = np.random.default_rng(6)
    frame = pl.DataFrame({f"f{i}": rng.normal(size=200) for i in range(4)})
    singles = frame.cast(pl.Float32)
    mixed = frame.with_columns(pl.col("f1", "f3").cast(pl.Float32))
    for sent in (singles, mixed):
        widened = _arrow_doubles(sent.to_arrow(), FLOATS)
        assert widened is not None and widened.matrix is not None
        assert widened.matrix.dtype == np.float64
        assert widened.frame().equals(sent.cast(pl.Float64))
        as_sent = _arrow_doubles(sent.to_arrow(), FLOATS, np.float32)
        assert as_sent is not None and as_sent.matrix is not None
        np.testing.assert_array_equal(as_sent.matrix, widened.matrix.astype(np.float32))
    # float32 arrays that start at an offset, in several chunks
    arrow = singles.to_arrow()
    pieces = pa.Table.from_batches([*arrow.slice(10, 60).to_batches(), *arrow[70:].to_batches()])
    chunked = _arrow_doubles(pieces, FLOATS, np.float32)
    assert chunked is not None and chunked.matrix is not None
    expected = pl.concat([singles[10:70], singles[70:]]).to_numpy().T
    np.testing.assert_array_equal(chunked.matrix, expected)
    # a double beyond float32's range, asked for as float32: the general path decides
    huge = frame.with_columns(pl.Series("f0", [1e300] + [0.0] * 199))
    assert _arrow_doubles(huge.to_arrow(), FLOATS, np.float32) is None
    nan = singles.with_columns(pl.Series("f2", [float("nan")] * 200, dtype=pl.Float32))
    assert _arrow_doubles(nan.to_arrow(), FLOATS) is None
