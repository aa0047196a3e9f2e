"""Exit 0 when a gRPC server reports SERVING: the container health check.

Usage: ``python -m arbor_core.healthcheck [host:port] [service]``. Without an address it
probes every default port and succeeds if any answers SERVING (one image, any service).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from arbor_core.config import DEFAULT_PORTS


def is_serving(address: str, service: str = "", timeout: float = 2.0) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str]) -> int:
    service = argv[1] if len(argv) > 1 else ""
    addresses = [argv[0]] if argv else [f"127.0.0.1:{p}" for p in DEFAULT_PORTS.values()]
    return 0 if any(is_serving(address, service) for address in addresses) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
