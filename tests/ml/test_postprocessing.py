"""Postprocessing: binary threshold, label mapping to the original values and dtype,
regression clipping, rounding and unit transforms, and the JSON artifact."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from arbor_core.errors import InvalidArgument
from arbor_ml import PostprocessingOptions, Postprocessor, TaskType, prepare_data

PROBA = np.array([[0.9, 0.1], [0.6, 0.4], [0.35, 0.65], [0.05, 0.95]])


def test_binary_threshold() -> None:
    post = Postprocessor.for_classification(TaskType.BINARY, ("no", "yes"), "String")
    assert post.labels(PROBA).to_list() == ["no", "no", "yes", "yes"]
    strict = Postprocessor.for_classification(
        TaskType.BINARY, ("no", "yes"), "String", PostprocessingOptions(threshold=0.7)
    )
    assert strict.labels(PROBA).to_list() == ["no", "no", "no", "yes"]
    lenient = Postprocessor.for_classification(
        TaskType.BINARY, ("no", "yes"), "String", PostprocessingOptions(threshold=0.4)
    )
    assert lenient.labels(PROBA).to_list() == ["no", "yes", "yes", "yes"]  # p >= threshold


@pytest.mark.parametrize(
    ("classes", "dtype", "expected_dtype"),
    [
        (("bad", "good"), "String", pl.String),
        ((3, 7), "Int64", pl.Int64),
        ((False, True), "Boolean", pl.Boolean),
        (("a", "b"), "Categorical", pl.String),
        ((0.0, 1.0), "Float64", pl.Float64),
    ],
)
def test_labels_map_back_to_original_values_and_dtype(classes, dtype, expected_dtype) -> None:
    post = Postprocessor.for_classification(TaskType.BINARY, classes, dtype)
    labels = post.labels(PROBA)
    assert labels.dtype == expected_dtype
    assert labels.to_list() == [classes[0], classes[0], classes[1], classes[1]]
    again = Postprocessor.from_json(post.to_json())
    assert again == post
    assert again.labels(PROBA).to_list() == labels.to_list()


def test_multiclass_labels_take_the_most_likely_string_class() -> None:
    post = Postprocessor.for_classification(TaskType.MULTICLASS, ("cat", "dog", "eel"), "String")
    proba = np.array([[0.2, 0.5, 0.3], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert post.labels(proba).to_list() == ["dog", "cat", "eel"]


def test_string_labels_end_to_end_with_a_chosen_positive_class() -> None:
    frame = pl.DataFrame({"x": [float(i) for i in range(40)], "y": ["good"] * 20 + ["bad"] * 20})
    data = prepare_data(frame, target="y", positive_class="bad")
    assert data.target.classes == ("good", "bad")  # the positive class is classes[1]
    assert data.y_train[:20].tolist() == [0] * 20 and data.y_train[20:].tolist() == [1] * 20
    with pytest.raises(InvalidArgument) as err:
        prepare_data(frame, target="y", positive_class="ugly")
    assert err.value.violations[0].field == "positive_class"
    booleans = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [True, False, True, False]})
    assert prepare_data(booleans, target="y", positive_class="false").target.classes == (
        True,
        False,
    )


def test_regression_clip_round_and_units() -> None:
    raw = np.array([-3.14159, 0.5, 2.71828, 99.0])
    assert Postprocessor.for_regression().values(raw).tolist() == raw.tolist()
    clipped = Postprocessor.for_regression(
        options=PostprocessingOptions(clip_min=0.0, clip_max=10.0)
    )
    assert clipped.values(raw).tolist() == [0.0, 0.5, 2.71828, 10.0]
    lower_only = Postprocessor.for_regression(options=PostprocessingOptions(clip_min=0.0))
    assert lower_only.values(raw).tolist() == [0.0, 0.5, 2.71828, 99.0]
    rounded = Postprocessor.for_regression(options=PostprocessingOptions(round_digits=2))
    assert rounded.values(raw).tolist() == [-3.14, 0.5, 2.72, 99.0]
    to_integers = Postprocessor.for_regression(options=PostprocessingOptions(round_digits=0))
    assert to_integers.values(raw).tolist() == [-3.0, 0.0, 3.0, 99.0]
    cents = Postprocessor.for_regression(options=PostprocessingOptions(scale=100.0, offset=1.0))
    assert cents.values(np.array([1.5])).tolist() == [151.0]


def test_log_target_is_undone_before_the_other_steps() -> None:
    post = Postprocessor.for_regression(
        "log1p", PostprocessingOptions(scale=2.0, clip_max=100.0, round_digits=1)
    )
    assert post.inverse == "expm1"
    raw = np.log1p(np.array([0.0, 9.0, 1000.0]))
    assert post.values(raw).tolist() == [0.0, 18.0, 100.0]
    assert Postprocessor.for_regression("log").values(np.log(np.array([5.0]))) == pytest.approx(5.0)
    assert Postprocessor.from_json(post.to_json()) == post


def test_training_on_a_log_target(parts) -> None:
    from ml_support import FAST, features

    from arbor_ml import build_bundle, get_trainer

    train, valid = (features(p, "regression") for p in parts)
    train, valid = (p.with_columns(pl.col("y_reg").abs() + 1) for p in (train, valid))
    data = prepare_data(
        train, valid, target="y_reg", model_type="lightgbm", target_transform="log1p"
    )
    assert data.y_train == pytest.approx(np.log1p(train.get_column("y_reg").to_numpy()))
    result = get_trainer("lightgbm", "regression").fit(data, settings=FAST)
    bundle = build_bundle(data, result, postprocessing=PostprocessingOptions(round_digits=3))
    values = bundle.predict(valid).values
    raw = bundle.predict_raw(valid)
    assert values == pytest.approx(np.round(np.expm1(raw), 3))
    assert bundle.metadata["target_transform"] == "log1p"
    # Metrics are in the target's units, not the log's.
    rmse = np.sqrt(np.mean((np.expm1(raw) - valid.get_column("y_reg").to_numpy()) ** 2))
    assert bundle.metadata["metrics"]["rmse"] == pytest.approx(rmse)
    with pytest.raises(InvalidArgument) as err:
        prepare_data(
            train.with_columns(
                pl.when(pl.int_range(pl.len()) == 0)
                .then(-2.0)
                .otherwise(pl.col("y_reg"))
                .alias("y_reg")
            ),
            target="y_reg",
            target_transform="log1p",
        )
    assert err.value.violations[0].field == "target_transform"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"threshold": 1.5}, "postprocessing.threshold"),
        ({"clip_min": 5.0, "clip_max": 1.0}, "postprocessing.clip_max"),
        ({"round_digits": 2.5}, "postprocessing.round_digits"),
        ({"scale": 0}, "postprocessing.scale"),
        ({"offset": float("inf")}, "postprocessing.offset"),
        ({"clamp": 1}, "postprocessing.clamp"),
    ],
)
def test_bad_options_name_the_field(options, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        PostprocessingOptions.from_dict(options)
    assert err.value.violations[0].field == field
