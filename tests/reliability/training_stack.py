"""A training stack for the fault tests: split, registry and training API in this process, on a
database and NATS namespace of the test's own, plus training workers (in this process, or real
``arbor_training.worker`` processes) that a test can stall, crash or cut off.

Built on tests/training's helpers (``training_support``: the ``Stack`` the stubs live in,
``experiment``/``create``/``wait_for``); unlike tests/training's session stack, each test gets a
fresh one, so a test may stop the registry or kill NATS without disturbing any other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa

_TRAINING_TESTS = Path(__file__).resolve().parents[1] / "training"
if str(_TRAINING_TESTS) not in sys.path:
    sys.path.append(str(_TRAINING_TESTS))

from reliability_support import PYTHON, REPO, write_table  # noqa: E402
from training_support import Stack, WorkerProcess  # noqa: E402

from arbor.registry.v1 import registry_service_pb2_grpc  # noqa: E402
from arbor.split.v1 import split_service_pb2 as split_pb  # noqa: E402
from arbor.split.v1 import split_service_pb2_grpc  # noqa: E402
from arbor.training.v1 import training_service_pb2_grpc  # noqa: E402
from arbor_core.config import Settings, load_settings  # noqa: E402
from arbor_core.db import make_engine  # noqa: E402
from arbor_training.study import StudySettings  # noqa: E402
from arbor_training.worker import Worker, WorkerConfig  # noqa: E402

#: Worker timings (seconds) short enough for redelivery and lease expiry to happen in a test.
ACK_WAIT = 3.0
HEARTBEAT = 1
GRACE = 3
CONTROL = 0.2
LEASE = 10.0
RETRY_DELAY = 0.3


def worker_config(**overrides: Any) -> WorkerConfig:
    """WorkerConfig with the short timings; ``finalizer_lease=`` goes to the study settings."""
    lease = overrides.pop("finalizer_lease", LEASE)
    base: dict[str, Any] = {
        "ack_wait": ACK_WAIT,
        "fetch_timeout": 0.5,
        "retry_delay": RETRY_DELAY,
        "study": StudySettings(
            heartbeat_interval=HEARTBEAT,
            grace_period=GRACE,
            control_interval=CONTROL,
            finalizer_lease=lease,
        ),
    }
    return WorkerConfig(**{**base, **overrides})


@dataclass
class InProcessWorker:
    worker: Worker
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


@dataclass
class TrainingStack:
    """The running stack; ``stack`` is tests/training's ``Stack`` (stubs, training runner)."""

    stack: Stack
    database_url: str
    namespace: str
    registry_settings: Settings
    runners: dict[str, Any]
    channels: list[grpc.aio.Channel]
    logs: Path
    processes: list[WorkerProcess] = field(default_factory=list)
    workers: list[InProcessWorker] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    @property
    def registry_address(self) -> str:
        return str(self.settings.service_addresses["registry"])

    # ---------------------------------------------------------------- registry outage

    async def stop_registry(self) -> None:
        """Stop the registry server (its port closes: callers get UNAVAILABLE)."""
        await self.runners.pop("registry").stop(0)

    async def start_registry(self) -> None:
        """Start the registry again on the same port and database."""
        from arbor_registry.server import build_runner

        port = int(self.registry_address.rsplit(":", 1)[1])
        runner = build_runner(dataclasses.replace(self.registry_settings, port=port))
        await runner.start()
        self.runners["registry"] = runner

    # ---------------------------------------------------------------- data and workers

    async def split(self, rows: int = 200) -> str:
        """A stratified random split of a small binary table; returns its name."""
        source = write_table(self.stack.data_root / f"t{rows}-{uuid.uuid4().hex[:6]}.parquet", rows)
        response = await self.stack.split.CreateSplit(
            split_pb.CreateSplitRequest(
                split=split_pb.Split(
                    source=split_pb.DataSource(uri=str(source)),
                    target_column="label",
                    strategy=split_pb.SplitStrategy(random=split_pb.RandomStrategy(stratify=True)),
                    fractions=split_pb.Fractions(train=0.7, validation=0.3),
                    seed=7,
                ),
            ),
            timeout=60,
        )
        return str(response.split.name)

    def start_worker(self, config: WorkerConfig | None = None) -> InProcessWorker:
        """A worker in this process (fast to start); stopped by ``close``."""
        worker = Worker(self.settings, config or worker_config())
        stop = asyncio.Event()
        handle = InProcessWorker(worker, stop, asyncio.create_task(worker.run(stop)))
        self.workers.append(handle)
        return handle

    def worker_env(self, **overrides: str) -> dict[str, str]:
        """The environment of a worker process with the short timings (overridable)."""
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "ARBOR_HOME": str(self.stack.home),
                "ARBOR_TRAINING_DATABASE_URL": s.database_url,
                "ARBOR_NATS_URL": s.nats_url,
                "ARBOR_NATS_NAMESPACE": s.nats_namespace,
                "ARBOR_ARTIFACT_URI": s.artifact_uri,
                "ARBOR_REGISTRY_ADDRESS": self.registry_address,
                "ARBOR_MIGRATE_ON_START": "0",
                "ARBOR_TRAINING_WORKER_METRICS_PORT": "0",
                "ARBOR_LOG_LEVEL": "INFO",
                "ARBOR_TRAINING_ACK_WAIT_SECONDS": str(ACK_WAIT),
                "ARBOR_TRAINING_HEARTBEAT_SECONDS": str(HEARTBEAT),
                "ARBOR_TRAINING_GRACE_SECONDS": str(GRACE),
                "ARBOR_TRAINING_CONTROL_INTERVAL_SECONDS": str(CONTROL),
                "ARBOR_TRAINING_FINALIZER_LEASE_SECONDS": str(LEASE),
                "ARBOR_TRAINING_RETRY_DELAY_SECONDS": str(RETRY_DELAY),
            }
        )
        env.update(overrides)
        return env

    def spawn_worker(
        self, name: str, *, command: list[str] | None = None, **env: str
    ) -> WorkerProcess:
        """``python -m arbor_training.worker`` (or ``command``) as a process of its own."""
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command or [PYTHON, "-m", "arbor_training.worker"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.worker_env(**env),
                cwd=REPO,
                start_new_session=True,
            )
        handle = WorkerProcess(name, process, log_path)
        self.processes.append(handle)
        return handle

    # ---------------------------------------------------------------- database

    def query(self, statement: str, **params: Any) -> list[Any]:
        """Rows of ``statement`` in the training schema."""
        engine = make_engine(self.database_url, "training")
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(statement), params).all())
        finally:
            engine.dispose()

    def execute(self, statement: str, **params: Any) -> int:
        """Run a write in the training schema, committed; returns the row count."""
        engine = make_engine(self.database_url, "training")
        try:
            with engine.begin() as conn:
                return int(conn.execute(sa.text(statement), params).rowcount)
        finally:
            engine.dispose()

    async def close(self) -> None:
        for handle in self.processes:
            if handle.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(handle.process.pid, signal.SIGKILL)
                handle.process.wait(10)
        for worker in self.workers:
            with contextlib.suppress(Exception):
                await worker.close()
        for channel in self.channels:
            await channel.close()
        for runner in reversed(list(self.runners.values())):
            await runner.stop(0.5)


