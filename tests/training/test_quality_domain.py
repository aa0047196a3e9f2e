"""Study options of issue 12 in the domain: folds follow the split, final fit, objectives."""

from __future__ import annotations

import pytest
from test_domain import binary_split, invalid

from arbor_training.domain import ExperimentInput, PostprocessingInput, validate_experiment
from arbor_training.study import expected_fit_rows, search_spaces


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"strategy": "random", "stratified": True}, {"kind": "stratified", "column": "label"}),
        ({"strategy": "random"}, {"kind": "random", "column": None}),
        ({"strategy": "entity", "entity_column": "x2"}, {"kind": "group", "column": "x2"}),
        ({"strategy": "time", "time_column": "x1"}, {"kind": "time", "column": "x1"}),
    ],
)
def test_cross_validation_follows_the_splits_rule(changes: dict, rule: dict) -> None:
    split = binary_split(**changes)
    spec = validate_experiment(ExperimentInput(split="splits/s1", cv_folds=4), split, search_spaces)
    assert spec.study.cv_folds == 4 and spec.study.cv_rule == rule
    # Trial rows: 3/4 of train + validation (100 + 100 recorded rows), half for time folds.
    assert expected_fit_rows(spec) == (100 if rule["kind"] == "time" else 150)
    off = validate_experiment(ExperimentInput(split="splits/s1", cv_folds=1), split, search_spaces)
    assert off.study.cv_folds == 0 and off.study.cv_rule == {}


def test_final_fit_and_threshold_objectives() -> None:
    spec = validate_experiment(
        ExperimentInput(
            split="splits/s1",
            final_fit="ALL",
            postprocessing=PostprocessingInput(threshold_objective="Recall@Precision=0.9"),
        ),
        binary_split(),
        search_spaces,
    )
    assert spec.study.final_fit == "all"
    assert spec.postprocessing.threshold_objective == "recall@precision=0.9"
    assert spec.study.to_dict()["final_fit"] == "all"
    bad = invalid(
        ExperimentInput(
            split="splits/s1",
            cv_folds=-1,
            final_fit="sometimes",
            postprocessing=PostprocessingInput(threshold_objective="recall@precision=2"),
        )
    )
    assert {
        "experiment.study.cv_folds",
        "experiment.study.final_fit",
        "experiment.postprocessing.threshold_objective",
    } <= set(bad)


def test_class_weight_can_be_overridden_for_classification() -> None:
    from arbor_training.domain import ParamRangeInput

    spec = validate_experiment(
        ExperimentInput(
            split="splits/s1",
            search_space={"class_weight": ParamRangeInput(kind="choices", choices=("balanced",))},
        ),
        binary_split(),
        search_spaces,
    )
    assert spec.study.search_space["class_weight"].choices == ("balanced",)
