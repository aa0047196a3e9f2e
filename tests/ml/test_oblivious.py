"""CatBoost's symmetric trees as numpy arrays (``arbor_ml.oblivious``): the same numbers as
``CatBoost.predict`` (rows on the borders, NaN both ways), and a refusal for anything it does
not replay (categorical features, non-symmetric trees)."""

from __future__ import annotations

import numpy as np
import pytest
from catboost import CatBoost

from arbor_ml import oblivious

ROWS, FEATURES = 300, 6


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES))
    score = np.nan_to_num(x[:, 0]) + x[:, 1] * x[:, 2] + rng.normal(0, 0.3, ROWS)
    x[rng.random(x.shape) < 0.1] = np.nan  # NaN in training: every feature "has_nans"
    return x, score


def _fit(loss: str, **params: object) -> CatBoost:
    x, score = _data()
    if loss == "MultiClass":
        y: np.ndarray = np.digitize(score, [-0.5, 0.5])
    elif loss == "Logloss":
        y = (score > 0).astype(int)
    else:
        y = score
    model = CatBoost(
        {"loss_function": loss, "iterations": 12, "depth": 6, "verbose": 0, "thread_count": 1}
        | params
    )
    model.fit(x, y)
    return model


CASES = [
    ("Logloss", "Probability", {}),
    ("Logloss", "Probability", {"nan_mode": "Max"}),
    ("MultiClass", "Probability", {}),
    ("RMSE", "RawFormulaVal", {}),
]


@pytest.mark.parametrize(("loss", "prediction_type", "params"), CASES)
def test_the_c_evaluator_and_numpy_give_the_same_floats(
    loss: str, prediction_type: str, params: dict
) -> None:
    model = _fit(loss, **params, depth=5)  # 5 levels in 8 slots: padding must read as 0
    predictor = oblivious.build(model, prediction_type)
    if predictor.native is None:
        pytest.skip("no C compiler: numpy only")
    rows = oblivious.check_rows(predictor, 400, seed=3)
    in_c = predictor.raw(rows)
    predictor.native = None
    np.testing.assert_array_equal(in_c, predictor.raw(rows))


@pytest.mark.parametrize(("loss", "prediction_type", "params"), CASES)
def test_one_row_as_floats_is_row_0_of_predict(
    loss: str, prediction_type: str, params: dict
) -> None:
    predictor = oblivious.build(_fit(loss, **params), prediction_type)
    if predictor.native is None:
        pytest.skip("no C compiler: numpy only")
    for row in oblivious.check_rows(predictor, 40, seed=5).astype(np.float64):
        expected = np.atleast_1d(predictor.predict(row[None, :])[0]).tolist()
        assert predictor.predict_row(row.tolist()) == expected
    with predictor._row_call._busy:  # another thread in the buffers: the caller takes predict
        assert predictor.predict_row(row.tolist()) is None


def test_no_c_evaluator_when_compiled_inference_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_COMPILED_INFERENCE", "off")
    assert oblivious._load_evaluator() is None
    model = _fit("RMSE")
    monkeypatch.setattr(oblivious, "_evaluator", [None])  # as a process started with it off
    predictor = oblivious.build(model, "RawFormulaVal")
    assert predictor.native is None
    x = oblivious.check_rows(predictor, 50)
    np.testing.assert_allclose(
        predictor.raw(x).reshape(-1), model.predict(x, prediction_type="RawFormulaVal"), atol=1e-6
    )


@pytest.mark.parametrize(("loss", "prediction_type", "params"), CASES)
def test_same_numbers_as_catboost(loss: str, prediction_type: str, params: dict) -> None:
    model = _fit(loss, **params)
    predictor = oblivious.build(model, prediction_type)
    assert predictor.n_trees == model.tree_count_ and predictor.depth == 6
    rows = oblivious.check_rows(predictor, 400, seed=7)  # borders, their neighbours, NaN
    for n in (1, 7, 400):
        x = rows[:n]
        expected = np.asarray(model.predict(x, prediction_type=prediction_type), np.float64)
        assert predictor.predict(x).shape == expected.shape
        np.testing.assert_allclose(predictor.predict(x), expected, rtol=0, atol=1e-6)
        raw = np.asarray(model.predict(x, prediction_type="RawFormulaVal"), np.float64)
        np.testing.assert_allclose(predictor.raw(x), raw.reshape(n, -1), rtol=0, atol=1e-6)
    # float64 input compares as CatBoost does, after the cast to float32
    x64 = rows[:50].astype(np.float64) + 1e-12
    np.testing.assert_allclose(
        predictor.predict(x64),
        np.asarray(model.predict(x64, prediction_type=prediction_type), np.float64),
        atol=1e-6,
    )


def test_values_on_borders_and_nan_in_both_nan_modes() -> None:
    for nan_mode in ("Min", "Max"):
        model = _fit("RMSE", nan_mode=nan_mode)
        predictor = oblivious.build(model, "RawFormulaVal")
        assert (predictor._nan_true is not None) is (nan_mode == "Max")  # read from the JSON
        up = np.float32(np.inf)
        for j in range(FEATURES):  # one feature at a time on each border, above it, NaN
            borders = np.unique(
                predictor._border[(predictor._feat == j) & np.isfinite(predictor._border)]
            )
            with np.errstate(over="ignore"):  # numpy flags nextafter towards inf
                above = np.nextafter(borders, up)
            column = np.concatenate([borders, above, [np.nan]])
            x = np.zeros((column.size, FEATURES), dtype=np.float32)
            x[:, j] = column
            expected = np.asarray(model.predict(x, prediction_type="RawFormulaVal"))
            np.testing.assert_array_equal(predictor.predict(x), expected)


def test_categorical_features_are_refused() -> None:
    x, score = _data()
    rows = [[*map(float, r), "a" if s > 0 else "b"] for r, s in zip(x, score, strict=True)]
    model = CatBoost({"iterations": 5, "depth": 4, "verbose": 0, "loss_function": "Logloss"})
    model.fit(rows, (score > 0).astype(int), cat_features=[FEATURES])
    with pytest.raises(oblivious.Unsupported):
        oblivious.build(model, "Probability")
    assert oblivious.build_checked(model, "Probability") is None


@pytest.mark.parametrize("policy", ["Lossguide", "Depthwise"])
def test_non_symmetric_trees_are_refused(policy: str) -> None:
    model = _fit("RMSE", grow_policy=policy, iterations=4)
    with pytest.raises(oblivious.Unsupported):
        oblivious.build(model, "RawFormulaVal")


def test_unknown_model_fields_are_refused() -> None:
    model = _fit("RMSE", iterations=3)
    exported = oblivious.model_json(model)
    oblivious.ObliviousPredictor(exported, FEATURES, "RawFormulaVal")  # as exported: fine
    for patch in (
        {"ctr_data": {}},
        {"features_info": {**exported["features_info"], "categorical_features": []}},
    ):
        with pytest.raises(oblivious.Unsupported):
            oblivious.ObliviousPredictor(exported | patch, FEATURES, "RawFormulaVal")
    with pytest.raises(oblivious.Unsupported):  # a loss whose Probability is not replayed
        oblivious.ObliviousPredictor(exported, FEATURES, "Exponent")
