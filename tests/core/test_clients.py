"""Outbound channels: default deadlines, propagated metadata, and retries only on UNAVAILABLE
and only when safe — against a real server on an ephemeral port."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from server_testkit import (
    SERVICE,
    ProbeRequest,
    ProbeStub,
    RunningProbe,
    make_settings,
    serve_probe,
)

from arbor_core.clients import (
    NO_RETRY,
    RETRYABLE,
    RetryPolicy,
    channel,
    method_is_idempotent,
    request_has_request_id,
    service_channel,
)
from arbor_core.logging import request_id_scope
from arbor_core.status_details import error_details
from arbor_core.testing import free_port

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)
TOKEN = "client-token"


@pytest.fixture(scope="module")
async def probe() -> AsyncIterator[RunningProbe]:
    async with serve_probe(make_settings(auth_tokens=[TOKEN])) as running:
        yield running


@pytest.fixture
async def stub(probe: RunningProbe) -> AsyncIterator[ProbeStub]:
    ch = channel(probe.address, probe.runner.settings, retry=FAST, token=TOKEN, default_timeout=5)
    yield ProbeStub(ch)
    await ch.close()


async def test_default_deadline_is_applied(probe: RunningProbe, stub: ProbeStub) -> None:
    reply = await stub.Echo(ProbeRequest(action="deadline"))
    assert 0 < reply.time_remaining < 5.5
    reply = await stub.Echo(ProbeRequest(action="deadline"), timeout=1.5)  # the caller's wins
    assert 0 < reply.time_remaining < 2  # (the wire rounds deadlines up a little)
    # Baseline: a bare channel sends no deadline at all.
    bare = await probe.stub.Echo(
        ProbeRequest(action="deadline"), metadata=[("authorization", f"Bearer {TOKEN}")]
    )
    assert bare.time_remaining == -1.0


async def test_streams_get_their_own_default_deadline(probe: RunningProbe) -> None:
    ch = channel(probe.address, token=TOKEN, stream_timeout=120)
    try:
        [message] = [m async for m in ProbeStub(ch).Count(ProbeRequest(action="ok", count=1))]
        assert 5.5 < message.time_remaining < 121
    finally:
        await ch.close()


async def test_request_id_traceparent_and_token_are_propagated(stub: ProbeStub) -> None:
    tracer = TracerProvider().get_tracer("test")
    with request_id_scope("rid-upstream"), tracer.start_as_current_span("caller") as span:
        reply = await stub.Echo(ProbeRequest(action="headers"), metadata=[RETRYABLE])
    headers = dict(h.split("=", 1) for h in reply.headers)
    assert headers["x-request-id"] == "rid-upstream"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert headers["traceparent"].split("-")[1] == trace_id
    assert "x-arbor-retry" not in headers  # the per-call flag never leaves the process
    # Without a current request there is nothing to propagate; an explicit value is kept.
    reply = await stub.Echo(ProbeRequest(action="headers"), metadata=[("x-request-id", "mine")])
    assert dict(h.split("=", 1) for h in reply.headers)["x-request-id"] == "mine"


async def test_token_from_environment(probe: RunningProbe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_CLIENT_TOKEN", TOKEN)
    ch = channel(probe.address)
    try:
        assert (await ProbeStub(ch).Echo(ProbeRequest(action="ok"))).value == "ok"
    finally:
        await ch.close()
    monkeypatch.delenv("ARBOR_CLIENT_TOKEN")
    ch = channel(probe.address)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ProbeStub(ch).Echo(ProbeRequest(action="ok"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await ch.close()


async def test_retry_when_caller_marks_the_call_retryable(
    probe: RunningProbe, stub: ProbeStub
) -> None:
    reply = await stub.Echo(ProbeRequest(action="flaky:marked:2"), metadata=[RETRYABLE])
    assert reply.value == "attempts=3"


async def test_mutation_without_request_id_is_not_retried(
    probe: RunningProbe, stub: ProbeStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Echo(ProbeRequest(action="flaky:mutation:1"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(info.value)["reason"] == "PROBE_FLAKY"
    assert probe.servicer.flaky_calls["mutation"] == 1


async def test_mutation_with_request_id_is_retried(probe: RunningProbe, stub: ProbeStub) -> None:
    request = ProbeRequest(action="flaky:with-id:1", request_id="create-1")
    assert (await stub.Echo(request)).value == "attempts=2"


async def test_side_effect_free_method_is_retried(probe: RunningProbe, stub: ProbeStub) -> None:
    assert method_is_idempotent(f"/{SERVICE}/Get")
    assert not method_is_idempotent(f"/{SERVICE}/Echo")
    assert (await stub.Get(ProbeRequest(action="flaky:read:2"))).value == "attempts=3"
    with pytest.raises(grpc.aio.AioRpcError):  # ... unless the caller forbids it
        await stub.Get(ProbeRequest(action="flaky:read-no:1"), metadata=[NO_RETRY])
    assert probe.servicer.flaky_calls["read-no"] == 1


async def test_retries_stop_after_max_attempts(probe: RunningProbe, stub: ProbeStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Get(ProbeRequest(action="flaky:forever:100"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.servicer.flaky_calls["forever"] == FAST.max_attempts


async def test_other_codes_are_not_retried(probe: RunningProbe, stub: ProbeStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Get(ProbeRequest(action="notfound"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_retries_stay_within_the_deadline(probe: RunningProbe) -> None:
    patient = RetryPolicy(max_attempts=1000, initial_backoff_s=0.02, max_backoff_s=0.05)
    ch = channel(probe.address, token=TOKEN, retry=patient)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ProbeStub(ch).Get(ProbeRequest(action="flaky:deadline:100000"), timeout=0.4)
        assert time.monotonic() - started < 1.5
        assert info.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    finally:
        await ch.close()


async def test_unreachable_server_is_retried_then_unavailable() -> None:
    ch = channel(f"127.0.0.1:{free_port()}", retry=FAST, default_timeout=3)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ProbeStub(ch).Get(ProbeRequest(action="ok"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 3
    finally:
        await ch.close()


async def test_message_size_comes_from_settings(probe: RunningProbe) -> None:
    settings = dataclasses.replace(make_settings(), max_message_bytes=256)
    ch = channel(probe.address, settings, token=TOKEN)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ProbeStub(ch).Echo(ProbeRequest(action="echo:" + "y" * 1000))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await ch.close()


async def test_error_details_from_a_sync_call(probe: RunningProbe) -> None:
    def call() -> grpc.RpcError:
        with grpc.insecure_channel(probe.address) as sync_channel:
            echo = sync_channel.unary_unary(
                f"/{SERVICE}/Echo",
                request_serializer=ProbeRequest.SerializeToString,
                response_deserializer=lambda b: b,
            )
            try:
                echo(
                    ProbeRequest(action="notfound"),
                    metadata=[("authorization", f"Bearer {TOKEN}")],
                    timeout=5,
                )
            except grpc.RpcError as err:
                return err
        raise AssertionError("expected an error")

    err = await asyncio.to_thread(call)  # off the loop that serves the server
    details = error_details(err)
    assert details["code"] == "NOT_FOUND"
    assert details["resource_info"]["resource_name"] == "probes/42"
    assert details["request_id"]


def test_request_has_request_id() -> None:
    assert request_has_request_id(ProbeRequest(request_id="r"))
    assert not request_has_request_id(ProbeRequest())
    assert not request_has_request_id(b"raw bytes")


async def test_service_channel_uses_configured_address(probe: RunningProbe) -> None:
    settings = dataclasses.replace(make_settings(), service_addresses={"registry": probe.address})
    ch = service_channel("registry", settings, token=TOKEN)
    try:
        assert (await ProbeStub(ch).Echo(ProbeRequest(action="ok"))).value == "ok"
    finally:
        await ch.close()
