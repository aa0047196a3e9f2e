"""Bundle integrity: checksums, format versions, missing bundles, another store backend,
explanation fallbacks, and the 1-row inference path."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from arbor_core.artifacts import ChecksumMismatch, LocalArtifactStore
from arbor_core.errors import FailedPrecondition, InvalidArgument, NotFound
from arbor_ml import bundle_prefix, load_bundle, save_bundle
from arbor_ml.bundle import BUNDLE_FORMAT_VERSION


@pytest.fixture
def saved(trained, store: LocalArtifactStore):
    _, _, bundle = trained("lightgbm", "multiclass")
    return bundle, save_bundle(bundle, store, bundle_prefix("iris", 1))


def _overwrite(store: LocalArtifactStore, key: str, data: bytes) -> None:
    """Replace an artifact's bytes behind the store's back (a corrupted upload)."""
    (store.root / key).write_bytes(data)


def test_a_tampered_file_is_refused(saved, store: LocalArtifactStore) -> None:
    _, ref = saved
    key = ref.prefix + "postprocessing.json"
    data = json.loads(store.get_bytes(key))
    data["classes"] = ["a", "b", "c"]
    _overwrite(store, key, json.dumps(data).encode())
    with pytest.raises(ChecksumMismatch):
        load_bundle(store, ref.prefix)


def test_a_file_rewritten_through_the_store_still_fails_the_manifest(
    saved, store: LocalArtifactStore
) -> None:
    """The store's own checksum then matches; the manifest's does not."""
    _, ref = saved
    store.put_bytes(ref.prefix + "model.txt", b"tree\n")
    with pytest.raises(ChecksumMismatch) as err:
        load_bundle(store, ref.prefix)
    assert "model.txt" in err.value.message


def test_the_expected_manifest_checksum_is_checked(saved, store: LocalArtifactStore) -> None:
    _, ref = saved
    assert load_bundle(store, ref.prefix, expected_manifest_sha256=ref.manifest_sha256)
    with pytest.raises(ChecksumMismatch):
        load_bundle(store, ref.prefix, expected_manifest_sha256="0" * 64)


@pytest.mark.parametrize(("version", "loads"), [("1.7", True), ("2.0", False), ("0.9", False)])
def test_format_versions(saved, store: LocalArtifactStore, version: str, loads: bool) -> None:
    _, ref = saved
    key = ref.prefix + "manifest.json"
    manifest = json.loads(store.get_bytes(key))
    store.put_bytes(key, json.dumps(manifest | {"format_version": version}).encode())
    if loads:
        assert load_bundle(store, ref.prefix).task.value == "multiclass"
        return
    with pytest.raises(FailedPrecondition) as err:
        load_bundle(store, ref.prefix)
    assert err.value.reason == "MODEL_BUNDLE_INCOMPATIBLE"
    assert err.value.metadata["format_version"] == version
    assert err.value.metadata["supported_format_version"] == BUNDLE_FORMAT_VERSION


def test_a_manifest_missing_a_file_is_refused(saved, store: LocalArtifactStore) -> None:
    _, ref = saved
    key = ref.prefix + "manifest.json"
    manifest = json.loads(store.get_bytes(key))
    del manifest["files"]["signature.json"]
    store.put_bytes(key, json.dumps(manifest).encode())
    with pytest.raises(FailedPrecondition):
        load_bundle(store, ref.prefix)


def test_no_bundle_and_bad_names(store: LocalArtifactStore) -> None:
    with pytest.raises(NotFound):
        load_bundle(store, "models/ghost/v1/")
    for name, version, field in (("a/b", 1, "name"), ("", 1, "name"), ("ok", 0, "version")):
        with pytest.raises(InvalidArgument) as err:
            bundle_prefix(name, version)
        assert err.value.violations[0].field == field
    with pytest.raises(InvalidArgument):
        load_bundle(store, "../outside/")


@pytest.mark.integration
def test_round_trip_through_gcs(trained, parts, gcs_artifact_store) -> None:
    """The same bundle code against the GCS backend (on the emulator)."""
    _, _, bundle = trained("catboost", "binary")
    ref = save_bundle(bundle, gcs_artifact_store, bundle_prefix("credit", 2))
    assert ref.uri.startswith("gs://")
    loaded = load_bundle(
        gcs_artifact_store, ref.prefix, expected_manifest_sha256=ref.manifest_sha256
    )
    valid = parts[1]
    np.testing.assert_array_equal(bundle.predict_raw(valid), loaded.predict_raw(valid))


def test_explanation_falls_back_to_native_importance(trained, parts, monkeypatch) -> None:
    _, _, bundle = trained("xgboost", "binary")
    loaded_explainer = type(bundle.explainer)(bundle.model, bundle.explainer.output_names)

    def broken(*_args, **_kwargs):
        raise RuntimeError("no SHAP today")

    monkeypatch.setattr(loaded_explainer, "_shap_values", broken)
    monkeypatch.setattr(bundle.model, "native_contributions", broken)
    explanation = loaded_explainer.explain(bundle.preprocessor.transform(parts[1].head(3)))
    assert explanation.method == "native.total_gain"
    assert explanation.contributions is None
    assert len(explanation.global_importance) == len(bundle.preprocessor.feature_names)
    with pytest.raises(InvalidArgument) as err:
        bundle.explain(parts[1].head(1), method="lime")
    assert err.value.violations[0].field == "method"


@pytest.mark.parametrize("model_type", ["catboost", "xgboost", "lightgbm"])
def test_one_row_from_json_like_values(trained, model_type: str) -> None:
    """What the inference service builds from JSON rows: strings for dates, ints for floats,
    a null, an unseen category; the column order of the request does not matter."""
    _, _, bundle = trained(model_type, "binary")
    row = pl.DataFrame(
        {
            "signup": ["2023-06-01 12:30:00"],
            "city": ["atlantis"],
            "color": [None],
            "flag": [True],
            "count": [3],
            "amount": [120],
        }
    )
    prediction = bundle.predict(row)
    assert prediction.labels is not None and prediction.labels.len() == 1
    assert prediction.labels.item() in ("no", "yes")
    assert prediction.probabilities is not None and prediction.probabilities.shape == (1, 2)
    assert bundle.predict_raw(row.head(0)).shape == (0, 2)
    one = bundle.explain(row)
    assert one.contributions is not None and one.contributions.shape[:2] == (1, 1)
