"""One exception hierarchy for every service.

Domain code raises these; a single interceptor (``arbor_core.server``) maps them to gRPC
status codes with ``google.rpc`` details, so no servicer builds a status by hand and no
class name or stack trace reaches the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

ERROR_DOMAIN = "arbor.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request: ``field`` is a dotted path such as ``fractions.train``."""

    field: str
    description: str


class ArborError(Exception):
    """Base class: a status code, an UPPER_SNAKE reason and metadata for ``ErrorInfo``."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(ArborError):
    """The request itself is wrong; ``violations`` become ``BadRequest.FieldViolation``s."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        field: str | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations or [])
        if field is not None:
            self.violations.append(FieldViolation(field, message))


class NotFound(ArborError):
    """A named resource does not exist (or is soft-deleted); adds ``ResourceInfo``."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"

    def __init__(
        self,
        resource_type: str,
        resource_name: str,
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(
            message or f"{resource_type} {resource_name!r} not found",
            reason=reason or f"{resource_type.upper()}_NOT_FOUND",
            metadata={"resource_name": resource_name},
        )
        self.resource_type = resource_type
        self.resource_name = resource_name


class AlreadyExists(ArborError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition for ``google.rpc.PreconditionFailure``."""

    type: str
    subject: str
    description: str


class FailedPrecondition(ArborError):
    """The resource is in the wrong state for this call; adds ``PreconditionFailure``."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        violations: list[PreconditionViolation] | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations or [])


class Aborted(ArborError):
    """A concurrency conflict, e.g. a stale etag: the caller should re-read and retry."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class PermissionDenied(ArborError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(ArborError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(ArborError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(ArborError):
    """A dependency (database, NATS, another service) cannot be reached right now."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(ArborError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unimplemented(ArborError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


@dataclass
class ErrorCollector:
    """Collects field violations so a request reports every bad field at once."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.violations.append(FieldViolation(field_path, description))

    def raise_if_any(self, message: str = "invalid request") -> None:
        if self.violations:
            first = self.violations[0]
            summary = f"{message}: {first.field}: {first.description}"
            if len(self.violations) > 1:
                summary += f" (and {len(self.violations) - 1} more)"
            raise InvalidArgument(summary, violations=self.violations)
