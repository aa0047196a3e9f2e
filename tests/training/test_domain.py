"""Unit tests of the domain: configuration validation, search-space overrides, state machine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from arbor_core.errors import FailedPrecondition, InvalidArgument
from arbor_ml.types import Direction, TaskType
from arbor_training.domain import (
    AUTO,
    FINAL_STATES,
    TRANSITIONS,
    ExperimentInput,
    ExperimentState,
    ParamRangeInput,
    PostprocessingInput,
    PreprocessingSpec,
    Pruner,
    Sampler,
    SplitInfo,
    SplitPartInfo,
    check_transition,
    check_update_mask,
    parse_experiment_name,
    validate_experiment,
    validate_experiment_id,
)
from arbor_training.study import search_spaces


def _part(name: str, balance: dict[str, int] | None = None) -> SplitPartInfo:
    return SplitPartInfo(name, f"splits/s1/{name}.parquet", "", "0" * 64, 10, 100, balance or {})


def binary_split(**changes: object) -> SplitInfo:
    split = SplitInfo(
        name="splits/s1",
        ready=True,
        target_column="label",
        task_type=TaskType.BINARY,
        columns={"x1": "Float64", "x2": "Int64", "color": "String", "label": "String"},
        parts={
            "train": _part("train", {"yes": 30, "no": 70}),
            "validation": _part("validation", {"yes": 10, "no": 20}),
        },
        content_hash="abc",
    )
    return replace(split, **changes)  # type: ignore[arg-type]


def regression_split() -> SplitInfo:
    return binary_split(
        target_column="y",
        task_type=TaskType.REGRESSION,
        columns={"x1": "Float64", "color": "String", "y": "Float64"},
        parts={"train": _part("train"), "validation": _part("validation")},
    )


def violations(err: InvalidArgument) -> dict[str, str]:
    return {v.field: v.description for v in err.violations}


def invalid(data: ExperimentInput, split: SplitInfo | None = None) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        validate_experiment(data, split or binary_split(), search_spaces)
    return violations(info.value)


# --------------------------------------------------------------------------- defaults


def test_defaults_are_resolved() -> None:
    spec = validate_experiment(ExperimentInput(split="splits/s1"), binary_split(), search_spaces)
    assert spec.model_type == "catboost"
    assert spec.task_type is TaskType.BINARY
    assert spec.metric == "roc_auc"
    assert spec.direction is Direction.MAXIMIZE
    assert spec.study.n_trials == 20
    assert spec.study.sampler is Sampler.TPE
    assert spec.study.pruner is Pruner.MEDIAN
    assert spec.study.early_stopping_rounds == 50
    assert spec.study.max_iterations == 1000
    assert spec.study.parallelism == 1
    assert spec.model_name == "s1"
    assert spec.target_column == "label"
    assert set(spec.parts) == {"train", "validation"}


def test_task_is_inferred_from_the_split_and_metric_direction_follows() -> None:
    spec = validate_experiment(
        ExperimentInput(split="splits/s1", metric="mae"), regression_split(), search_spaces
    )
    assert spec.task_type is TaskType.REGRESSION
    assert spec.direction is Direction.MINIMIZE


def test_timeout_alone_means_no_trial_limit() -> None:
    spec = validate_experiment(
        ExperimentInput(split="splits/s1", timeout_seconds=60), binary_split(), search_spaces
    )
    assert spec.study.n_trials == 0
    assert spec.study.timeout_seconds == 60


def test_spec_round_trips_through_its_stored_form() -> None:
    from arbor_training.domain import ExperimentSpec

    data = ExperimentInput(
        split="splits/s1",
        model_type="xgboost",
        search_space={"max_depth": ParamRangeInput("int", 2, 4)},
        preprocessing=PreprocessingSpec(exclude_columns=("x2",)),
        numeric_imputation="median",
    )
    spec = validate_experiment(data, binary_split(), search_spaces)
    assert ExperimentSpec.from_dict(spec.to_dict()) == spec


# --------------------------------------------------------------------------- bad combinations


@pytest.mark.parametrize(
    ("data", "split", "field"),
    [
        (ExperimentInput(split="splits/s1", metric="rmse"), None, "experiment.metric"),
        (ExperimentInput(split="splits/s1", metric="nope"), None, "experiment.metric"),
        (
            ExperimentInput(split="splits/s1", metric="roc_auc"),
            regression_split(),
            "experiment.metric",
        ),
        (ExperimentInput(split="splits/s1", task_type="regression"), None, "experiment.task_type"),
        (ExperimentInput(split="splits/s1", task_type="multiclass"), None, "experiment.task_type"),
        (ExperimentInput(split="splits/s1", model_type="sklearn"), None, "experiment.model_type"),
        (ExperimentInput(split="splits/s1", n_trials=-1), None, "experiment.study.n_trials"),
        (ExperimentInput(split="splits/s1", timeout_seconds=-5), None, "experiment.study.timeout"),
        (ExperimentInput(split="splits/s1", sampler="grid"), None, "experiment.study.sampler"),
        (ExperimentInput(split="splits/s1", pruner="sha"), None, "experiment.study.pruner"),
        (
            ExperimentInput(split="splits/s1", early_stopping_rounds=-1),
            None,
            "experiment.study.early_stopping_rounds",
        ),
        (ExperimentInput(split="splits/s1", cv_folds=21), None, "experiment.study.cv_folds"),
        (ExperimentInput(split="splits/s1", final_fit="x"), None, "experiment.study.final_fit"),
        (ExperimentInput(split="splits/s1", threads=-2), None, "experiment.study.threads"),
        (ExperimentInput(split="splits/s1", device="tpu"), None, "experiment.study.device"),
        (ExperimentInput(split="splits/s1", parallelism=99), None, "experiment.study.parallelism"),
        (
            ExperimentInput(split="splits/s1", max_iterations=-1),
            None,
            "experiment.study.max_iterations",
        ),
        (
            ExperimentInput(
                split="splits/s1", preprocessing=PreprocessingSpec(include_columns=("nope",))
            ),
            None,
            "experiment.preprocessing.include_columns",
        ),
        (
            ExperimentInput(
                split="splits/s1", preprocessing=PreprocessingSpec(exclude_columns=("label",))
            ),
            None,
            "experiment.preprocessing.exclude_columns",
        ),
        (
            ExperimentInput(
                split="splits/s1",
                preprocessing=PreprocessingSpec(exclude_columns=("x1", "x2", "color")),
            ),
            None,
            "experiment.preprocessing",
        ),
        (
            ExperimentInput(split="splits/s1", postprocessing=PostprocessingInput(clip_min=0.0)),
            None,
            "experiment.postprocessing.clip_min",
        ),
        (
            ExperimentInput(
                split="splits/s1", postprocessing=PostprocessingInput(decision_threshold=1.5)
            ),
            None,
            "experiment.postprocessing.decision_threshold",
        ),
        (
            ExperimentInput(
                split="splits/s1", postprocessing=PostprocessingInput(threshold_objective="auc")
            ),
            None,
            "experiment.postprocessing.threshold_objective",
        ),
        (
            ExperimentInput(
                split="splits/s1", postprocessing=PostprocessingInput(decision_threshold=0.3)
            ),
            regression_split(),
            "experiment.postprocessing.decision_threshold",
        ),
        (
            ExperimentInput(
                split="splits/s1", postprocessing=PostprocessingInput(clip_min=5.0, clip_max=1.0)
            ),
            regression_split(),
            "experiment.postprocessing.clip_max",
        ),
        (ExperimentInput(split="splits/s1", model_name="a/b"), None, "experiment.model_name"),
        (
            ExperimentInput(split="splits/s1", labels={"bad key!": "x"}),
            None,
            "experiment.labels[bad key!]",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_bad_combination_names_its_field(
    data: ExperimentInput, split: SplitInfo | None, field: str
) -> None:
    assert field in invalid(data, split)


def test_every_bad_field_is_reported_at_once() -> None:
    found = invalid(
        ExperimentInput(split="splits/s1", metric="rmse", n_trials=-1, device="tpu", threads=-1)
    )
    assert {
        "experiment.metric",
        "experiment.study.n_trials",
        "experiment.study.device",
        "experiment.study.threads",
    } <= set(found)


def test_split_must_be_ready_and_have_train_and_validation() -> None:
    with pytest.raises(FailedPrecondition) as info:
        validate_experiment(
            ExperimentInput(split="splits/s1"), binary_split(ready=False), search_spaces
        )
    assert info.value.reason == "SPLIT_NOT_READY"
    with pytest.raises(FailedPrecondition) as info:
        validate_experiment(
            ExperimentInput(split="splits/s1"),
            binary_split(parts={"train": _part("train")}),
            search_spaces,
        )
    assert info.value.reason == "SPLIT_PART_MISSING"


def test_names_and_ids() -> None:
    assert parse_experiment_name("experiments/abc-1") == "abc-1"
    for bad in ("abc", "experiments/", "experiments/ABC", "experiments/a/b"):
        with pytest.raises(InvalidArgument):
            parse_experiment_name(bad)
    assert validate_experiment_id("")  # generated
    with pytest.raises(InvalidArgument) as info:
        validate_experiment_id("-bad")
    assert violations(info.value) == {"experiment_id": info.value.violations[0].description}


# --------------------------------------------------------------------------- search space


def test_search_space_override_is_kept() -> None:
    spec = validate_experiment(
        ExperimentInput(
            split="splits/s1",
            search_space={
                "depth": ParamRangeInput("int", 4, 6),
                "learning_rate": ParamRangeInput("float", 0.01, 0.1, log=True),
                "l2_leaf_reg": ParamRangeInput("choices", choices=(1.0, 3.0)),
            },
        ),
        binary_split(),
        search_spaces,
    )
    space = spec.study.search_space
    assert space["depth"].override() == {"low": 4, "high": 6, "log": False}
    assert space["learning_rate"].override() == {"low": 0.01, "high": 0.1, "log": True}
    assert space["l2_leaf_reg"].override() == {"choices": [1.0, 3.0]}


@pytest.mark.parametrize(
    ("name", "given", "hint"),
    [
        ("max_depth", ParamRangeInput("int", 2, 4), "not a tunable parameter"),  # xgboost's name
        ("depth", ParamRangeInput("float", 2, 4), "int_range"),
        ("learning_rate", ParamRangeInput("int", 1, 2), "float_range"),
        ("learning_rate", ParamRangeInput("float", 0.5, 0.1), "above"),
        ("learning_rate", ParamRangeInput("float", 0.0, 0.1, log=True), "log"),
        ("depth", ParamRangeInput("choices", choices=(4.5,)), "integers"),
        ("depth", ParamRangeInput("choices", choices=(4, 4)), "repeat"),
        ("depth", ParamRangeInput(), "exactly one"),
    ],
)
def test_bad_search_space_overrides(name: str, given: ParamRangeInput, hint: str) -> None:
    found = invalid(ExperimentInput(split="splits/s1", search_space={name: given}))
    field = f"experiment.study.search_space[{name}]"
    assert field in found
    assert hint in found[field]


def test_auto_prefixes_parameters_with_the_library() -> None:
    spec = validate_experiment(
        ExperimentInput(
            split="splits/s1",
            model_type=AUTO,
            search_space={"xgboost.max_depth": ParamRangeInput("int", 2, 4)},
        ),
        binary_split(),
        search_spaces,
    )
    assert [m.value for m in spec.model_types] == ["catboost", "xgboost", "lightgbm"]
    found = invalid(
        ExperimentInput(
            split="splits/s1",
            model_type=AUTO,
            search_space={"max_depth": ParamRangeInput("int", 2, 4)},
        )
    )
    assert "experiment.study.search_space[max_depth]" in found


def test_cmaes_needs_its_package() -> None:
    from arbor_training.domain import sampler_installed

    data = ExperimentInput(split="splits/s1", sampler="cmaes")
    if sampler_installed(Sampler.CMAES):
        assert (
            validate_experiment(data, binary_split(), search_spaces).study.sampler is Sampler.CMAES
        )
    else:
        assert "cmaes" in invalid(data)["experiment.study.sampler"]


def test_cmaes_refuses_categorical_choices() -> None:
    found = invalid(
        ExperimentInput(
            split="splits/s1",
            sampler="cmaes",
            search_space={"depth": ParamRangeInput("choices", choices=(4, 6))},
        )
    )
    assert "experiment.study.sampler" in found


# --------------------------------------------------------------------------- state machine


def test_state_machine() -> None:
    Q, R, S, F, C = (
        ExperimentState.QUEUED,
        ExperimentState.RUNNING,
        ExperimentState.SUCCEEDED,
        ExperimentState.FAILED,
        ExperimentState.CANCELLED,
    )
    assert TRANSITIONS[Q] == {R, C, F}
    assert TRANSITIONS[R] == {S, F, C}
    for final in FINAL_STATES:
        assert TRANSITIONS[final] == frozenset()
        assert final.is_final
    assert not Q.is_final and not R.is_final
    check_transition(Q, R, "e1")
    for current, new in [(Q, S), (R, Q), (S, R), (C, R), (F, S), (S, C)]:
        with pytest.raises(FailedPrecondition) as info:
            check_transition(current, new, "e1")
        assert info.value.reason == "INVALID_STATE_TRANSITION"


def test_update_mask_allows_metadata_only() -> None:
    assert check_update_mask(["labels", "display_name"]) == ["labels", "display_name"]
    with pytest.raises(InvalidArgument) as info:
        check_update_mask([])
    assert info.value.reason == "UPDATE_MASK_REQUIRED"
    with pytest.raises(InvalidArgument) as info:
        check_update_mask(["state", "description"])
    assert "update_mask" in violations(info.value)
