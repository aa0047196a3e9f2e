"""Services in this process whose telemetry goes to in-memory exporters, so a test can follow
one trace across them: registry + inference (+ split and training for the job/event traces).

Each service keeps providers of its own (its own ``service.name``), all feeding one
``InMemorySpanExporter``; ``use_telemetry`` makes the servers built here use them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from obs_support import TracedStack
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arbor_core.artifacts import LocalArtifactStore
from arbor_core.config import Settings, load_settings
from arbor_core.server import ServiceRunner
from arbor_core.telemetry import configure_telemetry, use_telemetry

SERVICES = ("split", "registry", "training", "inference")


def _settings(service: str, home: Path, nats_url: str, namespace: str, **extra: Any) -> Settings:
    return dataclasses.replace(
        load_settings(service),
        host="127.0.0.1",
        port=0,
        home=home,
        database_url=f"sqlite:///{home / (service + '.db')}",
        nats_url=nats_url,
        nats_namespace=namespace,
        artifact_uri=str(home / "artifacts"),
        allowed_data_roots=[str(home)],
        auth_tokens=[],
        grace_seconds=0.5,
        **extra,
    )


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture(scope="module")
async def traced_stack(
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
    nats_namespace: str,
    exporter: InMemorySpanExporter,
) -> AsyncIterator[TracedStack]:
    from arbor_inference.domain import ServingOptions
    from arbor_inference.server import build_runner as build_inference
    from arbor_registry.server import build_runner as build_registry
    from arbor_registry.server import migrate as migrate_registry
    from arbor_split.server import build_runner as build_split
    from arbor_split.server import migrate as migrate_split
    from arbor_training.server import build_runner as build_training
    from arbor_training.server import migrate as migrate_training

    home = tmp_path_factory.mktemp("traced")
    (home / "artifacts").mkdir()
    namespace = f"{nats_namespace}obs{uuid.uuid4().hex[:6]}"
    telemetry = {
        service: configure_telemetry(
            service,
            span_processors=[SimpleSpanProcessor(exporter)],
            metric_readers=[],
            install_global=False,
        )
        for service in SERVICES
    }
    for service, t in telemetry.items():
        use_telemetry(service, t)
    runners: dict[str, ServiceRunner] = {}
    addresses: dict[str, str] = {}
    try:
        for service in SERVICES:
            settings = _settings(
                service,
                home,
                nats_url,
                namespace,
                service_addresses={**load_settings(service).service_addresses, **addresses},
            )
            if service == "split":
                migrate_split(settings)
                runner = build_split(settings, relay_poll_interval=0.1)
            elif service == "registry":
                migrate_registry(settings)
                runner = build_registry(settings, relay_poll_interval=0.1)
            elif service == "training":
                migrate_training(settings)
                runner = build_training(settings, relay_poll_interval=0.1)
            else:
                options = dataclasses.replace(ServingOptions.from_env(), workers=1)
                runner = build_inference(settings, options=options)
            await runner.start()
            runners[service] = runner
            addresses[service] = runner.address
        stack = TracedStack(exporter, telemetry, runners, LocalArtifactStore(home / "artifacts"))
        yield stack
        for channel in stack.channels:
            await channel.close()
    finally:
        for runner in reversed(list(runners.values())):
            await runner.stop(0.5)
        for service in SERVICES:
            use_telemetry(service, None)
