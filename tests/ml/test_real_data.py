"""A slice of a real table (credit scoring: string categoricals, missing values) end to end,
and the data preparation rules around targets and weights."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from ml_support import FAST

from arbor_core.artifacts import LocalArtifactStore
from arbor_core.errors import InvalidArgument
from arbor_ml import (
    PreprocessingOptions,
    TaskType,
    bundle_prefix,
    infer_task,
    load_bundle,
    prepare_data,
    train,
)


@pytest.mark.parametrize("model_type", ["catboost", "lightgbm"])
def test_credit_data_slice_end_to_end(
    credit_slice: pl.DataFrame, store: LocalArtifactStore, model_type: str
) -> None:
    assert credit_slice.null_count().sum_horizontal().item() > 0
    assert infer_task(credit_slice.get_column("Status")) is TaskType.BINARY
    train_part, valid_part = credit_slice[:400], credit_slice[400:]
    bundle = train(
        train_part,
        valid_part,
        target="Status",
        model_type=model_type,
        positive_class="bad",
        params={"learning_rate": 0.1},
        settings=FAST,
        preprocessing=PreprocessingOptions(numeric_missing="median"),
    )
    assert bundle.classes == ["good", "bad"]
    assert set(bundle.preprocessor.categorical_features) == {"Home", "Marital", "Records", "Job"}
    assert bundle.metadata["metrics"]["roc_auc"] > 0.65
    ref = bundle.save(store, bundle_prefix(f"credit-{model_type}", 1))
    loaded = load_bundle(store, ref.prefix, expected_manifest_sha256=ref.manifest_sha256)
    before, after = bundle.predict(valid_part), loaded.predict(valid_part)
    np.testing.assert_array_equal(before.probabilities, after.probabilities)
    assert before.labels is not None and before.labels.equals(after.labels)
    # A new home type and a missing column, as a client might send them.
    odd = valid_part.head(3).with_columns(pl.lit("boat").alias("Home"))
    assert loaded.predict(odd).labels.len() == 3
    with pytest.raises(InvalidArgument) as err:
        loaded.predict(valid_part.drop("Income"))
    assert err.value.violations[0].field == "Income"


def _frame(target: list[object]) -> pl.DataFrame:
    n = len(target)
    return pl.DataFrame({"x": [float(i % 7) for i in range(n)], "y": target}, strict=False)


def test_rows_with_a_missing_target_are_dropped() -> None:
    data = prepare_data(_frame([0, 1, None, 1, 0, 1]), _frame([1, None, 0]), target="y")
    assert data.train_rows == 5 and data.valid_rows == 2
    assert data.task is TaskType.BINARY


def test_a_class_only_in_validation_still_gets_an_index() -> None:
    data = prepare_data(
        _frame(["a", "b", "a", "b"]), _frame(["c", "a"]), target="y", task="multiclass"
    )
    assert data.target.classes == ("a", "b", "c")
    assert data.y_valid is not None and data.y_valid.tolist() == [2, 0]


@pytest.mark.parametrize(
    ("frame", "kwargs", "field"),
    [
        (_frame([0, 1, 0]), {"target": "nope"}, "target"),
        (_frame([1, 1, 1]), {"target": "y", "task": "binary"}, "target"),
        (_frame([0, 1, 2]), {"target": "y", "task": "binary"}, "task"),
        (_frame([0.5, 1.5, 2.0]), {"target": "y", "task": "multiclass"}, "target"),
        (_frame(["a", "b", "c"]), {"target": "y", "task": "regression"}, "target"),
        (_frame([0, 1, 0]), {"target": "y", "weight_column": "w"}, "weight_column"),
        (_frame([0, 1, 0]), {"target": "y", "target_transform": "log1p"}, "target_transform"),
        (
            _frame([0, 1, 2]),
            {"target": "y", "task": "multiclass", "positive_class": 1},
            "positive_class",
        ),
    ],
)
def test_bad_data_requests_name_the_field(frame: pl.DataFrame, kwargs, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        prepare_data(frame, **kwargs)
    assert err.value.violations[0].field == field


def test_negative_or_missing_weights_are_refused() -> None:
    frame = _frame([0, 1, 0, 1]).with_columns(pl.Series("w", [1.0, -1.0, 2.0, None]))
    with pytest.raises(InvalidArgument) as err:
        prepare_data(frame, target="y", weight_column="w")
    assert err.value.violations[0].field == "weight_column"
    assert "row 1" in err.value.message
