"""Helpers for the CLI tests (a top-level module, like the other areas' *_support.py)."""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from typer.testing import CliRunner, Result

from arbor_cli.main import app

T = TypeVar("T")
TOKEN = "cli-test-token"  # what `secured_split` requires


class LoopThread:
    """An asyncio loop running forever in a daemon thread; ``run(coro)`` waits for a result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cli-stack", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def server_module(service: str) -> Any | None:
    try:
        module = importlib.import_module(f"arbor_{service}.server")
    except ImportError:
        return None
    return module if hasattr(module, "build_runner") else None


async def start_service(service: str, settings: Any, module: Any) -> Any:
    migrate = getattr(module, "migrate", None)
    if migrate is not None:
        await asyncio.to_thread(migrate, settings)
    runner = module.build_runner(settings)
    if asyncio.iscoroutine(runner):
        runner = await runner
    await runner.start()
    deadline = time.monotonic() + 30
    while not await runner.check_readiness():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{service} did not become ready")
        await asyncio.sleep(0.1)
    return runner


@dataclass
class Arbor:
    """Invokes the ``arbor`` app in-process with the stack's environment."""

    env: dict[str, str | None]

    def __call__(
        self,
        *args: str,
        input: str | bytes | None = None,
        env: dict[str, str | None] | None = None,
    ) -> Result:
        runner = CliRunner()
        merged = {**self.env, **(env or {})}
        return runner.invoke(app, list(args), input=input, env=merged, catch_exceptions=False)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        """Invoke and assert exit 0, showing both streams when it is not."""
        result = self(*args, **kwargs)
        assert result.exit_code == 0, (
            f"arbor {' '.join(args)} -> {result.exit_code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return result


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    lines = [",".join(header), *(",".join(str(v) for v in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def json_out(text: str) -> Any:
    """Parse a command's --json stdout."""
    return json.loads(text)
