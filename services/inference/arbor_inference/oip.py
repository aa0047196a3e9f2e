"""The Open Inference Protocol (KServe v2 gRPC) beside ``arbor.inference.v1``, on the same port.

Why: Triton's, KServe's and MLServer's clients (``tritonclient[grpc]``, KServe's
``InferenceGRPCClient``, load generators such as ``perf_analyzer``) speak
``inference.GRPCInferenceService``; serving it lets them call Arbor models unchanged. The
contract is ``protos/third_party/inference/grpc_predict_v2.proto``, copied from the spec.

Mapping (one place, so it reads as the API reference):

* **model name** = an Arbor model name (``models/`` prefix allowed); **version** = an Arbor
  version number, and an empty version is the model's PRODUCTION version.
* **inputs** (``ModelMetadata``): one tensor per signature column, in signature order, shape
  ``[-1]``; datatype FP32/FP64 for float columns, INT64 for integer columns, BOOL, and BYTES
  (UTF-8) for string, categorical and temporal (ISO-8601) columns. A tensor of any integer or
  float datatype fills a numeric column (the same whole-number and range checks as Predict);
  other mismatches are INVALID_ARGUMENT. Shapes ``[n]`` or ``[n, 1]``.
  An all-numeric model also takes **one 2-D tensor** ``[n, columns]`` (FP32/FP64, any name
  that is not a column), its columns in signature order.
* **contents**: the typed ``contents`` fields or ``raw_input_contents`` (little-endian,
  row-major; BYTES elements as 4-byte little-endian length + bytes, as tritonclient sends).
  NaN is a missing value, exactly as in Predict.
* **outputs**: classification ``label`` ``[n]`` (the class values in their own datatype:
  BYTES, INT64, BOOL or FP64) and ``probabilities`` ``[n, classes]`` FP64, whose columns
  follow the JSON list in that output's ``classes`` parameter (ModelMetadata has no parameters
  field in the gRPC spec). Regression: ``value`` ``[n]`` FP64. ``outputs`` in the request picks
  some; none means all.
* **raw or typed outputs**: ``raw_output_contents`` when the request used
  ``raw_input_contents`` (tritonclient always does, and reads numbers only from raw) or asks
  for it with a ``binary_data`` parameter (on an output, or ``binary_data_output`` on the
  request); typed ``contents`` otherwise. ``binary_data=false`` forces typed contents.
* **response**: ``model_version`` is the version number that answered; the parameter
  ``model_version_name`` names it in full (``models/{m}/versions/{v}``).
* **errors**: ArborErrors through the server's one error interceptor: INVALID_ARGUMENT for a
  bad request (reason and field named), NOT_FOUND for an unknown model or version,
  DEADLINE_EXCEEDED / UNAVAILABLE as Predict has them.
* **health**: ``ServerLive`` is true while the process answers (a live process that is
  draining is still live); ``ServerReady`` is the service's ``grpc.health.v1`` status;
  ``ModelReady`` resolves and loads the version (first call starts the load) and is true once
  it can be served, false for an unknown model.

Prediction reuses the inference domain unchanged: the tensors (raw contents read with
``numpy.frombuffer``, no copy) become Predict's own input, ``InlineData`` -- typed columns for
small batches, one Arrow IPC batch for large ones -- passed to ``Inference.predict``, so
validation, preprocessing, the model, postprocessing, caching, deadlines and the thread-pool
hop are Predict's; only the tensor <-> column mapping lives here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any, NamedTuple

import grpc
import numpy as np
import pyarrow as pa
from grpc_health.v1 import health_pb2
from inference import grpc_predict_v2_pb2 as pb
from inference import grpc_predict_v2_pb2_grpc as pb_grpc

from arbor.common.v1 import common_pb2
from arbor_core.errors import ArborError, InvalidArgument
from arbor_inference.choices import Choices
from arbor_inference.domain import Inference, LoadedModel, PredictInput, PredictResult
from arbor_inference.inputs import ColumnKind, ColumnSpec, InputSpec, Table, parse_dtype
from arbor_inference.resolver import Selector, selector_from_proto

__all__ = [
    "SERVICE_NAME",
    "OpenInferenceServicer",
    "beside",
    "decode_matrix_table",
    "decode_tensors",
    "model_metadata",
    "selector_for",
]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "arbor-inference"
#: Conversions bigger than this run on the thread pool instead of the event loop.
OFFLOAD_BYTES = 256 * 1024
#: A raw 2-D float tensor up to this size becomes a table on the event loop all the same: it
#: is a view of the request's bytes plus one finiteness pass (10,000 x 30 doubles: ~0.3 ms),
#: cheaper than a hop to the pool, which a batch would otherwise take twice (convert, then
#: predict), queueing behind other batches each time.
MATRIX_INLINE_BYTES = 8 << 20
#: Up to this many values (rows x columns) travel as typed columns, beyond as Arrow IPC.
COLUMNS_MAX_VALUES = 8192

# --------------------------------------------------------------------------- datatypes

#: numpy dtype of each fixed-size v2 datatype (raw contents are little-endian).
_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
#: The numpy dtype of each typed ``InferTensorContents`` field.
_FIELD_NUMPY: dict[str, np.dtype[Any]] = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}
#: The typed ``InferTensorContents`` field of each datatype (FP16 and BF16 are raw only).
_CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_NUMERIC = frozenset(_NUMPY) - {"BOOL"}
#: Which tensor datatypes may fill a column of each kind.
_ACCEPTED: dict[ColumnKind, frozenset[str]] = {
    ColumnKind.FLOAT: _NUMERIC,
    ColumnKind.INT: _NUMERIC,
    ColumnKind.BOOL: frozenset({"BOOL"}),
    ColumnKind.STRING: frozenset({"BYTES"}),
    ColumnKind.DATETIME: frozenset({"BYTES"}),
    ColumnKind.DATE: frozenset({"BYTES"}),
    ColumnKind.OTHER: frozenset({*_NUMPY, "BYTES"}),
}
_U32 = struct.Struct("<I")


def column_datatype(column: ColumnSpec) -> str:
    """The datatype ModelMetadata advertises for a signature column."""
    if column.kind is ColumnKind.FLOAT:
        return "FP32" if column.dtype == parse_dtype("Float32") else "FP64"
    if column.kind is ColumnKind.INT:
        return "INT64"
    if column.kind is ColumnKind.BOOL:
        return "BOOL"
    return "BYTES"


def _numeric_model(spec: InputSpec) -> bool:
    return all(c.kind in (ColumnKind.FLOAT, ColumnKind.INT) for c in spec.columns)


# --------------------------------------------------------------------------- selectors


def selector_for(
    name: str, version: str, name_field: str = "name", version_field: str = "version"
) -> Selector:
    """``(model name, version)`` -> an Arbor selector; empty version -> PRODUCTION."""
    model = name.strip().removeprefix("models/")
    if not model or "/" in model:
        raise InvalidArgument(
            f"model name must be an Arbor model name, got {name[:200]!r}",
            field=name_field,
            reason="INVALID_MODEL_NAME",
        )
    version = version.strip()
    if not version:
        return selector_from_proto(
            common_pb2.ModelSelector(stage=common_pb2.StageSelector(model=model)), version_field
        )
    if not (version.isascii() and version.isdigit()) or len(version) > 18 or int(version) < 1:
        raise InvalidArgument(
            f"model version must be an Arbor version number (1, 2, ...) or empty for the "
            f"PRODUCTION version, got {version[:40]!r}",
            field=version_field,
            reason="INVALID_MODEL_VERSION",
        )
    return selector_from_proto(
        common_pb2.ModelSelector(model_version=f"models/{model}/versions/{int(version)}"),
        version_field,
    )


# --------------------------------------------------------------------------- tensors -> rows


def _bad(message: str, field: str, reason: str, **metadata: Any) -> InvalidArgument:
    return InvalidArgument(message, field=field, reason=reason, metadata=metadata)


class _Tensor(NamedTuple):
    """One input tensor after its header checks: what to decode and how many elements."""

    position: int
    name: str
    datatype: str
    shape: tuple[int, ...]
    elements: int


_DATATYPES = frozenset({*_NUMPY, "BYTES"})


def _header(i: int, tensor: pb.ModelInferRequest.InferInputTensor) -> _Tensor:
    datatype = tensor.datatype
    if datatype not in _DATATYPES:
        datatype = datatype.upper()
        if datatype not in _DATATYPES:
            raise _bad(
                f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported "
                f"(use one of {', '.join(sorted(_DATATYPES))})",
                f"inputs[{i}].datatype",
                "TENSOR_DATATYPE_UNSUPPORTED",
                input=tensor.name,
            )
    shape = tuple(tensor.shape)
    if not shape or min(shape) < 0:
        raise _bad(
            f"input {tensor.name!r}: shape {list(shape)} must have one dimension or more, "
            "none negative",
            f"inputs[{i}].shape",
            "TENSOR_SHAPE_INVALID",
            input=tensor.name,
        )
    return _Tensor(i, tensor.name, datatype, shape, math.prod(shape))


def decode_tensors(
    request: pb.ModelInferRequest, spec: InputSpec, model_name: str, max_rows: int
) -> common_pb2.InlineData:
    """The request's input tensors as Predict's input: one column per signature column.

    Checks what only the tensor form can get wrong (names, datatypes, shapes, element counts,
    raw byte sizes, UTF-8); the values themselves are checked by the Predict pipeline.
    """
    inputs = request.inputs
    if not inputs:
        raise _bad(
            f"model {model_name!r} expects {len(spec.columns)} inputs, got none",
            "inputs",
            "INPUT_REQUIRED",
        )
    raw = request.raw_input_contents
    if raw:
        if len(raw) != len(inputs):
            raise _bad(
                f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs; "
                "give one per input, in the order of inputs",
                "raw_input_contents",
                "RAW_CONTENTS_MISMATCH",
            )
        typed = [t.name for t in inputs if t.HasField("contents")]
        if typed:
            raise _bad(
                f"input {typed[0]!r} has contents although raw_input_contents is used; "
                "use one form for all inputs",
                "raw_input_contents",
                "RAW_CONTENTS_MISMATCH",
            )
    headers = [_header(i, t) for i, t in enumerate(inputs)]
    first = headers[0]
    if (
        len(headers) == 1
        and first.name not in spec.by_name
        and len(first.shape) == 2
        and first.datatype in _NUMERIC
    ):
        return _decode_matrix(request, first, spec, model_name, max_rows)
    return _decode_columns(request, headers, spec, model_name, max_rows)


def decode_matrix_table(
    request: pb.ModelInferRequest,
    spec: InputSpec,
    max_rows: int,
    dtype_for: Callable[[int], Any] | None = None,
) -> Table | None:
    """The common numeric case straight to a validated table, without InlineData: one 2-D
    float tensor ``[rows, columns]`` for a model whose inputs are all Float64, every value
    finite. The raw bytes are used in place (LightGBM's compiled predictor reads them as
    they are). None for anything else (or anything wrong): ``decode_tensors`` then decodes
    and names the problem."""
    inputs = request.inputs
    raw = request.raw_input_contents
    if len(inputs) != 1 or not spec.all_float64 or len(raw) > 1:
        return None
    tensor = inputs[0]
    shape = tuple(tensor.shape)
    if (
        len(shape) != 2
        or shape[1] != len(spec.columns)
        or not 0 < shape[0] <= max_rows
        or tensor.datatype not in ("FP64", "FP32")
        or tensor.name in spec.by_name
        or (raw and tensor.HasField("contents"))
        or (not raw and shape[0] * shape[1] > COLUMNS_MAX_VALUES)  # typed: convert off-loop
    ):
        return None
    header = _Tensor(0, tensor.name, tensor.datatype, shape, shape[0] * shape[1])
    try:
        values = _values(request, header)
    except InvalidArgument:
        return None
    # the element type the model reads (``LoadedModel.matrix_dtype``): an FP32 tensor for
    # CatBoost or XGBoost is used as it is, not widened to float64 and narrowed back
    dtype = np.float64 if dtype_for is None else dtype_for(shape[0])
    with np.errstate(over="ignore", invalid="ignore"):  # FP64 into float32: checked below
        matrix = values.astype(dtype, copy=False).reshape(shape)
    return Table.from_finite_matrix(spec.names, matrix.T)


def _check_rows(rows: int, max_rows: int) -> None:
    if rows == 0:
        raise _bad("the input tensors have no rows", "inputs", "INPUT_EMPTY")
    if rows > max_rows:
        raise _bad(
            f"the input tensors have {rows} rows, more than the limit of {max_rows}; "
            "split the batch",
            "inputs",
            "BATCH_TOO_LARGE",
            rows=rows,
            max_rows=max_rows,
        )


def _decode_columns(
    request: pb.ModelInferRequest,
    headers: Sequence[_Tensor],
    spec: InputSpec,
    model_name: str,
    max_rows: int,
) -> common_pb2.InlineData:
    seen: dict[str, _Tensor] = {}
    for h in headers:
        column = spec.by_name.get(h.name)
        if column is None:
            raise _bad(
                f"unexpected inference input {h.name!r} for model {model_name!r}; its inputs "
                f"are {spec.names}"
                + (
                    " (an all-numeric model also takes one 2-D FP32/FP64 tensor)"
                    if _numeric_model(spec) and len(headers) == 1
                    else ""
                ),
                f"inputs[{h.position}].name",
                "INPUT_UNEXPECTED",
                input=h.name,
            )
        if h.name in seen:
            raise _bad(
                f"input {h.name!r} appears twice", f"inputs[{h.position}].name", "INPUT_DUPLICATE"
            )
        seen[h.name] = h
        if h.datatype not in _ACCEPTED[column.kind]:
            raise _bad(
                f"input {h.name!r}: datatype {h.datatype} does not fit column {h.name!r} of "
                f"dtype {column.dtype}; expected {column_datatype(column)}",
                f"inputs[{h.position}].datatype",
                "TENSOR_DATATYPE_MISMATCH",
                input=h.name,
                expected=column_datatype(column),
                got=h.datatype,
            )
        if len(h.shape) > 1 and h.elements != h.shape[0]:  # [rows, 1, ...] is a column too
            raise _bad(
                f"input {h.name!r}: shape {list(h.shape)} must be [rows] or [rows, 1] "
                "(one tensor per column)",
                f"inputs[{h.position}].shape",
                "TENSOR_SHAPE_INVALID",
                input=h.name,
            )
    missing = [c.name for c in spec.columns if c.name not in seen]
    if missing:
        raise _bad(
            f"model {model_name!r} expects {len(spec.columns)} inputs, got {len(headers)}; "
            f"missing: {', '.join(missing)}",
            "inputs",
            "INPUT_MISSING",
            missing=",".join(missing),
        )
    rows = headers[0].elements
    for h in headers[1:]:
        if h.elements != rows:
            raise _bad(
                f"input {h.name!r} has {h.elements} elements, input {headers[0].name!r} has "
                f"{rows}; every input needs one element per row",
                f"inputs[{h.position}].shape",
                "TENSOR_SHAPE_MISMATCH",
                input=h.name,
            )
    _check_rows(rows, max_rows)
    return _inline([h.name for h in headers], [_column(request, h) for h in headers], rows)


def _decode_matrix(
    request: pb.ModelInferRequest, h: _Tensor, spec: InputSpec, model_name: str, max_rows: int
) -> common_pb2.InlineData:
    if not _numeric_model(spec):
        other = [c.name for c in spec.columns if c.kind not in (ColumnKind.FLOAT, ColumnKind.INT)]
        raise _bad(
            f"model {model_name!r} has non-numeric inputs ({', '.join(other)}), so it takes "
            "one tensor per column, not a 2-D tensor",
            "inputs[0].name",
            "INPUT_UNEXPECTED",
            input=h.name,
        )
    rows, width = h.shape
    if width != len(spec.columns):
        raise _bad(
            f"input {h.name!r}: a 2-D tensor needs shape [rows, {len(spec.columns)}] (one "
            f"column per input: {spec.names}), got {list(h.shape)}",
            "inputs[0].shape",
            "TENSOR_SHAPE_INVALID",
            input=h.name,
        )
    _check_rows(rows, max_rows)
    matrix = _values(request, h).reshape(rows, width)
    if matrix.dtype == np.float16:
        matrix = matrix.astype(np.float32)
    # one copy to column-major, then every column is a contiguous view
    columns = np.asfortranarray(matrix)
    return _inline(spec.names, [columns[:, j] for j in range(width)], rows)


def _column(request: pb.ModelInferRequest, h: _Tensor) -> np.ndarray | pa.Array:
    """One column tensor's values: numpy for fixed-size datatypes, Arrow strings for BYTES."""
    if h.datatype == "BYTES":
        return _strings(request, h)
    values = _values(request, h)
    if values.dtype == np.float16:  # half floats reach neither Polars nor protobuf
        values = values.astype(np.float32)
    return values


