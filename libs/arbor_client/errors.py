"""The one exception type the client raises, with everything the server put in the status.

Servers attach ``google.rpc`` details (ErrorInfo, BadRequest, PreconditionFailure,
ResourceInfo) to every error; a caller should branch on ``code`` and ``reason`` and show the
``field_violations`` to a person, never parse the message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "ArborClientError",
    "FieldViolation",
    "PreconditionViolation",
    "from_rpc_error",
]

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field, as the server (or the client's own checks) reported it."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition (``google.rpc.PreconditionFailure.Violation``)."""

    type: str
    subject: str
    description: str


class ArborClientError(Exception):
    """A failed call: gRPC status code, message, ErrorInfo reason/domain/metadata and details.

    ``str(err)`` is a single line, ``CODE: message [REASON]``, fit for a terminal or a log.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: list[FieldViolation] | None = None,
        precondition_violations: list[PreconditionViolation] | None = None,
        resource_type: str = "",
        resource_name: str = "",
        retry_delay: float | None = None,
        method: str = "",
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations or [])
        self.precondition_violations = list(precondition_violations or [])
        self.resource_type = resource_type
        self.resource_name = resource_name
        self.retry_delay = retry_delay
        self.method = method
        self.request_id = request_id

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. ``NOT_FOUND``."""
        return str(self.code.name)

    def one_line(self) -> str:
        """``CODE: message [REASON] (field: why; ...)`` with newlines flattened."""
        text = f"{self.code_name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        fields = [v for v in self.field_violations if v.field and v.field not in self.message]
        if fields:
            text += " (" + "; ".join(f"{v.field}: {v.description}" for v in fields) + ")"
        return " ".join(text.split())

    def __str__(self) -> str:
        return self.one_line()

    def __repr__(self) -> str:
        return f"ArborClientError({self.code_name}, {self.message!r}, reason={self.reason!r})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, the shape ``arbor --json`` prints on failure."""
        out: dict[str, Any] = {"code": self.code_name, "message": self.message}
        if self.reason:
            out["reason"] = self.reason
        if self.domain:
            out["domain"] = self.domain
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.field_violations:
            out["fieldViolations"] = [
                {"field": v.field, "description": v.description} for v in self.field_violations
            ]
        if self.precondition_violations:
            out["preconditionViolations"] = [
                {"type": v.type, "subject": v.subject, "description": v.description}
                for v in self.precondition_violations
            ]
        if self.resource_name:
            out["resource"] = {"type": self.resource_type, "name": self.resource_name}
        if self.method:
            out["method"] = self.method
        if self.request_id:
            out["requestId"] = self.request_id
        return out

    @classmethod
    def invalid_argument(
        cls, message: str, *, field: str = "", reason: str = "CLIENT_INVALID_ARGUMENT"
    ) -> ArborClientError:
        """An error the client raises itself before calling (bad file, bad option)."""
        violations = [FieldViolation(field, message)] if field else []
        return cls(
            grpc.StatusCode.INVALID_ARGUMENT,
            message,
            reason=reason,
            domain="arbor.client",
            field_violations=violations,
        )


def _trailers(error: grpc.RpcError) -> list[tuple[str, Any]]:
    trailing = getattr(error, "trailing_metadata", None)
    if not callable(trailing):
        return []
    try:
        return list(trailing() or ())
    except Exception:  # a non-call RpcError (e.g. a channel failure) has no trailers
        return []


def _status_from_trailers(trailers: list[tuple[str, Any]]) -> status_pb2.Status | None:
    for key, value in trailers:
        if key == _STATUS_DETAILS_KEY:
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:
                return None
            return status
    return None


def _unpack(detail: any_pb2.Any, error: ArborClientError) -> None:
    if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
        info = error_details_pb2.ErrorInfo()
        detail.Unpack(info)
        error.reason = info.reason
        error.domain = info.domain
        error.metadata.update(dict(info.metadata))
    elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
        bad = error_details_pb2.BadRequest()
        detail.Unpack(bad)
        error.field_violations.extend(
            FieldViolation(v.field, v.description) for v in bad.field_violations
        )
    elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
        pre = error_details_pb2.PreconditionFailure()
        detail.Unpack(pre)
        error.precondition_violations.extend(
            PreconditionViolation(v.type, v.subject, v.description) for v in pre.violations
        )
    elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
        res = error_details_pb2.ResourceInfo()
        detail.Unpack(res)
        error.resource_type = res.resource_type
        error.resource_name = res.resource_name
    elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
        info_req = error_details_pb2.RequestInfo()
        detail.Unpack(info_req)
        error.request_id = error.request_id or info_req.request_id
    elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
        retry = error_details_pb2.RetryInfo()
        detail.Unpack(retry)
        error.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()


def from_rpc_error(error: grpc.RpcError, method: str = "") -> ArborClientError:
    """Turn a ``grpc.RpcError`` into an ``ArborClientError`` with its rich details unpacked."""
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    message = details_fn() if callable(details_fn) else None
    result = ArborClientError(
        code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
        message or str(error) or "call failed",
        method=method,
    )
    trailers = _trailers(error)
    for key, value in trailers:
        if key == _REQUEST_ID_KEY and isinstance(value, str):
            result.request_id = value
    status = _status_from_trailers(trailers)
    if status is not None:
        if status.message and not message:
            result.message = status.message
        for detail in status.details:
            _unpack(detail, result)
    return result
