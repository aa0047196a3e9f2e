"""The real stack for inference tests: a registry (SQLite, this run's NATS namespace), a local
artifact store both share, tiny trained bundles, and the inference server on an ephemeral port.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from inference_support import Stack, service_settings, start_inference, train_bundle

from arbor.inference.v1 import inference_service_pb2_grpc as inf_grpc
from arbor.registry.v1 import registry_service_pb2_grpc as reg_grpc
from arbor_core.artifacts import LocalArtifactStore
from arbor_ml import ModelBundle
from arbor_ml.ensemble import blend_bundles
from arbor_registry.server import build_runner as build_registry
from arbor_registry.server import migrate


@pytest.fixture(scope="session")
def bundles() -> dict[str, ModelBundle]:
    """Tiny models: each library, each task; binary labels are strings, multiclass ints."""
    return {
        "binary_catboost": train_bundle("catboost", "binary", seed=0),
        "binary_lightgbm": train_bundle("lightgbm", "binary", seed=1),
        "multiclass_xgboost": train_bundle("xgboost", "multiclass", seed=2),
        "regression_lightgbm": train_bundle("lightgbm", "regression", seed=3),
        # CatBoost (category strings) and XGBoost (codes) on the same data, blended
        "multiclass_ensemble": blend_bundles(
            [
                train_bundle("catboost", "multiclass", seed=4),
                train_bundle("xgboost", "multiclass", seed=4),
            ],
            [0.6, 0.4],
        ),
    }


@pytest.fixture(scope="session")
async def stack(
    bundles: dict[str, ModelBundle],
    nats_url: str,
    nats_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    home = tmp_path_factory.mktemp("inference-stack")
    store = LocalArtifactStore(home / "artifacts")
    common = {"nats_url": nats_url, "nats_namespace": nats_namespace}
    registry_settings = service_settings(
        "registry",
        home,
        database_url=f"sqlite:///{home / 'registry.db'}",
        artifact_uri=str(store.root),
        **common,
    )
    migrate(registry_settings)
    registry_runner = build_registry(registry_settings, relay_poll_interval=0.05)
    await registry_runner.start()
    addresses = dict(registry_settings.service_addresses, registry=registry_runner.address)
    inference_settings = service_settings(
        "inference",
        home,
        artifact_uri=str(store.root),
        service_addresses=addresses,
        **common,
    )
    inference_runner, inference_channel = await start_inference(inference_settings)
    registry_channel = grpc.aio.insecure_channel(registry_runner.address)
    yield Stack(
        registry=reg_grpc.RegistryServiceStub(registry_channel),
        inference=inf_grpc.InferenceServiceStub(inference_channel),
        registry_runner=registry_runner,
        inference_runner=inference_runner,
        store=store,
        settings=inference_settings,
        bundles=bundles,
        channels=[registry_channel, inference_channel],
    )
    for channel in (registry_channel, inference_channel):
        await channel.close()
    await inference_runner.stop(0.5)
    await registry_runner.stop(0.5)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """A fresh model name per test (the registry is shared by the session)."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"
