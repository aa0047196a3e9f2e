"""Study defaults and search spaces: class weights, defaults first, AUTO's order, the final fit,
the time budget and the latency measured for the leaderboard."""

from __future__ import annotations

import time

import numpy as np
import optuna
import polars as pl
import pytest

from arbor_core.errors import InvalidArgument
from arbor_ml import FitSettings, get_trainer, prepare_data
from arbor_ml.automl import (
    DEEP_PORTFOLIO_ROWS,
    LARGE_DATA_ROWS,
    MIN_RESIZED_ROUNDS,
    MODEL_TYPE_PARAM,
    FinalFit,
    TimeBudget,
    choose_final_fit,
    estimate_final_seconds,
    parse_final_fit,
    refit_iterations,
    resized_rounds,
    warm_start,
)
from arbor_ml.latency import predict_ms_per_1k_rows, sample_rows
from arbor_ml.trainers.base import SMALL_DATA_ROWS, effective_threads
from arbor_ml.types import LIBRARIES, ModelType
from arbor_ml.weights import class_weights


def _imbalanced(n: int = 400, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 1.6).astype(np.int64)  # ~8% positives
    return pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})


@pytest.mark.parametrize("library", LIBRARIES)
def test_class_weights_are_part_of_classification_spaces(library: str) -> None:
    for task, metric in (("binary", "roc_auc"), ("multiclass", "f1"), ("binary", "accuracy")):
        spec = get_trainer(library, task, metric=metric).search_space["class_weight"]
        assert spec.choices == ("none", "balanced", "sqrt_balanced") and spec.default == "none"
    assert "class_weight" not in get_trainer(library, "regression").search_space
    # The log loss scores probabilities, which class weights skew: not searched for it.
    assert "class_weight" not in get_trainer(library, "multiclass", metric="log_loss").search_space


def test_balanced_weights_equalise_the_classes() -> None:
    y = np.array([0] * 90 + [1] * 10)
    w = class_weights(y, "balanced")
    assert w is not None and w.mean() == pytest.approx(1.0)
    assert w[y == 0].sum() == pytest.approx(w[y == 1].sum())
    mild = class_weights(y, "sqrt_balanced")
    assert mild is not None and 1 < mild[y == 1][0] / mild[y == 0][0] < 9
    assert class_weights(y, "none") is None
    with pytest.raises(InvalidArgument) as err:
        class_weights(y, "heavy")
    assert err.value.violations[0].field == "search_space.class_weight"


@pytest.mark.parametrize("library", LIBRARIES)
def test_balanced_weights_raise_the_minority_probability(library: str) -> None:
    # Labels independent of the features (10% positives): a model can only learn the class
    # prior, which balanced weights move from 0.1 towards 0.5.
    rng = np.random.default_rng(1)
    frame = pl.DataFrame(
        {"a": rng.random(400), "b": rng.random(400), "y": (rng.random(400) < 0.1).astype(int)}
    )
    data = prepare_data(frame.head(300), frame.tail(100), target="y", model_type=library)
    trainer = get_trainer(library, "binary")
    settings = FitSettings(iterations=150, early_stopping_rounds=None, threads=1)
    # Regularised enough not to memorise the noise (a memorised row predicts its own label).
    smooth = {"xgboost": {"max_depth": 3, "min_child_weight": 20.0},
              "lightgbm": {"num_leaves": 8, "min_child_samples": 100}}.get(library, {})  # fmt: skip
    params = {**trainer.default_params(), **smooth}
    plain = trainer.fit(data, params, settings)
    weighted = trainer.fit(data, {**params, "class_weight": "balanced"}, settings)
    assert weighted.params["class_weight"] == "balanced"
    assert "class_weight" not in weighted.library_params
    assert data.x_valid is not None
    p_plain = plain.model.predict_output(data.x_valid)[:, 1].mean()
    p_weighted = weighted.model.predict_output(data.x_valid)[:, 1].mean()
    assert p_weighted > 0.25 and p_weighted > 1.5 * p_plain


