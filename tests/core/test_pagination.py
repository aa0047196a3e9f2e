"""Page tokens (AIP-158): opaque, signed, bound to the filter; page sizes clamped. Tested as
functions and through a real server, where a bad token must be INVALID_ARGUMENT on
``page_token``."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from server_testkit import ProbeRequest, RunningProbe, serve_probe

from arbor_core.errors import InvalidArgument
from arbor_core.pagination import (
    clamp_page_size,
    decode_offset,
    decode_page_token,
    encode_page_token,
    filter_fingerprint,
)
from arbor_core.status_details import error_details

FP = filter_fingerprint("state = SUCCEEDED", "create_time desc")


def _reason(excinfo: pytest.ExceptionInfo[InvalidArgument]) -> str:
    assert [v.field for v in excinfo.value.violations] == ["page_token"]
    return excinfo.value.reason


def _tamper(token: str, **changes: object) -> str:
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw.update(changes)
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("position", [0, 150, "cursor-abc", ["2024-01-01T00:00:00Z", "id-9"]])
def test_round_trip(position: object) -> None:
    token = encode_page_token(position, FP)
    assert token and "=" not in token and "+" not in token and "/" not in token
    assert decode_page_token(token, FP) == position


def test_empty_token_is_first_page() -> None:
    assert decode_page_token("", FP) is None
    assert decode_offset("", FP) == 0


def test_tampered_token_is_rejected() -> None:
    token = encode_page_token(100, FP)
    with pytest.raises(InvalidArgument) as info:
        decode_page_token(_tamper(token, p=0), FP)
    assert _reason(info) == "INVALID_PAGE_TOKEN"
    for garbage in ("not-a-token", "e30", token[:-3], "%%%", "x" * 5000):
        with pytest.raises(InvalidArgument) as info:
            decode_page_token(garbage, FP)
        assert _reason(info) == "INVALID_PAGE_TOKEN"


def test_token_with_another_filter_is_rejected() -> None:
    token = encode_page_token(100, FP)
    with pytest.raises(InvalidArgument) as info:
        decode_page_token(token, filter_fingerprint("state = FAILED", "create_time desc"))
    assert _reason(info) == "PAGE_TOKEN_FILTER_MISMATCH"


def test_token_signed_with_another_secret_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_PAGE_TOKEN_SECRET", "one")
    token = encode_page_token(10, FP)
    assert decode_page_token(token, FP) == 10
    monkeypatch.setenv("ARBOR_PAGE_TOKEN_SECRET", "two")
    with pytest.raises(InvalidArgument):
        decode_page_token(token, FP)


def test_offset_token_must_hold_an_offset() -> None:
    with pytest.raises(InvalidArgument):
        decode_offset(encode_page_token("cursor", FP), FP)
    with pytest.raises(InvalidArgument):
        decode_offset(encode_page_token(-5, FP), FP)


def test_clamp_page_size() -> None:
    assert clamp_page_size(0) == 50
    assert clamp_page_size(10) == 10
    assert clamp_page_size(5000) == 1000
    assert clamp_page_size(0, default=20, maximum=10) == 10
    with pytest.raises(InvalidArgument) as info:
        clamp_page_size(-1)
    assert [v.field for v in info.value.violations] == ["page_size"]


def test_fingerprint_is_stable_and_order_sensitive() -> None:
    assert filter_fingerprint("a", {"x": 1, "y": 2}) == filter_fingerprint("a", {"y": 2, "x": 1})
    assert filter_fingerprint("a", "b") != filter_fingerprint("b", "a")


@pytest.fixture(scope="module")
async def probe() -> AsyncIterator[RunningProbe]:
    async with serve_probe() as running:
        yield running


@pytest.mark.integration
async def test_paging_through_a_server(probe: RunningProbe) -> None:
    items, token, pages = [], "", 0
    while True:
        reply = await probe.stub.Echo(
            ProbeRequest(action="list:red", count=7, page_size=3, page_token=token)
        )
        items += list(reply.items)
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert items == [f"red-{i}" for i in range(7)] and pages == 3
    capped = await probe.stub.Echo(ProbeRequest(action="list:red", count=20, page_size=999))
    assert len(capped.items) == 5


@pytest.mark.integration
async def test_bad_tokens_through_a_server(probe: RunningProbe) -> None:
    first = await probe.stub.Echo(ProbeRequest(action="list:red", count=7, page_size=3))
    token = first.next_page_token
    cases = {
        "PAGE_TOKEN_FILTER_MISMATCH": ProbeRequest(action="list:blue", count=7, page_token=token),
        "INVALID_PAGE_TOKEN": ProbeRequest(
            action="list:red", count=7, page_token=_tamper(token, p=6)
        ),
    }
    for reason, request in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await probe.stub.Echo(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = error_details(info.value)
        assert details["reason"] == reason
        assert [v["field"] for v in details["field_violations"]] == ["page_token"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await probe.stub.Echo(ProbeRequest(action="list:red", count=7, page_size=-1))
    assert error_details(info.value)["field_violations"][0]["field"] == "page_size"
