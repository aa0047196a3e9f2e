"""Channels, deadlines, credentials and the one retry loop every client method goes through.

The policy is ``arbor_core.clients``' (STYLE.md, "every outbound call has a deadline"), applied
to synchronous channels, because scripts, notebooks and the CLI are synchronous while
``arbor_core.clients.channel`` gives grpc.aio channels for services:

* every call gets a deadline (``ClientConfig.timeout`` unless the method or caller says
  otherwise), and retries share that one deadline instead of each getting a fresh one;
* only UNAVAILABLE is retried, with exponential backoff and jitter;
* a call is retried when its method is declared ``NO_SIDE_EFFECTS``/``IDEMPOTENT`` in the
  .proto or the request carries a ``request_id`` (a replay returns the first result); a few
  calls that are harmless to repeat (Predict, Explain, CancelExperiment, SetAlias) say so.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from arbor_client.errors import ArborClientError, from_rpc_error

try:  # the shared policy, when the runtime library is installed (it is, in this repository)
    from arbor_core.clients import (
        CLIENT_KEEPALIVE_OPTIONS,
        DEFAULT_MAX_MESSAGE_BYTES,
        DEFAULT_STREAM_TIMEOUT_S,
        DEFAULT_TIMEOUT_S,
        method_is_idempotent,
        request_has_request_id,
    )
except ImportError:  # pragma: no cover - a client installed without arbor_core
    DEFAULT_TIMEOUT_S = 30.0
    DEFAULT_STREAM_TIMEOUT_S = 3600.0
    DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
    CLIENT_KEEPALIVE_OPTIONS = [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    ]

    def method_is_idempotent(full_method: str) -> bool:  # type: ignore[misc]
        from google.protobuf import descriptor_pb2, descriptor_pool

        service, _, method = full_method.lstrip("/").partition("/")
        try:
            found = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
        except KeyError:
            return False
        return found.GetOptions().idempotency_level in (
            descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
            descriptor_pb2.MethodOptions.IDEMPOTENT,
        )

    def request_has_request_id(request: Any) -> bool:
        return bool(getattr(request, "request_id", ""))


log = logging.getLogger("arbor_client")

__all__ = [
    "DEFAULT_ADDRESSES",
    "ClientConfig",
    "RetryPolicy",
    "open_channel",
]

DEFAULT_ADDRESSES = {
    "split": "127.0.0.1:50051",
    "training": "127.0.0.1:50052",
    "registry": "127.0.0.1:50053",
    "inference": "127.0.0.1:50054",
}
SERVICES = tuple(DEFAULT_ADDRESSES)
REQUEST_ID_KEY = "x-request-id"
USER_AGENT = "arbor-client/0.1"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for UNAVAILABLE: ``initial * multiplier**n``, capped, with jitter."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 3.0
    multiplier: float = 2.0

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based), with full jitter."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ClientConfig:
    """How to reach the services and how to call them; ``from_env()`` reads ``ARBOR_*``.

    Environment: ``ARBOR_<SVC>_ADDRESS`` (defaults 127.0.0.1:50051..50054),
    ``ARBOR_CLIENT_TOKEN`` (bearer token), ``ARBOR_CLIENT_TIMEOUT`` (seconds, default 30),
    ``ARBOR_CLIENT_TLS_CA`` (trust this CA; with ``ARBOR_CLIENT_TLS_CERT``/``_KEY`` for mutual
    TLS, as in arbor_core.clients), ``ARBOR_CLIENT_TLS=1`` (TLS with the system roots),
    ``ARBOR_MAX_MESSAGE_BYTES`` (default 64 MiB, like the servers).
    """

    addresses: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ADDRESSES))
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    stream_timeout: float = DEFAULT_STREAM_TIMEOUT_S
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: bool = False
    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    metadata: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, **overrides: Any) -> ClientConfig:
        """Settings from the environment; keyword arguments that are not None win."""
        addresses = {
            svc: _env(f"ARBOR_{svc.upper()}_ADDRESS") or default
            for svc, default in DEFAULT_ADDRESSES.items()
        }
        ca_file = _env("ARBOR_CLIENT_TLS_CA")
        cert_file = _env("ARBOR_CLIENT_TLS_CERT")
        key_file = _env("ARBOR_CLIENT_TLS_KEY")
        timeout = _env("ARBOR_CLIENT_TIMEOUT")
        max_bytes = _env("ARBOR_MAX_MESSAGE_BYTES")
        config = cls(
            addresses=addresses,
            token=_env("ARBOR_CLIENT_TOKEN"),
            timeout=float(timeout) if timeout else DEFAULT_TIMEOUT_S,
            tls=_truthy(_env("ARBOR_CLIENT_TLS")) or ca_file is not None,
            root_certificates=_read(ca_file),
            private_key=_read(key_file),
            certificate_chain=_read(cert_file),
            max_message_bytes=int(max_bytes) if max_bytes else DEFAULT_MAX_MESSAGE_BYTES,
        )
        extra_addresses = overrides.pop("addresses", None) or {}
        given = {k: v for k, v in overrides.items() if v is not None}
        if extra_addresses:
            given["addresses"] = {**addresses, **{k: v for k, v in extra_addresses.items() if v}}
        return replace(config, **given)

    def address(self, service: str) -> str:
        return self.addresses.get(service) or DEFAULT_ADDRESSES[service]

    def call_metadata(self, request_id: str | None = None) -> list[tuple[str, str]]:
        """Per-call metadata: bearer token, ``x-request-id`` for the server logs, extras."""
        md = [(REQUEST_ID_KEY, request_id or str(uuid.uuid4()))]
        if self.token:
            md.append(("authorization", f"Bearer {self.token}"))
        md.extend(self.metadata)
        return md


def channel_options(config: ClientConfig) -> list[tuple[str, Any]]:
    """Message sizes like the servers', the keepalive pings arbor_core.clients uses (within
    what servers permit), and our own retry loop instead of gRPC's transparent retries."""
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        *CLIENT_KEEPALIVE_OPTIONS,
        ("grpc.enable_retries", 0),
        ("grpc.primary_user_agent", USER_AGENT),
    ]


