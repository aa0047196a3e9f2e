"""The Open Inference Protocol (KServe v2 gRPC) through the real ``tritonclient[grpc]``.

The client runs in a helper subprocess (``oip_client.py``; see its docstring for why) against
the session's real inference server, which serves ``inference.GRPCInferenceService`` beside
``arbor.inference.v1`` on one port. Every prediction is compared with Predict's for the rows.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from inference import grpc_predict_v2_pb2 as v2
from inference_support import Stack, columnar, make_frame, numeric_bundle

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2 as pb
from arbor_core.errors import InvalidArgument
from arbor_inference import oip
from arbor_inference.inputs import ColumnKind, ColumnSpec, InputSpec, decode

pytestmark = pytest.mark.integration

CLIENT = Path(__file__).with_name("oip_client.py")
#: v2 datatype of each test-frame column (make_frame: x1, x2 floats, n3 int, color, flag).
DATATYPES = {"x1": "FP64", "x2": "FP64", "n3": "INT64", "color": "BYTES", "flag": "BOOL"}
INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"


class Triton:
    """The tritonclient subprocess: ``await call(op, **fields)`` -> its JSON answer."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lock = asyncio.Lock()

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        async with self.lock:
            self.process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        assert line, "the tritonclient driver exited; see its stderr above"
        return json.loads(line)  # type: ignore[no-any-return]

    async def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        answer = await self.call(op, **fields)
        assert "error" not in answer, answer["error"]
        return answer


@pytest.fixture(scope="module")
async def triton(stack: Stack) -> AsyncIterator[Triton]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT),
        stack.inference_runner.address,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 << 20,  # one JSON line per answer, thousands of rows in some
    )
    assert process.stdout is not None
    hello = await asyncio.wait_for(process.stdout.readline(), 60)
    assert json.loads(hello) == {"ready": True}
    yield Triton(process)
    assert process.stdin is not None
    process.stdin.close()
    await asyncio.wait_for(process.wait(), 10)


