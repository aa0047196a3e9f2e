"""Outbound gRPC channels: deadlines, context propagation and safe retries on every call.

``channel(address, settings)`` returns a ``grpc.aio.Channel`` whose interceptors

* add a default deadline when the caller gives none (unary calls: ``default_timeout``;
  streaming calls: ``stream_timeout``, longer, since a watch lives long);
* propagate ``x-request-id`` (the id of the request being served) and ``traceparent``, and
  add ``authorization: Bearer $ARBOR_CLIENT_TOKEN`` when that variable is set;
* retry unary calls only on UNAVAILABLE, with exponential backoff and jitter, within the
  original deadline, and only when a retry cannot apply a mutation twice: the method is
  marked ``idempotency_level = NO_SIDE_EFFECTS`` or ``IDEMPOTENT`` in its .proto, or the
  request carries a non-empty ``request_id`` (the server replays the first result), or the
  caller says so for this call with ``metadata=[RETRYABLE]`` (``[NO_RETRY]`` forbids it).

TLS for outbound calls: ``ARBOR_CLIENT_TLS_CA`` (a CA bundle to trust) and, for mutual TLS,
``ARBOR_CLIENT_TLS_CERT`` / ``ARBOR_CLIENT_TLS_KEY``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from opentelemetry.trace import SpanKind

from arbor_core.config import Settings
from arbor_core.logging import request_id_var
from arbor_core.status_details import REQUEST_ID_KEY
from arbor_core.telemetry import (
    TRACEPARENT,
    TRACESTATE,
    client_tracer,
    rpc_attributes,
    trace_headers,
)

log = logging.getLogger(__name__)

CLIENT_TOKEN_ENV = "ARBOR_CLIENT_TOKEN"
CLIENT_TLS_CA_ENV = "ARBOR_CLIENT_TLS_CA"
CLIENT_TLS_CERT_ENV = "ARBOR_CLIENT_TLS_CERT"
CLIENT_TLS_KEY_ENV = "ARBOR_CLIENT_TLS_KEY"
RETRY_KEY = "x-arbor-retry"
# Per-call retry flags, passed as call metadata and removed before the call leaves.
RETRYABLE: tuple[str, str] = (RETRY_KEY, "1")
NO_RETRY: tuple[str, str] = (RETRY_KEY, "0")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_STREAM_TIMEOUT_S = 3600.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CLIENT_KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect soon after a dependency restarts: while a channel waits out its reconnect
    # backoff (1 s, growing to 120 s by default) every call fails fast and retries are wasted.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; ``max_attempts`` counts the first try."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def backoff(self, attempt: int) -> float:
        """Sleep before attempt ``attempt + 1`` (attempt counts from 1)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling)


NO_RETRIES = RetryPolicy(max_attempts=1)


def _method_name(method: bytes | str) -> str:
    return method.decode() if isinstance(method, bytes) else method


_idempotent_methods: dict[str, bool] = {}


def method_is_idempotent(full_method: str) -> bool:
    """Whether ``/pkg.Service/Method`` is declared side-effect free or idempotent in its .proto
    (looked up in the default descriptor pool, where generated modules register; a method not
    found there yet is not cached, so importing its module later still counts)."""
    if full_method in _idempotent_methods:
        return _idempotent_methods[full_method]
    service, _, method = full_method.lstrip("/").partition("/")
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    except KeyError:
        return False
    level = descriptor.GetOptions().idempotency_level
    result = level in (
        descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
        descriptor_pb2.MethodOptions.IDEMPOTENT,
    )
    _idempotent_methods[full_method] = result
    return result


