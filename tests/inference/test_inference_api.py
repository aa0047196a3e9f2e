"""Predict and Explain through the real gRPC server, against a real registry and store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from inference_support import (
    SHAPES,
    Stack,
    arrow_ipc,
    columnar,
    ipc_bytes,
    json_rows,
    make_frame,
    numeric_bundle,
)

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2 as pb
from arbor.registry.v1 import registry_service_pb2 as reg_pb
from arbor_core.status_details import error_details

pytestmark = pytest.mark.integration

PRODUCTION = common_pb2.MODEL_STAGE_PRODUCTION


def by_version(name: str) -> common_pb2.ModelSelector:
    return common_pb2.ModelSelector(model_version=name)


def value_of(value: struct_pb2.Value) -> Any:
    return getattr(value, value.WhichOneof("kind"))


class Models:
    """One registered version per bundle, promoted to PRODUCTION and aliased "champion"."""

    def __init__(self) -> None:
        self.versions: dict[str, Any] = {}
        self.names: dict[str, str] = {}


@pytest.fixture(scope="module")
async def models(stack: Stack) -> Models:
    out = Models()
    for key, bundle in stack.bundles.items():
        name = f"{key.replace('_', '-')}-{time.time_ns() % 10**9}"
        version = await stack.register(name, bundle, nullable={"x1": False})
        await stack.promote(version.name)
        await stack.registry.SetAlias(
            reg_pb.SetAliasRequest(
                model=f"models/{name}", alias="champion", version=version.version
            )
        )
        out.versions[key] = version
        out.names[key] = name
    return out


async def predict(
    stack: Stack, selector: common_pb2.ModelSelector, data: common_pb2.InlineData, **fields: Any
) -> pb.PredictResponse:
    return await stack.inference.Predict(pb.PredictRequest(model=selector, input=data, **fields))


# --------------------------------------------------------------------------- selectors


@pytest.mark.parametrize("kind", ["version", "experiment", "stage", "alias"])
async def test_every_selector_kind_answers_and_says_which_version(
    stack: Stack, models: Models, kind: str
) -> None:
    version = models.versions["binary_catboost"]
    name = models.names["binary_catboost"]
    selector = {
        "version": common_pb2.ModelSelector(model_version=version.name),
        "experiment": common_pb2.ModelSelector(experiment=version.experiment),
        "stage": common_pb2.ModelSelector(stage=common_pb2.StageSelector(model=name)),
        "alias": common_pb2.ModelSelector(
            alias=common_pb2.AliasSelector(model=name, alias="champion")
        ),
    }[kind]
    frame = make_frame(3, 11, "binary").drop("y")
    response = await predict(stack, selector, json_rows(frame))
    served = response.served_model
    assert served.model_version == version.name
    assert served.model == name
    assert served.version == version.version
    assert served.stage == PRODUCTION
    assert served.experiment == version.experiment
    assert served.model_type == common_pb2.MODEL_TYPE_CATBOOST
    assert served.task_type == common_pb2.TASK_TYPE_BINARY
    assert response.row_count == 3


async def test_unknown_model_is_not_found(stack: Stack) -> None:
    selector = common_pb2.ModelSelector(stage=common_pb2.StageSelector(model="no-such-model"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(stack, selector, json_rows(make_frame(1, 0, "binary").drop("y")))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_malformed_selector_is_invalid_argument(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(
            stack, by_version("models/x/versions/zero"), json_rows(make_frame(1, 0, "binary"))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(caught.value)
    assert details["field_violations"][0]["field"] == "model.model_version"


# --------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("rows", [5, 40])  # fast path (<= 8 rows) and the Polars path
async def test_binary_string_labels_and_probabilities_match_in_process(
    stack: Stack, models: Models, rows: int
) -> None:
    bundle = stack.bundles["binary_catboost"]
    frame = make_frame(rows, 21, "binary").drop("y")
    response = await predict(
        stack,
        by_version(models.versions["binary_catboost"].name),
        json_rows(frame),
        include_probabilities=True,
    )
    expected = bundle.predict(frame)
    assert list(response.classes) == ["no", "yes"]
    assert [v.WhichOneof("kind") for v in response.labels] == ["string_value"] * rows
    assert [value_of(v) for v in response.labels] == expected.labels.to_list()
    proba = np.array(response.probabilities).reshape(rows, 2)
    np.testing.assert_allclose(proba, expected.probabilities, rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(response.values) == []


async def test_probabilities_are_optional(stack: Stack, models: Models) -> None:
    response = await predict(
        stack,
        by_version(models.versions["binary_catboost"].name),
        json_rows(make_frame(4, 2, "binary").drop("y")),
    )
    assert len(response.labels) == 4 and list(response.probabilities) == []


async def test_multiclass_integer_labels_stay_numbers(stack: Stack, models: Models) -> None:
    bundle = stack.bundles["multiclass_xgboost"]
    frame = make_frame(30, 5, "multiclass").drop("y")
    response = await predict(
        stack,
        by_version(models.versions["multiclass_xgboost"].name),
        columnar(frame),
        include_probabilities=True,
    )
    expected = bundle.predict(frame)
    assert list(response.classes) == ["10", "20", "30"]
    assert all(v.WhichOneof("kind") == "number_value" for v in response.labels)
    assert [int(value_of(v)) for v in response.labels] == expected.labels.to_list()
    np.testing.assert_allclose(
        np.array(response.probabilities).reshape(30, 3), expected.probabilities, atol=1e-12
    )


async def test_regression_values_match_in_process(stack: Stack, models: Models) -> None:
    bundle = stack.bundles["regression_lightgbm"]
    frame = make_frame(25, 9, "regression").drop("y")
    response = await predict(
        stack, by_version(models.versions["regression_lightgbm"].name), arrow_ipc(frame)
    )
    np.testing.assert_allclose(np.array(response.values), bundle.predict(frame).values, atol=1e-12)
    assert list(response.labels) == [] and list(response.classes) == []


@pytest.mark.parametrize(
    "key",
    [
        "binary_catboost",
        "binary_lightgbm",
        "multiclass_xgboost",
        "regression_lightgbm",
        "multiclass_ensemble",
    ],
)
@pytest.mark.parametrize("rows", [3, 60])
async def test_input_shapes_give_identical_answers(
    stack: Stack, models: Models, key: str, rows: int
) -> None:
    task = key.split("_")[0]
    frame = make_frame(rows, 33, task).drop("y")
    selector = by_version(models.versions[key].name)
    answers = [
        await predict(stack, selector, shape(frame), include_probabilities=True)
        for shape in SHAPES.values()
    ]
    first = answers[0]
    for other in answers[1:]:
        assert list(other.labels) == list(first.labels)
        assert list(other.probabilities) == list(first.probabilities)
        assert list(other.values) == list(first.values)
    expected = stack.bundles[key].predict_raw(frame)
    if task == "regression":
        np.testing.assert_allclose(np.array(first.values), expected, atol=1e-12)
    else:
        np.testing.assert_allclose(
            np.array(first.probabilities).reshape(expected.shape), expected, atol=1e-12
        )


@pytest.mark.parametrize("library", ["catboost", "xgboost", "lightgbm"])
async def test_large_numeric_batches_give_identical_answers_in_every_shape(
    stack: Stack, library: str
) -> None:
    """Large all-double batches take their own decoders (typed columns read from the request
    bytes, Arrow buffers into one matrix): the answers stay those of the in-process model."""
    bundle, frame = numeric_bundle(library, "binary", features=8, trees=20, rows=500)
    name = f"numeric-{library}-{time.time_ns() % 10**9}"
    version = await stack.register(name, bundle)
    big = pl.concat([frame] * 4)  # 2,000 rows (the test server's limit), 128 kB of doubles
    answers = [
        await predict(stack, by_version(version.name), shape(big), include_probabilities=True)
        for shape in SHAPES.values()
    ]
    expected = bundle.predict_raw(big)
    for answer in answers:
        assert answer.row_count == big.height
        np.testing.assert_allclose(
            np.array(answer.probabilities).reshape(expected.shape), expected, atol=1e-12
        )
        assert [v.string_value for v in answer.labels] == bundle.predict(big).labels.to_list()
    # kept as bytes (the first column is doubles) but not the plain layout (the last one is
    # integers): parsed on demand, decoded by the general path, the same answer
    ints = big.with_columns(pl.col("f7").round().cast(pl.Int64))
    answer = await predict(stack, by_version(version.name), columnar(ints))
    expected_labels = bundle.predict(ints.with_columns(pl.col("f7").cast(pl.Float64))).labels
    assert [v.string_value for v in answer.labels] == expected_labels.to_list()
    # an input that protobuf refuses is refused as malformed, also when kept as bytes
    raw = pb.PredictRequest(model=by_version(version.name), input=columnar(big)).SerializeToString()
    broken = raw.replace(b"\x0a\x02f7", b"\x0a\x02\xff\xfe")
    assert broken != raw
    channel = grpc.aio.insecure_channel(stack.inference_runner.address)
    try:
        call = channel.unary_unary(
            "/arbor.inference.v1.InferenceService/Predict",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(broken, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(caught.value)["reason"] == "MALFORMED_REQUEST"
    finally:
        await channel.close()


async def test_arrow_output(stack: Stack, models: Models) -> None:
    frame = make_frame(12, 4, "binary").drop("y")
    response = await predict(
        stack,
        by_version(models.versions["binary_catboost"].name),
        json_rows(frame),
        include_probabilities=True,
        output_format=pb.OUTPUT_FORMAT_ARROW,
    )
    table = pa.ipc.open_stream(response.arrow_ipc).read_all()
    assert table.column_names == ["label", "proba_no", "proba_yes"]
    expected = stack.bundles["binary_catboost"].predict(frame)
    assert table.column("label").to_pylist() == expected.labels.to_list()
    np.testing.assert_allclose(table.column("proba_yes").to_numpy(), expected.probabilities[:, 1])
    assert response.row_count == 12 and list(response.labels) == []

    regression = await predict(
        stack,
        by_version(models.versions["regression_lightgbm"].name),
        json_rows(frame),
        output_format=pb.OUTPUT_FORMAT_ARROW,
    )
    assert pa.ipc.open_stream(regression.arrow_ipc).read_all().column_names == ["value"]


# --------------------------------------------------------------------------- bad input


def _one_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"x1": 0.5, "x2": 1.0, "n3": 3, "color": "red", "flag": True}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not _DROP}


_DROP = object()


def _rows(*rows: dict[str, Any]) -> common_pb2.InlineData:
    data = common_pb2.InlineData()
    for row in rows:
        struct = struct_pb2.Struct()
        struct.update(row)
        data.json_rows.rows.append(struct)
    return data


def _columns_with_inf() -> common_pb2.InlineData:
    frame = pl.DataFrame(
        {
            "x1": [0.0, float("inf")],
            "x2": [1.0, 1.0],
            "n3": [1, 2],
            "color": ["a", "b"],
            "flag": [True, False],
        }
    )
    return columnar(frame)


def _columns_with_nan_in_non_nullable() -> common_pb2.InlineData:
    data = columnar(
        pl.DataFrame(
            {
                "x1": [0.0, 1.0, float("nan")],
                "x2": [1.0, None, float("nan")],
                "n3": [1, 2, 3],
                "color": ["a", None, "b"],
                "flag": [True, False, True],
            }
        )
    )
    return data


def _columns_ragged() -> common_pb2.InlineData:
    data = columnar(make_frame(3, 0, "binary").drop("y"))
    del data.columns.columns[0].double_values.values[-1]
    return data


def _arrow_wrong_type() -> common_pb2.InlineData:
    frame = make_frame(3, 0, "binary").drop("y").with_columns(pl.col("n3").cast(pl.String))
    return common_pb2.InlineData(arrow_ipc=ipc_bytes(frame.to_arrow()))


BAD_INPUTS = {
    "missing column": (_rows(_one_row(color=_DROP)), "COLUMN_MISSING", "input.color", None),
    "string in a number column": (
        _rows(_one_row(), _one_row(x1="high")),
        "VALUE_WRONG_TYPE",
        "input.rows[1].x1",
        1,
    ),
    "number in a string column": (
        _rows(_one_row(color=7)),
        "VALUE_WRONG_TYPE",
        "input.rows[0].color",
        0,
    ),
    "fraction in an integer column": (
        _rows(_one_row(), _one_row(), _one_row(n3=2.5)),
        "VALUE_NOT_INTEGER",
        "input.rows[2].n3",
        2,
    ),
    "null in a non-nullable column": (
        _rows(_one_row(x1=None)),
        "VALUE_MISSING",
        "input.rows[0].x1",
        0,
    ),
    "NaN in a non-nullable column": (
        _columns_with_nan_in_non_nullable(),
        "VALUE_MISSING",
        "input.rows[2].x1",
        2,
    ),
    "infinity": (_columns_with_inf(), "VALUE_NOT_FINITE", "input.rows[1].x1", 1),
    "empty batch": (
        common_pb2.InlineData(json_rows=common_pb2.JsonRows()),
        "INPUT_EMPTY",
        "input",
        None,
    ),
    "no input": (common_pb2.InlineData(), "INPUT_REQUIRED", "input", None),
    "ragged columns": (_columns_ragged(), "INPUT_MALFORMED", "input.columns.columns[1]", None),
    "not arrow": (
        common_pb2.InlineData(arrow_ipc=b"not arrow"),
        "INPUT_MALFORMED",
        "input.arrow_ipc",
        None,
    ),
    "arrow column of the wrong type": (
        _arrow_wrong_type(),
        "VALUE_WRONG_TYPE",
        "input.rows[0].n3",
        0,
    ),
    "unparsable nested value": (
        _rows(_one_row(x2={"a": 1})),
        "VALUE_WRONG_TYPE",
        "input.rows[0].x2",
        0,
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
async def test_bad_input_is_invalid_argument_naming_column_and_row(
    stack: Stack, models: Models, case: str
) -> None:
    data, reason, field, row = BAD_INPUTS[case]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(stack, by_version(models.versions["binary_catboost"].name), data)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(caught.value)
    assert details["reason"] == reason
    assert details["field_violations"][0]["field"] == field
    if row is not None:
        assert details["metadata"]["row"] == str(row)
        assert details["metadata"]["column"] == field.rsplit(".", 1)[1]


async def test_extra_columns_ignored_or_rejected(stack: Stack, models: Models) -> None:
    selector = by_version(models.versions["binary_catboost"].name)
    data = _rows(_one_row(surplus=1.0))
    ok = await predict(stack, selector, data)
    assert ok.row_count == 1
    ignored = await predict(stack, selector, data, extra_columns=pb.EXTRA_COLUMNS_POLICY_IGNORE)
    assert list(ignored.labels) == list(ok.labels)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(stack, selector, data, extra_columns=pb.EXTRA_COLUMNS_POLICY_REJECT)
    details = error_details(caught.value)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details["reason"] == "COLUMN_UNEXPECTED"
    assert details["field_violations"][0]["field"] == "input.surplus"


async def test_nulls_in_nullable_columns_are_missing_values(stack: Stack, models: Models) -> None:
    """x2 and color are nullable: null, NaN and an absent key all mean "missing"."""
    selector = by_version(models.versions["binary_catboost"].name)
    as_null = await predict(
        stack, selector, _rows(_one_row(x2=None, color=None)), include_probabilities=True
    )
    absent = await predict(
        stack,
        selector,
        _rows(_one_row(x2=_DROP, color=None), _one_row()),
        include_probabilities=True,
    )
    frame = pl.DataFrame(
        {"x1": [0.5], "x2": [float("nan")], "n3": [3], "color": [None], "flag": [True]},
        schema_overrides={"color": pl.String},
    )
    nan = await predict(stack, selector, columnar(frame), include_probabilities=True)
    assert list(as_null.probabilities) == list(nan.probabilities) == list(absent.probabilities)[:2]


async def test_batch_over_the_limit_is_refused_before_loading(stack: Stack, models: Models) -> None:
    frame = make_frame(2_001, 0, "binary").drop("y")  # TEST_OPTIONS.max_batch_rows == 2000
    for data in (columnar(frame), arrow_ipc(frame)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await predict(stack, by_version(models.versions["binary_catboost"].name), data)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(caught.value)["reason"] == "BATCH_TOO_LARGE"


async def test_corrupt_bundle_is_data_loss(stack: Stack) -> None:
    name = f"corrupt-{time.time_ns() % 10**9}"
    version = await stack.register(name, stack.bundles["binary_lightgbm"])
    key = version.artifact_uri.split(str(stack.store.root), 1)[1].strip("/") + "/model.txt"
    path = Path(stack.store.root, key)
    path.write_bytes(path.read_bytes().replace(b"tree", b"TREE", 1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await predict(
            stack, by_version(version.name), json_rows(make_frame(1, 0, "binary").drop("y"))
        )
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert error_details(caught.value)["reason"] == "ARTIFACT_CHECKSUM_MISMATCH"


# --------------------------------------------------------------------------- explain


@pytest.mark.parametrize(
    "key", ["binary_catboost", "multiclass_xgboost", "regression_lightgbm", "multiclass_ensemble"]
)
async def test_explain_per_row_adds_up_to_the_raw_output(
    stack: Stack, models: Models, key: str
) -> None:
    bundle = stack.bundles[key]
    task = key.split("_")[0]
    frame = make_frame(6, 44, task).drop("y")
    response = await stack.inference.Explain(
        pb.ExplainRequest(
            model=by_version(models.versions[key].name), input=json_rows(frame), per_row=True
        )
    )
    assert response.method == pb.EXPLAIN_METHOD_SHAP
    assert response.fallback_reason == ""
    assert list(response.features) == bundle.model.feature_names
    margin = bundle.predict_margin(frame)
    outputs = 3 if task == "multiclass" else 1
    assert len(response.rows) == 6 * outputs
    for row in response.rows:
        total = sum(row.contributions) + row.base_value
        if task == "multiclass":
            k = ["10", "20", "30"].index(row.class_label)
            assert total == pytest.approx(margin[row.row_index, k], abs=1e-5)
        else:
            assert row.class_label == ""
            assert total == pytest.approx(margin[row.row_index], abs=1e-5)
    ranking = [f.importance for f in response.global_importance]
    assert ranking == sorted(ranking, reverse=True)
    contributions = np.array([list(r.contributions) for r in response.rows])
    expected_top = np.abs(contributions).reshape(6, outputs, -1).mean(axis=0).sum(axis=0).max()
    assert ranking[0] == pytest.approx(expected_top)


async def test_explain_global_from_background_sample_with_top_k(
    stack: Stack, models: Models
) -> None:
    response = await stack.inference.Explain(
        pb.ExplainRequest(model=by_version(models.versions["binary_catboost"].name), top_k=2)
    )
    assert response.method == pb.EXPLAIN_METHOD_SHAP
    assert len(response.global_importance) == 2
    assert list(response.rows) == []
    stored = stack.bundles["binary_catboost"].metadata["feature_importance"]["ranking"]
    assert [f.feature for f in response.global_importance] == [r["feature"] for r in stored[:2]]


async def test_explain_native_importance_when_asked(stack: Stack, models: Models) -> None:
    response = await stack.inference.Explain(
        pb.ExplainRequest(
            model=by_version(models.versions["regression_lightgbm"].name),
            method=pb.EXPLAIN_METHOD_NATIVE,
        )
    )
    assert response.method == pb.EXPLAIN_METHOD_NATIVE
    assert len(response.global_importance) == len(
        stack.bundles["regression_lightgbm"].model.feature_names
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.inference.Explain(
            pb.ExplainRequest(
                model=by_version(models.versions["regression_lightgbm"].name),
                method=pb.EXPLAIN_METHOD_NATIVE,
                per_row=True,
                input=json_rows(make_frame(2, 0, "regression").drop("y")),
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_explain_per_row_needs_rows(stack: Stack, models: Models) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.inference.Explain(
            pb.ExplainRequest(
                model=by_version(models.versions["binary_catboost"].name), per_row=True
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)["field_violations"][0]["field"] == "per_row"


# --------------------------------------------------------------------------- concurrency


async def test_health_answers_while_big_batches_run(stack: Stack, models: Models) -> None:
    """CPU work runs on the thread pool: the event loop keeps answering health checks."""
    health = health_pb2_grpc.HealthStub(stack.channels[1])
    frame = make_frame(2_000, 1, "binary").drop("y")
    data = json_rows(frame)  # the slowest shape to decode: per-row Python
    selector = by_version(models.versions["binary_catboost"].name)

    async def load() -> None:
        for _ in range(3):
            await predict(stack, selector, data)

    loaders = [asyncio.create_task(load()) for _ in range(4)]
    latencies = []
    while not all(t.done() for t in loaders):
        started = time.perf_counter()
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        latencies.append(time.perf_counter() - started)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await asyncio.sleep(0.01)
    await asyncio.gather(*loaders)
    assert len(latencies) >= 3
    assert float(np.median(latencies)) < 0.25, latencies


async def test_deadline_shorter_than_the_work_is_deadline_exceeded(
    stack: Stack, models: Models
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.inference.Predict(
            pb.PredictRequest(
                model=by_version(models.versions["binary_catboost"].name),
                input=json_rows(make_frame(1_500, 0, "binary").drop("y")),
            ),
            timeout=0.001,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
