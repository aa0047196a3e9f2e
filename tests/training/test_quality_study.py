"""Model quality through the real stack: defaults first, the leaderboard, AUTO's one winner,
cross-validation, the tuned threshold and a time budget that includes the final fit."""

from __future__ import annotations

import uuid

import pytest
from training_support import (
    Stack,
    create,
    experiment,
    make_split,
    registered_bundle,
    run_experiment,
    trials,
    wait_final,
)

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as registry_pb
from arbor.split.v1 import split_service_pb2 as split_pb
from arbor.training.v1 import training_service_pb2 as pb
from arbor_ml import FitSettings, get_trainer
from arbor_ml.automl import ENSEMBLE_TOLERANCE, warm_start
from arbor_ml.types import ModelType
from arbor_training.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_defaults_first_leaderboard_and_summary(stack: Stack, worker: Worker) -> None:
    split = await make_split(stack, "breast_cancer", 300, test=True)
    created = await create(stack, experiment(split, n_trials=4))
    done = await wait_final(stack, created.name, timeout=120)
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, done.error_message

    by_number = await trials(stack, created.name)
    first = by_number[0]
    # Trial 0 is CatBoost's own defaults (its learning rate for this many rows and rounds).
    got = await stack.split.GetSplit(split_pb.GetSplitRequest(name=split), timeout=10)
    rows = next(p.row_count for p in got.split.parts if p.part == "train")
    defaults = warm_start(
        {ModelType.CATBOOST: get_trainer("catboost", "binary")},
        train_rows=rows,
        settings=FitSettings(iterations=30),
        auto=False,
    )[0]
    assert dict(first.params) == pytest.approx(defaults)
    # The study can only end at least as good as its defaults.
    complete = [t for t in by_number if t.state == pb.TRIAL_STATE_COMPLETE]
    assert done.best_trial.value >= first.value
    assert done.best_trial.value == max(t.value for t in complete)

    # The leaderboard: best first, with what each trial cost to fit and to serve.
    board = await trials(stack, created.name, order_by="value")
    values = [t.value for t in board if t.state == pb.TRIAL_STATE_COMPLETE]
    assert values == sorted(values, reverse=True)
    assert board[0].number == done.best_trial.number
    for trial in complete:
        assert trial.model_type == common_pb2.MODEL_TYPE_CATBOOST
        assert trial.fit_seconds > 0
        assert trial.predict_ms_per_1k_rows > 0
        assert trial.duration.ToNanoseconds() > 0

    summary = done.summary
    assert summary.trials_complete + summary.trials_pruned + summary.trials_failed == 4
    assert summary.best_trial_number == done.best_trial.number
    assert summary.best_value == pytest.approx(done.best_trial.value)
    assert summary.best_model_type == common_pb2.MODEL_TYPE_CATBOOST
    assert summary.final_fit in ("all", "train", "trial") and summary.final_iterations > 0
    total = summary.total_time.ToNanoseconds()
    assert 0 < summary.trials_time.ToNanoseconds() <= total
    assert "predict_ms_per_1k_rows" in done.metrics  # what the registry's gate reads

    # The final model averages the best trial with the near-best ones of its library (then
    # seeds of the best): never a trial clearly worse on validation.
    bundle = await registered_bundle(stack, done.model_version)
    extra = bundle.metadata["extra"]  # type: ignore[attr-defined]
    members = extra["ensemble_trials"]
    assert members[0] == done.best_trial.number
    best = done.best_trial.value
    assert all(by_number[n].value >= best - abs(best) * ENSEMBLE_TOLERANCE for n in members)
    if summary.final_fit == "all":
        assert extra["averaged_models"] >= len(members)


async def test_auto_registers_one_model_of_the_winning_library(
    stack: Stack, worker: Worker
) -> None:
    split = await make_split(stack, "credit_data", 300, test=True)
    message = experiment(split, model_type=common_pb2.MODEL_TYPE_AUTO, n_trials=5, ensemble_size=1)
    message.model_name = f"auto-{uuid.uuid4().hex[:8]}"
    _, done = await run_experiment(stack, message, timeout=150)
    winner = done.best_trial.model_type
    assert done.summary.best_model_type == winner
    response = await stack.registry.GetModel(
        registry_pb.GetModelRequest(name=done.model_version.rsplit("/versions/", 1)[0]),
        timeout=10,
    )
    assert len(response.versions) == 1  # one registered model for the whole study
    assert response.versions[0].model_type == winner
    bundle = await registered_bundle(stack, done.model_version)
    name = common_pb2.ModelType.Name(winner).removeprefix("MODEL_TYPE_").lower()
    assert bundle.metadata["model_type"] == name  # type: ignore[attr-defined]


