"""Study options of issue 12 in the domain: folds follow the split, final fit, objectives."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_domain import binary_split, invalid

from arbor_training.domain import (
    ExperimentInput,
    PostprocessingInput,
    PreprocessingSpec,
    StudySpec,
    validate_experiment,
)
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


def test_cv_auto_cross_validates_small_data_only() -> None:
    """``cv_auto``: the split's recorded size chooses: 5 folds up to 5,000 rows and 100,000
    cells (train + validation rows x feature columns), none above; the experiment keeps the
    folds chosen, the split's fold rule, and that they were chosen."""

    def chosen(rows: int, columns: int = 3, exclude: tuple[str, ...] = ()) -> StudySpec:
        names = {f"x{i}": "Float64" for i in range(columns)} | {"label": "String"}
        base = binary_split(columns=names)
        parts = {n: replace(p, row_count=rows // 2) for n, p in base.parts.items()}
        data = ExperimentInput(
            split="splits/s1",
            cv_auto=True,
            preprocessing=PreprocessingSpec(exclude_columns=exclude),
        )
        spec = validate_experiment(data, replace(base, parts=parts), search_spaces)
        assert spec.study.cv_auto and spec.study.to_dict()["cv_auto"] is True
        assert bool(spec.study.cv_rule) == bool(spec.study.cv_folds)
        return spec.study

    assert chosen(4_000).cv_folds == 5
    assert chosen(5_000).cv_folds == 5
    assert chosen(5_002).cv_folds == 0  # more rows
    assert chosen(4_000, columns=30).cv_folds == 0  # 120,000 cells
    excluded = tuple(f"x{i}" for i in range(6))
    assert chosen(4_000, columns=30, exclude=excluded).cv_folds == 5  # 96,000 cells
    # the folds are chosen, or given, not both
    assert "experiment.study.cv_auto" in invalid(
        ExperimentInput(split="splits/s1", cv_auto=True, cv_folds=3)
    )


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