def request_has_request_id(request: Any) -> bool:
    """True when a protobuf request has a non-empty ``request_id`` field."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    fields = getattr(descriptor, "fields_by_name", {})
    return "request_id" in fields and bool(getattr(request, "request_id", ""))


class _Preparer:
    """What every outbound call gets: metadata, deadline and the retry decision."""

    def __init__(
        self,
        default_timeout: float | None,
        stream_timeout: float | None,
        token: str | None,
    ) -> None:
        self.default_timeout = default_timeout
        self.stream_timeout = stream_timeout
        self.token = token

    def prepare(
        self, details: grpc.aio.ClientCallDetails, streaming: bool
    ) -> tuple[grpc.aio.ClientCallDetails, bool | None]:
        """New call details and the caller's explicit retry flag (None when not given)."""
        pairs: list[tuple[str, Any]] = []
        flag: bool | None = None
        for key, value in details.metadata or ():
            if key == RETRY_KEY:
                flag = str(value).strip().lower() in {"1", "true", "yes"}
            else:
                pairs.append((key, value))
        present = {key for key, _ in pairs}
        request_id = request_id_var.get()
        if request_id and REQUEST_ID_KEY not in present:
            pairs.append((REQUEST_ID_KEY, request_id))
        if TRACEPARENT not in present:
            pairs.extend(
                (k, v) for k, v in trace_headers().items() if k in (TRACEPARENT, TRACESTATE)
            )
        if self.token and "authorization" not in present:
            pairs.append(("authorization", f"Bearer {self.token}"))
        timeout = details.timeout
        if timeout is None:
            timeout = self.stream_timeout if streaming else self.default_timeout
        new = details._replace(metadata=grpc.aio.Metadata(*pairs), timeout=timeout)
        return new, flag


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    """Deadline, metadata, a CLIENT span, and retries on UNAVAILABLE when safe."""

    def __init__(self, preparer: _Preparer, retry: RetryPolicy) -> None:
        self.preparer = preparer
        self.retry = retry

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        method = _method_name(client_call_details.method)
        # The tracer of the service whose RPC makes this call (else the process-wide one), so
        # the CLIENT span lands beside that RPC's SERVER span.
        with client_tracer().start_as_current_span(
            method.lstrip("/"), kind=SpanKind.CLIENT, attributes=dict(rpc_attributes(method))
        ) as span:
            details, flag = self.preparer.prepare(client_call_details, streaming=False)
            retryable = (
                flag
                if flag is not None
                else method_is_idempotent(method) or request_has_request_id(request)
            )
            deadline = None if details.timeout is None else time.monotonic() + details.timeout
            attempt = 0
            while True:
                attempt += 1
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                call = await continuation(details._replace(timeout=remaining), request)
                try:
                    await call
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    if (
                        code == grpc.StatusCode.UNAVAILABLE
                        and retryable
                        and attempt < self.retry.max_attempts
                    ):
                        pause = self.retry.backoff(attempt)
                        if deadline is None or time.monotonic() + pause < deadline:
                            log.info(
                                "retrying after UNAVAILABLE",
                                extra={
                                    "method": method,
                                    "attempt": attempt,
                                    "backoff_s": round(pause, 3),
                                },
                            )
                            await asyncio.sleep(pause)
                            continue
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    span.set_attribute("arbor.rpc.attempts", attempt)
                    return call
                span.set_attribute("rpc.grpc.status_code", 0)
                span.set_attribute("arbor.rpc.attempts", attempt)
                return call


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, preparer: _Preparer) -> None:
        self.preparer = preparer

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        details, _ = self.preparer.prepare(client_call_details, streaming=True)
        return await continuation(details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, preparer: _Preparer) -> None:
        self.preparer = preparer

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        details, _ = self.preparer.prepare(client_call_details, streaming=True)
        return await continuation(details, request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, preparer: _Preparer) -> None:
        self.preparer = preparer

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        details, _ = self.preparer.prepare(client_call_details, streaming=True)
        return await continuation(details, request_iterator)


def client_interceptors(
    *,
    default_timeout: float | None = DEFAULT_TIMEOUT_S,
    stream_timeout: float | None = DEFAULT_STREAM_TIMEOUT_S,
    retry: RetryPolicy = RetryPolicy(),
    token: str | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call kind (grpc.aio files each interceptor under one kind only)."""
    preparer = _Preparer(default_timeout, stream_timeout, token)
    return [
        _UnaryUnary(preparer, retry),
        _UnaryStream(preparer),
        _StreamUnary(preparer),
        _StreamStream(preparer),
    ]


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _credentials_from_env() -> grpc.ChannelCredentials | None:
    ca = os.environ.get(CLIENT_TLS_CA_ENV, "")
    if not ca:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca),
        private_key=_read(os.environ.get(CLIENT_TLS_KEY_ENV, "")),
        certificate_chain=_read(os.environ.get(CLIENT_TLS_CERT_ENV, "")),
    )


def channel(
    address: str,
    settings: Settings | None = None,
    *,
    default_timeout: float | None = DEFAULT_TIMEOUT_S,
    stream_timeout: float | None = DEFAULT_STREAM_TIMEOUT_S,
    retry: RetryPolicy = RetryPolicy(),
    token: str | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    extra_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """An aio channel to ``address`` with Arbor's options and interceptors.

    ``token`` defaults to ``ARBOR_CLIENT_TOKEN``; ``credentials`` default to TLS from
    ``ARBOR_CLIENT_TLS_*`` when set, else plaintext.
    """
    size = settings.max_message_bytes if settings is not None else DEFAULT_MAX_MESSAGE_BYTES
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.primary_user_agent", "arbor"),
        *CLIENT_KEEPALIVE_OPTIONS,
    ]
    interceptors = [
        *client_interceptors(
            default_timeout=default_timeout,
            stream_timeout=stream_timeout,
            retry=retry,
            token=token if token is not None else (os.environ.get(CLIENT_TOKEN_ENV) or None),
        ),
        *extra_interceptors,
    ]
    creds = credentials if credentials is not None else _credentials_from_env()
    if creds is not None:
        return grpc.aio.secure_channel(address, creds, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def service_channel(service: str, settings: Settings, **kwargs: Any) -> grpc.aio.Channel:
    """A channel to another Arbor service by name (split, training, registry, inference)."""
    return channel(settings.service_addresses[service], settings, **kwargs)
