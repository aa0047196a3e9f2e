"""Trainer dispatch, search spaces and their overrides, and what every trainer must support:
early stopping, seed, threads, sample weights, device, an iteration callback."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from ml_support import FAST, TARGETS, features

from arbor_core.errors import InvalidArgument
from arbor_ml import (
    Device,
    Direction,
    FitSettings,
    ModelType,
    TaskType,
    get_trainer,
    prepare_data,
)
from arbor_ml.trainers.catboost import CatBoostTrainer
from arbor_ml.trainers.lightgbm import LightGBMTrainer
from arbor_ml.trainers.xgboost import XGBoostTrainer

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    ("model_type", "cls"),
    [
        ("catboost", CatBoostTrainer),
        ("xgboost", XGBoostTrainer),
        ("lightgbm", LightGBMTrainer),
        (ModelType.LIGHTGBM, LightGBMTrainer),
        ("XGBoost", XGBoostTrainer),
        (None, CatBoostTrainer),  # the default
        ("", CatBoostTrainer),
    ],
)
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_each_library_and_task_has_a_trainer(model_type, cls, task: str) -> None:
    trainer = get_trainer(model_type, task)
    assert type(trainer) is cls
    assert trainer.task is TaskType(task)
    assert (
        trainer.metric
        == {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}[task]
    )


def test_unknown_model_type_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        get_trainer("randomforest", "binary")
    assert err.value.violations[0].field == "model_type"


@pytest.mark.parametrize("task", ["ranking", "", None])
def test_unknown_task_names_the_field(task) -> None:
    with pytest.raises(InvalidArgument) as err:
        get_trainer("catboost", task)
    assert err.value.violations[0].field == "task"


@pytest.mark.parametrize(
    ("task", "metric"),
    [("binary", "rmse"), ("regression", "roc_auc"), ("multiclass", "r2"), ("binary", "auc_pr")],
)
def test_a_metric_that_does_not_fit_the_task_names_the_field(task: str, metric: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        get_trainer("xgboost", task, metric=metric)
    assert err.value.violations[0].field == "metric"


def test_metric_direction_follows_the_metric() -> None:
    assert get_trainer("lightgbm", "binary", metric="log_loss").direction is Direction.MINIMIZE
    assert get_trainer("lightgbm", "binary", metric="F1").direction is Direction.MAXIMIZE


# --- search spaces ----------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["catboost", "xgboost", "lightgbm"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_defaults_lie_in_the_search_space_and_suggest_draws_from_it(model_type, task) -> None:
    trainer = get_trainer(model_type, task)
    space = trainer.search_space
    assert space["learning_rate"].log is True
    defaults = trainer.default_params()
    assert set(defaults) == set(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(defaults)
    study.optimize(lambda t: float(len(trainer.suggest_params(t))), n_trials=3)
    assert study.trials[0].params == defaults
    for trial in study.trials:
        for name, value in trial.params.items():
            spec = space[name]
            if spec.choices is not None:
                assert value in spec.choices
            else:
                assert spec.low <= value <= spec.high


def test_library_defaults() -> None:
    assert get_trainer("catboost", "binary").default_params() == {
        "learning_rate": 0.03,
        "depth": 6,
        "l2_leaf_reg": 3.0,
        "random_strength": 1.0,
        "subsample": 0.8,
        "one_hot_max_size": 2,
        "max_ctr_complexity": 4,
        "class_weight": "none",
    }
    assert get_trainer("catboost", "multiclass").default_params()["bagging_temperature"] == 1.0
    xgb = get_trainer("xgboost", "regression").default_params()
    assert (xgb["learning_rate"], xgb["max_depth"], xgb["subsample"]) == (0.3, 6, 1.0)
    lgbm = get_trainer("lightgbm", "binary").default_params()
    assert (lgbm["learning_rate"], lgbm["num_leaves"], lgbm["min_child_samples"]) == (0.1, 31, 20)


def test_search_space_overrides() -> None:
    trainer = get_trainer(
        "catboost",
        "binary",
        search_space={
            "learning_rate": {"low": 0.05, "high": 0.3, "log": True},
            "depth": {"choices": [4, 8]},
            "subsample": {"high": 0.9},
        },
    )
    space = trainer.search_space
    assert (space["learning_rate"].low, space["learning_rate"].high) == (0.05, 0.3)
    assert space["depth"].choices == (4, 8)
    assert (space["subsample"].low, space["subsample"].high) == (0.5, 0.9)
    # Defaults an override excludes move to the nearest allowed value.
    defaults = trainer.default_params()
    assert defaults["learning_rate"] == 0.05
    assert defaults["depth"] == 4
    trial = optuna.trial.FixedTrial(
        {
            "learning_rate": 0.1,
            "depth": 8,
            "l2_leaf_reg": 1.0,
            "random_strength": 1.0,
            "subsample": 0.7,
            "one_hot_max_size": 64,
            "max_ctr_complexity": 1,
            "class_weight": "balanced",
        }
    )
    assert trainer.suggest_params(trial)["depth"] == 8


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"max_leaves": {"low": 1}}, "search_space.max_leaves"),
        ({"depth": {"low": 8, "high": 4}}, "search_space.depth.low"),
        ({"depth": {"low": 2.5}}, "search_space.depth.low"),
        ({"learning_rate": {"low": 0.0}}, "search_space.learning_rate.low"),
        ({"learning_rate": {"lo": 0.1}}, "search_space.learning_rate.lo"),
        ({"depth": {"choices": []}}, "search_space.depth.choices"),
        ({"depth": {"choices": [4], "low": 2}}, "search_space.depth"),
        ({"depth": 6}, "search_space.depth"),
    ],
)
def test_bad_overrides_name_the_field(override, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        get_trainer("catboost", "binary", search_space=override)
    assert err.value.violations[0].field == field


# --- what every trainer supports ------------------------------------------------------------


@pytest.fixture(scope="module")
def binary_data(parts):
    train, valid = (features(p, "binary") for p in parts)
    return {
        m: prepare_data(train, valid, target=TARGETS["binary"], model_type=m)
        for m in ("catboost", "xgboost", "lightgbm")
    }


@pytest.mark.parametrize("model_type", ["catboost", "xgboost", "lightgbm"])
def test_early_stopping_seed_and_callback(binary_data, model_type: str) -> None:
    data = binary_data[model_type]
    trainer = get_trainer(model_type, "binary", metric="log_loss")
    fast_lr = {"learning_rate": 0.3}
    settings = FitSettings(iterations=300, early_stopping_rounds=5, seed=3, threads=2)
    first = trainer.fit(data, fast_lr, settings)
    assert first.best_iteration is not None and first.best_iteration < first.iterations < 300
    assert first.device is Device.CPU
    # Same seed, same model; the model is cut at its best iteration.
    again = trainer.fit(data, fast_lr, settings)
    np.testing.assert_array_equal(
        first.model.predict_output(data.x_valid), again.model.predict_output(data.x_valid)
    )
    assert first.score == pytest.approx(
        np.mean(-np.log(first.model.predict_output(data.x_valid)[np.arange(80), data.y_valid]))
    )
    # A callback sees each round's validation value and can stop training (pruning).
    seen: list[tuple[int, float]] = []

    def stop_after_three(step: int, value: float) -> bool:
        seen.append((step, value))
        return len(seen) >= 3

    stopped = trainer.fit(data, fast_lr, settings, on_iteration=stop_after_three)
    assert stopped.stopped_by_callback
    assert len(seen) == 3 and stopped.iterations <= 4
    assert all(0 < value < 1 for _, value in seen)  # log loss values
    # Stopped at the very first round (the time budget, say): a one-round model, not an error.
    first_round = trainer.fit(data, fast_lr, settings, on_iteration=lambda step, value: True)
    assert first_round.stopped_by_callback and first_round.iterations <= 2
    assert first_round.best_iteration in (0, 1)


@pytest.mark.parametrize("model_type", ["catboost", "xgboost", "lightgbm"])
def test_sample_weights_change_the_model(parts, model_type: str) -> None:
    train, valid = (features(p, "regression") for p in parts)
    weighted = train.with_columns((train.get_column("count") + 1).cast(float).alias("w"))
    plain = prepare_data(train, valid, target=TARGETS["regression"], model_type=model_type)
    heavy = prepare_data(
        weighted,
        valid.with_columns((valid.get_column("count") + 1).cast(float).alias("w")),
        target=TARGETS["regression"],
        model_type=model_type,
        weight_column="w",
    )
    assert "w" not in heavy.preprocessor.input_columns
    assert heavy.w_train is not None and heavy.w_train.shape == (220,)
    trainer = get_trainer(model_type, "regression")
    a = trainer.fit(plain, settings=FAST).model.predict_output(plain.x_valid)
    b = trainer.fit(heavy, settings=FAST).model.predict_output(heavy.x_valid)
    assert not np.array_equal(a, b)


def test_cuda_falls_back_to_cpu_without_a_gpu(binary_data, monkeypatch) -> None:
    from arbor_ml.trainers import base

    monkeypatch.setattr(base, "_device_cache", {})
    monkeypatch.setattr(base, "nvidia_gpu_present", lambda: False)
    import arbor_ml.trainers.xgboost as xgb_module

    monkeypatch.setattr(xgb_module, "nvidia_gpu_present", lambda: False)
    result = get_trainer("xgboost", "binary").fit(
        binary_data["xgboost"], settings=FitSettings(iterations=5, threads=1, device="cuda")
    )
    assert result.device is Device.CPU
    assert result.library_params["device"] == "cpu"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (FitSettings(iterations=0), "iterations"),
        (FitSettings(threads=-1), "threads"),
        (FitSettings(early_stopping_rounds=0), "early_stopping_rounds"),
        (FitSettings(device="tpu"), "device"),
    ],
)
def test_bad_settings_name_the_field(binary_data, settings: FitSettings, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        get_trainer("lightgbm", "binary").fit(binary_data["lightgbm"], settings=settings)
    assert err.value.violations[0].field == field


def test_data_prepared_for_another_library_is_refused(binary_data) -> None:
    with pytest.raises(InvalidArgument) as err:
        get_trainer("xgboost", "binary").fit(binary_data["catboost"], settings=FAST)
    assert err.value.violations[0].field == "model_type"
    with pytest.raises(InvalidArgument) as err:
        get_trainer("catboost", "regression").fit(binary_data["catboost"], settings=FAST)
    assert err.value.violations[0].field == "task"


@pytest.mark.parametrize(
    ("model_type", "task", "metric", "custom"),
    [
        ("xgboost", "binary", "f1", True),
        ("xgboost", "regression", "r2", True),
        ("lightgbm", "binary", "f1", True),
        ("lightgbm", "regression", "r2", True),
        ("lightgbm", "multiclass", "accuracy", False),
        ("catboost", "binary", "log_loss", False),
        ("catboost", "regression", "mae", False),
    ],
)
def test_reported_values_are_the_study_metric(parts, model_type, task, metric, custom) -> None:
    """Round by round, the callback sees our metric (computed by us where a library lacks
    it); at the best round it equals the fitted model's validation score."""
    train, valid = (features(p, task) for p in parts)
    data = prepare_data(train, valid, target=TARGETS[task], model_type=model_type)
    trainer = get_trainer(model_type, task, metric=metric)
    assert trainer.eval_metric().custom is custom
    values: list[float] = []
    result = trainer.fit(data, settings=FAST, on_iteration=lambda s, v: values.append(v) or False)
    assert result.best_iteration is not None
    assert len(values) == result.iterations
    assert values[result.best_iteration] == pytest.approx(result.score)


def test_catboost_on_a_gpu_replays_rounds_to_the_callback(binary_data, monkeypatch) -> None:
    """CatBoost takes no Python callbacks on a GPU; the rounds are reported after training."""
    import catboost

    from arbor_ml.trainers import base

    real = catboost.CatBoost

    class CpuStandIn(real):  # a GPU run, played on the CPU
        def __init__(self, params):
            assert params.pop("task_type") == "GPU"
            super().__init__(params)

        def fit(self, *args, callbacks=None, **kwargs):
            assert callbacks is None
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(catboost, "CatBoost", CpuStandIn)
    monkeypatch.setattr(base, "resolve_device", lambda *_: Device.CUDA)
    seen: list[int] = []
    result = get_trainer("catboost", "binary").fit(
        binary_data["catboost"],
        settings=FitSettings(iterations=8, threads=1),
        on_iteration=lambda step, _: seen.append(step) or step == 4,
    )
    assert result.device is Device.CUDA
    assert seen == [0, 1, 2, 3, 4] and result.stopped_by_callback
