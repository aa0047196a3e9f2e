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


def test_auto_blends_three_trials_by_default_and_a_library_one() -> None:
    def study(**changes: object) -> object:
        return validate_experiment(
            ExperimentInput(split="splits/s1", **changes), binary_split(), search_spaces
        ).study

    assert study(model_type="auto").ensemble_size == 3
    assert study(model_type="lightgbm").ensemble_size == 1
    assert study(model_type="auto", ensemble_size=1).ensemble_size == 1
    assert study(model_type="xgboost", ensemble_size=4).to_dict()["ensemble_size"] == 4
    assert set(invalid(ExperimentInput(split="splits/s1", ensemble_size=9))) == {
        "experiment.study.ensemble_size"
    }
    # an ensemble is what a study registers, never what it trains
    assert set(invalid(ExperimentInput(split="splits/s1", model_type="ensemble"))) == {
        "experiment.model_type"
    }


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