def test_defaults_first_then_portfolio_in_autos_order() -> None:
    trainers = {m: get_trainer(m, "binary") for m in LIBRARIES}
    fixed = warm_start(trainers, train_rows=500, auto=True)
    libraries = [t[MODEL_TYPE_PARAM] for t in fixed]
    # CatBoost's defaults, its fast categorical encodings, LightGBM's and XGBoost's defaults,
    # then one portfolio configuration each for LightGBM and XGBoost.
    assert libraries == ["catboost", "catboost", "lightgbm", "xgboost", "lightgbm", "xgboost"]
    assert fixed[1]["catboost.one_hot_max_size"] == 64
    assert fixed[1]["catboost.learning_rate"] == fixed[0]["catboost.learning_rate"]
    lgbm = trainers[ModelType.LIGHTGBM].default_params()
    assert {k.removeprefix("lightgbm."): v for k, v in fixed[2].items() if "." in k} == lgbm
    # Every fixed trial lies inside the study's distributions, so Optuna accepts it as is.
    study = optuna.create_study(direction="maximize")
    for params in fixed:
        study.enqueue_trial(params)
    for _ in fixed:
        trial = study.ask()
        library = trial.suggest_categorical(MODEL_TYPE_PARAM, [m.value for m in LIBRARIES])
        for name, spec in trainers[ModelType(library)].search_space.items():
            from dataclasses import replace

            replace(spec, name=f"{library}.{name}").suggest(trial)
        study.tell(trial, 0.5)
    assert [t.params for t in study.trials] == fixed


def test_without_categorical_features_catboost_has_no_encoding_variant() -> None:
    # one_hot_max_size and max_ctr_complexity change nothing without categories: the variant
    # would train CatBoost's defaults a second time
    trainers = {m: get_trainer(m, "binary") for m in LIBRARIES}
    numeric = warm_start(trainers, train_rows=500, auto=True, categorical=False)
    libraries = [t[MODEL_TYPE_PARAM] for t in numeric]
    assert libraries == ["catboost", "lightgbm", "xgboost", "lightgbm", "xgboost"]
    assert numeric[0]["catboost.one_hot_max_size"] != 64
    alone = warm_start(
        {ModelType.CATBOOST: trainers[ModelType.CATBOOST]},
        train_rows=500,
        auto=False,
        categorical=False,
    )
    assert len(alone) == 1


def test_on_large_data_catboosts_cheap_encodings_go_before_its_defaults() -> None:
    trainers = {m: get_trainer(m, "binary") for m in LIBRARIES}
    small = warm_start(trainers, train_rows=500, auto=True)
    large = warm_start(trainers, train_rows=LARGE_DATA_ROWS, auto=True)
    cheap = [t.get("catboost.one_hot_max_size") == 64 for t in (small[0], small[1])]
    assert cheap == [False, True]
    assert [t.get("catboost.one_hot_max_size") == 64 for t in (large[0], large[1])] == [True, False]
    assert large[0]["catboost.learning_rate"] == large[1]["catboost.learning_rate"]


def test_a_trial_too_slow_for_its_rounds_is_resized_to_the_time_left() -> None:
    # 0.2 s a round, 50 s left: 260 rounds at most, far from the 1,000 the rate is meant for.
    rounds = resized_rounds(done=10, pace_s=0.2, setup_s=3.0, time_left_s=50.0, planned=1000)
    assert rounds == int((50.0 - 3.0) / 0.2 * 0.9)
    # On course for most of its rounds (or done early by early stopping): left alone.
    assert resized_rounds(done=10, pace_s=0.04, setup_s=3.0, time_left_s=50.0, planned=1000) is None
    # So little time that a restart would train almost nothing: left to the budget.
    tiny = resized_rounds(done=10, pace_s=0.2, setup_s=3.0, time_left_s=9.0, planned=1000)
    assert tiny is None and MIN_RESIZED_ROUNDS > (9.0 - 3.0) / 0.2 * 0.9


