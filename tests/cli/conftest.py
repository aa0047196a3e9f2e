"""A real Arbor stack for the CLI tests, and a runner that invokes ``arbor`` against it.

The services run in-process (``build_runner(settings)`` on ephemeral ports) on an event loop
of their own in a background thread: the CLI is synchronous and blocks the thread that calls
it, so the servers must not share that thread's loop. Split and registry always run (SQLite
files, one local artifact store shared by all, this run's NATS namespace); training and
inference join when their packages provide ``server.build_runner``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cli_support import TOKEN, Arbor, LoopThread, server_module, start_service

from arbor_core.config import load_settings

DATASETS = Path("/work/shared/datasets")
REQUIRED = ("split", "registry")
OPTIONAL = ("training", "inference")
# Variables that would point the CLI somewhere else than the test stack.
_SCRUB = [
    "ARBOR_DATABASE_URL",
    "ARBOR_SPLIT_DATABASE_URL",
    "ARBOR_TRAINING_DATABASE_URL",
    "ARBOR_REGISTRY_DATABASE_URL",
    "ARBOR_CLIENT_TLS",
    "ARBOR_CLIENT_TLS_CA",
    "ARBOR_METRICS_URL",
]


@dataclass
class Stack:
    """The running services and the environment that points the CLI at them."""

    home: Path
    artifact_uri: str
    nats_url: str
    namespace: str
    addresses: dict[str, str] = field(default_factory=dict)
    runners: dict[str, Any] = field(default_factory=dict)

    def has(self, service: str) -> bool:
        return service in self.runners

    @property
    def env(self) -> dict[str, str | None]:
        env: dict[str, str | None] = {name: None for name in _SCRUB}
        env.update(
            {
                "ARBOR_HOME": str(self.home),
                "ARBOR_ARTIFACT_URI": self.artifact_uri,
                "ARBOR_NATS_URL": self.nats_url,
                "ARBOR_NATS_NAMESPACE": self.namespace,
                "ARBOR_CLIENT_TOKEN": None,
                "ARBOR_CLIENT_TIMEOUT": "30",
                "COLUMNS": "200",
            }
        )
        for service in (*REQUIRED, *OPTIONAL):
            # Services that are not running get a closed port: calls fail fast, UNAVAILABLE.
            env[f"ARBOR_{service.upper()}_ADDRESS"] = self.addresses.get(service, "127.0.0.1:1")
        return env


@pytest.fixture(scope="session")
def cli_stack(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, nats_namespace: str
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("cli-home")
    artifacts = home / "artifacts"
    artifacts.mkdir()
    namespace = f"{nats_namespace}cli"
    stack = Stack(home, str(artifacts), nats_url, namespace)
    loop = LoopThread()
    try:
        for service in (*REQUIRED, *OPTIONAL):
            module = server_module(service)
            if module is None:
                if service in REQUIRED:
                    pytest.skip(f"arbor_{service}.server.build_runner is not available")
                continue
            settings = dataclasses.replace(
                load_settings(service),
                host="127.0.0.1",
                port=0,
                home=home,
                database_url=f"sqlite:///{home / (service + '.db')}",
                nats_url=nats_url,
                nats_namespace=namespace,
                artifact_uri=str(artifacts),
                allowed_data_roots=[str(home), str(DATASETS)],
                # No auth here: service-to-service calls would need ARBOR_CLIENT_TOKEN in this
                # process's environment for the whole session. Tokens: see `secured_split`.
                auth_tokens=[],
                grace_seconds=0.5,
                service_addresses={
                    **load_settings(service).service_addresses,
                    **stack.addresses,
                },
            )
            runner = loop.run(start_service(service, settings, module))
            stack.runners[service] = runner
            stack.addresses[service] = runner.address
        yield stack
    finally:
        for runner in reversed(list(stack.runners.values())):
            # Teardown is best effort; the loop dies with the session anyway.
            with contextlib.suppress(Exception):
                loop.run(runner.stop(0.5), timeout=30)
        loop.close()


@pytest.fixture
def arbor(cli_stack: Stack) -> Arbor:
    return Arbor(cli_stack.env)


@pytest.fixture(autouse=True)
def _no_ambient_arbor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own ARBOR_* settings must not leak into what the CLI sees."""
    for name in list(os.environ):
        if name.startswith("ARBOR_") and not name.startswith("ARBOR_TEST_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def secured_split(cli_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A split server of its own that requires the bearer token ``TOKEN``; its address."""
    module = server_module("split")
    assert module is not None
    home = tmp_path_factory.mktemp("secured")
    settings = dataclasses.replace(
        load_settings("split"),
        host="127.0.0.1",
        port=0,
        home=home,
        database_url=f"sqlite:///{home / 'split.db'}",
        nats_url=cli_stack.nats_url,
        nats_namespace=cli_stack.namespace,
        artifact_uri=str(home / "artifacts"),
        auth_tokens=[TOKEN],
        grace_seconds=0.2,
    )
    loop = LoopThread()
    runner = loop.run(start_service("split", settings, module))
    try:
        yield str(runner.address)
    finally:
        with contextlib.suppress(Exception):
            loop.run(runner.stop(0.2), timeout=30)
        loop.close()
