"""The gRPC layer: protobuf <-> domain objects, nothing else.

Responses are built by ``render_*`` functions that the domain runs on its thread pool, in
the same hop as the prediction, so turning 100,000 labels into protobuf never blocks the
event loop.
"""

from __future__ import annotations

import functools
import struct
import time
from typing import Any, NamedTuple

import grpc
import numpy as np
from google.protobuf import struct_pb2

from arbor.inference.v1 import inference_service_pb2 as pb
from arbor.inference.v1 import inference_service_pb2_grpc as pb_grpc
from arbor_inference.choices import Choices
from arbor_inference.domain import (
    ExplainInput,
    ExplainResult,
    Inference,
    PredictInput,
    PredictResult,
    RowResult,
    ServedModel,
)
from arbor_inference.inputs import WireInput, encode_varint
from arbor_inference.resolver import Selector, selector_from_proto

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def served_proto(served: ServedModel) -> pb.ServedModel:
    return pb.ServedModel(
        model_version=served.model_version,
        model=served.model,
        version=served.version,
        stage=served.stage,  # type: ignore[arg-type]
        experiment=served.experiment,
        model_type=served.model_type,  # type: ignore[arg-type]
        task_type=served.task_type,  # type: ignore[arg-type]
    )


def label_value(value: Any) -> struct_pb2.Value:
    """A class value as google.protobuf.Value, keeping str / number / bool."""
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, int | float):
        return struct_pb2.Value(number_value=float(value))
    if value is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    return struct_pb2.Value(string_value=str(value))


# Predict answers are built as protobuf wire bytes (the interceptor passes a handler's bytes
# through as the encoded response): one pre-encoded Value per class, packed doubles straight
# from numpy, the served version and the class list encoded once per version. Building 10,000
# Value messages one by one costs ~10 ms; merging pre-encoded ones into a message and having
# grpc serialize it again ~0.7 ms; joining bytes ~0.15 ms.
_FIELDS = pb.PredictResponse.DESCRIPTOR.fields_by_name
_LABELS_TAG = bytes([_FIELDS["labels"].number << 3 | 2])
_PROBABILITIES_TAG = bytes([_FIELDS["probabilities"].number << 3 | 2])
_VALUES_TAG = bytes([_FIELDS["values"].number << 3 | 2])
_ROW_COUNT_TAG = bytes([_FIELDS["row_count"].number << 3 | 0])


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + encode_varint(len(payload)) + payload


def _packed_doubles(tag: bytes, values: np.ndarray) -> bytes:
    return _length_delimited(tag, np.ascontiguousarray(values, dtype="<f8").tobytes())


#: class values -> their encoded ``labels`` elements (a model's classes are a few values; the
#: key keeps the types apart, since True == 1)
_LABEL_ELEMENTS: dict[tuple[tuple[type, Any], ...], Choices] = {}


def _label_elements(class_values: list[Any]) -> Choices:
    key = tuple((type(v), v) for v in class_values)
    elements = _LABEL_ELEMENTS.get(key)
    if elements is None:
        encoded = [label_value(v).SerializeToString() for v in class_values]
        elements = Choices([_LABELS_TAG + encode_varint(len(e)) + e for e in encoded])
        if len(_LABEL_ELEMENTS) > 256:
            _LABEL_ELEMENTS.clear()
        _LABEL_ELEMENTS[key] = elements
    return elements


@functools.lru_cache(maxsize=1024)
def _fixed_fields(served: ServedModel, classes: tuple[str, ...]) -> bytes:
    """``served_model`` and ``classes``: the same bytes for every answer of a version."""
    message = pb.PredictResponse(served_model=served_proto(served), classes=classes)
    return message.SerializeToString()


def render_predict(result: PredictResult) -> bytes | pb.PredictResponse:
    """The PredictResponse for ``result``, as wire bytes (as a message for Arrow output)."""
    if result.arrow_ipc is not None:
        return pb.PredictResponse(
            served_model=served_proto(result.served),
            row_count=result.row_count,
            arrow_ipc=result.arrow_ipc,
        )
    wire = [_fixed_fields(result.served, tuple(result.classes))]
    if result.row_count:
        wire.append(_ROW_COUNT_TAG + encode_varint(result.row_count))
    if result.label_index is not None:
        wire.append(_label_elements(result.class_values).join(result.label_index))
        if result.probabilities is not None:
            wire.append(_packed_doubles(_PROBABILITIES_TAG, result.probabilities.ravel()))
    elif result.values is not None:
        wire.append(_packed_doubles(_VALUES_TAG, result.values))
    return b"".join(wire)


_ONE_ROW = _ROW_COUNT_TAG + encode_varint(1)


