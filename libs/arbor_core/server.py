"""The one gRPC server bootstrap every Arbor service uses.

A service hands over a ``register`` callable (adds its servicers, returns the full service
names), readiness checks (database, NATS reachable) and background tasks (outbox relay,
subscribers). This module adds the rest, identically for every service:

* one interceptor (``ArborInterceptor``) doing, outermost first: telemetry (span + metrics,
  health filtered out) -> auth (bearer token; health and reflection open) -> request id ->
  error mapping -> access log; it wraps all four handler kinds, so streaming calls get the
  same treatment as unary ones;
* ``grpc.health.v1.Health``: every service name and ``""`` start NOT_SERVING and turn SERVING
  only once all readiness checks pass; a loop re-checks and flips back when a dependency goes;
* server reflection for the services, health and reflection itself (``grpcurl list``);
* message-size and keepalive options, ``SO_REUSEPORT`` off (a second instance on the same
  port fails instead of silently sharing it);
* graceful shutdown on SIGTERM/SIGINT: health NOT_SERVING, then ``stop(grace)`` so in-flight
  calls finish, then background tasks are cancelled and shutdown hooks run;
* a refusal to listen beyond loopback without authentication (``ARBOR_ALLOW_INSECURE_BIND=1``
  overrides it) and optional TLS from ``ARBOR_TLS_CERT`` / ``ARBOR_TLS_KEY`` /
  ``ARBOR_TLS_CLIENT_CA`` (a client CA turns on mutual TLS).

Handlers are expected to be ``async`` (grpc.aio servicers); streaming responses may be async
generators or coroutines that use ``context.write``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import ipaddress
import logging
import os
import random
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from arbor_core import eventloop
from arbor_core.config import Settings, env_flag, load_settings
from arbor_core.errors import ArborError, FailedPrecondition, InvalidArgument, Unauthenticated
from arbor_core.logging import configure_logging, request_id_var
from arbor_core.metrics import start_process_telemetry
from arbor_core.status_details import REQUEST_ID_KEY, internal_status, status_for_error
from arbor_core.telemetry import (
    TRACEPARENT,
    TRACESTATE,
    Telemetry,
    attach,
    context_from_traceparent,
    default_telemetry,
    rpc_attributes,
    set_current,
    unrecorded_span,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("arbor.access")

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE = reflection.SERVICE_NAME
# Methods reachable without credentials: probes and tooling must work before a token exists.
OPEN_SERVICE_PREFIXES = (f"/{HEALTH_SERVICE}/", "/grpc.reflection.")

ReadinessCheck = Callable[[], Awaitable[bool]]
BackgroundTask = Callable[[], Awaitable[Any]]
ShutdownHook = Callable[[], Awaitable[Any]]
Register = Callable[[grpc.aio.Server], list[str]]

ALLOW_INSECURE_BIND_ENV = "ARBOR_ALLOW_INSECURE_BIND"
TLS_CERT_ENV = "ARBOR_TLS_CERT"
TLS_KEY_ENV = "ARBOR_TLS_KEY"
TLS_CLIENT_CA_ENV = "ARBOR_TLS_CLIENT_CA"

KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Clients may ping every 10 s (arbor_core.clients pings every 30 s) without a GOAWAY.
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Codes that mean the server failed, not the caller (semantic conventions for server spans).
_SERVER_FAULT_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _is_health(method: str) -> bool:
    return method.startswith(f"/{HEALTH_SERVICE}/")


def _merge_trailing(
    existing: Iterable[tuple[str, Any]] | None, extra: Iterable[tuple[str, Any]]
) -> tuple[tuple[str, Any], ...]:
    extra = tuple(extra)
    if not existing:  # the common case: nothing to keep (the call's start, most handlers)
        return extra
    replaced = {k for k, _ in extra}
    return tuple((k, v) for k, v in existing if k not in replaced) + extra


# --- health --------------------------------------------------------------------------------


class HealthServicer(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health`` whose watchers end on shutdown.

    grpcio's own aio servicer keeps ``Watch`` streams open forever, so every watching load
    balancer would hold ``stop(grace)`` for the whole grace period; here a watcher receives
    NOT_SERVING and its stream completes, and only real calls keep the server draining.
    """

    def __init__(self) -> None:
        self._status: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._closing = False

    def status(self, service: str = "") -> int | None:
        return self._status.get(service)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        unknown = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        last: int | None = None
        while True:

            def changed(seen: int | None = last) -> bool:
                return self._closing or self._status.get(request.service, unknown) != seen

            async with self._changed:
                await self._changed.wait_for(changed)
                status = self._status.get(request.service, unknown)
                closing = self._closing
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if closing:
                return

    async def set(self, service: str, status: int) -> None:
        """Set one service's status (ignored once shutdown has begun)."""
        async with self._changed:
            if self._closing:
                return
            self._status[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Everything NOT_SERVING for good; watchers get that and their streams end."""
        async with self._changed:
            self._closing = True
            for service in self._status:
                self._status[service] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._changed.notify_all()


# --- wrapping the four handler kinds -------------------------------------------------------


class MalformedRequest:
    """A request whose bytes did not parse. grpcio would answer UNKNOWN with the decoder's
    class name; instead the handler chain receives this and refuses it as INVALID_ARGUMENT
    (reason MALFORMED_REQUEST) inside the interceptors, so auth, logging and error details
    apply as to any other bad request."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _safe_deserializer(deserializer: Callable[[bytes], Any] | None) -> Any:
    if deserializer is None or getattr(deserializer, "_arbor_safe", False):
        return deserializer

    def safe(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # DecodeError, or a bad UTF-8 string field
            return MalformedRequest(str(exc)[:300])

    safe._arbor_safe = True  # type: ignore[attr-defined]
    return safe


def _wire_or_serialize(serializer: Callable[[Any], bytes] | None) -> Any:
    """The method's serializer, taught to pass through a response that a handler has already
    encoded: a handler may return the message's wire bytes (built straight from arrays, say)
    instead of a message object, and the client sees the same message either way."""
    if serializer is None or getattr(serializer, "_arbor_wire", False):
        return serializer

    def serialize(response: Any) -> bytes:
        return response if type(response) is bytes else serializer(response)

    serialize._arbor_wire = True  # type: ignore[attr-defined]
    return serialize


def _refuse_malformed(inner: Callable[..., Any], request: Any) -> None:
    """Raise for an unparsable request, once, at the innermost wrapper (just before the
    servicer), where the error-mapping interceptor surrounds it."""
    if isinstance(request, MalformedRequest) and not getattr(inner, "_arbor_wrapped", False):
        raise InvalidArgument(
            f"the request is not a valid protobuf message: {request.error}",
            reason="MALFORMED_REQUEST",
        )


async def _iterate_responses(
    inner: Callable[..., Any], request: Any, context: Any
) -> AsyncIterator[Any]:
    """Responses of a streaming handler, whether it yields or writes via ``context.write``."""
    _refuse_malformed(inner, request)
    result = inner(request, context)
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result
    elif result is not None:
        for item in result:
            yield item


def _final_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK


# --- the interceptor -----------------------------------------------------------------------
#
# One interceptor does, per call and in this order (outermost first), what five nested ones
# used to: telemetry (span + metrics; health not traced) -> auth (bearer token; health and
# reflection open) -> request id -> error mapping -> access log -> the handler. Fused into
# one coroutine (one wrapper, one metadata scan, per-method attributes computed once, the
# wrapped handler cached per method), a call pays a few microseconds here instead of ~0.3 ms
# of nested context managers.

ACCESS_LOG_SAMPLE_ENV = "ARBOR_ACCESS_LOG_SAMPLE"


def _access_log_sample() -> float:
    """Fraction of successful calls written to the access log (errors are always logged)."""
    raw = os.environ.get(ACCESS_LOG_SAMPLE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument(
            f"{ACCESS_LOG_SAMPLE_ENV} must be a fraction in [0, 1], not {raw!r}",
            field=ACCESS_LOG_SAMPLE_ENV,
            reason="ACCESS_LOG_SAMPLE_INVALID",
        )
    return value


class AuthInterceptor:
    """Bearer-token check against the configured tokens; health and reflection stay open.

    The token is compared with every configured token in constant time (``hmac.compare_digest``,
    all of them, no early exit), so timing says nothing about how close a guess was.
    (The check itself; ``ArborInterceptor`` runs it for each call.)
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [t.encode() for t in tokens if t]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def applies_to(self, method: str) -> bool:
        return self.enabled and not method.startswith(OPEN_SERVICE_PREFIXES)

    def authenticate(self, authorization: str | None) -> str | None:
        """None when the header carries a known token, else the reason it does not."""
        if not authorization:
            return "MISSING_CREDENTIALS"
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "INVALID_CREDENTIALS"
        candidate = token.strip().encode()
        matches = [hmac.compare_digest(candidate, known) for known in self._tokens]
        return None if any(matches) else "INVALID_CREDENTIALS"


def request_id_from(candidate: str | None) -> str:
    """The caller's ``x-request-id`` when usable, else a new random UUID (version 4)."""
    if candidate and _REQUEST_ID_RE.match(candidate):
        return candidate
    return new_request_id()


#: the version (4) and variant (RFC 4122) bits of a UUID, over 128 random bits
_UUID4_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_SET = (0x4 << 76) | (0x2 << 62)


def new_request_id() -> str:
    """A random version-4 UUID, from ``random``: a request id must be unique, not secret, and
    ``uuid.uuid4()`` asks the kernel for entropy on every call (20 µs per request measured on
    a small VM, a tenth of a one-row Predict's own work)."""
    text = "%032x" % (random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET)
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class _Method:
    """What the interceptor derives from a method name once (not per call)."""

    __slots__ = ("access_level", "attributes", "auth", "labels", "name", "path", "traced")

    def __init__(self, path: str, auth: bool) -> None:
        self.path = path
        self.name = path.lstrip("/")
        self.traced = not _is_health(path)
        self.auth = auth
        self.access_level = logging.DEBUG if _is_health(path) else logging.INFO
        self.attributes = dict(rpc_attributes(path))
        self.labels: dict[grpc.StatusCode, dict[str, Any]] = {}

    def labels_for(self, code: grpc.StatusCode) -> dict[str, Any]:
        labels = self.labels.get(code)
        if labels is None:
            labels = self.labels[code] = {**self.attributes, "rpc.grpc.status_code": code.value[0]}
        return labels


class _Metadata:
    """The request headers the interceptor reads, from one scan of the metadata."""

    __slots__ = ("authorization", "request_id", "traceparent", "tracestate")

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.authorization = self.request_id = self.traceparent = self.tracestate = None
        for key, value in context.invocation_metadata() or ():
            if key in _READ_KEYS:
                text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
                setattr(self, _READ_KEYS[key], text)


_READ_KEYS = {
    "authorization": "authorization",
    REQUEST_ID_KEY: "request_id",
    TRACEPARENT: "traceparent",
    TRACESTATE: "tracestate",
}


def _exception_code(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status a handler's exception ends in (for the access log, before mapping)."""
    if isinstance(exc, ArborError):
        return exc.code
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return grpc.StatusCode.UNAVAILABLE
        return grpc.StatusCode.INTERNAL
    if isinstance(exc, Exception):
        return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.UNKNOWN


class ArborInterceptor(grpc.aio.ServerInterceptor):
    """Telemetry, auth, request id, error mapping and access log, for all four RPC kinds.

    * **telemetry**: a SERVER span per RPC (parent from ``traceparent``), recorded only when
      the tracer provider has a span processor; otherwise a non-recording span with valid ids
      is made current (logs and outbound calls still carry the trace). Request and duration
      metrics by method and code. Health checks are not traced. The span's context is
      attached without a later detach: grpc.aio runs each RPC in a context of its own.
    * **auth**: ``AuthInterceptor``'s check; UNAUTHENTICATED with ErrorInfo otherwise.
    * **request id**: ``x-request-id`` from the caller (or a uuid4) in the contextvar and in
      the trailing metadata of every outcome, also when the handler replaced the trailers.
    * **errors**: ArborError -> its code with google.rpc details; a downstream AioRpcError ->
      UNAVAILABLE or INTERNAL; anything else -> INTERNAL, generic on the wire, traceback in
      the log. Cancellation (client gone, deadline) passes through as CANCELLED.
    * **access log**: one line per call (method, code, duration_ms, peer), health at DEBUG;
      ``ARBOR_ACCESS_LOG_SAMPLE`` (0..1, default 1) samples successful calls, errors are
      always logged. Nothing is built when the level is off.
    """

    def __init__(
        self, telemetry: Telemetry, tokens: Sequence[str], access_sample: float | None = None
    ) -> None:
        self.telemetry = telemetry
        self.auth = AuthInterceptor(tokens)
        self.access_sample = _access_log_sample() if access_sample is None else access_sample
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, _Method(method, self.auth.applies_to(method)))
        self._handlers[method] = (handler, wrapped)
        return wrapped

    # -- per call -----------------------------------------------------------------------

    def _start_span(self, info: _Method, headers: _Metadata) -> Span:
        """Make this call's span current (recording only when something receives spans)."""
        telemetry = self.telemetry
        parent = (
            context_from_traceparent(headers.traceparent, headers.tracestate or "")
            if headers.traceparent
            else Context()  # a new trace, whatever was current when the server started
        )
        if telemetry.records_spans():
            span: Span = telemetry.tracer.start_span(
                info.name, context=parent, kind=SpanKind.SERVER, attributes=info.attributes
            )
        else:
            span = unrecorded_span(parent)
        attach(trace.set_span_in_context(span, parent))
        set_current(telemetry)  # outbound calls of this RPC: CLIENT spans, same providers
        return span

    def _finish(
        self, info: _Method, span: Span | None, started: float, code: grpc.StatusCode
    ) -> None:
        if span is None:
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_FAULT_CODES:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()
        self.telemetry.record_rpc(info.labels_for(code), elapsed_ms)

    def _admit(
        self, info: _Method, headers: _Metadata, context: grpc.aio.ServicerContext
    ) -> grpc.Status | None:
        """Auth, then the request id: None when the call may go on, else the refusal."""
        if info.auth:
            reason = self.auth.authenticate(headers.authorization)
            if reason is not None:
                log.warning(
                    "rejected unauthenticated call", extra={"method": info.path, "reason": reason}
                )
                return status_for_error(
                    Unauthenticated("a valid bearer token is required", reason=reason)
                )
        request_id = request_id_from(headers.request_id)
        # No reset: the RPC's context dies with the call.
        request_id_var.set(request_id)
        context.set_trailing_metadata(
            _merge_trailing(context.trailing_metadata(), ((REQUEST_ID_KEY, request_id),))
        )
        return None

    @staticmethod
    def _keep_request_id(context: grpc.aio.ServicerContext) -> None:
        """The handler may have replaced the trailing metadata; put the id back."""
        if context.done():
            return
        request_id = request_id_var.get()
        current = context.trailing_metadata() or ()
        if (REQUEST_ID_KEY, request_id) not in current:
            context.set_trailing_metadata(_merge_trailing(current, ((REQUEST_ID_KEY, request_id),)))

    def _peer(self, info: _Method, context: grpc.aio.ServicerContext) -> str | bool | None:
        """The peer for the access log (False: the log is off for this method). Read at the
        start, while the call is alive: once a client has dropped a stream the call may be
        torn down, and grpcio's context.peer() then crashes the process (SIGSEGV)."""
        if not access_log.isEnabledFor(info.access_level):
            return False
        try:
            return context.peer()
        except Exception:
            return None

    def _access(
        self, info: _Method, code: grpc.StatusCode, started: float, peer: str | None
    ) -> None:
        sample = self.access_sample
        if code is grpc.StatusCode.OK and sample < 1.0 and random.random() >= sample:
            return
        access_log.log(
            info.access_level,
            "%s %s",
            info.path,
            code.name,
            extra={
                "method": info.path,
                "code": code.name,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "peer": peer,
            },
        )

    async def _map_error(
        self, info: _Method, context: grpc.aio.ServicerContext, exc: Exception
    ) -> None:
        """The one place exceptions become statuses; returns only when ``exc`` must propagate
        as it is (grpc's own signals, or a call already finished)."""
        if isinstance(exc, grpc.aio.BaseError):
            # AbortError from a handler's own context.abort, or grpc's internal signals such
            # as "server stopped": the status is settled or cannot be sent any more.
            return
        if context.done():
            return
        method = info.path
        request_id = request_id_var.get()
        if isinstance(exc, ArborError):
            level = logging.ERROR if exc.code in _SERVER_FAULT_CODES else logging.INFO
            log.log(
                level,
                "%s failed: %s",
                method,
                exc.message,
                extra={"method": method, "code": exc.code.name, "reason": exc.reason},
            )
            status = status_for_error(exc, request_id)
        elif isinstance(exc, grpc.aio.AioRpcError):
            # A downstream call failed and the handler did not translate it. Say UNAVAILABLE
            # when the dependency was unreachable (the caller may retry), INTERNAL otherwise;
            # never forward the downstream message.
            log.error(
                "%s failed: downstream call returned %s",
                method,
                exc.code().name,
                exc_info=exc,
                extra={"method": method, "downstream_code": exc.code().name},
            )
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                status = internal_status(
                    request_id,
                    code=grpc.StatusCode.UNAVAILABLE,
                    reason="DEPENDENCY_UNAVAILABLE",
                    message="a dependency is unavailable",
                )
            else:
                status = internal_status(request_id)
        else:
            log.error(
                "%s failed with an unexpected error",
                method,
                exc_info=exc,
                extra={"method": method},
            )
            trace.get_current_span().record_exception(exc)
            status = internal_status(request_id)
        trailing = _merge_trailing(context.trailing_metadata(), status.trailing_metadata)
        await context.abort(status.code, status.details, trailing)

    # -- the four kinds -----------------------------------------------------------------

    def _wrap(self, handler: grpc.RpcMethodHandler, info: _Method) -> grpc.RpcMethodHandler:
        unary_request = bool(handler.unary_unary or handler.unary_stream)
        serializers = {
            "request_deserializer": (
                _safe_deserializer(handler.request_deserializer)
                if unary_request
                else handler.request_deserializer
            ),
            "response_serializer": _wire_or_serialize(handler.response_serializer),
        }
        if handler.unary_unary or handler.stream_unary:
            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            inner = handler.unary_unary or handler.stream_unary
            return factory(self._unary(inner, info), **serializers)
        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        inner = handler.unary_stream or handler.stream_stream
        return factory(self._stream(inner, info), **serializers)

    def _unary(self, inner: Callable[..., Any], info: _Method) -> Callable[..., Any]:
        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            headers = _Metadata(context)
            span = self._start_span(info, headers) if info.traced else None
            code = grpc.StatusCode.UNKNOWN
            try:
                refused = self._admit(info, headers, context)
                if refused is not None:
                    await context.abort(refused.code, refused.details, refused.trailing_metadata)
                try:
                    peer = self._peer(info, context)
                    inner_code = grpc.StatusCode.UNKNOWN
                    try:
                        if isinstance(request, MalformedRequest):
                            _refuse_malformed(inner, request)
                        result = inner(request, context)
                        if inspect.isawaitable(result):
                            result = await result
                        inner_code = _final_code(context)
                    except BaseException as exc:
                        inner_code = _exception_code(exc, context)
                        raise
                    finally:
                        if peer is not False:
                            self._access(info, inner_code, started, peer)  # type: ignore[arg-type]
                except Exception as exc:
                    await self._map_error(info, context, exc)
                    raise
                self._keep_request_id(context)
                code = _final_code(context)
                return result
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._finish(info, span, started, code)

        return unary_response

    def _stream(self, inner: Callable[..., Any], info: _Method) -> Callable[..., Any]:
        async def stream_response(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            started = time.perf_counter()
            headers = _Metadata(context)
            span = self._start_span(info, headers) if info.traced else None
            code = grpc.StatusCode.UNKNOWN
            try:
                refused = self._admit(info, headers, context)
                if refused is not None:
                    await context.abort(refused.code, refused.details, refused.trailing_metadata)
                try:
                    peer = self._peer(info, context)
                    inner_code = grpc.StatusCode.UNKNOWN
                    try:
                        async for response in _iterate_responses(inner, request, context):
                            yield response
                        inner_code = _final_code(context)
                    except BaseException as exc:
                        inner_code = _exception_code(exc, context)
                        raise
                    finally:
                        if peer is not False:
                            self._access(info, inner_code, started, peer)  # type: ignore[arg-type]
                except Exception as exc:
                    await self._map_error(info, context, exc)
                    raise
                self._keep_request_id(context)
                code = _final_code(context)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._finish(info, span, started, code)

        return stream_response


# --- binding -------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def tls_credentials_from_env() -> tuple[grpc.ServerCredentials | None, bool]:
    """Server TLS credentials from ``ARBOR_TLS_*`` files, and whether clients must present a
    certificate (mutual TLS). ``(None, False)`` when TLS is not configured."""
    cert, key = os.environ.get(TLS_CERT_ENV, ""), os.environ.get(TLS_KEY_ENV, "")
    client_ca = os.environ.get(TLS_CLIENT_CA_ENV, "")
    if not cert and not key:
        if client_ca:
            raise FailedPrecondition(
                f"{TLS_CLIENT_CA_ENV} needs {TLS_CERT_ENV} and {TLS_KEY_ENV}",
                reason="TLS_CONFIG_INVALID",
            )
        return None, False
    if not cert or not key:
        raise FailedPrecondition(
            f"TLS needs both {TLS_CERT_ENV} and {TLS_KEY_ENV}", reason="TLS_CONFIG_INVALID"
        )
    try:
        chain = Path(cert).read_bytes()
        private_key = Path(key).read_bytes()
        root = Path(client_ca).read_bytes() if client_ca else None
    except OSError as exc:
        raise FailedPrecondition(
            f"cannot read TLS files: {exc}",
            reason="TLS_CONFIG_INVALID",
            metadata={"path": str(exc.filename)},
        ) from exc
    credentials = grpc.ssl_server_credentials(
        [(private_key, chain)], root_certificates=root, require_client_auth=root is not None
    )
    return credentials, root is not None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


# --- the runner ----------------------------------------------------------------------------


class ServiceRunner:
    """A configured, not yet started gRPC server with health, readiness and lifecycle.

    ``start()`` binds (port 0 -> an ephemeral port, returned), ``stop(grace)`` shuts down
    gracefully, ``serve_until_signal()`` does both around SIGTERM/SIGINT.
    """

    def __init__(
        self,
        settings: Settings,
        register: Register,
        readiness_checks: Sequence[ReadinessCheck] = (),
        background_tasks: Sequence[BackgroundTask] = (),
        *,
        shutdown_hooks: Sequence[ShutdownHook] = (),
        draining_hooks: Sequence[ShutdownHook] = (),
        telemetry: Telemetry | None = None,
        readiness_interval: float = 5.0,
        readiness_timeout: float = 3.0,
    ) -> None:
        self.settings = settings
        self._register = register
        self._checks = list(readiness_checks)
        self._background = list(background_tasks)
        self._shutdown_hooks = list(shutdown_hooks)
        self._draining_hooks = list(draining_hooks)
        self._telemetry = telemetry
        self.readiness_interval = readiness_interval
        self.readiness_timeout = readiness_timeout
        self.health = HealthServicer()
        self.service_names: list[str] = []
        self.port: int | None = None
        self.ready = False
        self._announced = False
        self.mutual_tls = False
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._failed_background: list[str] = []
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def address(self) -> str:
        """``host:port`` clients should dial (loopback when bound to all interfaces)."""
        host = self.settings.host
        if host in {"0.0.0.0", "::", "[::]", ""}:
            host = "127.0.0.1"
        return _bind_address(host, self.port or self.settings.port)

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        if self._telemetry is None:
            self._telemetry = default_telemetry(self.settings.service)
        telemetry = self._telemetry
        return [ArborInterceptor(telemetry, self.settings.auth_tokens)]

    def _options(self) -> list[tuple[str, int]]:
        size = self.settings.max_message_bytes
        return [
            ("grpc.max_send_message_length", size),
            ("grpc.max_receive_message_length", size),
            ("grpc.so_reuseport", 0),
            *KEEPALIVE_OPTIONS,
        ]

    def _check_bind(self, mutual_tls: bool) -> None:
        authenticated = bool(self.settings.auth_tokens) or mutual_tls
        if authenticated:
            return
        if _is_loopback(self.settings.host):
            log.warning(
                "authentication is off (no ARBOR_AUTH_TOKENS); listening on loopback only",
                extra={"host": self.settings.host},
            )
            return
        if _truthy(os.environ.get(ALLOW_INSECURE_BIND_ENV)):
            log.warning(
                "authentication is off and the server listens beyond loopback "
                f"({ALLOW_INSECURE_BIND_ENV}=1)",
                extra={"host": self.settings.host},
            )
            return
        raise FailedPrecondition(
            f"refusing to listen on {self.settings.host} without authentication: set "
            f"ARBOR_AUTH_TOKENS, configure mutual TLS, or set {ALLOW_INSECURE_BIND_ENV}=1",
            reason="INSECURE_BIND_REFUSED",
            metadata={"host": self.settings.host},
        )

    async def start(self) -> int:
        """Bind, start serving (health NOT_SERVING until ready) and return the bound port."""
        if self._server is not None:
            raise FailedPrecondition("server already started", reason="SERVER_ALREADY_STARTED")
        credentials, self.mutual_tls = tls_credentials_from_env()
        self._check_bind(self.mutual_tls)
        server = grpc.aio.server(interceptors=self._interceptors(), options=self._options())
        names = list(self._register(server))
        if not all(isinstance(n, str) and n for n in names):
            raise FailedPrecondition(
                "register must return the full names of the services it added",
                reason="INVALID_SERVICE_NAMES",
            )
        self.service_names = names
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for name in ["", *names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection([*names, HEALTH_SERVICE, REFLECTION_SERVICE], server)
        address = _bind_address(self.settings.host, self.settings.port)
        try:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:
            port = 0
            cause: Exception | None = exc
        else:
            cause = None
        if not port:
            raise FailedPrecondition(
                f"cannot listen on {address}", reason="BIND_FAILED", metadata={"address": address}
            ) from cause
        self.port = port
        self._server = server
        await server.start()
        self._tasks.append(asyncio.create_task(self._readiness_loop(), name="arbor-readiness"))
        for task in self._background:
            name = getattr(task, "__qualname__", None) or repr(task)
            self._tasks.append(asyncio.create_task(self._supervise(task, name), name=name))
        log.info(
            "serving",
            extra={
                "address": self.address,
                "services": names,
                "tls": credentials is not None,
                "mutual_tls": self.mutual_tls,
                "auth": bool(self.settings.auth_tokens),
                "event_loop": eventloop.loop_name(asyncio.get_running_loop()),
            },
        )
        return port

    async def _supervise(self, task: BackgroundTask, name: str) -> None:
        """Run a background task; if it dies, log it and report not ready."""
        if self._telemetry is not None:
            set_current(self._telemetry)  # this task's own context: its spans are the service's
        try:
            await task()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task failed", extra={"task": name})
            self._failed_background.append(name)
            await self.check_readiness()

    async def _run_check(self, check: ReadinessCheck) -> str | None:
        """None when the check passes, else why it did not."""
        try:
            ok = await asyncio.wait_for(check(), timeout=self.readiness_timeout)
        except TimeoutError:
            return "timed out"
        except Exception as exc:
            return f"raised {type(exc).__name__}: {exc}"
        return None if ok else "returned false"

    async def check_readiness(self) -> bool:
        """Run every check once and set health to match; returns whether all passed."""
        results = await asyncio.gather(*(self._run_check(c) for c in self._checks))
        failures = {
            getattr(check, "__qualname__", repr(check)): why
            for check, why in zip(self._checks, results, strict=True)
            if why is not None
        }
        failures.update({f"background:{name}": "stopped" for name in self._failed_background})
        ready = not failures
        if self._stopping:
            return ready
        if ready != self.ready or not self._announced:
            self._announced = True
            if ready:
                log.info("ready: health SERVING", extra={"services": self.service_names})
            else:
                log.warning("not ready: health NOT_SERVING", extra={"failures": failures})
        self.ready = ready
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
        return ready

    async def _readiness_loop(self) -> None:
        while not self._stopping:
            try:
                await self.check_readiness()
            except Exception:  # never let the loop die silently
                log.exception("readiness check loop failed")
            await asyncio.sleep(self.readiness_interval)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, then stop accepting calls and let in-flight ones finish within ``grace``
        seconds, then cancel background tasks and run shutdown hooks. Idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("shutting down", extra={"grace_seconds": grace})
        await self.health.enter_graceful_shutdown()
        await self._run_draining_hooks()
        if self._server is not None:
            await self._server.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for hook in self._shutdown_hooks:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed", extra={"hook": repr(hook)})
        if self._telemetry is not None:
            self._telemetry.flush()
        log.info("stopped")
        self._stopped.set()

    async def _run_draining_hooks(self) -> None:
        """Run when shutdown begins, before the drain: a hook ends long-lived streams (e.g.
        WatchExperiment) that would otherwise hold ``stop(grace)`` for the whole grace."""
        for hook in self._draining_hooks:
            try:
                await hook()
            except Exception:
                log.exception("draining hook failed", extra={"hook": repr(hook)})

    async def wait_for_termination(self) -> None:
        await self._stopped.wait()

    async def serve_until_signal(self) -> None:
        """Start, wait for SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop_requested.set)
                installed.append(sig)
        try:
            await self.start()
            waiter = asyncio.create_task(stop_requested.wait())
            stopped = asyncio.create_task(self._stopped.wait())
            await asyncio.wait({waiter, stopped}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopped.cancel()
            await self.stop()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)


def build_server(
    settings: Settings,
    register: Register,
    readiness_checks: Sequence[ReadinessCheck] = (),
    background_tasks: Sequence[BackgroundTask] = (),
    **options: Any,
) -> ServiceRunner:
    """A ServiceRunner for ``settings``; ``options`` are ServiceRunner's keyword arguments
    (``shutdown_hooks``, ``telemetry``, ``readiness_interval``, ``readiness_timeout``)."""
    return ServiceRunner(settings, register, readiness_checks, background_tasks, **options)


def run_service(settings: Settings, build: Callable[[Settings], Awaitable[ServiceRunner]]) -> None:
    """A service's ``__main__``: JSON logging, telemetry, then serve until SIGTERM/SIGINT.

    ``build`` is the service's async factory: it opens its dependencies (database, NATS) and
    returns ``build_server(...)``, so everything lives on the one event loop.
    """
    configure_logging(settings.service, settings.log_level)
    # Providers from ARBOR_OTEL_EXPORTER plus the Prometheus endpoint (ARBOR_<SVC>_METRICS_PORT).
    metrics_endpoint = start_process_telemetry(settings.service, settings.host)

    async def main() -> None:
        runner = await build(settings)
        await runner.serve_until_signal()

    try:
        eventloop.run(main())
    except ArborError as exc:  # a configuration problem found at start-up: say it as JSON
        log.error(
            "cannot start: %s",
            exc.message,
            extra={"reason": exc.reason, "details": exc.metadata},
        )
        raise SystemExit(2) from None
    finally:
        if metrics_endpoint is not None:
            metrics_endpoint.stop()


def service_main(
    service: str,
    build_runner: Callable[[Settings], ServiceRunner],
    migrate: Callable[[Settings], None] | None = None,
) -> None:
    """A service's whole ``python -m arbor_<service>``: its settings, JSON logs, its schema
    migrated before anything listens (unless ``ARBOR_MIGRATE_ON_START=0``), then
    :func:`run_service` until SIGTERM/SIGINT."""
    settings = load_settings(service)
    configure_logging(settings.service, settings.log_level)
    if migrate is not None and env_flag("ARBOR_MIGRATE_ON_START", True):
        migrate(settings)

    async def build(settings: Settings) -> ServiceRunner:
        return build_runner(settings)

    run_service(settings, build)