async def start_training_stack(
    database_url: str, nats_url: str, namespace: str, home: Path
) -> TrainingStack:
    """Split, registry and training API on ``database_url`` (one schema each) and ``nats_url``."""
    from arbor_registry.server import build_runner as registry_runner
    from arbor_registry.server import migrate as registry_migrate
    from arbor_split.server import build_runner as split_runner
    from arbor_split.server import migrate as split_migrate
    from arbor_training.server import build_runner as training_runner
    from arbor_training.server import migrate as training_migrate

    data_root = home / "data"
    data_root.mkdir(parents=True, exist_ok=True)
    artifacts = home / "artifacts"
    logs = home / "logs"
    logs.mkdir(exist_ok=True)

    def settings(service: str, **extra: Any) -> Settings:
        return dataclasses.replace(
            load_settings(service),
            host="127.0.0.1",
            port=0,
            home=home,
            database_url=database_url,
            nats_url=nats_url,
            nats_namespace=namespace,
            artifact_uri=str(artifacts),
            allowed_data_roots=[str(data_root)],
            auth_tokens=[],
            grace_seconds=0.5,
            **extra,
        )

    runners: dict[str, Any] = {}
    try:
        split_settings = settings("split")
        await asyncio.to_thread(split_migrate, split_settings)
        runners["split"] = split_runner(split_settings, relay_poll_interval=0.1)
        await runners["split"].start()
        registry_settings = settings("registry")
        await asyncio.to_thread(registry_migrate, registry_settings)
        runners["registry"] = registry_runner(registry_settings, relay_poll_interval=0.1)
        await runners["registry"].start()
        addresses = {
            **split_settings.service_addresses,
            "split": runners["split"].address,
            "registry": runners["registry"].address,
        }
        training_settings = settings("training", service_addresses=addresses)
        # The training migration creates Optuna's tables too (0003): workers started together
        # on this database have nothing left to create.
        await asyncio.to_thread(training_migrate, training_settings)
        runners["training"] = training_runner(training_settings, relay_poll_interval=0.1)
        await runners["training"].start()
        addresses["training"] = runners["training"].address
        for _ in range(100):
            if all([await r.check_readiness() for r in runners.values()]):
                break
            await asyncio.sleep(0.1)
    except BaseException:
        for runner in reversed(list(runners.values())):
            await runner.stop(0)
        raise
    channels = [grpc.aio.insecure_channel(runners[s].address) for s in runners]
    stack = Stack(
        home=home,
        data_root=data_root,
        artifacts=artifacts,
        settings=dataclasses.replace(training_settings, service_addresses=addresses),
        split=split_service_pb2_grpc.SplitServiceStub(channels[0]),
        registry=registry_service_pb2_grpc.RegistryServiceStub(channels[1]),
        training=training_service_pb2_grpc.TrainingServiceStub(channels[2]),
        training_runner=runners["training"],
    )
    return TrainingStack(
        stack=stack,
        database_url=database_url,
        namespace=namespace,
        registry_settings=registry_settings,
        runners=runners,
        channels=channels,
        logs=logs,
    )
