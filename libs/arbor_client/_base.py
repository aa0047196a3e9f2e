"""What every per-service client shares: its channel, its caller, names and health."""

from __future__ import annotations

from types import TracebackType
from typing import Any, ClassVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from arbor_client._transport import Caller, ClientConfig, open_channel
from arbor_client.errors import ArborClientError, from_rpc_error


def resource_name(collection: str, value: str, field: str = "name") -> str:
    """``"abc"`` or ``"splits/abc"`` -> ``"splits/abc"``; an empty value is a client error."""
    value = value.strip()
    if not value:
        raise ArborClientError.invalid_argument(
            f"a {collection[:-1]} name is required", field=field
        )
    prefix = f"{collection}/"
    return value if value.startswith(prefix) else prefix + value


class ServiceClient:
    """Base of SplitClient & co: owns (or borrows) one channel to one service."""

    service: ClassVar[str]
    grpc_service: ClassVar[str]
    stub_class: ClassVar[type]

    def __init__(
        self,
        channel: grpc.Channel | None = None,
        *,
        address: str | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        self.config = config or ClientConfig.from_env()
        self.address = address or self.config.address(self.service)
        self._owns_channel = channel is None
        self.channel = channel or open_channel(self.address, self.config)
        self.stub: Any = self.stub_class(self.channel)
        self._caller = Caller(self.service, self.grpc_service, self.stub, self.config)

    # plumbing -------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        request: Any,
        timeout: float | None = None,
        *,
        retryable: bool | None = None,
    ) -> Any:
        """One RPC with deadline and retries; ``retryable=None`` follows the shared rule
        (declared idempotent, or carries a request_id)."""
        return self._caller.unary(method, request, timeout=timeout, retryable=retryable)

    # health -----------------------------------------------------------------------------
    def health(self, timeout: float = 2.0) -> str:
        """``SERVING``, ``NOT_SERVING``, ... or ``UNAVAILABLE`` when nothing answers."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=self.grpc_service), timeout=timeout
            )
        except grpc.RpcError as err:
            return from_rpc_error(err).code_name
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    # lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"
