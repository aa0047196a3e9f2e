"""End to end on real PostgreSQL, NATS, split and registry: experiments run to SUCCEEDED."""

from __future__ import annotations

import asyncio

import pytest
from training_support import (
    Stack,
    create,
    experiment,
    make_split,
    run_experiment,
    trials,
    wait_final,
)

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as registry_pb
from arbor.training.v1 import training_service_pb2 as pb
from arbor_training.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize(
    ("model_type", "dataset"),
    [
        (common_pb2.MODEL_TYPE_CATBOOST, "breast_cancer"),
        (common_pb2.MODEL_TYPE_XGBOOST, "credit_data"),
        (common_pb2.MODEL_TYPE_LIGHTGBM, "ames"),
    ],
    ids=["catboost", "xgboost", "lightgbm"],
)
async def test_experiment_succeeds_and_registers(
    stack: Stack, worker: Worker, model_type: int, dataset: str
) -> None:
    split = await make_split(stack, dataset, 300, test=True)
    created = await create(stack, experiment(split, model_type=model_type, n_trials=3))
    assert created.state == pb.EXPERIMENT_STATE_QUEUED

    watched: list[pb.WatchExperimentResponse] = []

    async def watch() -> None:
        stream = stack.training.WatchExperiment(
            pb.WatchExperimentRequest(name=created.name), timeout=120
        )
        async for update in stream:
            watched.append(update)

    wakeups = stack.training_runner.hub.wakeups
    watcher = asyncio.create_task(watch())
    done = await wait_final(stack, created.name, timeout=120)
    await asyncio.wait_for(watcher, 30)
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, done.error_message
    assert done.trials_completed == 3
    assert done.model_version.startswith("models/")
    assert done.best_trial.state == pb.TRIAL_STATE_COMPLETE
    assert done.metrics

    recorded = await trials(stack, created.name)
    assert [t.number for t in recorded] == [0, 1, 2]
    assert all(t.state == pb.TRIAL_STATE_COMPLETE for t in recorded)

    # Watch saw every trial once and ended on the final state.
    seen = [u.trial.number for u in watched if u.HasField("trial")]
    assert sorted(seen) == [0, 1, 2]
    assert watched[-1].experiment.state == pb.EXPERIMENT_STATE_SUCCEEDED
    assert stack.training_runner.hub.wakeups > wakeups  # JetStream events drove the stream

    version = await stack.registry.GetModelVersion(
        registry_pb.GetModelVersionRequest(name=done.model_version), timeout=10
    )
    mv = version.model_version
    assert mv.experiment == created.name
    assert mv.best_trial_number == done.best_trial.number
    assert mv.model_type == model_type
    assert mv.split_content_hash
    assert "manifest.json" in mv.artifact_checksums


async def test_auto_searches_every_library(stack: Stack, worker: Worker) -> None:
    split = await make_split(stack, "breast_cancer", 300, test=True)
    message = experiment(split, model_type=common_pb2.MODEL_TYPE_AUTO, n_trials=4)
    message.study.search_space["catboost.depth"].int_range.low = 4
    message.study.search_space["catboost.depth"].int_range.high = 5
    created, done = await run_experiment(stack, message, timeout=120)
    recorded = await trials(stack, created.name)
    # CatBoost's, LightGBM's and XGBoost's defaults, then the LightGBM portfolio configuration
    # (automl; breast_cancer has no categorical features for CatBoost's fast-encoding variant)
    assert [t.model_type for t in recorded[:4]] == [
        common_pb2.MODEL_TYPE_CATBOOST,
        common_pb2.MODEL_TYPE_LIGHTGBM,
        common_pb2.MODEL_TYPE_XGBOOST,
        common_pb2.MODEL_TYPE_LIGHTGBM,
    ]
    assert "test_roc_auc" in done.metrics and "roc_auc" in done.metrics
    version = await stack.registry.GetModelVersion(
        registry_pb.GetModelVersionRequest(name=done.model_version), timeout=10
    )
    registered = version.model_version
    if registered.model_type == common_pb2.MODEL_TYPE_ENSEMBLE:  # a blend that beat it
        members = [int(m["trial"]) for m in registered.params["members"]]
        assert done.best_trial.number in members and len(members) >= 2
    else:
        assert registered.model_type == done.best_trial.model_type
