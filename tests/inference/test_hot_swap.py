"""Model events: promotions and alias moves swap versions with no failed or mixed request;
archive and delete evict; a fresh server is correct on its first call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import pytest
from inference_support import TEST_OPTIONS, Stack, json_rows, make_frame, private_inference

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2 as pb
from arbor.registry.v1 import registry_service_pb2 as reg_pb
from arbor_core.status_details import error_details

pytestmark = pytest.mark.integration

FRAME = make_frame(4, 8, "binary").drop("y")


def stage_selector(name: str) -> common_pb2.ModelSelector:
    return common_pb2.ModelSelector(stage=common_pb2.StageSelector(model=name))


def alias_selector(name: str, alias: str) -> common_pb2.ModelSelector:
    return common_pb2.ModelSelector(alias=common_pb2.AliasSelector(model=name, alias=alias))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def two_versions(stack: Stack, name: str) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """v1 (CatBoost) and v2 (LightGBM) of one model, and what each predicts for FRAME."""
    v1 = await stack.register(name, stack.bundles["binary_catboost"])
    v2 = await stack.register(name, stack.bundles["binary_lightgbm"])
    expected = {
        v1.name: stack.bundles["binary_catboost"].predict_raw(FRAME),
        v2.name: stack.bundles["binary_lightgbm"].predict_raw(FRAME),
    }
    assert not np.allclose(expected[v1.name], expected[v2.name])
    return v1, v2, expected


async def swap_under_load(
    stack: Stack,
    selector: common_pb2.ModelSelector,
    old: str,
    new: str,
    expected: dict[str, np.ndarray],
    move: Callable[[], Awaitable[Any]],
    clients: int = 3,
) -> list[str]:
    """Clients predict in a loop while ``move`` runs; returns every served version, in order."""
    request = pb.PredictRequest(model=selector, input=json_rows(FRAME), include_probabilities=True)
    first = await stack.inference.Predict(request)  # loads the old version
    assert first.served_model.model_version == old
    seen: list[list[str]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    done = asyncio.Event()

    async def client(i: int) -> None:
        while not done.is_set():
            try:
                response = await stack.inference.Predict(request)
            except grpc.aio.AioRpcError as exc:
                errors.append(exc)
                continue
            version = response.served_model.model_version
            proba = np.array(response.probabilities).reshape(-1, 2)
            np.testing.assert_allclose(proba, expected[version], atol=1e-12)  # not mixed
            seen[i].append(version)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(0.3)
    await move()

    async def switched() -> bool:
        return all(s and s[-1] == new for s in seen)

    try:
        await eventually(switched)
    finally:
        done.set()
        await asyncio.gather(*tasks)
    assert not errors, errors
    for versions in seen:
        assert versions[0] == old
        cut = versions.index(new)
        assert set(versions[:cut]) == {old} and set(versions[cut:]) == {new}
    return [v for s in seen for v in s]


async def test_promotion_swaps_versions_without_failed_or_mixed_requests(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    name = unique("swap")
    v1, v2, expected = await two_versions(stack, name)
    await stack.promote(v1.name)
    served = await swap_under_load(
        stack, stage_selector(name), v1.name, v2.name, expected, lambda: stack.promote(v2.name)
    )
    assert served.count(v2.name) > 0
    after = await stack.inference.Predict(
        pb.PredictRequest(model=stage_selector(name), input=json_rows(FRAME))
    )
    assert after.served_model.stage == common_pb2.MODEL_STAGE_PRODUCTION
    # v1 was archived by the promotion: evicted from the model cache
    models = stack.inference_runner.inference.models  # type: ignore[attr-defined]

    async def evicted() -> bool:
        return not any(key.startswith(v1.name + "@") for key in models)

    await eventually(evicted)


async def test_alias_move_swaps_versions(stack: Stack, unique: Callable[[str], str]) -> None:
    name = unique("alias")
    v1, v2, expected = await two_versions(stack, name)

    async def set_alias(version: int) -> Any:
        return await stack.registry.SetAlias(
            reg_pb.SetAliasRequest(model=f"models/{name}", alias="champion", version=version)
        )

    await set_alias(v1.version)
    await swap_under_load(
        stack,
        alias_selector(name, "champion"),
        v1.name,
        v2.name,
        expected,
        lambda: set_alias(v2.version),
        clients=2,
    )


async def test_deleted_version_is_not_found(stack: Stack, unique: Callable[[str], str]) -> None:
    name = unique("gone")
    version = await stack.register(name, stack.bundles["binary_lightgbm"])
    await stack.promote(version.name)
    await stack.registry.SetAlias(
        reg_pb.SetAliasRequest(model=f"models/{name}", alias="champion", version=version.version)
    )
    selectors = [
        common_pb2.ModelSelector(model_version=version.name),
        common_pb2.ModelSelector(experiment=version.experiment),
        stage_selector(name),
        alias_selector(name, "champion"),
    ]
    for selector in selectors:  # cached and loaded
        response = await stack.inference.Predict(
            pb.PredictRequest(model=selector, input=json_rows(FRAME))
        )
        assert response.served_model.model_version == version.name
    await stack.registry.DeleteModel(reg_pb.DeleteModelRequest(name=version.name, force=True))

    async def all_not_found() -> bool:
        for selector in selectors:
            try:
                await stack.inference.Predict(
                    pb.PredictRequest(model=selector, input=json_rows(FRAME))
                )
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND, error_details(exc)
                continue
            return False
        return True

    await eventually(all_not_found)
    models = stack.inference_runner.inference.models  # type: ignore[attr-defined]
    assert not any(key.startswith(version.name + "@") for key in models)


async def test_a_fresh_server_is_correct_on_its_first_call(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    """No warm-up: caches start empty and the first call resolves and loads."""
    name = unique("fresh")
    v1, v2, expected = await two_versions(stack, name)
    await stack.promote(v1.name)
    await stack.promote(v2.name)
    async with private_inference(stack.settings, TEST_OPTIONS) as (_, stub):
        response = await stub.Predict(
            pb.PredictRequest(
                model=stage_selector(name), input=json_rows(FRAME), include_probabilities=True
            )
        )
        assert response.served_model.model_version == v2.name
        np.testing.assert_allclose(
            np.array(response.probabilities).reshape(-1, 2), expected[v2.name], atol=1e-12
        )
