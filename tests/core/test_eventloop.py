"""The event loop services run on: uvloop by default, asyncio's own on request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from arbor_core import eventloop
from arbor_core.errors import InvalidArgument


async def _loop_name() -> str:
    await asyncio.sleep(0)
    return eventloop.loop_name(asyncio.get_running_loop())


def test_services_run_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.EVENT_LOOP_ENV, raising=False)
    assert eventloop.loop_factory() is uvloop.new_event_loop
    assert eventloop.run(_loop_name()) == "uvloop"


@pytest.mark.parametrize(("setting", "expected"), [("asyncio", "asyncio"), (" UVLOOP ", "uvloop")])
def test_the_environment_chooses_the_loop(
    monkeypatch: pytest.MonkeyPatch, setting: str, expected: str
) -> None:
    monkeypatch.setenv(eventloop.EVENT_LOOP_ENV, setting)
    assert eventloop.run(_loop_name()) == expected


def test_an_unknown_loop_is_refused_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(eventloop.EVENT_LOOP_ENV, "trio")
    with pytest.raises(InvalidArgument) as raised:
        eventloop.run(_loop_name())
    assert raised.value.reason == "EVENT_LOOP_INVALID"
    assert (
        "ARBOR_EVENT_LOOP" in raised.value.message
        and "auto, uvloop, asyncio" in raised.value.message
    )


def test_a_grpc_aio_server_answers_on_uvloop() -> None:
    """grpc.aio's completion queue drives a uvloop loop as it drives asyncio's."""
    import grpc

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request.upper()

    async def main() -> bytes:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(echo)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("t.Echo", {"Echo": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/t.Echo/Echo")
                answers = await asyncio.gather(*(call(b"abc%d" % i) for i in range(20)))
        finally:
            await server.stop(0)
        assert answers == [b"ABC%d" % i for i in range(20)]
        return answers[0]

    assert eventloop.run(main(), choice="uvloop") == b"ABC0"