def _inline(
    names: Sequence[str], columns: Sequence[np.ndarray | pa.Array], rows: int
) -> common_pb2.InlineData:
    """The decoded columns in the InlineData shape that costs least to build and read back.

    Small batches become typed columns (a few microseconds per column, read back by numpy
    without Polars); large ones an Arrow IPC batch (no per-value work: numeric columns are
    zero-copy, the IPC stream is one copy). NaN stays NaN: the pipeline reads it as missing.
    """
    if rows * len(names) > COLUMNS_MAX_VALUES:
        arrays = [c if isinstance(c, pa.Array) else pa.array(c) for c in columns]
        return common_pb2.InlineData(arrow_ipc=_ipc(pa.table(arrays, names=list(names))))
    data = common_pb2.InlineData()
    out = data.columns.columns
    for name, values in zip(names, columns, strict=True):
        column = out.add(name=name)
        if isinstance(values, pa.Array):
            column.string_values.values.extend(values.to_pylist())
        elif values.dtype == np.bool_:
            column.bool_values.values.extend(values.tolist())
        elif values.dtype.kind in "iu" and (values.dtype.itemsize < 8 or values.dtype.kind == "i"):
            column.int64_values.values.extend(values.tolist())
        else:  # floats (and uint64, which may not fit int64: the column's range check decides)
            column.double_values.values.extend(values.astype(np.float64, copy=False).tolist())
    return data


