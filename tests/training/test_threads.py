"""Threads per trial when several workers share a host: the cap from the environment, and the
native thread pools (OpenMP, BLAS) held to it for the length of a trial."""

from __future__ import annotations

import os

import pytest

from arbor_training.study import thread_limit, thread_pools
from arbor_training.worker import WorkerConfig, trial_threads


def test_threads_per_trial_come_from_workers_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARBOR_TRAINING_TRIAL_THREADS", raising=False)
    monkeypatch.delenv("ARBOR_TRAINING_WORKERS_PER_HOST", raising=False)
    assert trial_threads() == 0  # a worker alone: no cap
    monkeypatch.setenv("ARBOR_TRAINING_WORKERS_PER_HOST", "2")
    assert trial_threads() == max(1, (os.cpu_count() or 1) // 2)
    monkeypatch.setenv("ARBOR_TRAINING_WORKERS_PER_HOST", "1000")
    assert trial_threads() == 1
    monkeypatch.setenv("ARBOR_TRAINING_TRIAL_THREADS", "3")  # explicit wins
    assert trial_threads() == 3
    assert WorkerConfig.from_env().study.trial_threads == 3


def test_a_trial_holds_the_native_pools_to_its_threads() -> None:
    import lightgbm  # noqa: F401  (loads OpenMP)

    pools = thread_pools(1)
    assert pools is not None
    before = {p.internal_api: p.num_threads for p in pools.lib_controllers}
    with thread_limit(pools, 1):
        inside = {p.internal_api: p.num_threads for p in pools.lib_controllers}
    assert inside and set(inside.values()) == {1}
    assert {p.internal_api: p.num_threads for p in pools.lib_controllers} == before
    assert thread_pools(0) is None