def test_catboost_trades_rounds_for_its_own_larger_rate() -> None:
    trainer = get_trainer("catboost", "binary")
    rows = 200_000
    defaults = trainer.default_params_for(rows)
    planned = trainer.planned_rounds(FitSettings(iterations=3000))
    assert planned == 1000
    resized = trainer.params_for_rounds(defaults, rows, planned, 250)
    # Exactly the rate CatBoost picks by itself for 250 rounds; the other parameters kept.
    expected = trainer.default_params_for(rows, FitSettings(iterations=250))["learning_rate"]
    assert resized["learning_rate"] == pytest.approx(expected, rel=1e-9)
    assert resized["learning_rate"] > defaults["learning_rate"]
    assert {k: v for k, v in resized.items() if k != "learning_rate"} == {
        k: v for k, v in defaults.items() if k != "learning_rate"
    }
    assert get_trainer("lightgbm", "binary").planned_rounds(FitSettings()) is None


def test_catboost_default_learning_rate_follows_the_data_size() -> None:
    trainer = get_trainer("catboost", "binary")
    small = trainer.default_params_for(500)["learning_rate"]
    large = trainer.default_params_for(200_000)["learning_rate"]
    assert 0.005 <= small < large <= 0.3  # CatBoost's own automatic rate, more rows: faster
    narrow = get_trainer(
        "catboost", "binary", search_space={"learning_rate": {"low": 0.2, "high": 0.3}}
    )
    assert narrow.default_params_for(500)["learning_rate"] == 0.2  # clamped into the range
    single = warm_start({ModelType.XGBOOST: get_trainer("xgboost", "regression")}, train_rows=50,
                        auto=False)  # fmt: skip
    assert single[0] == get_trainer("xgboost", "regression").default_params()
    assert MODEL_TYPE_PARAM not in single[0] and len(single) == 2


def test_final_fit_rules() -> None:
    assert refit_iterations([99, 199], fit_rows=800, refit_rows=1000, max_iterations=1000) == 168
    assert refit_iterations([None], fit_rows=10, refit_rows=10, max_iterations=300) == 300
    assert estimate_final_seconds(4.0, fit_rows=100, refit_rows=200) == pytest.approx(12.0)
    assert parse_final_fit("") is FinalFit.AUTO and parse_final_fit("ALL") is FinalFit.ALL
    with pytest.raises(InvalidArgument):
        parse_final_fit("everything")
    auto = FinalFit.AUTO
    assert choose_final_fit(auto, remaining_s=None, estimate_all_s=99, have_trial_model=False) is (
        FinalFit.ALL
    )
    assert choose_final_fit(auto, remaining_s=5, estimate_all_s=9, have_trial_model=True) is (
        FinalFit.TRIAL
    )
    assert choose_final_fit(auto, remaining_s=5, estimate_all_s=9, have_trial_model=False) is (
        FinalFit.TRAIN
    )
    assert choose_final_fit(
        FinalFit.TRIAL, remaining_s=None, estimate_all_s=1, have_trial_model=False
    ) is (FinalFit.TRAIN)


def test_time_budget_keeps_room_for_the_final_fit() -> None:
    clock = TimeBudget.start(10.0, elapsed_s=2.0)
    assert clock.remaining() == pytest.approx(8.0, abs=0.1)
    clock.reserve(1.5)  # plus the margin for what happens between the trials and the fit
    assert clock.trial_deadline == pytest.approx(clock.started + 7.0)
    clock.reserve(100.0)
    assert clock.reserve_s == 2.0  # a refit over a third of the budget is not planned for
    clock.reserve(0.1)
    assert clock.reserve_s == 2.0  # at least the packaging overhead
    assert not clock.trials_over()
    assert TimeBudget.start(1.0, elapsed_s=5.0).trials_over()
    assert not TimeBudget.start(None).trials_over()


def test_latency_and_threads() -> None:
    frame = _imbalanced(50)
    data = prepare_data(frame, None, target="y", model_type="lightgbm")
    result = get_trainer("lightgbm", "binary").fit(
        data, None, FitSettings(iterations=10, early_stopping_rounds=None, threads=1)
    )
    assert sample_rows(data.x_train).height == 1000  # 50 rows repeated
    started = time.perf_counter()
    ms = predict_ms_per_1k_rows(result.model, data.x_train)
    assert ms is not None and 0 < ms < (time.perf_counter() - started) * 1000
    assert predict_ms_per_1k_rows(result.model, data.x_train.head(0)) is None
    assert effective_threads(2, SMALL_DATA_ROWS - 1) == 1
    assert effective_threads(2, SMALL_DATA_ROWS) == 2


