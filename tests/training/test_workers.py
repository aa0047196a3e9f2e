"""Worker processes: a SIGKILLed worker's study is resumed by another; two workers share one."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import pytest
from training_support import (
    Stack,
    WorkerProcess,
    create,
    experiment,
    make_split,
    registered_bundle,
    trials,
    wait_final,
    wait_for,
)

from arbor.common.v1 import common_pb2
from arbor.training.v1 import training_service_pb2 as pb
from arbor_training.domain import parse_experiment_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def slow_trials(split: str, n_trials: int, **study: object) -> pb.Experiment:
    """CatBoost trials of a few tenths of a second even on an idle machine (400 rounds, no
    early stop): time to kill a worker in the middle of one."""
    message = experiment(
        split,
        model_type=common_pb2.MODEL_TYPE_CATBOOST,
        n_trials=n_trials,
        max_iterations=400,
        pruner=pb.PRUNER_NONE,
        **study,
    )
    message.study.early_stopping_rounds = 400
    message.study.search_space["depth"].int_range.low = 5
    message.study.search_space["depth"].int_range.high = 6
    return message


def recorded_by_worker(stack: Stack, name: str) -> dict[int, str]:
    ident = parse_experiment_name(name)
    return {t.number: t.worker for t in stack.training_runner.experiments.all_trials(ident)}


@pytest.mark.fault
async def test_killed_worker_study_resumes_without_losing_or_repeating_trials(
    stack: Stack, spawn_worker: Callable[[str], WorkerProcess]
) -> None:
    split = await make_split(stack, "breast_cancer", 300)
    n_trials = 5
    created = await create(stack, slow_trials(split, n_trials))
    first = spawn_worker("worker-a")
    # Kill it while it is inside a trial, after it finished two.
    try:
        running = await wait_for(stack, created.name, lambda e: e.trials_completed >= 2, timeout=60)
    except AssertionError as err:
        raise AssertionError(f"{err}\n--- a:\n{first.log()[-6000:]}") from None
    assert running.state == pb.EXPERIMENT_STATE_RUNNING
    await asyncio.sleep(0.5)  # into the next trial's fit
    before = {t.number: (t.value, dict(t.params)) for t in await trials(stack, created.name)}
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    killed_at = time.monotonic()

    second = spawn_worker("worker-b")
    try:
        done = await wait_final(stack, created.name, timeout=90)
    except AssertionError as err:
        raise AssertionError(
            f"{err}\n--- a:\n{first.log()[-4000:]}\n--- b:\n{second.log()[-6000:]}"
        ) from None
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, (done.error_message, second.log())
    assert time.monotonic() - killed_at < 90
    if os.environ.get("ARBOR_TEST_DEBUG"):
        print(f"resumed in {time.monotonic() - killed_at:.1f}s\n", second.log()[-8000:])

    after = await trials(stack, created.name)
    numbers = [t.number for t in after]
    assert len(after) == n_trials == done.trials_completed
    assert len(set(numbers)) == len(numbers)
    # Every trial finished before the kill is still there, unchanged.
    for number, (value, params) in before.items():
        match = next(t for t in after if t.number == number)
        assert (match.value, dict(match.params)) == (value, params)
    # No finished trial ran twice: every recorded parameter set is distinct.
    signatures = [tuple(sorted(dict(t.params).items())) for t in after]
    assert len(set(signatures)) == len(signatures)
    workers = recorded_by_worker(stack, created.name)
    assert {w.split(":")[1] for w in workers.values()} == {
        str(first.process.pid),
        str(second.process.pid),
    }


async def test_two_workers_share_one_study(
    stack: Stack, spawn_worker: Callable[[str], WorkerProcess]
) -> None:
    split = await make_split(stack, "breast_cancer", 300)
    a = spawn_worker("worker-a")
    b = spawn_worker("worker-b")
    await asyncio.gather(a.ready(), b.ready())  # both subscribed before the jobs arrive
    created = await create(stack, slow_trials(split, 6, parallelism=2, ensemble_size=3))
    assert created.study.parallelism == 2
    done = await wait_final(stack, created.name, timeout=120)
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, (done.error_message, a.log(), b.log())
    recorded = await trials(stack, created.name)
    assert len(recorded) == 6 == done.trials_completed
    workers = recorded_by_worker(stack, created.name)
    pids = {w.split(":")[1] for w in workers.values()}
    assert pids == {str(a.process.pid), str(b.process.pid)}, workers
    # The finalizing worker chose its blend from every trial, the other worker's too (their
    # validation outputs went through the artifact store), then removed those files.
    bundle = await registered_bundle(stack, done.model_version)
    assert bundle.metadata["extra"]["blend_candidates"] == 6
    leftovers = [p for p in stack.artifacts.rglob("*") if "validation-outputs" in str(p)]
    assert [p for p in leftovers if p.is_file()] == []
