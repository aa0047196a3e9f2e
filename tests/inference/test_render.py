"""Predict answers are built as wire bytes: they must parse to the message built field by field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from arbor.inference.v1 import inference_service_pb2 as pb
from arbor_inference.api import label_value, render_predict
from arbor_inference.domain import PredictResult, ServedModel
from arbor_ml import TaskType

SERVED = ServedModel("models/m/versions/3", "m", 3, 2, "experiments/e", 1, 1)


@pytest.mark.parametrize(
    "class_values",
    [["no", "yes"], [10, 20, 30], [True, False], ["a", "bb", "ccc", "dddd"]],
    ids=["strings", "numbers", "bools", "lengths-differ"],
)
@pytest.mark.parametrize("rows", [1, 63, 64, 1000])
def test_labels_and_probabilities_parse_to_the_message_built_field_by_field(
    class_values: list[Any], rows: int
) -> None:
    rng = np.random.default_rng(rows)
    label_index = rng.integers(0, len(class_values), rows)
    probabilities = rng.random((rows, len(class_values)))
    classes = [str(v) for v in class_values]
    result = PredictResult(
        SERVED,
        rows,
        TaskType.MULTICLASS,
        label_index=label_index,
        class_values=class_values,
        classes=classes,
        probabilities=probabilities,
    )
    expected = pb.PredictResponse(row_count=rows, classes=classes)
    expected.served_model.model_version = SERVED.model_version
    expected.served_model.model = "m"
    expected.served_model.version = 3
    expected.served_model.stage = 2  # type: ignore[assignment]
    expected.served_model.experiment = "experiments/e"
    expected.served_model.model_type = 1  # type: ignore[assignment]
    expected.served_model.task_type = 1  # type: ignore[assignment]
    expected.labels.extend(label_value(class_values[i]) for i in label_index)
    expected.probabilities.extend(probabilities.ravel().tolist())
    wire = render_predict(result)
    assert isinstance(wire, bytes)
    assert pb.PredictResponse.FromString(wire) == expected


def test_regression_values_parse_back() -> None:
    values = np.linspace(-3, 3, 500)
    wire = render_predict(PredictResult(SERVED, 500, TaskType.REGRESSION, values=values))
    answer = pb.PredictResponse.FromString(wire)  # type: ignore[arg-type]
    assert answer.row_count == 500 and list(answer.values) == values.tolist()
    assert not answer.labels and not answer.classes


@pytest.mark.parametrize(
    "elements",
    [[b"\x00ab\x00", b"cd\x00\x00"], [b"x", b"yyy", b"", b"zz\x00"]],
    ids=["one-length-with-nuls", "lengths-differ"],
)
@pytest.mark.parametrize("rows", [0, 5, 64, 3000])
def test_choices_copy_each_rows_element_as_a_join_would(elements: list[bytes], rows: int) -> None:
    from arbor_inference.choices import Choices

    index = np.random.default_rng(rows).integers(0, len(elements), rows)
    assert Choices(elements).join(index) == b"".join(elements[i] for i in index)
