"""Error mapping and request ids, through a real server on an ephemeral port, for all four
RPC kinds: status code, ErrorInfo reason, BadRequest / ResourceInfo / PreconditionFailure
details, RequestInfo, and nothing internal on the wire."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from server_testkit import ProbeRequest, RunningProbe, capture_json_logs, serve_probe

from arbor_core.server import new_request_id
from arbor_core.status_details import error_details

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def probe() -> AsyncIterator[RunningProbe]:
    async with serve_probe() as running:
        yield running


async def _unary_error(probe: RunningProbe, action: str, **kw: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe.stub.Echo(ProbeRequest(action=action), **kw)
    return info.value


def _trailer(err: grpc.aio.AioRpcError, key: str) -> str | None:
    return dict(err.trailing_metadata() or ()).get(key)


async def test_invalid_argument_carries_reason_and_every_field_violation(
    probe: RunningProbe,
) -> None:
    err = await _unary_error(probe, "invalid")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(err)
    assert details["reason"] == "INVALID_ARGUMENT"
    assert details["domain"] == "arbor.dev"
    assert details["field_violations"] == [
        {"field": "name", "description": "must not be empty"},
        {"field": "fractions.train", "description": "must be in (0, 1)"},
    ]
    assert details["request_id"] == _trailer(err, "x-request-id")


async def test_not_found_carries_resource_info(probe: RunningProbe) -> None:
    err = await _unary_error(probe, "notfound")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    details = error_details(err)
    assert details["reason"] == "PROBE_NOT_FOUND"
    assert details["metadata"] == {"resource_name": "probes/42"}
    assert details["resource_info"]["resource_type"] == "probe"
    assert details["resource_info"]["resource_name"] == "probes/42"


async def test_failed_precondition_carries_violations(probe: RunningProbe) -> None:
    err = await _unary_error(probe, "precondition")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error_details(err)
    assert details["reason"] == "PROBE_RUNNING"
    assert details["precondition_violations"] == [
        {"type": "STATE", "subject": "probes/42", "description": "must be stopped"}
    ]


async def test_unexpected_exception_is_internal_and_generic_on_the_wire(
    probe: RunningProbe,
) -> None:
    with capture_json_logs() as logs:
        err = await _unary_error(probe, "boom")
    assert err.code() == grpc.StatusCode.INTERNAL
    wire = err.details() + repr(err.trailing_metadata())
    for leak in ("RuntimeError", "secret", "Traceback", "server_testkit"):
        assert leak not in wire
    details = error_details(err)
    assert details["reason"] == "INTERNAL"
    request_id = _trailer(err, "x-request-id")
    assert request_id and request_id in err.details()
    # ... while the log has the whole story, tagged with the request id.
    [line] = [r for r in logs.where(level="ERROR") if "exception" in r]
    assert line["request_id"] == request_id
    assert "RuntimeError: secret internal detail" in line["exception"]


async def test_handler_abort_passes_through_unchanged(probe: RunningProbe) -> None:
    err = await _unary_error(probe, "abort")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "handler aborted"
    assert _trailer(err, "x-request-id")


async def test_server_streaming_error_mid_stream(probe: RunningProbe) -> None:
    received = []
    call = probe.stub.Count(ProbeRequest(action="fail-at:2", count=5))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for message in call:
            received.append(message.value)
    assert received == ["0", "1"]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(info.value)
    assert details["reason"] == "COUNT_FAILED"
    assert details["field_violations"] == [{"field": "count", "description": "count went wrong"}]


async def test_server_streaming_unexpected_error_mid_stream(probe: RunningProbe) -> None:
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for message in probe.stub.Count(ProbeRequest(action="boom-at:1", count=3)):
            received.append(message.value)
    assert received == ["0"]
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details()


async def test_server_streaming_success(probe: RunningProbe) -> None:
    values = [m.value async for m in probe.stub.Count(ProbeRequest(action="ok", count=3))]
    assert values == ["0", "1", "2"]


async def _requests(*actions: str) -> AsyncIterator[object]:
    for action in actions:
        yield ProbeRequest(action=action)


async def test_client_streaming_error(probe: RunningProbe) -> None:
    assert (await probe.stub.Collect(_requests("a", "b"))).value == "a,b"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe.stub.Collect(_requests("a", "invalid", "c"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(info.value)["field_violations"][0]["field"] == "items[1]"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe.stub.Collect(_requests("boom"))
    assert info.value.code() == grpc.StatusCode.INTERNAL


async def test_bidi_streaming_error_after_responses(probe: RunningProbe) -> None:
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for message in probe.stub.Chat(_requests("a", "b", "notfound", "c")):
            received.append(message.value)
    assert received == ["a", "b"]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    details = error_details(info.value)
    assert details["resource_info"]["resource_name"] == "probes/7"
    assert details["request_id"]


async def test_request_id_is_echoed_in_trailing_metadata(probe: RunningProbe) -> None:
    request_id = f"test-{uuid.uuid4().hex}"
    call = probe.stub.Echo(ProbeRequest(action="ok"), metadata=[("x-request-id", request_id)])
    await call
    assert dict(await call.trailing_metadata())["x-request-id"] == request_id
    err = await _unary_error(probe, "notfound", metadata=[("x-request-id", request_id)])
    assert _trailer(err, "x-request-id") == request_id
    assert error_details(err)["request_id"] == request_id


async def test_request_id_generated_when_missing_or_unusable(probe: RunningProbe) -> None:
    for metadata in ([], [("x-request-id", "x" * 500)], [("x-request-id", "bad id; with spaces")]):
        call = probe.stub.Echo(ProbeRequest(action="ok"), metadata=metadata)
        await call
        generated = dict(await call.trailing_metadata())["x-request-id"]
        assert uuid.UUID(generated).version == 4


def test_generated_request_ids_are_canonical_random_uuids() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


async def test_request_ids_do_not_leak_between_concurrent_calls(probe: RunningProbe) -> None:
    ids = [f"concurrent-{i}" for i in range(20)]
    replies = await asyncio.gather(
        *(
            probe.stub.Echo(ProbeRequest(action="whoami"), metadata=[("x-request-id", rid)])
            for rid in ids
        )
    )
    assert [r.value for r in replies] == ids


async def test_request_id_survives_handler_replacing_trailers(probe: RunningProbe) -> None:
    call = probe.stub.Echo(
        ProbeRequest(action="replace-trailer"), metadata=[("x-request-id", "keep-me")]
    )
    await call
    trailers = dict(await call.trailing_metadata())
    assert trailers["x-request-id"] == "keep-me"
    assert trailers["x-extra"] == "1"


async def test_request_id_on_streaming_calls(probe: RunningProbe) -> None:
    call = probe.stub.Count(
        ProbeRequest(action="ok", count=1), metadata=[("x-request-id", "rid-s")]
    )
    _ = [m async for m in call]
    assert dict(await call.trailing_metadata())["x-request-id"] == "rid-s"


async def test_access_log_line_per_call(probe: RunningProbe) -> None:
    with capture_json_logs() as logs:
        await probe.stub.Echo(ProbeRequest(action="ok"), metadata=[("x-request-id", "rid-log")])
        await _unary_error(probe, "notfound", metadata=[("x-request-id", "rid-log2")])
    ok = logs.where(logger="arbor.access", request_id="rid-log")
    failed = logs.where(logger="arbor.access", request_id="rid-log2")
    assert len(ok) == 1 and len(failed) == 1
    assert ok[0]["method"] == "/arbor.testing.v1.ProbeService/Echo"
    assert ok[0]["code"] == "OK"
    assert failed[0]["code"] == "NOT_FOUND"
    assert isinstance(ok[0]["duration_ms"], float)
    assert ok[0]["peer"].startswith("ipv4:127.0.0.1:")
    assert ok[0]["trace_id"] and len(ok[0]["trace_id"]) == 32
