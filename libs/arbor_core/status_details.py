"""``google.rpc.Status`` details: built from ArborErrors on the server, decoded on the client.

The server side is used only by the error-mapping interceptor in ``arbor_core.server``; the
client side (``error_details``) gives tests, the CLI and service-to-service callers the typed
details (reason, field violations, resource, preconditions, request id) without each of them
parsing ``grpc-status-details-bin`` by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from arbor_core.errors import (
    ERROR_DOMAIN,
    ArborError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"
INTERNAL_REASON = "INTERNAL"


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _request_info(request_id: str | None) -> list[any_pb2.Any]:
    if not request_id:
        return []
    return [_pack(error_details_pb2.RequestInfo(request_id=request_id))]


def status_for_error(exc: ArborError, request_id: str | None = None) -> grpc.Status:
    """The ``grpc.Status`` (code, message, details trailer) that represents ``exc``."""
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata
            )
        )
    ]
    if isinstance(exc, InvalidArgument) and exc.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    if isinstance(exc, NotFound):
        details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type=exc.resource_type,
                    resource_name=exc.resource_name,
                    description=exc.message,
                )
            )
        )
    if isinstance(exc, FailedPrecondition) and exc.violations:
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=v.type, subject=v.subject, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    details.extend(_request_info(request_id))
    code = exc.code if exc.code != grpc.StatusCode.OK else grpc.StatusCode.UNKNOWN
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=exc.message, details=details)
    )


def internal_status(
    request_id: str | None = None,
    *,
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL,
    reason: str = INTERNAL_REASON,
    message: str = "internal error",
) -> grpc.Status:
    """A generic status for a failure the caller cannot act on: no class names, no traces."""
    if request_id:
        message = f"{message} (request id {request_id}; details are in the server log)"
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))]
    details.extend(_request_info(request_id))
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=details)
    )


# --- client side ---------------------------------------------------------------------------


def _status_name(code: int) -> str:
    try:
        return code_pb2.Code.Name(code)
    except ValueError:
        return "UNKNOWN"


def _trailing(rpc_error: Any) -> Iterable[tuple[str, Any]]:
    trailing = rpc_error.trailing_metadata() if hasattr(rpc_error, "trailing_metadata") else None
    return list(trailing or ())


def error_details(rpc_error: grpc.RpcError | grpc.aio.AioRpcError) -> dict[str, Any]:
    """Decode an RPC error's status and ``google.rpc`` details into plain data.

    Keys: ``code`` (name such as ``NOT_FOUND``), ``message``, ``reason``, ``domain``,
    ``metadata``, ``field_violations`` (list of {field, description}), ``resource_info``
    ({resource_type, resource_name, owner, description} or None), ``precondition_violations``
    (list of {type, subject, description}), ``request_id`` (RequestInfo, else the
    ``x-request-id`` trailer). Works for sync ``grpc.RpcError`` and ``grpc.aio.AioRpcError``.
    """
    code_attr = getattr(rpc_error, "code", None)
    code = code_attr() if callable(code_attr) else grpc.StatusCode.UNKNOWN
    details_attr = getattr(rpc_error, "details", None)
    result: dict[str, Any] = {
        "code": code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN",
        "message": (details_attr() if callable(details_attr) else None) or "",
        "reason": None,
        "domain": None,
        "metadata": {},
        "field_violations": [],
        "resource_info": None,
        "precondition_violations": [],
        "request_id": None,
    }
    trailing = _trailing(rpc_error)
    for key, value in trailing:
        if key == REQUEST_ID_KEY:
            result["request_id"] = value
    for key, value in trailing:
        if key != DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        result["code"] = _status_name(status.code)
        result["message"] = status.message
        for packed in status.details:
            _decode_detail(packed, result)
    return result


def _decode_detail(packed: any_pb2.Any, result: dict[str, Any]) -> None:
    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    resource = error_details_pb2.ResourceInfo()
    precondition = error_details_pb2.PreconditionFailure()
    request = error_details_pb2.RequestInfo()
    if packed.Unpack(info):
        result["reason"], result["domain"] = info.reason, info.domain
        result["metadata"] = dict(info.metadata)
    elif packed.Unpack(bad_request):
        result["field_violations"].extend(
            {"field": v.field, "description": v.description} for v in bad_request.field_violations
        )
    elif packed.Unpack(resource):
        result["resource_info"] = {
            "resource_type": resource.resource_type,
            "resource_name": resource.resource_name,
            "owner": resource.owner,
            "description": resource.description,
        }
    elif packed.Unpack(precondition):
        result["precondition_violations"].extend(
            {"type": v.type, "subject": v.subject, "description": v.description}
            for v in precondition.violations
        )
    elif packed.Unpack(request):
        result["request_id"] = request.request_id
