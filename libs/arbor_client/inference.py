"""InferenceClient: predictions and SHAP explanations from registered models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2 as pb
from arbor.inference.v1 import inference_service_pb2_grpc as pb_grpc
from arbor_client._base import ServiceClient
from arbor_client._enums import parse_enum
from arbor_client.registry import Selector, parse_selector
from arbor_client.rows import frame_to_inline, predictions_to_rows, rows_to_inline

if TYPE_CHECKING:
    import polars as pl

__all__ = ["InferenceClient"]

PREDICT_TIMEOUT_S = 60.0
EXPLAIN_TIMEOUT_S = 120.0


class InferenceClient(ServiceClient):
    """``arbor.inference.v1.InferenceService``. Predict and Explain change nothing on the
    server, so they are retried on UNAVAILABLE like reads."""

    service = "inference"
    grpc_service = "arbor.inference.v1.InferenceService"
    stub_class = pb_grpc.InferenceServiceStub

    def predict(
        self,
        selector: Selector,
        data: common_pb2.InlineData,
        *,
        include_probabilities: bool = False,
        extra_columns: str | int | None = None,
        output_format: str | int | None = None,
        timeout: float | None = PREDICT_TIMEOUT_S,
    ) -> pb.PredictResponse:
        """The raw call: any InlineData shape in, the PredictResponse out."""
        request = pb.PredictRequest(
            model=parse_selector(selector),
            input=data,
            include_probabilities=include_probabilities,
            extra_columns=parse_enum(pb.ExtraColumnsPolicy, extra_columns, "extra_columns"),  # type: ignore[arg-type]
            output_format=parse_enum(pb.OutputFormat, output_format, "output_format"),  # type: ignore[arg-type]
        )
        return self._call("Predict", request, timeout, retryable=True)  # type: ignore[no-any-return]

    def predict_rows(
        self,
        selector: Selector,
        rows: Iterable[Mapping[str, Any]],
        *,
        include_probabilities: bool = False,
        extra_columns: str | int | None = None,
        timeout: float | None = PREDICT_TIMEOUT_S,
    ) -> pb.PredictResponse:
        """Predict rows given as dicts, e.g. ``predict_rows("churn@champion", [{...}])``."""
        return self.predict(
            selector,
            rows_to_inline(rows),
            include_probabilities=include_probabilities,
            extra_columns=extra_columns,
            timeout=timeout,
        )

    def predict_frame(
        self,
        selector: Selector,
        frame: pl.DataFrame,
        *,
        include_probabilities: bool = False,
        extra_columns: str | int | None = None,
        timeout: float | None = PREDICT_TIMEOUT_S,
    ) -> pb.PredictResponse:
        """Predict a Polars frame, sent as Arrow IPC (dtypes and nulls preserved)."""
        return self.predict(
            selector,
            frame_to_inline(frame),
            include_probabilities=include_probabilities,
            extra_columns=extra_columns,
            timeout=timeout,
        )

    @staticmethod
    def to_rows(response: pb.PredictResponse) -> list[dict[str, Any]]:
        """One dict per row (``label``/``value`` and ``proba_<class>``)."""
        return predictions_to_rows(response)

    def explain(
        self,
        selector: Selector,
        data: common_pb2.InlineData | None = None,
        *,
        per_row: bool = False,
        top_k: int = 0,
        method: str | int | None = None,
        timeout: float | None = EXPLAIN_TIMEOUT_S,
    ) -> pb.ExplainResponse:
        """Global ranking (over ``data`` or the stored background sample) and, with
        ``per_row``, each given row's contributions."""
        request = pb.ExplainRequest(
            model=parse_selector(selector),
            per_row=per_row,
            top_k=top_k,
            method=parse_enum(pb.ExplainMethod, method, "method"),  # type: ignore[arg-type]
        )
        if data is not None:
            request.input.CopyFrom(data)
        return self._call("Explain", request, timeout, retryable=True)  # type: ignore[no-any-return]

    def explain_rows(
        self,
        selector: Selector,
        rows: Iterable[Mapping[str, Any]] | None = None,
        *,
        per_row: bool = True,
        top_k: int = 0,
        method: str | int | None = None,
        timeout: float | None = EXPLAIN_TIMEOUT_S,
    ) -> pb.ExplainResponse:
        data = rows_to_inline(rows) if rows is not None else None
        return self.explain(
            selector,
            data,
            per_row=per_row and rows is not None,
            top_k=top_k,
            method=method,
            timeout=timeout,
        )