async def _auto_study(
    stack: Stack, name: str, final_fit: str = ""
) -> tuple[str, pb.Experiment, pb.Experiment]:
    """(split, created, done) of a small AUTO study on credit_data that blends trials."""
    split = await make_split(stack, "credit_data", 600, test=True)
    message = experiment(split, model_type=common_pb2.MODEL_TYPE_AUTO, n_trials=6)
    message.model_name = f"{name}-{uuid.uuid4().hex[:8]}"
    message.study.final_fit = final_fit
    created, done = await run_experiment(stack, message, timeout=150)
    return split, created, done


async def test_auto_registers_a_blend_of_trials_that_beats_the_best_one(
    stack: Stack, worker: Worker
) -> None:
    _, created, done = await _auto_study(stack, "blend")
    assert created.study.ensemble_size == 3  # AUTO's default

    bundle = await registered_bundle(stack, done.model_version)
    blend = bundle.metadata["extra"]["blend"]  # type: ignore[attr-defined]
    # chosen on the trials' validation predictions, and only because it beats the best trial
    assert blend["validation_value"] > blend["best_single_value"]
    assert blend["best_single_value"] == pytest.approx(done.best_trial.value)
    weights = {int(k): w for k, w in blend["weights"].items()}
    assert 2 <= len(weights) <= 3 and sum(weights.values()) == pytest.approx(1.0)
    members = bundle.model.members  # type: ignore[attr-defined]
    assert [m.trial for m in members] == list(weights)
    assert bundle.metadata["extra"]["ensemble_trials"] == list(weights)  # type: ignore[attr-defined]
    # the registered validation metric is the blend's; the study's winner stays a library
    assert done.metrics["roc_auc"] == pytest.approx(blend["validation_value"])
    assert "test_roc_auc" in done.metrics
    assert done.summary.best_model_type == done.best_trial.model_type
    version = await stack.registry.GetModelVersion(
        registry_pb.GetModelVersionRequest(name=done.model_version), timeout=10
    )
    assert version.model_version.model_type == common_pb2.MODEL_TYPE_ENSEMBLE
    assert [m["trial"] for m in version.model_version.params["members"]] == list(weights)


async def test_without_time_to_refit_the_trials_own_models_are_blended(
    stack: Stack, worker: Worker
) -> None:
    # final_fit "trial" stands for a study with no time left to refit anything: it still
    # registers a blend, of the models its trials trained (on the train part), not one trial's.
    split, _, done = await _auto_study(stack, "trial-blend", final_fit="trial")
    assert done.summary.final_fit == "trial"

    bundle = await registered_bundle(stack, done.model_version)
    blend = bundle.metadata["extra"]["blend"]  # type: ignore[attr-defined]
    assert blend["validation_value"] > blend["best_single_value"]
    weights = {int(k): w for k, w in blend["weights"].items()}
    assert 2 <= len(weights) <= 3 and done.best_trial.number in weights
    assert [m.trial for m in bundle.model.members] == list(weights)  # type: ignore[attr-defined]
    got = await stack.split.GetSplit(split_pb.GetSplitRequest(name=split), timeout=10)
    train_rows = next(p.row_count for p in got.split.parts if p.part == "train")
    assert bundle.metadata["training_rows"] == train_rows  # type: ignore[attr-defined]
    assert done.summary.final_iterations > 0  # the members' rounds
    assert done.metrics["roc_auc"] == pytest.approx(blend["validation_value"])
    version = await stack.registry.GetModelVersion(
        registry_pb.GetModelVersionRequest(name=done.model_version), timeout=10
    )
    assert version.model_version.model_type == common_pb2.MODEL_TYPE_ENSEMBLE