class Models:
    """Model names (one PRODUCTION version each) and their bundles' keys."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.versions: dict[str, str] = {}


@pytest.fixture(scope="module")
async def models(stack: Stack) -> Models:
    out = Models()
    numeric, _ = numeric_bundle("lightgbm", "binary", features=4, trees=20, rows=300)
    bundles = {**stack.bundles, "numeric_lightgbm": numeric}
    for key, bundle in bundles.items():
        name = f"oip-{key.replace('_', '-')}-{time.time_ns() % 10**9}"
        version = await stack.register(name, bundle)
        await stack.promote(version.name)
        out.names[key] = name
        out.versions[key] = version.name
    stack.bundles.setdefault("numeric_lightgbm", numeric)
    return out


def rows(task: str, n: int, seed: int = 7) -> pl.DataFrame:
    """Test rows without null strings (a BYTES tensor has no null; NaN is a float's null)."""
    frame = make_frame(n * 2, seed, task).drop("y")
    return frame.filter(pl.col("color").is_not_null()).head(n)


def tensors(frame: pl.DataFrame, datatypes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One v2 tensor per column; a null float travels as NaN."""
    out = []
    for series in frame.get_columns():
        datatype = (datatypes or DATATYPES)[series.name]
        if datatype.startswith("FP"):
            data = series.cast(pl.Float64).fill_null(float("nan")).to_list()
        else:
            data = series.to_list()
        out.append(
            {"name": series.name, "datatype": datatype, "shape": [frame.height], "data": data}
        )
    return out


async def predict(stack: Stack, version: str, frame: pl.DataFrame) -> pb.PredictResponse:
    return await stack.inference.Predict(
        pb.PredictRequest(
            model=common_pb2.ModelSelector(model_version=version),
            input=columnar(frame),
            include_probabilities=True,
        )
    )


def assert_same_as_predict(answer: dict[str, Any], expected: pb.PredictResponse) -> None:
    outputs = answer["outputs"]
    n = expected.row_count
    if expected.classes:
        labels = [getattr(v, v.WhichOneof("kind")) for v in expected.labels]
        got = outputs["label"]["data"]
        assert got == [type(g)(e) for g, e in zip(got, labels, strict=True)]
        assert outputs["label"]["shape"] == [n]
        proba = np.array(outputs["probabilities"]["data"]).reshape(
            outputs["probabilities"]["shape"]
        )
        assert proba.shape == (n, len(expected.classes))
        np.testing.assert_array_equal(proba.ravel(), np.array(expected.probabilities))
    else:
        np.testing.assert_array_equal(outputs["value"]["data"], list(expected.values))


# --------------------------------------------------------------------------- server


async def test_server_live_ready_and_metadata(stack: Stack, triton: Triton) -> None:
    assert (await triton.ok("live"))["value"] is True
    assert (await triton.ok("ready"))["value"] is True
    metadata = (await triton.ok("server_metadata"))["value"]
    assert metadata["name"] == "arbor-inference"
    assert metadata["version"]
    # the same port's grpc.health.v1 lists the v2 service, so probes of either agree
    health = health_pb2_grpc.HealthStub(stack.channels[1])
    answer = await health.Check(
        health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


# --------------------------------------------------------------------------- models


async def test_model_metadata_lists_signature_inputs_and_outputs(
    triton: Triton, models: Models
) -> None:
    binary = (await triton.ok("model_metadata", model=models.names["binary_catboost"]))["value"]
    assert binary["name"] == models.names["binary_catboost"]
    assert binary["versions"] == ["1"]
    assert binary["platform"] == "arbor_catboost"
    assert [(t["name"], t["datatype"], t["shape"]) for t in binary["inputs"]] == [
        (name, datatype, ["-1"]) for name, datatype in DATATYPES.items()
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in binary["outputs"]] == [
        ("label", "BYTES", ["-1"]),
        ("probabilities", "FP64", ["-1", "2"]),
    ]
    multiclass = (
        await triton.ok("model_metadata", model=models.names["multiclass_xgboost"], version="1")
    )["value"]
    assert [(t["name"], t["datatype"]) for t in multiclass["outputs"]] == [
        ("label", "INT64"),
        ("probabilities", "FP64"),
    ]
    regression = (await triton.ok("model_metadata", model=models.names["regression_lightgbm"]))[
        "value"
    ]
    assert [(t["name"], t["datatype"]) for t in regression["outputs"]] == [("value", "FP64")]


async def test_model_ready_and_unknown_models(triton: Triton, models: Models) -> None:
    name = models.names["binary_lightgbm"]
    assert (await triton.ok("model_ready", model=name))["value"] is True
    assert (await triton.ok("model_ready", model=name, version="1"))["value"] is True
    assert (await triton.ok("model_ready", model=name, version="99"))["value"] is False
    assert (await triton.ok("model_ready", model="no-such-model"))["value"] is False
    missing = await triton.call("model_metadata", model="no-such-model")
    assert missing["error"]["status"] == "StatusCode.NOT_FOUND"
    bad = await triton.call("model_metadata", model=name, version="latest")
    assert bad["error"]["status"] == INVALID_ARGUMENT
    assert "version" in bad["error"]["message"]


# --------------------------------------------------------------------------- infer


@pytest.mark.parametrize(
    ("key", "n"),
    [
        ("binary_catboost", 5),  # fast path (<= 8 rows)
        ("binary_catboost", 40),  # Polars path
        ("binary_catboost", 1700),  # over COLUMNS_MAX_VALUES: tensors travel as Arrow IPC
        ("binary_lightgbm", 12),
        ("multiclass_xgboost", 30),
        ("regression_lightgbm", 25),
    ],
)
async def test_infer_per_column_tensors_matches_predict(
    stack: Stack, triton: Triton, models: Models, key: str, n: int
) -> None:
    frame = rows(key.split("_")[0], n)
    answer = await triton.ok(
        "infer", model=models.names[key], inputs=tensors(frame), id=f"req-{key}"
    )
    assert_same_as_predict(answer, await predict(stack, models.versions[key], frame))
    assert answer["model_version"] == "1"
    assert answer["id"] == f"req-{key}"
    assert answer["parameters"]["model_version_name"] == models.versions[key]
    # tritonclient sends raw_input_contents, so the answer is raw too (all it can read)
    assert answer["raw_output_contents"] == len(answer["outputs"])
    if key == "multiclass_xgboost":
        assert answer["outputs"]["label"]["datatype"] == "INT64"
        classes = json.loads(answer["output_parameters"]["probabilities"]["classes"])
        assert classes == ["10", "20", "30"]


async def test_nan_is_a_missing_value_as_in_predict(
    stack: Stack, triton: Triton, models: Models
) -> None:
    frame = rows("binary", 20).with_columns(x2=pl.lit(None, dtype=pl.Float64))
    answer = await triton.ok("infer", model=models.names["binary_catboost"], inputs=tensors(frame))
    expected = await predict(stack, models.versions["binary_catboost"], frame)
    assert_same_as_predict(answer, expected)


async def test_infer_typed_contents_answers_typed(
    stack: Stack, triton: Triton, models: Models
) -> None:
    frame = rows("binary", 15, seed=3)
    answer = await triton.ok(
        "infer_typed", model=models.names["binary_catboost"], inputs=tensors(frame)
    )
    assert answer["raw_output_contents"] == 0
    expected = await predict(stack, models.versions["binary_catboost"], frame)
    assert_same_as_predict(answer, expected)
    # typed inputs, but outputs asked for as binary data: raw_output_contents
    binary = await triton.ok(
        "infer_typed",
        model=models.names["binary_catboost"],
        inputs=tensors(frame),
        outputs=["label", "probabilities"],
        binary_data=True,
    )
    assert binary["raw_output_contents"] == 2
    assert_same_as_predict(binary, expected)
    # selected outputs only, and integer contents widen into a float column
    frame = rows("regression", 6)
    datatypes = {**DATATYPES, "x1": "INT64"}
    whole = frame.with_columns(pl.col("x1").round(0))
    answer = await triton.ok(
        "infer_typed",
        model=models.names["regression_lightgbm"],
        inputs=tensors(whole.with_columns(pl.col("x1").cast(pl.Int64)), datatypes),
        outputs=["value"],
    )
    expected = await predict(stack, models.versions["regression_lightgbm"], whole)
    assert_same_as_predict(answer, expected)


async def test_requested_outputs_only(stack: Stack, triton: Triton, models: Models) -> None:
    frame = rows("binary", 4)
    answer = await triton.ok(
        "infer", model=models.names["binary_lightgbm"], inputs=tensors(frame), outputs=["label"]
    )
    assert list(answer["outputs"]) == ["label"]
    assert answer["raw_output_contents"] == 1
    expected = await predict(stack, models.versions["binary_lightgbm"], frame)
    assert answer["outputs"]["label"]["data"] == [v.string_value for v in expected.labels]


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
async def test_infer_one_2d_tensor_for_a_numeric_model(
    stack: Stack, triton: Triton, models: Models, datatype: str
) -> None:
    bundle = stack.bundles["numeric_lightgbm"]
    names = [c.name for c in bundle.signature.inputs]
    matrix = np.random.default_rng(5).normal(size=(11, len(names)))
    if datatype == "FP32":
        matrix = matrix.astype(np.float32).astype(np.float64)  # what the server will see
    frame = pl.DataFrame({name: matrix[:, j] for j, name in enumerate(names)})
    tensor = {
        "name": "INPUT0",
        "datatype": datatype,
        "shape": list(matrix.shape),
        "data": matrix.ravel().tolist(),
    }
    answer = await triton.ok("infer", model=models.names["numeric_lightgbm"], inputs=[tensor])
    expected = await predict(stack, models.versions["numeric_lightgbm"], frame)
    assert_same_as_predict(answer, expected)
    # the same rows as one tensor per column give the same answer
    per_column = await triton.ok(
        "infer",
        model=models.names["numeric_lightgbm"],
        inputs=tensors(frame, dict.fromkeys(names, "FP64")),
    )
    assert per_column["outputs"] == answer["outputs"]


async def test_2d_tensor_needs_an_all_numeric_model_and_the_right_width(
    triton: Triton, models: Models
) -> None:
    tensor = {"name": "INPUT0", "datatype": "FP64", "shape": [2, 5], "data": [0.0] * 10}
    mixed = await triton.call("infer", model=models.names["binary_catboost"], inputs=[tensor])
    assert mixed["error"]["status"] == INVALID_ARGUMENT
    assert "non-numeric" in mixed["error"]["message"]
    tensor = {"name": "INPUT0", "datatype": "FP64", "shape": [2, 3], "data": [0.0] * 6}
    narrow = await triton.call("infer", model=models.names["numeric_lightgbm"], inputs=[tensor])
    assert narrow["error"]["status"] == INVALID_ARGUMENT
    assert "[rows, 4]" in narrow["error"]["message"]


# --------------------------------------------------------------------------- errors


async def test_wrong_datatype_is_invalid_argument(triton: Triton, models: Models) -> None:
    frame = rows("binary", 3)
    inputs = tensors(frame)
    inputs[3] = {"name": "color", "datatype": "FP64", "shape": [3], "data": [1.0, 2.0, 3.0]}
    answer = await triton.call("infer", model=models.names["binary_catboost"], inputs=inputs)
    assert answer["error"]["status"] == INVALID_ARGUMENT
    message = answer["error"]["message"]
    assert "color" in message and "FP64" in message and "BYTES" in message
    inputs = tensors(frame, {**DATATYPES, "x1": "BYTES"})
    inputs[0]["data"] = ["a", "b", "c"]
    answer = await triton.call("infer", model=models.names["binary_catboost"], inputs=inputs)
    assert answer["error"]["status"] == INVALID_ARGUMENT
    assert "x1" in answer["error"]["message"]


async def test_missing_input_is_invalid_argument(triton: Triton, models: Models) -> None:
    inputs = [t for t in tensors(rows("binary", 3)) if t["name"] != "flag"]
    answer = await triton.call("infer", model=models.names["binary_catboost"], inputs=inputs)
    assert answer["error"]["status"] == INVALID_ARGUMENT
    assert "missing: flag" in answer["error"]["message"]


async def test_other_bad_requests(triton: Triton, models: Models) -> None:
    name = models.names["binary_catboost"]
    inputs = tensors(rows("binary", 3))
    unknown_output = await triton.call("infer", model=name, inputs=inputs, outputs=["score"])
    assert unknown_output["error"]["status"] == INVALID_ARGUMENT
    assert "score" in unknown_output["error"]["message"]
    extra = [*inputs, {"name": "bogus", "datatype": "FP64", "shape": [3], "data": [0.0] * 3}]
    unexpected = await triton.call("infer", model=name, inputs=extra)
    assert unexpected["error"]["status"] == INVALID_ARGUMENT
    assert "bogus" in unexpected["error"]["message"]
    short = [dict(t) for t in inputs]
    short[1] = {**short[1], "shape": [2], "data": short[1]["data"][:2]}
    uneven = await triton.call("infer", model=name, inputs=short)
    assert uneven["error"]["status"] == INVALID_ARGUMENT
    fraction = tensors(rows("binary", 3), {**DATATYPES, "n3": "FP64"})
    fraction[2]["data"] = [0.5, 1.0, 2.0]
    not_integer = await triton.call("infer", model=name, inputs=fraction)
    assert not_integer["error"]["status"] == INVALID_ARGUMENT
    assert "n3" in not_integer["error"]["message"]
    unknown_model = await triton.call("infer", model="no-such-model", inputs=inputs)
    assert unknown_model["error"]["status"] == "StatusCode.NOT_FOUND"


# --------------------------------------------------------------------------- versions


async def test_empty_version_follows_production(
    stack: Stack, triton: Triton, models: Models
) -> None:
    name = f"oip-promoted-{time.time_ns() % 10**9}"
    first = await stack.register(name, stack.bundles["binary_lightgbm"])
    await stack.promote(first.name)
    second = await stack.register(name, stack.bundles["binary_catboost"])
    frame = rows("binary", 6)
    pinned = await triton.ok("infer", model=name, version="2", inputs=tensors(frame))
    assert pinned["model_version"] == "2"
    assert_same_as_predict(pinned, await predict(stack, second.name, frame))
    assert (await triton.ok("infer", model=name, inputs=tensors(frame)))["model_version"] == "1"
    await stack.promote(second.name)
    deadline = time.monotonic() + 10
    while True:  # the promotion reaches the server as an event
        answer = await triton.ok("infer", model=name, inputs=tensors(frame))
        if answer["model_version"] == "2" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert answer["model_version"] == "2"
    assert answer["outputs"] == pinned["outputs"]


# --------------------------------------------------------------------------- tensor decoding


SPEC = InputSpec.of(
    [
        ColumnSpec("x", pl.Float64(), ColumnKind.FLOAT, nullable=True, categorical=False),
        ColumnSpec("n", pl.Int64(), ColumnKind.INT, nullable=False, categorical=False),
        ColumnSpec("s", pl.String(), ColumnKind.STRING, nullable=True, categorical=True),
        ColumnSpec("b", pl.Boolean(), ColumnKind.BOOL, nullable=False, categorical=False),
    ]
)


def v2_request(raw: bool) -> v2.ModelInferRequest:
    """Four rows, every datatype kind, NaN, empty and non-ASCII strings."""
    x = np.array([1.5, np.nan, -2.0, 1e300], dtype=np.float64)
    n = np.array([3, -1, 0, 7], dtype=np.int32)
    s = ["café", "", "日本", "red"]
    b = np.array([True, False, False, True])
    request = v2.ModelInferRequest(model_name="m")
    tensors_ = [("x", "FP64", x), ("n", "INT32", n), ("s", "BYTES", s), ("b", "BOOL", b)]
    for name, datatype, values in tensors_:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[4, 1])
        if raw and datatype == "BYTES":
            encoded = [v.encode() for v in values]
            raw_bytes = b"".join(len(e).to_bytes(4, "little") + e for e in encoded)
            request.raw_input_contents.append(raw_bytes)
        elif raw:
            request.raw_input_contents.append(np.asarray(values).tobytes())
        else:
            field = {"FP64": "fp64_contents", "INT32": "int_contents", "BOOL": "bool_contents"}
            if datatype == "BYTES":
                tensor.contents.bytes_contents.extend([v.encode() for v in values])
            else:
                getattr(tensor.contents, field[datatype]).extend(np.asarray(values).tolist())
    return request


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("limit", [0, 1_000_000])  # Arrow IPC, typed columns
def test_tensors_decode_to_the_same_rows_every_way(
    monkeypatch: pytest.MonkeyPatch, raw: bool, limit: int
) -> None:
    monkeypatch.setattr(oip, "COLUMNS_MAX_VALUES", limit)
    data = oip.decode_tensors(v2_request(raw), SPEC, "m", max_rows=100)
    assert data.WhichOneof("data") == ("arrow_ipc" if limit == 0 else "columns")
    frame = decode(data, SPEC, max_rows=100).frame()
    expected = pl.DataFrame(
        {
            "x": [1.5, None, -2.0, 1e300],
            "n": [3, -1, 0, 7],
            "s": ["café", "", "日本", "red"],
            "b": [True, False, False, True],
        }
    )
    assert frame.equals(expected)


def test_malformed_raw_bytes_are_invalid_argument() -> None:
    request = v2_request(raw=True)
    request.raw_input_contents[2] = request.raw_input_contents[2][:-1]  # truncated
    with pytest.raises(InvalidArgument) as caught:
        oip.decode_tensors(request, SPEC, "m", max_rows=100)
    assert caught.value.reason == "RAW_CONTENTS_SIZE"
    request = v2_request(raw=True)
    request.raw_input_contents[2] = (
        (2).to_bytes(4, "little")
        + b"\xff\xfe"
        + b"".join(len(e).to_bytes(4, "little") + e for e in [b"", b"x", b"y"])
    )
    with pytest.raises(InvalidArgument) as caught:
        oip.decode_tensors(request, SPEC, "m", max_rows=100)
    assert caught.value.reason == "VALUE_NOT_UTF8"
    request = v2_request(raw=True)
    request.raw_input_contents[0] = request.raw_input_contents[0][:8]
    with pytest.raises(InvalidArgument) as caught:
        oip.decode_tensors(request, SPEC, "m", max_rows=100)
    assert caught.value.reason == "RAW_CONTENTS_SIZE"
    request = v2_request(raw=False)
    request.raw_input_contents.append(b"")
    with pytest.raises(InvalidArgument) as caught:
        oip.decode_tensors(request, SPEC, "m", max_rows=100)
    assert caught.value.reason == "RAW_CONTENTS_MISMATCH"


FLOAT_SPEC = InputSpec.of(
    ColumnSpec(f"f{i}", pl.Float64(), ColumnKind.FLOAT, nullable=True, categorical=False)
    for i in range(3)
)


def matrix_request(x: np.ndarray, datatype: str = "FP64", raw: bool = True) -> Any:
    request = v2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=list(x.shape))
    if raw:
        request.raw_input_contents.append(
            x.astype("<f8" if datatype == "FP64" else "<f4").tobytes()
        )
    else:
        tensor.contents.fp64_contents.extend(x.ravel().tolist())
    return request


def test_a_finite_float_matrix_becomes_a_table_without_inline_data() -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    for request in (matrix_request(x), matrix_request(x, raw=False)):
        table = oip.decode_matrix_table(request, FLOAT_SPEC, max_rows=100)
        assert table is not None and table.height == 4
        assert table.matrix is not None
        np.testing.assert_array_equal(table.matrix.T, x)
        general = decode(
            oip.decode_tensors(request, FLOAT_SPEC, "m", 100), FLOAT_SPEC, max_rows=100
        )
        assert table.frame().equals(general.frame())
    table = oip.decode_matrix_table(matrix_request(x, "FP32"), FLOAT_SPEC, max_rows=100)
    assert table is not None and table.matrix is not None and table.matrix.dtype == np.float64
    # for a model that reads float32 (CatBoost, XGBoost), FP32 is used as sent and FP64 is
    # rounded once, as the model would round it; one too large for float32 goes the general way
    singles = x.astype(np.float32)

    def as_float32(rows: int) -> Any:
        return np.float32

    for datatype in ("FP32", "FP64"):
        request = matrix_request(x, datatype)
        table = oip.decode_matrix_table(request, FLOAT_SPEC, max_rows=100, dtype_for=as_float32)
        assert table is not None and table.matrix is not None
        np.testing.assert_array_equal(table.matrix.T, singles)
    huge = x.copy()
    huge[0, 0] = 1e300
    assert (
        oip.decode_matrix_table(
            matrix_request(huge), FLOAT_SPEC, max_rows=100, dtype_for=as_float32
        )
        is None
    )
    # anything else is left to decode_tensors (which names the problem)
    nan = x.copy()
    nan[1, 2] = np.nan
    assert oip.decode_matrix_table(matrix_request(nan), FLOAT_SPEC, max_rows=100) is None
    assert oip.decode_matrix_table(matrix_request(x[:, :2]), FLOAT_SPEC, max_rows=100) is None
    assert oip.decode_matrix_table(matrix_request(x), FLOAT_SPEC, max_rows=3) is None
    assert oip.decode_matrix_table(matrix_request(x), SPEC, max_rows=100) is None
    short = matrix_request(x)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-8]
    assert oip.decode_matrix_table(short, FLOAT_SPEC, max_rows=100) is None