def open_channel(address: str, config: ClientConfig) -> grpc.Channel:
    """A channel to ``address``: TLS when configured (or the address says ``https://``)."""
    tls = config.tls
    for scheme in ("https://", "grpcs://"):
        if address.startswith(scheme):
            address, tls = address[len(scheme) :], True
    for scheme in ("http://", "grpc://"):
        if address.startswith(scheme):
            address = address[len(scheme) :]
    options = channel_options(config)
    if tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=config.root_certificates,
            private_key=config.private_key,
            certificate_chain=config.certificate_chain,
        )
        return grpc.secure_channel(address, credentials, options=options)
    return grpc.insecure_channel(address, options=options)


class Caller:
    """Calls one service's stub methods with deadline, metadata and retries applied."""

    def __init__(self, service: str, grpc_service: str, stub: Any, config: ClientConfig) -> None:
        self.service = service
        self.grpc_service = grpc_service
        self.stub = stub
        self.config = config

    def full_method(self, method: str) -> str:
        return f"/{self.grpc_service}/{method}"

    def retryable(self, method: str, request: Any) -> bool:
        """The shared rule: declared idempotent in the .proto, or carries a request_id."""
        return method_is_idempotent(self.full_method(method)) or request_has_request_id(request)

    def unary(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None = None,
        retryable: bool | None = None,
    ) -> Any:
        """Call ``method`` once or, on UNAVAILABLE and when retryable, until the deadline.

        ``retryable=None`` applies the shared rule (``retryable()``).
        """
        if retryable is None:
            retryable = self.retryable(method, request)
        fn = getattr(self.stub, method)
        budget = self.config.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        policy = self.config.retry if retryable else NO_RETRY
        metadata = self.config.call_metadata()
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                return fn(request, timeout=max(remaining, 0.001), metadata=metadata)
            except grpc.RpcError as err:
                error = from_rpc_error(err, method=f"{self.service}.{method}")
                if not self._should_retry(error, policy, attempt, deadline):
                    raise error from None
                pause = self._sleep_for(error, policy, attempt, deadline)
                log.info(
                    "retrying %s.%s after UNAVAILABLE (attempt %d, %.2fs): %s",
                    self.service,
                    method,
                    attempt,
                    pause,
                    error.message,
                )
                time.sleep(pause)

    def stream(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None = None,
        retryable: bool = True,
    ) -> Iterator[Any]:
        """A server stream; UNAVAILABLE before the first message is retried like a unary call.

        After the first message a broken stream raises: only the caller knows whether
        re-opening is safe (``TrainingClient.watch_experiment`` does, since a watch is a read).
        """
        fn = getattr(self.stub, method)
        budget = self.config.stream_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        policy = self.config.retry if retryable else NO_RETRY
        metadata = self.config.call_metadata()
        attempt = 0
        while True:
            attempt += 1
            remaining = max(deadline - time.monotonic(), 0.001)
            call = fn(request, timeout=remaining, metadata=metadata)
            received = False
            try:
                for message in call:
                    received = True
                    yield message
                return
            except grpc.RpcError as err:
                error = from_rpc_error(err, method=f"{self.service}.{method}")
                if received or not self._should_retry(error, policy, attempt, deadline):
                    raise error from None
                time.sleep(self._sleep_for(error, policy, attempt, deadline))
            finally:
                call.cancel()

    @staticmethod
    def _should_retry(
        error: ArborClientError, policy: RetryPolicy, attempt: int, deadline: float
    ) -> bool:
        return (
            error.code == grpc.StatusCode.UNAVAILABLE
            and attempt < policy.max_attempts
            and deadline - time.monotonic() > 0.01
        )

    @staticmethod
    def _sleep_for(
        error: ArborClientError, policy: RetryPolicy, attempt: int, deadline: float
    ) -> float:
        wait = policy.backoff(attempt)
        if error.retry_delay is not None:
            wait = max(wait, error.retry_delay)
        return max(0.0, min(wait, deadline - time.monotonic() - 0.01))


def new_request_id() -> str:
    return str(uuid.uuid4())
