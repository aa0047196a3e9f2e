"""The study runner's bookkeeping on a real Optuna RDB storage (SQLite): budget, dead workers."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from arbor_ml.automl import TimeBudget, fold_time_share
from arbor_training.domain import PreprocessingSpec
from arbor_training.domain import TrialState as RecordedState
from arbor_training.study import (
    ATTR,
    StudyRunner,
    StudySettings,
    counts,
    has_categorical_features,
    rank,
    trial_record,
    tune_threshold,
)

X = {"x": FloatDistribution(0, 1)}


def _study_with(*trials: optuna.trial.FrozenTrial) -> optuna.Study:
    study = optuna.create_study()
    for trial in trials:
        study.add_trial(trial)
    return study


def test_budget_counts_finished_and_pending_trials_but_not_stale_or_discarded() -> None:
    study = _study_with(
        create_trial(params={"x": 0.1}, distributions=X, value=1.0, user_attrs={ATTR: {}}),
        create_trial(state=TrialState.FAIL, user_attrs={ATTR: {"error": "ValueError: x"}}),
        create_trial(state=TrialState.FAIL),  # stale: its worker died, it is retried
        create_trial(state=TrialState.PRUNED, user_attrs={ATTR: {"discarded": True}}),
        create_trial(state=TrialState.WAITING),  # the retry
        create_trial(state=TrialState.PRUNED, params={"x": 0.2}, distributions=X),
    )
    trials = study.get_trials(deepcopy=False)
    assert [counts(t) for t in trials] == [True, True, False, False, True, True]
    assert rank(trials, 5) == 3
    assert rank(trials, 6) == 4
    # Only trials that count are recorded; a FAIL keeps its error.
    records = [trial_record("e1", t) for t in trials]
    assert [r.state if r else None for r in records] == [
        RecordedState.COMPLETE,
        RecordedState.FAILED,
        None,
        None,
        None,
        RecordedState.PRUNED,
    ]
    assert records[1] is not None and records[1].error_message == "ValueError: x"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_dead_workers_trials_are_failed_and_retried(tmp_path: Path) -> None:
    runner = StudyRunner(
        repo=None,  # type: ignore[arg-type]
        database_url=f"sqlite:///{tmp_path / 'training.db'}",
        store=None,  # type: ignore[arg-type]
        worker_id="test",
        settings=StudySettings(heartbeat_interval=1, grace_period=1),
    )
    try:
        study = optuna.create_study(storage=runner.storage, study_name="e1")
        beating = study.ask()  # a worker that heartbeat once, then died mid-trial
        beating.suggest_float("x", 0, 1)
        runner.storage.record_heartbeat(beating._trial_id)
        study.ask()  # a worker that died before the objective started: no heartbeat at all
        live = study.ask()  # a healthy trial: parameters set, heartbeat fresh
        live.suggest_float("x", 0, 1)
        time.sleep(2.2)
        runner.storage.record_heartbeat(live._trial_id)
        pending = runner.fail_stale(study)
        # What is left to wait for or run, retries included (no read of the caller's own).
        assert [(t.number, t.state) for t in pending] == [
            (2, TrialState.RUNNING),
            (3, TrialState.WAITING),
            (4, TrialState.WAITING),
        ]
        states = [t.state for t in study.get_trials(deepcopy=False)]
        assert states == [
            TrialState.FAIL,
            TrialState.FAIL,
            TrialState.RUNNING,
            TrialState.WAITING,
            TrialState.WAITING,
        ]
        retried = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        assert {t.system_attrs["failed_trial"] for t in retried} == {0, 1}
        assert len(runner.fail_stale(study)) == 3  # nothing is retried twice
        assert len(study.get_trials(deepcopy=False)) == 5
    finally:
        runner.close()


@pytest.mark.parametrize(
    ("objective", "expected"),
    # accuracy ties at 0.3 and 0.4 (5 of 6 right): the tie goes to the one nearest 0.5.
    [("f1", 0.3), ("accuracy", 0.4), ("precision@recall=0.6", 0.4), ("recall@precision=1", 0.4)],
)
def test_tuned_threshold(objective: str, expected: float) -> None:
    y = [0, 0, 1, 1, 1, 0]
    p1 = [0.1, 0.35, 0.3, 0.4, 0.9, 0.2]
    result = tune_threshold(y, p1, objective)  # type: ignore[arg-type]
    assert result.threshold == pytest.approx(expected)


class _FakeTrial:
    def __init__(self, prune_at: int) -> None:
        self.prune_at = prune_at
        self.reported: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reported.append((value, step))

    def should_prune(self) -> bool:
        return self.reported[-1][1] >= self.prune_at


class _FakeWatcher:
    stop_requested = False


def test_reporter_reports_every_few_rounds_and_stops_on_prune_cancel_or_time() -> None:
    from arbor_training.study import _Reporter

    trial = _FakeTrial(prune_at=30)
    watcher = _FakeWatcher()
    reporter = _Reporter(trial, 10, watcher, None, prune=True)  # type: ignore[arg-type]
    stopped_at = next(step for step in range(40) if reporter(step, 0.5))
    assert stopped_at == 29 and reporter.reason == "pruned at iteration 30"
    assert [s for _, s in trial.reported] == [10, 20, 30]
    quiet = _Reporter(_FakeTrial(0), 10, watcher, None, prune=False)  # type: ignore[arg-type]
    assert not any(quiet(step, 0.5) for step in range(25))
    assert quiet.intermediate == [(10, 0.5), (20, 0.5)]  # kept, not reported
    watcher.stop_requested = True
    assert quiet(26, 0.5) and "cancelled" in quiet.reason
    spent = TimeBudget.start(1.0, elapsed_s=2.0)
    late = _Reporter(_FakeTrial(0), 10, _FakeWatcher(), spent, prune=False)  # type: ignore[arg-type]
    # The budget stops a trial where it stands; it is scored, not pruned.
    assert late(0, 0.5) and late.budget_stop and not late.reason


def test_reporter_resizes_a_trial_that_cannot_reach_its_rounds_in_time() -> None:
    from arbor_training.study import _Reporter

    budget = TimeBudget.start(60.0)  # trials must end 58 s from now (the final fit's 2 s)
    fake = [budget.started]
    reporter = _Reporter(_FakeTrial(0), 1000, _FakeWatcher(), budget, prune=False)  # type: ignore[arg-type]
    reporter.now = lambda: fake[0]
    reporter.start_fit(1000)  # CatBoost's rate is meant for 1,000 rounds
    fake[0] += 3.0  # 3 s of setup before the first round
    assert not reporter(0, 0.5)
    for step in range(1, 11):  # then 0.2 s a round: ~275 rounds by the deadline, not 700
        fake[0] += 0.2
        stopped = reporter(step, 0.5)
    assert stopped and reporter.resize == pytest.approx((58.0 - 5.0 - 3.0) / 0.2 * 0.9, abs=1)
    assert not reporter.budget_stop and not reporter.reason  # neither pruned nor out of time

    # A fit on course for its rounds (or not resizable) runs on.
    reporter.start_fit(1000)
    assert not any(reporter(step, 0.5) for step in range(30))  # the fake clock stands still
    assert reporter.resize is None
    reporter.start_fit(None)
    fake[0] += 1.0
    assert not any(reporter(step, 0.5) for step in range(30)) and reporter.resize is None


def test_a_cross_validation_plans_its_first_fold_for_that_folds_share_of_the_time() -> None:
    from arbor_training.study import _Reporter

    # Five folds in an AUTO study where no library has a complete trial yet: the first fold
    # may plan for a fifteenth of the time left, not for all of it.
    share = fold_time_share(5, libraries_to_compare=3)
    assert share == pytest.approx(1 / 15)
    assert fold_time_share(5) == pytest.approx(1 / 5)  # one library (or all compared)
    budget = TimeBudget.start(60.0)  # 58 s for trials
    fake = [budget.started]
    reporter = _Reporter(_FakeTrial(0), 1000, _FakeWatcher(), budget, prune=False)  # type: ignore[arg-type]
    reporter.now = lambda: fake[0]
    reporter.start_fit(1000, share)
    assert not reporter(0, 0.5)
    for step in range(1, 11):  # 0.01 s a round: 1,000 rounds in 10 s would fit in 58 s...
        fake[0] += 0.01
        stopped = reporter(step, 0.5)
    # ...but not in this fold's 3.9 s: resized to the rounds that do
    assert stopped and reporter.resize == pytest.approx((58.0 - 0.1) / 15 / 0.01 * 0.9, abs=2)
    reporter.start_fit(1000)  # the same pace with all the time left: runs on
    assert not any(reporter(step, 0.5) for step in range(30)) and reporter.resize is None


def test_categorical_features_are_read_from_the_splits_dtypes() -> None:
    def spec(columns: dict[str, str], **preprocessing: Any) -> Any:
        return SimpleNamespace(
            target_column="y", columns=columns, preprocessing=PreprocessingSpec(**preprocessing)
        )

    numeric = {"a": "Float64", "b": "Int64", "y": "String"}  # a text target is no feature
    assert not has_categorical_features(spec(numeric))
    assert has_categorical_features(spec({**numeric, "city": "String"}))
    assert has_categorical_features(spec({**numeric, "grade": "Enum(categories=['a', 'b'])"}))
    assert not has_categorical_features(
        spec({**numeric, "city": "String"}, exclude_columns=("city",))
    )
    assert not has_categorical_features(spec({**numeric, "city": "String"}, include_columns=("a",)))