def test_the_final_average_takes_only_near_best_trials() -> None:
    from arbor_ml.automl import ENSEMBLE_TOLERANCE, ensemble_members

    auc = [(0, 0.900), (1, 0.899), (2, 0.850), (3, 0.8975), (4, float("nan"))]
    assert ensemble_members(auc, best=0, maximize=True, most=3) == [0, 1, 3]
    assert ensemble_members(auc, best=0, maximize=True, most=1) == [0]
    loss = [(5, 0.40), (6, 0.4019), (7, 0.41)]  # lower is better; 0.41 is 2.5% off
    assert ensemble_members(loss, best=5, maximize=False, most=3) == [5, 6]
    assert 0.4019 <= 0.40 * (1 + ENSEMBLE_TOLERANCE) < 0.41


def test_catboost_merges_different_configurations_into_one_model() -> None:
    frame = _imbalanced(200)
    data = prepare_data(frame.head(150), frame.tail(50), target="y", model_type="catboost")
    trainer = get_trainer("catboost", "binary")
    settings = FitSettings(iterations=20, early_stopping_rounds=None, threads=1)
    shallow = trainer.default_params() | {"depth": 3, "learning_rate": 0.2}
    deep = trainer.default_params() | {"depth": 6}
    parts = [trainer.fit(data, p, settings) for p in (shallow, deep)]
    merged = trainer.fit_ensemble(data, [(shallow, settings), (deep, settings)])
    assert merged.extra["averaged_models"] == 2
    x = data.x_valid
    expected = np.mean([r.model.predict_margin(x) for r in parts], axis=0)
    np.testing.assert_allclose(merged.model.predict_margin(x), expected, rtol=1e-6, atol=1e-9)
    # A library that cannot merge models keeps the first member.
    lgbm_data = prepare_data(frame.head(150), frame.tail(50), target="y", model_type="lightgbm")
    lgbm = get_trainer("lightgbm", "binary")
    alone = lgbm.fit_ensemble(lgbm_data, [(None, settings), ({"num_leaves": 4}, settings)])
    assert alone.extra.get("averaged_models", 1) == 1


def test_catboost_averages_seeds_into_one_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from arbor_core.artifacts import open_store
    from arbor_ml import build_bundle, load_bundle, save_bundle
    from arbor_ml.automl import averaged_models

    frame = _imbalanced(200)
    data = prepare_data(frame.head(150), frame.tail(50), target="y", model_type="catboost")
    trainer = get_trainer("catboost", "binary")
    settings = FitSettings(iterations=20, early_stopping_rounds=None, threads=1)
    one = trainer.fit(data, None, settings)
    three = trainer.fit_averaged(data, None, settings, 3)
    assert three.extra["averaged_models"] == 3 and trainer.can_average
    assert three.model.native.tree_count_ == 3 * one.model.native.tree_count_
    # One native model that saves, loads and predicts like the average it is.
    bundle = build_bundle(data, three, importance_rows=10)
    store = open_store(str(tmp_path))
    loaded = load_bundle(store, save_bundle(bundle, store, "m/avg/").prefix)
    np.testing.assert_allclose(
        loaded.predict_raw(frame.tail(50)), bundle.predict_raw(frame.tail(50))
    )
    assert not get_trainer("lightgbm", "binary").can_average
    assert averaged_models(None, 5.0) == 3
    assert averaged_models(12.0, 5.0, overhead_s=2.0) == 2
    assert averaged_models(3.0, 5.0, overhead_s=2.0) == 1


def test_from_ten_thousand_rows_xgboost_also_tries_deep_trees() -> None:
    trainers = {m: get_trainer(m, "regression") for m in LIBRARIES}

    def depths(rows: int) -> list[int]:
        fixed = warm_start(trainers, train_rows=rows, auto=True)
        return [t["xgboost.max_depth"] for t in fixed if t[MODEL_TYPE_PARAM] == "xgboost"]

    assert depths(DEEP_PORTFOLIO_ROWS - 1) == [6, 6]  # the defaults, the portfolio
    assert depths(DEEP_PORTFOLIO_ROWS) == [6, 6, 8]