def _values(request: pb.ModelInferRequest, h: _Tensor) -> np.ndarray:
    """A fixed-size tensor's elements as a flat numpy array (a view of raw bytes)."""
    dtype = _NUMPY[h.datatype]
    if request.raw_input_contents:
        buffer = request.raw_input_contents[h.position]
        expected = h.elements * dtype.itemsize
        if len(buffer) != expected:
            raise _bad(
                f"input {h.name!r}: raw content has {len(buffer)} bytes, shape "
                f"{list(h.shape)} of {h.datatype} needs {expected}",
                f"raw_input_contents[{h.position}]",
                "RAW_CONTENTS_SIZE",
                input=h.name,
            )
        return np.frombuffer(buffer, dtype=dtype)
    field = _CONTENTS.get(h.datatype)
    if field is None:
        raise _bad(
            f"input {h.name!r}: {h.datatype} has no typed contents field; send it in "
            "raw_input_contents",
            f"inputs[{h.position}].contents",
            "TENSOR_CONTENTS_MISSING",
            input=h.name,
        )
    contents = getattr(request.inputs[h.position].contents, field)
    if len(contents) != h.elements:
        raise _bad(
            f"input {h.name!r}: contents.{field} has {len(contents)} elements, shape "
            f"{list(h.shape)} needs {h.elements}",
            f"inputs[{h.position}].contents.{field}",
            "TENSOR_CONTENTS_SIZE",
            input=h.name,
        )
    return np.asarray(contents, dtype=_FIELD_NUMPY[field])


