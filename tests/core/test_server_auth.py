"""Bearer-token auth through a real server: every RPC kind is covered, health and reflection
stay open, and the rejection carries ErrorInfo like any other error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_testkit import ProbeRequest, RunningProbe, grpcurl, make_settings, serve_probe

from arbor_core.server import AuthInterceptor
from arbor_core.status_details import error_details

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"
GOOD = [("authorization", f"Bearer {TOKEN}")]


@pytest.fixture(scope="module")
async def probe() -> AsyncIterator[RunningProbe]:
    async with serve_probe(make_settings(auth_tokens=["other-token", TOKEN])) as running:
        yield running


async def _requests(*actions: str) -> AsyncIterator[object]:
    for action in actions:
        yield ProbeRequest(action=action)


async def _all_kinds(probe: RunningProbe, metadata: list[tuple[str, str]]) -> list[object]:
    """Call each RPC kind; return the results or the AioRpcErrors."""
    results: list[object] = []
    calls = [
        lambda: probe.stub.Echo(ProbeRequest(action="ok"), metadata=metadata),
        lambda: _drain(probe.stub.Count(ProbeRequest(action="ok", count=2), metadata=metadata)),
        lambda: probe.stub.Collect(_requests("a"), metadata=metadata),
        lambda: _drain(probe.stub.Chat(_requests("a"), metadata=metadata)),
    ]
    for call in calls:
        try:
            results.append(await call())
        except grpc.aio.AioRpcError as err:
            results.append(err)
    return results


async def _drain(call: grpc.aio.UnaryStreamCall | grpc.aio.StreamStreamCall) -> list[object]:
    return [message async for message in call]


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("authorization", "Bearer wrong-token")],
        [("authorization", TOKEN)],  # no scheme
        [("authorization", f"Basic {TOKEN}")],
        [("authorization", "Bearer ")],
    ],
    ids=["missing", "wrong", "no-scheme", "basic", "empty"],
)
async def test_bad_credentials_are_unauthenticated_for_every_kind(
    probe: RunningProbe, metadata: list[tuple[str, str]]
) -> None:
    for result in await _all_kinds(probe, metadata):
        assert isinstance(result, grpc.aio.AioRpcError)
        assert result.code() == grpc.StatusCode.UNAUTHENTICATED
        details = error_details(result)
        assert details["reason"] in {"MISSING_CREDENTIALS", "INVALID_CREDENTIALS"}
        assert details["domain"] == "arbor.dev"
        assert TOKEN not in result.details()


async def test_valid_token_passes_for_every_kind(probe: RunningProbe) -> None:
    results = await _all_kinds(probe, GOOD)
    assert not [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    lowercase_scheme = [("authorization", f"bearer {TOKEN}")]
    assert (await probe.stub.Echo(ProbeRequest(action="ok"), metadata=lowercase_scheme)).value


async def test_health_and_reflection_stay_open(probe: RunningProbe) -> None:
    reply = await health_pb2_grpc.HealthStub(probe.channel).Check(
        health_pb2.HealthCheckRequest(service="")
    )
    assert reply.status in (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    code, out, err = await grpcurl("-plaintext", probe.address, "list")
    assert code == 0, err
    assert "arbor.testing.v1.ProbeService" in out.split()


def test_authenticate_reasons() -> None:
    auth = AuthInterceptor(["a", "b"])
    assert auth.enabled
    assert auth.authenticate("Bearer b") is None
    assert auth.authenticate(None) == "MISSING_CREDENTIALS"
    assert auth.authenticate("Bearer c") == "INVALID_CREDENTIALS"
    assert not AuthInterceptor([]).enabled
    assert not AuthInterceptor([]).applies_to("/arbor.split.v1.SplitService/GetSplit")
    assert not auth.applies_to("/grpc.health.v1.Health/Check")
    assert not auth.applies_to("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert auth.applies_to("/arbor.split.v1.SplitService/GetSplit")
