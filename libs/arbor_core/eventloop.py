"""The event loop a service process runs on: uvloop by default, asyncio's own on request.

Why: every gRPC call wakes the loop a few times (the completion queue's socket, the handler's
task, the answer), and asyncio's pure-Python loop costs tens of microseconds of that per call.
uvloop (libuv, in Cython) serves the same grpc.aio server ~40 µs faster per unary call on a
2-core VM (bare echo 467 -> 424 µs, the echo through Arbor's bootstrap 513 -> 473 µs, p50
over six interleaved rounds; ``bench/bench_floor.py`` prints both loops side by side).

``ARBOR_EVENT_LOOP``: ``auto`` (default: uvloop when it imports, else asyncio), ``uvloop``
(required: an error when it is missing) or ``asyncio``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from arbor_core.errors import InvalidArgument

EVENT_LOOP_ENV = "ARBOR_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the configured loop (None: asyncio's default)."""
    raw = choice if choice is not None else os.environ.get(EVENT_LOOP_ENV, "")
    name = raw.strip().lower() or "auto"
    if name not in CHOICES:
        raise InvalidArgument(
            f"{EVENT_LOOP_ENV} must be one of {', '.join(CHOICES)}, not {name!r}",
            field=EVENT_LOOP_ENV,
            reason="EVENT_LOOP_INVALID",
        )
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if name == "uvloop":
            raise InvalidArgument(
                f"{EVENT_LOOP_ENV}=uvloop, but uvloop is not installed",
                field=EVENT_LOOP_ENV,
                reason="EVENT_LOOP_UNAVAILABLE",
            ) from exc
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, choice: str | None = None) -> T:
    """``asyncio.run(main)`` on the configured loop."""
    try:
        factory = loop_factory(choice)
    except BaseException:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: what a benchmark reports it ran on."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