def render_row(result: RowResult) -> bytes:
    """The PredictResponse for one row from the single-row lane: the same bytes
    ``render_predict`` writes for a one-row ``PredictResult`` with these values."""
    wire = [_fixed_fields(result.served, tuple(result.classes)), _ONE_ROW]
    if result.label_index is not None:
        wire.append(_label_elements(result.class_values).elements[result.label_index])
        probabilities = result.probabilities
        if probabilities is not None:
            packed = struct.pack(f"<{len(probabilities)}d", *probabilities)
            wire.append(_length_delimited(_PROBABILITIES_TAG, packed))
    else:
        wire.append(_length_delimited(_VALUES_TAG, struct.pack("<d", result.value)))
    return b"".join(wire)


def render_explain(result: ExplainResult) -> pb.ExplainResponse:
    response = pb.ExplainResponse(
        served_model=served_proto(result.served),
        method=result.method,  # type: ignore[arg-type]
        fallback_reason=result.fallback_reason,
        features=result.features,
    )
    response.global_importance.extend(
        pb.FeatureImportance(feature=name, importance=value)
        for name, value in result.global_importance
    )
    response.rows.extend(
        pb.RowContribution(
            row_index=row.row_index,
            class_label=row.class_label,
            base_value=row.base_value,
            contributions=row.contributions.tolist(),
        )
        for row in result.rows
    )
    return response


#: serialized selector -> Selector: the same few selectors arrive on every call, and parsing
#: and validating one costs more than serializing it (bounded; errors are never cached)
_SELECTORS: dict[bytes, Selector] = {}


def _selector(message: Any) -> Selector:
    key = message.SerializeToString()
    selector = _SELECTORS.get(key)
    if selector is None:
        selector = selector_from_proto(message)
        if len(_SELECTORS) > 1024:
            _SELECTORS.clear()
        _SELECTORS[key] = selector
    return selector


#: Requests from this size up whose input is typed columns of doubles or Arrow keep their
#: bytes: the input is read from them (``WireInput``), protobuf parses only the rest.
WIRE_MIN_BYTES = 64 << 10
_INPUT_FIELD = pb.PredictRequest.DESCRIPTOR.fields_by_name["input"].number


class PredictCall(NamedTuple):
    """What Predict's deserializer hands the servicer: the parsed request, and for a large
    typed-column or Arrow input its bytes instead (``message.input`` is then empty)."""

    message: pb.PredictRequest
    wire: WireInput | None


def parse_predict(raw: bytes) -> PredictCall:
    """Parse a PredictRequest; a large typed-column or Arrow input is left as bytes (2.4 MB
    that protobuf would copy, and for Arrow copy again on every read of the field, only for
    the decoder to read them once more)."""
    wire = WireInput.of(raw, _INPUT_FIELD) if len(raw) >= WIRE_MIN_BYTES else None
    if wire is None:
        return PredictCall(pb.PredictRequest.FromString(raw), None)
    return PredictCall(pb.PredictRequest.FromString(wire.head()), wire)


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    """Predict and Explain; errors are ArborErrors, mapped by the server's interceptor."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    async def Predict(
        self, request: pb.PredictRequest | PredictCall, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse | bytes:
        wire = None
        if isinstance(request, PredictCall):
            request, wire = request
        command = PredictInput(
            selector=_selector(request.model),
            data=request.input if wire is None else None,
            include_probabilities=request.include_probabilities,
            reject_extra=request.extra_columns == pb.EXTRA_COLUMNS_POLICY_REJECT,
            arrow_output=request.output_format == pb.OUTPUT_FORMAT_ARROW,
            deadline=_deadline(context),
            wire=wire,
        )
        row = self.inference.predict_row(command)
        if row is not None:
            return render_row(row)
        return await self.inference.predict(command, render_predict)

    async def Explain(
        self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExplainResponse:
        command = ExplainInput(
            selector=selector_from_proto(request.model),
            data=request.input if request.HasField("input") else None,
            per_row=request.per_row,
            top_k=request.top_k,
            method=int(request.method),
            deadline=_deadline(context),
        )
        return await self.inference.explain(command, render_explain)


class _CapturedHandlers:
    """Stands in for a server to read the generated method handlers."""

    handlers: dict[str, Any]

    def add_generic_rpc_handlers(self, generic: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers = handlers


def register(inference: Inference) -> Any:
    """The ``register`` callable ``arbor_core.server`` wants."""

    def add(server: grpc.aio.Server) -> list[str]:
        # the generated registration, except that Predict's deserializer keeps the bytes
        generated = _CapturedHandlers()
        pb_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(inference), generated)
        handlers = dict(generated.handlers)
        handlers["Predict"] = handlers["Predict"]._replace(request_deserializer=parse_predict)
        generic = grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
        server.add_generic_rpc_handlers((generic,))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)
        return [SERVICE_NAME]

    return add
