"""A real training stack: split, registry and training API in-process on ephemeral ports.

Session-scoped: PostgreSQL (this run's database, one schema per service), NATS (this run's
namespace) and one local artifact store shared by the three services. Workers are started per
test, either in-process (``worker`` fixture: fast) or as real processes
(``spawn_worker``: what the fault tests kill), never both at once, since they share one
durable consumer on the jobs queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from training_support import Stack, WorkerProcess

from arbor.registry.v1 import registry_service_pb2_grpc
from arbor.split.v1 import split_service_pb2_grpc
from arbor.training.v1 import training_service_pb2_grpc
from arbor_core.config import load_settings
from arbor_training.study import StudySettings
from arbor_training.worker import Worker, WorkerConfig

#: Short timings so that redelivery and stale trials happen within seconds in tests.
TEST_ACK_WAIT = 4.0
TEST_HEARTBEAT = 1
TEST_GRACE = 3


def worker_config() -> WorkerConfig:
    return WorkerConfig(
        ack_wait=TEST_ACK_WAIT,
        fetch_timeout=0.5,
        retry_delay=0.5,
        study=StudySettings(
            heartbeat_interval=TEST_HEARTBEAT,
            grace_period=TEST_GRACE,
            control_interval=0.2,
            finalizer_lease=10.0,
        ),
    )


@pytest.fixture(scope="session")
async def stack(
    pg_url: str, nats_url: str, nats_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    from arbor_registry.server import build_runner as registry_runner
    from arbor_registry.server import migrate as registry_migrate
    from arbor_split.server import build_runner as split_runner
    from arbor_split.server import migrate as split_migrate
    from arbor_training.server import build_runner as training_runner
    from arbor_training.server import migrate as training_migrate

    home = tmp_path_factory.mktemp("training-stack")
    data_root = home / "data"
    data_root.mkdir()
    artifacts = home / "artifacts"

    def settings(service: str, **extra: object) -> object:
        return dataclasses.replace(
            load_settings(service),
            host="127.0.0.1",
            port=0,
            home=home,
            database_url=pg_url,
            nats_url=nats_url,
            nats_namespace=nats_namespace,
            artifact_uri=str(artifacts),
            allowed_data_roots=[str(data_root)],
            auth_tokens=[],
            grace_seconds=0.5,
            **extra,
        )

    runners = []
    channels: list[grpc.aio.Channel] = []
    try:
        split_settings = settings("split")
        await asyncio.to_thread(split_migrate, split_settings)
        split = split_runner(split_settings, relay_poll_interval=0.1)
        await split.start()
        runners.append(split)
        registry_settings = settings("registry")
        await asyncio.to_thread(registry_migrate, registry_settings)
        registry = registry_runner(registry_settings, relay_poll_interval=0.1)
        await registry.start()
        runners.append(registry)
        addresses = {
            **split_settings.service_addresses,  # type: ignore[attr-defined]
            "split": split.address,
            "registry": registry.address,
        }
        training_settings = settings("training", service_addresses=addresses)
        await asyncio.to_thread(training_migrate, training_settings)
        training = training_runner(training_settings, relay_poll_interval=0.1)
        await training.start()
        runners.append(training)
        addresses["training"] = training.address
        for _ in range(100):
            if all([await r.check_readiness() for r in runners]):
                break
            await asyncio.sleep(0.1)
        channels = [grpc.aio.insecure_channel(r.address) for r in runners]
        yield Stack(
            home=home,
            data_root=data_root,
            artifacts=artifacts,
            settings=dataclasses.replace(training_settings, service_addresses=addresses),
            split=split_service_pb2_grpc.SplitServiceStub(channels[0]),
            registry=registry_service_pb2_grpc.RegistryServiceStub(channels[1]),
            training=training_service_pb2_grpc.TrainingServiceStub(channels[2]),
            training_runner=training,
        )
    finally:
        for channel in channels:
            await channel.close()
        for runner in reversed(runners):
            await runner.stop(0.5)


@pytest.fixture
async def worker(stack: Stack) -> AsyncIterator[Worker]:
    """One worker in this process (its study runs in a thread), stopped after the test."""
    instance = Worker(stack.settings, worker_config())
    stop = asyncio.Event()
    task = asyncio.create_task(instance.run(stop))
    yield instance
    stop.set()
    await asyncio.wait_for(task, 60)


@pytest.fixture
def spawn_worker(stack: Stack, tmp_path: Path) -> Iterator[Callable[[str], WorkerProcess]]:
    """Start ``python -m arbor_training.worker`` processes; all are killed at teardown."""
    started: list[WorkerProcess] = []
    config = worker_config()

    def spawn(name: str) -> WorkerProcess:
        s = stack.settings
        env = dict(os.environ)
        env.update(
            {
                "ARBOR_HOME": str(stack.home),
                "ARBOR_TRAINING_DATABASE_URL": s.database_url,
                "ARBOR_NATS_URL": s.nats_url,
                "ARBOR_NATS_NAMESPACE": s.nats_namespace,
                "ARBOR_ARTIFACT_URI": s.artifact_uri,
                "ARBOR_REGISTRY_ADDRESS": s.service_addresses["registry"],
                "ARBOR_MIGRATE_ON_START": "0",
                "ARBOR_TRAINING_WORKER_METRICS_PORT": "0",
                "ARBOR_LOG_LEVEL": "INFO",
                "ARBOR_TRAINING_ACK_WAIT_SECONDS": str(config.ack_wait),
                "ARBOR_TRAINING_HEARTBEAT_SECONDS": str(config.study.heartbeat_interval),
                "ARBOR_TRAINING_GRACE_SECONDS": str(config.study.grace_period),
                "ARBOR_TRAINING_CONTROL_INTERVAL_SECONDS": str(config.study.control_interval),
                "ARBOR_TRAINING_FINALIZER_LEASE_SECONDS": str(config.study.finalizer_lease),
                "ARBOR_TRAINING_RETRY_DELAY_SECONDS": str(config.retry_delay),
            }
        )
        log_path = tmp_path / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "arbor_training.worker"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        handle = WorkerProcess(name, process, log_path)
        started.append(handle)
        return handle

    yield spawn
    for handle in started:
        if handle.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.process.pid, signal.SIGKILL)
            handle.process.wait(10)
