"""Helpers for training tests: the running stack, splits of the shared datasets, experiments."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from google.protobuf import duration_pb2

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as registry_pb
from arbor.registry.v1 import registry_service_pb2_grpc
from arbor.split.v1 import split_service_pb2 as split_pb
from arbor.split.v1 import split_service_pb2_grpc
from arbor.training.v1 import training_service_pb2 as pb
from arbor.training.v1 import training_service_pb2_grpc
from arbor_core.config import Settings

DATASETS = Path("/work/shared/datasets")
TARGETS = {
    "breast_cancer": "target",
    "credit_data": "Status",
    "hpc_data": "class",
    "ames": "Sale_Price",
}
FINAL = (
    pb.EXPERIMENT_STATE_SUCCEEDED,
    pb.EXPERIMENT_STATE_FAILED,
    pb.EXPERIMENT_STATE_CANCELLED,
)


@dataclass
class Stack:
    home: Path
    data_root: Path
    artifacts: Path
    settings: Settings
    split: split_service_pb2_grpc.SplitServiceStub
    registry: registry_service_pb2_grpc.RegistryServiceStub
    training: training_service_pb2_grpc.TrainingServiceStub
    training_runner: Any


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until the worker subscribed to the jobs queue."""
        deadline = time.monotonic() + timeout
        while "worker ready" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)


_splits: dict[tuple[str, int, bool], str] = {}


async def make_split(stack: Stack, dataset: str, rows: int = 300, *, test: bool = False) -> str:
    """A split of the first ``rows`` rows of a shared dataset (cached per session)."""
    key = (dataset, rows, test)
    if key in _splits:
        return _splits[key]
    frame = pl.read_parquet(DATASETS / f"{dataset}.parquet").head(rows)
    path = stack.data_root / f"{dataset}-{rows}.parquet"
    frame.write_parquet(path)
    target = TARGETS[dataset]
    classification = dataset != "ames"
    response = await stack.split.CreateSplit(
        split_pb.CreateSplitRequest(
            split=split_pb.Split(
                source=split_pb.DataSource(uri=str(path)),
                target_column=target,
                strategy=split_pb.SplitStrategy(
                    random=split_pb.RandomStrategy(stratify=classification)
                ),
                fractions=split_pb.Fractions(
                    train=0.6 if test else 0.7,
                    validation=0.2 if test else 0.3,
                    test=0.2 if test else 0.0,
                ),
                seed=7,
            ),
            split_id=f"{dataset.replace('_', '-')}-{rows}-{uuid.uuid4().hex[:6]}",
        ),
        timeout=60,
    )
    _splits[key] = response.split.name
    return response.split.name


def experiment(
    split: str,
    *,
    model_type: int = common_pb2.MODEL_TYPE_CATBOOST,
    n_trials: int = 4,
    max_iterations: int = 30,
    **study: Any,
) -> pb.Experiment:
    """A small, fast experiment: few trials, few boosting rounds, one thread."""
    timeout = study.pop("timeout_seconds", None)
    config = pb.StudyConfig(
        n_trials=n_trials,
        max_iterations=max_iterations,
        threads=1,
        early_stopping_rounds=10,
        seed=3,
        **study,
    )
    if timeout is not None:
        config.timeout.CopyFrom(duration_pb2.Duration(seconds=int(timeout)))
    return pb.Experiment(split=split, model_type=model_type, study=config)  # type: ignore[arg-type]


async def create(stack: Stack, message: pb.Experiment, **kwargs: Any) -> pb.Experiment:
    response = await stack.training.CreateExperiment(
        pb.CreateExperimentRequest(experiment=message, **kwargs), timeout=30
    )
    return response.experiment


async def get(stack: Stack, name: str) -> pb.Experiment:
    response = await stack.training.GetExperiment(pb.GetExperimentRequest(name=name), timeout=10)
    return response.experiment


async def wait_for(stack: Stack, name: str, predicate: Any, timeout: float = 60.0) -> pb.Experiment:
    deadline = time.monotonic() + timeout
    while True:
        current = await get(stack, name)
        if predicate(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {name}: {current}")
        await asyncio.sleep(0.2)


async def wait_final(stack: Stack, name: str, timeout: float = 90.0) -> pb.Experiment:
    return await wait_for(stack, name, lambda e: e.state in FINAL, timeout)


async def run_experiment(
    stack: Stack, message: pb.Experiment, timeout: float = 90.0
) -> tuple[pb.Experiment, pb.Experiment]:
    """(as created, as finished) of ``message``, which must end SUCCEEDED."""
    created = await create(stack, message)
    done = await wait_final(stack, created.name, timeout)
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, done.error_message
    return created, done


async def trials(stack: Stack, name: str, **kwargs: Any) -> list[pb.Trial]:
    response = await stack.training.ListTrials(
        pb.ListTrialsRequest(parent=name, page_size=1000, **kwargs), timeout=10
    )
    return list(response.trials)


async def registered_bundle(stack: Stack, model_version: str) -> Any:
    """The bundle a registered model version points at, loaded from the stack's store."""
    from arbor_core.artifacts import open_store
    from arbor_ml import load_bundle

    response = await stack.registry.GetModelVersion(
        registry_pb.GetModelVersionRequest(name=model_version), timeout=10
    )
    store = open_store(str(stack.artifacts))
    prefix = response.model_version.artifact_uri.split(str(stack.artifacts), 1)[1].strip("/")
    return load_bundle(store, prefix + "/")
