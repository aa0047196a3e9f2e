"""Every library x task: train, save, load, predict; the loaded model predicts exactly the same,
and its SHAP values add up to its margin."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from ml_support import FAST, MODEL_TYPES, TARGETS, TASKS

from arbor_core.artifacts import LocalArtifactStore
from arbor_ml import (
    BUNDLE_FORMAT_VERSION,
    ModelBundle,
    bundle_prefix,
    load_bundle,
    save_bundle,
    train,
)

CASES = [(m, t) for m in MODEL_TYPES for t in TASKS]
MODEL_FILES = {"catboost": "model.cbm", "xgboost": "model.ubj", "lightgbm": "model.txt"}


@pytest.mark.parametrize(("model_type", "task"), CASES)
def test_round_trip_predicts_exactly_the_same(
    trained, parts, store: LocalArtifactStore, model_type: str, task: str
) -> None:
    _, result, bundle = trained(model_type, task)
    _, valid = parts
    # Columns in another order, plus one the model never saw: neither may matter.
    frame = valid.select(list(reversed(valid.columns))).with_columns(pl.lit(1).alias("extra"))
    before = bundle.predict(frame)

    ref = save_bundle(bundle, store, bundle_prefix(f"{model_type}-{task}", 3))
    assert ref.prefix == f"models/{model_type}-{task}/v3/"
    assert set(ref.files) == {
        MODEL_FILES[model_type],
        "preprocessing.json",
        "postprocessing.json",
        "signature.json",
        "metadata.json",
        "manifest.json",
    }
    loaded = load_bundle(store, ref.prefix, expected_manifest_sha256=ref.manifest_sha256)
    after = loaded.predict(frame)

    if task == "regression":
        assert before.values is not None and after.values is not None
        assert before.values.shape == (valid.height,)
        np.testing.assert_array_equal(before.values, after.values)
        assert before.labels is None and before.probabilities is None
    else:
        n_classes = 2 if task == "binary" else 3
        assert before.probabilities is not None and after.probabilities is not None
        assert before.probabilities.shape == (valid.height, n_classes)
        np.testing.assert_array_equal(before.probabilities, after.probabilities)
        np.testing.assert_allclose(before.probabilities.sum(axis=1), 1.0, atol=1e-9)
        assert before.labels is not None and after.labels is not None
        assert before.labels.equals(after.labels)
        assert before.labels.dtype == pl.String
        expected = {"binary": ["no", "yes"], "multiclass": ["high", "low", "mid"]}[task]
        assert before.classes == after.classes == expected
        assert set(before.labels.unique().to_list()) <= set(expected)
    np.testing.assert_array_equal(bundle.predict_raw(frame), loaded.predict_raw(frame))

    # The model learned something on the validation part.
    score = loaded.metadata["metrics"][result.metric]
    assert score == pytest.approx(result.score)
    if task == "binary":
        assert score > 0.7  # roc_auc (30 slow rounds, early-stopped on the log loss)
    elif task == "regression":
        assert loaded.metadata["metrics"]["r2"] > 0.1


@pytest.mark.parametrize(("model_type", "task"), CASES)
def test_shap_contributions_add_up_to_the_margin(
    trained, parts, model_type: str, task: str
) -> None:
    _, _, bundle = trained(model_type, task)
    rows = parts[1].head(25)
    explanation = bundle.explain(rows)
    assert explanation.method == "shap.TreeExplainer"
    assert explanation.contributions is not None and explanation.base_values is not None
    outputs = 3 if task == "multiclass" else 1
    n_features = len(bundle.preprocessor.feature_names)
    assert explanation.contributions.shape == (25, outputs, n_features)
    assert explanation.base_values.shape == (outputs,)
    margin = bundle.predict_margin(rows).reshape(25, outputs)
    total = explanation.contributions.sum(axis=2) + explanation.base_values
    np.testing.assert_allclose(total, margin, atol=1e-4)
    ranking = [name for name, _ in explanation.global_importance]
    assert sorted(ranking) == sorted(bundle.preprocessor.feature_names)
    importances = [value for _, value in explanation.global_importance]
    assert importances == sorted(importances, reverse=True)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_library_shap_also_adds_up(trained, parts, model_type: str) -> None:
    """The libraries' own TreeSHAP, used when ``shap`` cannot handle a model."""
    _, _, bundle = trained(model_type, "multiclass")
    rows = parts[1].head(10)
    explanation = bundle.explain(rows, method="native_shap")
    assert (
        explanation.method
        == {
            "catboost": "catboost.ShapValues",
            "xgboost": "xgboost.pred_contribs",
            "lightgbm": "lightgbm.pred_contrib",
        }[model_type]
    )
    assert explanation.contributions is not None and explanation.base_values is not None
    total = explanation.contributions.sum(axis=2) + explanation.base_values
    np.testing.assert_allclose(total, bundle.predict_margin(rows), atol=1e-4)
    assert explanation.output_names == ["high", "low", "mid"]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_bundle_files_are_plain_json_and_native_model(
    trained, store: LocalArtifactStore, model_type: str
) -> None:
    data, result, bundle = trained(model_type, "binary")
    ref = bundle.save(store, "models/plain/v1")
    names = store.list(ref.prefix)
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".joblib"))]
    signature = json.loads(store.get_bytes(ref.prefix + "signature.json"))
    assert [c["name"] for c in signature["inputs"]] == [
        "amount",
        "count",
        "color",
        "city",
        "flag",
        "signup",
    ]
    assert {c["name"]: c["dtype"] for c in signature["inputs"]}["signup"] == "Datetime[us]"
    assert signature["classes"] == ["no", "yes"]
    assert signature["target"] == TARGETS["binary"]
    assert signature["dropped_columns"] == ["constant", "empty"]
    metadata = json.loads(store.get_bytes(ref.prefix + "metadata.json"))
    assert metadata["format_version"] == BUNDLE_FORMAT_VERSION
    assert metadata["training_rows"] == data.train_rows == 220
    assert metadata["validation_rows"] == 80
    assert metadata["params"] == result.params
    assert metadata["library"]["name"] == model_type
    assert metadata["library_versions"][model_type]
    assert metadata["created_time"].endswith("+00:00")
    assert metadata["feature_importance"]["method"] == "shap.TreeExplainer"
    manifest = json.loads(store.get_bytes(ref.prefix + "manifest.json"))
    assert manifest["format_version"] == BUNDLE_FORMAT_VERSION
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == ref.files[name].sha256
    # The stored global ranking answers an Explain without rows.
    stored = ModelBundle.from_files(
        {n.removeprefix(ref.prefix): store.get_bytes(n) for n in names}
    ).explain()
    assert stored.contributions is None
    assert stored.global_importance == bundle.explain().global_importance


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_column_names_a_library_refuses(store: LocalArtifactStore, model_type: str) -> None:
    """XGBoost refuses ``[]<`` in feature names and LightGBM JSON punctuation; ours keep them."""
    rng = np.random.default_rng(3)
    frame = pl.DataFrame(
        {
            "price[usd]": rng.normal(size=120),
            'say "hi", {x: 1}': rng.choice(["a", "b", "c"], 120),
            "n < 5": rng.integers(0, 10, 120),
        }
    ).with_columns(y=pl.col("price[usd]") * 2 + (pl.col('say "hi", {x: 1}') == "a"))
    bundle = train(frame[:90], frame[90:], target="y", model_type=model_type, settings=FAST)
    loaded = load_bundle(store, bundle.save(store, "models/odd/v1").prefix)
    np.testing.assert_array_equal(bundle.predict_raw(frame), loaded.predict_raw(frame))
    explanation = loaded.explain(frame.head(5))
    assert set(explanation.feature_names) == {"price[usd]", "n < 5", 'say "hi", {x: 1}'}
    assert explanation.global_importance[0][0] == "price[usd]"