async def test_cross_validation_reports_every_fold(stack: Stack, worker: Worker) -> None:
    split = await make_split(stack, "breast_cancer", 300, test=True)
    created = await create(
        stack, experiment(split, model_type=common_pb2.MODEL_TYPE_LIGHTGBM, n_trials=3, cv_folds=3)
    )
    done = await wait_final(stack, created.name, timeout=120)
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, done.error_message
    assert done.study.cv_folds == 3 and done.summary.cv_folds == 3
    for trial in await trials(stack, created.name, state_filter=pb.TRIAL_STATE_COMPLETE):
        assert len(trial.fold_values) == 3
        assert trial.value == pytest.approx(sum(trial.fold_values) / 3)
    # The final model was refit on every cross-validation row (train + validation).
    assert done.summary.final_fit == "all"


async def test_threshold_is_tuned_on_validation_and_stored(stack: Stack, worker: Worker) -> None:
    split = await make_split(stack, "credit_data", 300, test=True)
    message = experiment(split, model_type=common_pb2.MODEL_TYPE_LIGHTGBM, n_trials=2)
    message.metric = "f1"
    message.postprocessing.threshold_objective = "f1"
    _, done = await run_experiment(stack, message, timeout=120)
    bundle = await registered_bundle(stack, done.model_version)
    tuning = bundle.metadata["extra"]["threshold_tuning"]  # type: ignore[attr-defined]
    assert tuning["objective"] == "f1"
    assert tuning["value"] > tuning["value_at_0.5"]  # better F1 on validation than at 0.5
    threshold = bundle.postprocessor.threshold  # type: ignore[attr-defined]
    assert threshold == pytest.approx(tuning["threshold"]) and threshold != 0.5
    assert done.metrics["f1"] == pytest.approx(tuning["value"])


async def test_a_cross_validation_cut_by_the_budget_never_outranks_complete_ones(
    stack: Stack, worker: Worker
) -> None:
    # Quick trials of five folds and only time to stop them: the trial running at the
    # deadline is cut, most often before its last fold. The mean of its first folds is not
    # comparable with the five-fold means, so it must not be a complete trial (unless it is
    # the only one, and the study needs its model). The deadline can also fall between two
    # trials (it moves as the final fit's reserve does): then the study runs again, so that
    # a cut is seen.
    split = await make_split(stack, "credit_data", 1500, test=True)
    cut_seen = False
    for _ in range(4):
        message = experiment(
            split,
            model_type=common_pb2.MODEL_TYPE_LIGHTGBM,
            n_trials=0,
            max_iterations=400,
            cv_folds=5,
            timeout_seconds=6,
        )
        _, done = await run_experiment(stack, message, timeout=90)
        board = await stack.training.ListTrials(
            pb.ListTrialsRequest(parent=done.name, page_size=1000), timeout=10
        )
        complete = [t for t in board.trials if t.state == pb.TRIAL_STATE_COMPLETE]
        assert len(complete) >= 2
        assert all(len(t.fold_values) == 5 for t in complete), [
            (t.number, list(t.fold_values)) for t in complete
        ]
        cut = [t for t in board.trials if "a partial cross-validation" in t.error_message]
        assert all(t.state == pb.TRIAL_STATE_PRUNED for t in cut)
        assert len(done.best_trial.fold_values) == 5
        if done.summary.trials_stopped_by_budget:
            cut_seen = True
            break
    assert cut_seen


async def test_time_budget_includes_the_final_fit(stack: Stack, worker: Worker) -> None:
    split = await make_split(stack, "credit_data", 2000, test=True)
    # Trials longer than the budget even on a fast machine (100,000 rounds on 1,600 rows, no
    # early stopping) and no trial limit: only time stops it. LightGBM: a CatBoost trial this
    # slow would be resized to fit the time left instead. Binary: one tree a round (on
    # multiclass hpc_data a fast VM grew 44,000 trees in the 5 s, and packaging them took
    # 2.4 s of the 4 s allowed).
    message = experiment(
        split,
        model_type=common_pb2.MODEL_TYPE_LIGHTGBM,
        n_trials=0,
        max_iterations=100_000,
        timeout_seconds=5,
    )
    message.study.early_stopping_rounds = 100_000
    _, done = await run_experiment(stack, message, timeout=90)
    took = (done.end_time.ToNanoseconds() - done.start_time.ToNanoseconds()) / 1e9
    assert took <= 5 + 4, f"a 5 s study took {took:.1f} s"
    assert done.summary.trials_stopped_by_budget >= 1
    assert done.summary.trials_complete >= 1  # the cut trial was scored, not pruned