def _strings(request: pb.ModelInferRequest, h: _Tensor) -> pa.Array:
    """A BYTES tensor as an Arrow string array (UTF-8 checked by the cast)."""
    if request.raw_input_contents:
        offsets, data = _split_raw_bytes(request.raw_input_contents[h.position], h)
        binary = pa.Array.from_buffers(
            pa.large_binary(), h.elements, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
    else:
        contents = request.inputs[h.position].contents.bytes_contents
        if len(contents) != h.elements:
            raise _bad(
                f"input {h.name!r}: contents.bytes_contents has {len(contents)} elements, "
                f"shape {list(h.shape)} needs {h.elements}",
                f"inputs[{h.position}].contents.bytes_contents",
                "TENSOR_CONTENTS_SIZE",
                input=h.name,
            )
        binary = pa.array(list(contents), pa.large_binary())
    try:
        return binary.cast(pa.large_string())
    except pa.ArrowInvalid:
        raise _bad(
            f"input {h.name!r}: BYTES elements must be UTF-8 text",
            f"inputs[{h.position}]",
            "VALUE_NOT_UTF8",
            input=h.name,
        ) from None


def _split_raw_bytes(buffer: bytes, h: _Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Length-prefixed elements -> (int64 offsets, the bytes without the 4-byte prefixes)."""
    size = len(buffer)
    lengths = np.empty(h.elements, dtype=np.int64)
    pos = 0
    unpack = _U32.unpack_from
    try:
        for i in range(h.elements):
            n = unpack(buffer, pos)[0]
            lengths[i] = n
            pos += 4 + n
    except struct.error:
        pos = size + 1
    if pos != size:
        raise _bad(
            f"input {h.name!r}: raw BYTES content does not hold exactly {h.elements} "
            "length-prefixed elements",
            f"raw_input_contents[{h.position}]",
            "RAW_CONTENTS_SIZE",
            input=h.name,
        )
    offsets = np.zeros(h.elements + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    keep = np.ones(size, dtype=bool)
    prefix_starts = offsets[:-1] + 4 * np.arange(h.elements, dtype=np.int64)
    keep[(prefix_starts[:, None] + np.arange(4)).ravel()] = False
    return offsets, np.frombuffer(buffer, dtype=np.uint8)[keep]


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class _OutputPlan:
    names: tuple[str, ...]
    raw: bool


def _output_names(model: LoadedModel) -> list[str]:
    return ["label", "probabilities"] if model.task.is_classification else ["value"]


def _plan_outputs(
    request: pb.ModelInferRequest, model: LoadedModel, model_name: str
) -> _OutputPlan:
    available = _output_names(model)
    names: list[str] = []
    binary: bool | None = _bool_param(request.parameters, "binary_data_output")
    for i, out in enumerate(request.outputs):
        if out.name not in available:
            raise _bad(
                f"unexpected inference output {out.name!r} for model {model_name!r}; its "
                f"outputs are {available}",
                f"outputs[{i}].name",
                "OUTPUT_UNEXPECTED",
                output=out.name,
            )
        if out.name not in names:
            names.append(out.name)
        flag = _bool_param(out.parameters, "binary_data")
        if flag is not None:
            binary = flag if binary is None else (binary or flag)
    raw = bool(request.raw_input_contents) if binary is None else binary
    return _OutputPlan(tuple(names or available), raw)


def _bool_param(parameters: Any, key: str) -> bool | None:
    if key not in parameters:
        return None
    value = parameters[key]
    kind = value.WhichOneof("parameter_choice")
    if kind == "bool_param":
        return bool(value.bool_param)
    if kind == "string_param":
        return value.string_param.strip().lower() in ("1", "true", "yes")
    if kind in ("int64_param", "uint64_param"):
        return bool(getattr(value, kind))
    return None


@dataclass(frozen=True, slots=True)
class _Labels:
    """How a model's class values travel as a tensor: datatype and per-class encodings."""

    datatype: str
    values: np.ndarray  # numeric classes, in class order
    encoded: list[bytes]  # BYTES classes: UTF-8 text, in class order
    framed: Choices | None = None  # BYTES classes as raw-output elements (length-prefixed)


#: (class values with their types, classes) -> _Labels: built once per class set, not per call
_LABELS: dict[tuple[Any, ...], _Labels] = {}


def _labels(class_values: Sequence[Any], classes: Sequence[str]) -> _Labels:
    """From the class values themselves (original dtype: str, int, float or bool)."""
    key = (tuple((type(v), v) for v in class_values), tuple(classes))
    found = _LABELS.get(key)
    if found is None:
        if len(_LABELS) > 256:
            _LABELS.clear()
        found = _LABELS[key] = _build_labels(class_values, classes)
    return found


def _build_labels(class_values: Sequence[Any], classes: Sequence[str]) -> _Labels:
    values = list(class_values)
    if values and all(isinstance(v, bool | np.bool_) for v in values):
        return _Labels("BOOL", np.asarray(values, dtype=np.bool_), [])
    if values and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        return _Labels("INT64", np.asarray(values, dtype=np.int64), [])
    if values and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values
    ):
        return _Labels("FP64", np.asarray(values, dtype=np.float64), [])
    encoded = [str(c).encode() for c in classes]
    return _Labels("BYTES", np.empty(0), encoded, Choices([_U32.pack(len(e)) + e for e in encoded]))


def _render(result: PredictResult, plan: _OutputPlan, request_id: str) -> pb.ModelInferResponse:
    """PredictResult -> ModelInferResponse (runs on the thread pool, in Predict's hop)."""
    served = result.served
    response = pb.ModelInferResponse(
        model_name=served.model, model_version=str(served.version), id=request_id
    )
    response.parameters["model_version_name"].string_param = served.model_version
    n = result.row_count
    for name in plan.names:
        if name == "label":
            assert result.label_index is not None
            labels = _labels(result.class_values, result.classes)
            tensor = response.outputs.add(name=name, datatype=labels.datatype, shape=[n])
            _put_labels(response, tensor, result.label_index, labels, plan.raw)
        elif name == "probabilities":
            assert result.probabilities is not None
            shape = [n, len(result.classes)]
            tensor = response.outputs.add(name=name, datatype="FP64", shape=shape)
            tensor.parameters["classes"].string_param = json.dumps(result.classes)
            _put_numbers(response, tensor, result.probabilities, plan.raw)
        else:
            assert result.values is not None
            tensor = response.outputs.add(name=name, datatype="FP64", shape=[n])
            _put_numbers(response, tensor, result.values, plan.raw)
    return response


def _put_numbers(
    response: pb.ModelInferResponse,
    tensor: pb.ModelInferResponse.InferOutputTensor,
    values: np.ndarray,
    raw: bool,
) -> None:
    flat = np.ascontiguousarray(values, dtype="<f8").reshape(-1)
    if raw:
        response.raw_output_contents.append(flat.tobytes())
    else:
        tensor.contents.fp64_contents.extend(flat.tolist())


def _put_labels(
    response: pb.ModelInferResponse,
    tensor: pb.ModelInferResponse.InferOutputTensor,
    index: np.ndarray,
    labels: _Labels,
    raw: bool,
) -> None:
    if labels.datatype == "BYTES":
        if raw:  # each class framed once, then copied per row (not one pack per row)
            assert labels.framed is not None
            response.raw_output_contents.append(labels.framed.join(index))
        else:
            tensor.contents.bytes_contents.extend(map(labels.encoded.__getitem__, index.tolist()))
        return
    values = labels.values[index]
    if raw:
        response.raw_output_contents.append(values.astype(_NUMPY[labels.datatype]).tobytes())
    else:
        getattr(tensor.contents, _CONTENTS[labels.datatype]).extend(values.tolist())


# --------------------------------------------------------------------------- metadata


def model_metadata(model: LoadedModel, model_name: str, version: int) -> pb.ModelMetadataResponse:
    """ModelMetadata for a loaded version: its signature as tensors and its outputs."""
    meta = pb.ModelMetadataResponse(
        name=model_name,
        versions=[str(version)],
        platform=f"arbor_{model.bundle.model_type.value}",
    )
    for column in model.spec.columns:
        meta.inputs.add(name=column.name, datatype=column_datatype(column), shape=[-1])
    if model.task.is_classification:
        labels = _labels(model.class_values, model.classes)
        meta.outputs.add(name="label", datatype=labels.datatype, shape=[-1])
        meta.outputs.add(name="probabilities", datatype="FP64", shape=[-1, len(model.classes)])
    else:
        meta.outputs.add(name="value", datatype="FP64", shape=[-1])
    return meta


# --------------------------------------------------------------------------- the servicer


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _server_version() -> str:
    try:
        return importlib_metadata.version("arbor")
    except importlib_metadata.PackageNotFoundError:
        return "0"


RunnerRef = Callable[[], Any]


class OpenInferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over the inference domain (see the module doc).

    ``runner`` returns the ServiceRunner (or None before it exists): its health answers
    ServerReady, so the v2 readiness and ``grpc.health.v1`` never disagree.
    """

    def __init__(self, inference: Inference, runner: RunnerRef) -> None:
        self.inference = inference
        self._runner = runner
        self._version = _server_version()

    def _health(self) -> int | None:
        runner = self._runner()
        return None if runner is None else runner.health.status("")

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._health() is not None)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        serving = self._health() == health_pb2.HealthCheckResponse.SERVING
        return pb.ServerReadyResponse(ready=serving)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._version, extensions=[])

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        selector = selector_for(request.name, request.version)
        if self._health() != health_pb2.HealthCheckResponse.SERVING:
            return pb.ModelReadyResponse(ready=False)
        try:
            await self.inference.model_for(selector, _deadline(context))
        except InvalidArgument:
            raise
        except ArborError:
            # unknown, not loadable (yet), or still loading at the deadline: not ready
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        selector = selector_for(request.name, request.version)
        version, model = await self.inference.model_for(selector, _deadline(context))
        return model_metadata(model, version.model, version.version)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        selector = selector_for(
            request.model_name, request.model_version, "model_name", "model_version"
        )
        deadline = _deadline(context)
        version, model = await self.inference.model_for(selector, deadline)
        plan = _plan_outputs(request, model, version.model)
        max_rows = self.inference.options.max_batch_rows
        convert = _Converter(request, model.spec, version.model, max_rows)
        size = convert.size
        decoded: common_pb2.InlineData | Table | None = None
        if size <= OFFLOAD_BYTES:
            decoded = convert()
        elif size <= MATRIX_INLINE_BYTES:
            decoded = decode_matrix_table(
                request,
                model.spec,
                max_rows,
                functools.partial(self.inference.matrix_dtype, model),
            )
        if decoded is None:  # large, or (tried just above) not a finite float matrix
            work = convert.tensors if size <= MATRIX_INLINE_BYTES else convert
            decoded = await asyncio.get_running_loop().run_in_executor(
                self.inference.executor, work
            )
        table = decoded if isinstance(decoded, Table) else None
        data = decoded if isinstance(decoded, common_pb2.InlineData) else common_pb2.InlineData()
        command = PredictInput(
            selector=selector,
            data=data,
            include_probabilities="probabilities" in plan.names,
            reject_extra=True,
            deadline=deadline,
            table=table,
        )

        def render(result: PredictResult) -> pb.ModelInferResponse:
            return _render(result, plan, request.id)

        return await self.inference.predict(command, render)


@dataclass(frozen=True, slots=True)
class _Converter:
    request: pb.ModelInferRequest
    spec: InputSpec
    model_name: str
    max_rows: int

    @property
    def size(self) -> int:
        raw = sum(len(b) for b in self.request.raw_input_contents)
        return raw or self.request.ByteSize()

    def __call__(self) -> common_pb2.InlineData | Table:
        """A validated table for a finite float matrix (no copy), else Predict's input."""
        table = decode_matrix_table(self.request, self.spec, self.max_rows)
        return table if table is not None else self.tensors()

    def tensors(self) -> common_pb2.InlineData:
        """Predict's input from the request's tensors, one column each (every problem named)."""
        return decode_tensors(self.request, self.spec, self.model_name, self.max_rows)


def beside(
    register: Callable[[grpc.aio.Server], list[str]],
    inference: Inference,
    runner: RunnerRef,
) -> Callable[[grpc.aio.Server], list[str]]:
    """``register`` plus the v2 service on the same server (health and reflection list it)."""

    def add(server: grpc.aio.Server) -> list[str]:
        names = list(register(server))
        servicer = OpenInferenceServicer(inference, runner)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        return [*names, SERVICE_NAME]

    return add
