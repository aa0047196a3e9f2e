"""The training service's rules: experiment configuration, validation and the state machine.

This module knows neither gRPC nor SQLAlchemy. ``api.py`` turns protobuf requests into the
plain ``*Input`` records below; :func:`validate_experiment` checks them against the split they
name (reporting every bad field at once, each by its proto path) and resolves every default,
producing the :class:`ExperimentSpec` that is stored with the experiment and that a worker
later runs exactly as stored. The state machine is :data:`TRANSITIONS`.
"""

from __future__ import annotations

import importlib.util
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from arbor.common.v1 import common_pb2
from arbor.events.v1 import events_pb2
from arbor_core import metrics as arbor_metrics
from arbor_core.errors import (
    Aborted,
    ErrorCollector,
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
)
from arbor_core.events import new_event
from arbor_core.logging import get_request_id
from arbor_core.pagination import (
    clamp_page_size,
    decode_offset,
    decode_page_token,
    encode_page_token,
    filter_fingerprint,
)
from arbor_ml.automl import auto_cv_folds
from arbor_ml.metrics import METRICS, default_metric, metric_direction, metrics_for_task
from arbor_ml.search_space import ParamSpec
from arbor_ml.threshold import parse_threshold_objective
from arbor_ml.types import LIBRARIES, Direction, ModelType, TaskType

EVENT_SOURCE = "arbor.training"
JOB_QUEUE = "training"

EXPERIMENT_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
SPLIT_NAME_RE = re.compile(r"splits/([A-Za-z0-9_.-]{1,128})")

DEFAULT_N_TRIALS = 20
MAX_N_TRIALS = 10_000
DEFAULT_EARLY_STOPPING_ROUNDS = 50
DEFAULT_MAX_ITERATIONS = 1000
MAX_ITERATIONS = 100_000
MAX_PARALLELISM = 16
MAX_CV_FOLDS = 20
#: StudyConfig.ensemble_size: at most this many trials blended into one model; AUTO's default.
MAX_ENSEMBLE_SIZE = 8
DEFAULT_AUTO_ENSEMBLE_SIZE = 3
#: StudyConfig.final_fit values (arbor_ml.automl.FinalFit).
FINAL_FITS = ("auto", "all", "train", "trial")
MAX_LABELS = 64
MAX_DISPLAY_NAME = 256
MAX_DESCRIPTION = 4096
MAX_LABEL_VALUE = 256
#: Metadata fields UpdateExperiment may change.
MUTABLE_FIELDS = ("display_name", "description", "labels")


# --------------------------------------------------------------------------- enums


class ExperimentState(StrEnum):
    """Lifecycle of an experiment; stored as these strings."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {ExperimentState.SUCCEEDED, ExperimentState.FAILED, ExperimentState.CANCELLED}
)

#: Every allowed change of state. A final state has no way out.
TRANSITIONS: dict[ExperimentState, frozenset[ExperimentState]] = {
    ExperimentState.QUEUED: frozenset(
        {ExperimentState.RUNNING, ExperimentState.CANCELLED, ExperimentState.FAILED}
    ),
    ExperimentState.RUNNING: frozenset(
        {ExperimentState.SUCCEEDED, ExperimentState.FAILED, ExperimentState.CANCELLED}
    ),
    ExperimentState.SUCCEEDED: frozenset(),
    ExperimentState.FAILED: frozenset(),
    ExperimentState.CANCELLED: frozenset(),
}

#: The event type announcing each state an experiment can enter.
STATE_EVENTS: dict[ExperimentState, str] = {
    ExperimentState.QUEUED: "experiment.queued",
    ExperimentState.RUNNING: "experiment.started",
    ExperimentState.SUCCEEDED: "experiment.succeeded",
    ExperimentState.FAILED: "experiment.failed",
    ExperimentState.CANCELLED: "experiment.cancelled",
}


def can_transition(current: ExperimentState, new: ExperimentState) -> bool:
    return new in TRANSITIONS[current]


def check_transition(current: ExperimentState, new: ExperimentState, experiment_id: str) -> None:
    """Raise ``FailedPrecondition`` (reason ``INVALID_STATE_TRANSITION``) for a forbidden move."""
    if not can_transition(current, new):
        raise FailedPrecondition(
            f"experiment {experiment_id!r} is {current.value} and cannot become {new.value}",
            reason="INVALID_STATE_TRANSITION",
            violations=[
                PreconditionViolation(
                    "STATE",
                    f"experiments/{experiment_id}",
                    f"state is {current.value}; allowed next states: "
                    + (", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none"),
                )
            ],
            metadata={"state": current.value, "requested_state": new.value},
        )


class TrialState(StrEnum):
    """State of one recorded trial (the service records finished trials only)."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAILED = "FAILED"


class Sampler(StrEnum):
    TPE = "tpe"
    RANDOM = "random"
    CMAES = "cmaes"
    QMC = "qmc"


class Pruner(StrEnum):
    MEDIAN = "median"
    HYPERBAND = "hyperband"
    NONE = "none"


def sampler_installed(sampler: Sampler) -> bool:
    """Whether the packages a sampler needs are importable here (CMA-ES needs ``cmaes``)."""
    if sampler is Sampler.CMAES:
        return importlib.util.find_spec("cmaes") is not None
    return True


AUTO = "auto"
#: Model types an experiment may name: the three libraries, or ``auto`` (search across them).
EXPERIMENT_MODEL_TYPES = (*(m.value for m in LIBRARIES), AUTO)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ParamRange:
    """One search-space override: a float or int range, or a set of choices."""

    kind: str  # "float" | "int" | "choices"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choices":
            return {"kind": "choices", "choices": list(self.choices)}
        low: float | int = int(self.low) if self.kind == "int" else self.low
        high: float | int = int(self.high) if self.kind == "int" else self.high
        return {"kind": self.kind, "low": low, "high": high, "log": self.log}

    def override(self) -> dict[str, Any]:
        """The override in ``arbor_ml.search_space`` form (``low/high/log`` or ``choices``)."""
        if self.kind == "choices":
            return {"choices": list(self.choices)}
        return {k: v for k, v in self.to_dict().items() if k != "kind"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParamRange:
        if data["kind"] == "choices":
            return cls(kind="choices", choices=tuple(data["choices"]))
        return cls(kind=data["kind"], low=data["low"], high=data["high"], log=bool(data["log"]))


@dataclass(frozen=True)
class StudySpec:
    """The study as a worker runs it; every default already resolved."""

    n_trials: int = DEFAULT_N_TRIALS  # 0: no limit (then timeout_seconds is set)
    timeout_seconds: float | None = None
    sampler: Sampler = Sampler.TPE
    pruner: Pruner = Pruner.MEDIAN
    seed: int = 0
    search_space: dict[str, ParamRange] = field(default_factory=dict)
    early_stopping_rounds: int = DEFAULT_EARLY_STOPPING_ROUNDS
    threads: int = 0  # 0: all cores
    device: str = "cpu"
    parallelism: int = 1
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    cv_folds: int = 0  # 0: train/validation; k >= 2: k folds over train + validation
    #: the folds were chosen from the split's size (``arbor_ml.automl.auto_cv_folds``)
    cv_auto: bool = False
    cv_rule: dict[str, str | None] = field(default_factory=dict)  # arbor_ml.cv.FoldRule
    final_fit: str = "auto"  # arbor_ml.automl.FinalFit
    ensemble_size: int = 1  # most trials blended into the registered model

    def to_dict(self) -> dict[str, Any]:
        return {
            "ensemble_size": self.ensemble_size,
            "cv_folds": self.cv_folds,
            "cv_auto": self.cv_auto,
            "cv_rule": dict(self.cv_rule),
            "final_fit": self.final_fit,
            "n_trials": self.n_trials,
            "timeout_seconds": self.timeout_seconds,
            "sampler": self.sampler.value,
            "pruner": self.pruner.value,
            "seed": self.seed,
            "search_space": {k: v.to_dict() for k, v in sorted(self.search_space.items())},
            "early_stopping_rounds": self.early_stopping_rounds,
            "threads": self.threads,
            "device": self.device,
            "parallelism": self.parallelism,
            "max_iterations": self.max_iterations,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        return cls(
            n_trials=int(data["n_trials"]),
            timeout_seconds=data.get("timeout_seconds"),
            sampler=Sampler(data["sampler"]),
            pruner=Pruner(data["pruner"]),
            seed=int(data["seed"]),
            search_space={
                k: ParamRange.from_dict(v) for k, v in (data.get("search_space") or {}).items()
            },
            early_stopping_rounds=int(data["early_stopping_rounds"]),
            threads=int(data["threads"]),
            device=str(data["device"]),
            parallelism=int(data.get("parallelism", 1)),
            max_iterations=int(data.get("max_iterations", DEFAULT_MAX_ITERATIONS)),
            cv_folds=int(data.get("cv_folds") or 0),
            cv_auto=bool(data.get("cv_auto", False)),
            cv_rule=dict(data.get("cv_rule") or {}),
            final_fit=str(data.get("final_fit") or "auto"),
            ensemble_size=int(data.get("ensemble_size") or 1),
        )


@dataclass(frozen=True)
class PreprocessingSpec:
    """The feature preparation an experiment asked for (mapped onto arbor_ml's options)."""

    include_columns: tuple[str, ...] = ()
    exclude_columns: tuple[str, ...] = ()
    numeric_imputation: str = "native"  # native | median | constant
    numeric_fill_value: float = 0.0
    keep_constant_columns: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "include_columns": list(self.include_columns),
            "exclude_columns": list(self.exclude_columns),
            "numeric_imputation": self.numeric_imputation,
            "numeric_fill_value": self.numeric_fill_value,
            "keep_constant_columns": self.keep_constant_columns,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessingSpec:
        return cls(
            include_columns=tuple(data.get("include_columns") or ()),
            exclude_columns=tuple(data.get("exclude_columns") or ()),
            numeric_imputation=str(data.get("numeric_imputation") or "native"),
            numeric_fill_value=float(data.get("numeric_fill_value") or 0.0),
            keep_constant_columns=bool(data.get("keep_constant_columns")),
        )

    def ml_options(self) -> dict[str, Any]:
        """The options for ``arbor_ml.preprocessing.PreprocessingOptions.from_dict``."""
        options: dict[str, Any] = {
            "exclude": list(self.exclude_columns),
            "numeric_missing": self.numeric_imputation,
            "fill_value": self.numeric_fill_value,
            "drop_constant": not self.keep_constant_columns,
        }
        if self.include_columns:
            options["features"] = list(self.include_columns)
        return options


@dataclass(frozen=True)
class PostprocessingSpec:
    """How raw outputs become answers; classification and regression options never mix."""

    decision_threshold: float | None = None
    threshold_objective: str = ""
    clip_min: float | None = None
    clip_max: float | None = None
    round_digits: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    log_target: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_threshold": self.decision_threshold,
            "threshold_objective": self.threshold_objective,
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "round_digits": self.round_digits,
            "scale": self.scale,
            "offset": self.offset,
            "log_target": self.log_target,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostprocessingSpec:
        return cls(
            decision_threshold=data.get("decision_threshold"),
            threshold_objective=str(data.get("threshold_objective") or ""),
            clip_min=data.get("clip_min"),
            clip_max=data.get("clip_max"),
            round_digits=data.get("round_digits"),
            scale=float(data.get("scale", 1.0)),
            offset=float(data.get("offset", 0.0)),
            log_target=bool(data.get("log_target")),
        )

    def ml_options(self) -> dict[str, Any]:
        """The options for ``arbor_ml.postprocessing.PostprocessingOptions.from_dict``."""
        options: dict[str, Any] = {
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "round_digits": self.round_digits,
            "scale": self.scale,
            "offset": self.offset,
        }
        if self.decision_threshold is not None:
            options["threshold"] = self.decision_threshold
        return options


# --------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class SplitPartInfo:
    """One Parquet part as the split service recorded it."""

    part: str
    key: str
    uri: str
    sha256: str
    size_bytes: int
    row_count: int
    class_balance: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "key": self.key,
            "uri": self.uri,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "row_count": self.row_count,
            "class_balance": dict(self.class_balance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitPartInfo:
        return cls(
            part=data["part"],
            key=data["key"],
            uri=data.get("uri", ""),
            sha256=data["sha256"],
            size_bytes=int(data.get("size_bytes", 0)),
            row_count=int(data.get("row_count", 0)),
            class_balance={k: int(v) for k, v in (data.get("class_balance") or {}).items()},
        )


@dataclass(frozen=True)
class SplitInfo:
    """What an experiment needs to know about its split (read from the split service)."""

    name: str
    ready: bool
    target_column: str
    task_type: TaskType | None
    columns: dict[str, str]  # column -> Polars dtype, in source order
    parts: dict[str, SplitPartInfo]
    content_hash: str
    row_count: int = 0
    strategy: str = "random"  # random | time | entity
    stratified: bool = False
    time_column: str = ""
    entity_column: str = ""

    def fold_rule(self) -> dict[str, str | None]:
        """Cross-validation folds that follow this split's rules (``arbor_ml.cv.FoldRule``)."""
        if self.strategy == "time" and self.time_column:
            return {"kind": "time", "column": self.time_column}
        if self.strategy == "entity" and self.entity_column:
            return {"kind": "group", "column": self.entity_column}
        if self.stratified:
            return {"kind": "stratified", "column": self.target_column}
        return {"kind": "random", "column": None}

    @property
    def split_id(self) -> str:
        return self.name.removeprefix("splits/")

    @property
    def class_count(self) -> int | None:
        """Distinct target values seen in the train part (None when not recorded)."""
        train = self.parts.get("train")
        if train is None or not train.class_balance:
            return None
        return len(train.class_balance)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ParamRangeInput:
    """A search-space override as the caller sent it (``kind`` empty when none was set)."""

    kind: str = ""
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ExperimentInput:
    """CreateExperiment's experiment, as plain values; enums as lower-case names, '' = unset."""

    split: str = ""
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    model_type: str = ""
    task_type: str = ""
    metric: str = ""
    n_trials: int = 0
    timeout_seconds: float | None = None
    sampler: str = ""
    pruner: str = ""
    seed: int = 0
    search_space: dict[str, ParamRangeInput] = field(default_factory=dict)
    early_stopping_rounds: int = 0
    cv_folds: int = 0
    cv_auto: bool = False
    threads: int = 0
    device: str = ""
    parallelism: int = 0
    max_iterations: int = 0
    final_fit: str = ""
    ensemble_size: int = 0
    preprocessing: PreprocessingSpec = field(default_factory=PreprocessingSpec)
    numeric_imputation: str = ""  # as sent; "" means unset
    postprocessing: PostprocessingInput | None = None
    model_name: str = ""


@dataclass(frozen=True)
class PostprocessingInput:
    """PostprocessingOptions as sent (0 / '' / None mean unset)."""

    decision_threshold: float = 0.0
    threshold_objective: str = ""
    clip_min: float | None = None
    clip_max: float | None = None
    round_digits: int | None = None
    scale: float = 0.0
    offset: float = 0.0
    log_target: bool = False


# --------------------------------------------------------------------------- the resolved spec


@dataclass(frozen=True)
class ExperimentSpec:
    """An experiment's validated configuration: exactly what the worker runs."""

    split: str
    model_type: str  # a ModelType value or "auto"
    task_type: TaskType
    metric: str
    direction: Direction
    study: StudySpec
    preprocessing: PreprocessingSpec
    postprocessing: PostprocessingSpec
    model_name: str
    target_column: str
    split_content_hash: str
    parts: dict[str, SplitPartInfo]
    columns: dict[str, str]

    @property
    def split_id(self) -> str:
        return self.split.removeprefix("splits/")

    @property
    def model_types(self) -> list[ModelType]:
        """The libraries the study may train (all three for ``auto``)."""
        if self.model_type == AUTO:
            return list(LIBRARIES)
        return [ModelType(self.model_type)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "model_type": self.model_type,
            "task_type": self.task_type.value,
            "metric": self.metric,
            "direction": self.direction.value,
            "study": self.study.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "postprocessing": self.postprocessing.to_dict(),
            "model_name": self.model_name,
            "target_column": self.target_column,
            "split_content_hash": self.split_content_hash,
            "parts": {k: v.to_dict() for k, v in self.parts.items()},
            "columns": dict(self.columns),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        return cls(
            split=data["split"],
            model_type=data["model_type"],
            task_type=TaskType(data["task_type"]),
            metric=data["metric"],
            direction=Direction(data["direction"]),
            study=StudySpec.from_dict(data["study"]),
            preprocessing=PreprocessingSpec.from_dict(data["preprocessing"]),
            postprocessing=PostprocessingSpec.from_dict(data["postprocessing"]),
            model_name=data["model_name"],
            target_column=data["target_column"],
            split_content_hash=data.get("split_content_hash", ""),
            parts={k: SplitPartInfo.from_dict(v) for k, v in (data.get("parts") or {}).items()},
            columns=dict(data.get("columns") or {}),
        )


#: Per library and task: the tunable parameters (``Trainer.base_space()``).
SearchSpaces = Callable[[ModelType, TaskType], Mapping[str, ParamSpec]]


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_split_name(name: str, field_path: str = "experiment.split") -> str:
    """The split id of ``splits/{id}``; ``InvalidArgument`` otherwise."""
    match = SPLIT_NAME_RE.fullmatch(name or "")
    if match is None:
        raise InvalidArgument(
            "split must look like 'splits/{split_id}'" if name else "split is required",
            field=field_path,
            reason="INVALID_SPLIT_NAME" if name else "SPLIT_REQUIRED",
        )
    return match.group(1)


def parse_experiment_name(name: str, field_path: str = "name") -> str:
    """The experiment id of ``experiments/{id}``; ``InvalidArgument`` otherwise."""
    prefix = "experiments/"
    ident = name[len(prefix) :] if name.startswith(prefix) else ""
    if not EXPERIMENT_ID_RE.fullmatch(ident):
        raise InvalidArgument(
            f"name must look like 'experiments/{{experiment_id}}', got {name!r}",
            field=field_path,
            reason="INVALID_EXPERIMENT_NAME",
        )
    return ident


def new_experiment_id() -> str:
    return uuid.uuid4().hex


def validate_experiment_id(experiment_id: str) -> str:
    """A caller-chosen id, or a fresh one when empty."""
    if not experiment_id:
        return new_experiment_id()
    if not EXPERIMENT_ID_RE.fullmatch(experiment_id):
        raise InvalidArgument(
            "experiment_id must be 1-63 characters of [a-z0-9-], not starting or ending with '-'",
            field="experiment_id",
            reason="INVALID_EXPERIMENT_ID",
        )
    return experiment_id


def validate_request_id(request_id: str) -> str:
    if request_id and not REQUEST_ID_RE.fullmatch(request_id):
        raise InvalidArgument(
            "request_id must be 1-128 characters of [A-Za-z0-9_.:-]",
            field="request_id",
            reason="INVALID_REQUEST_ID",
        )
    return request_id


def check_metadata(
    errors: ErrorCollector,
    display_name: str,
    description: str,
    labels: Mapping[str, str],
    prefix: str = "experiment",
) -> None:
    """Display name, description and labels: the fields UpdateExperiment may change."""
    if len(display_name) > MAX_DISPLAY_NAME:
        errors.add(f"{prefix}.display_name", f"longer than {MAX_DISPLAY_NAME} characters")
    if len(description) > MAX_DESCRIPTION:
        errors.add(f"{prefix}.description", f"longer than {MAX_DESCRIPTION} characters")
    if len(labels) > MAX_LABELS:
        errors.add(f"{prefix}.labels", f"more than {MAX_LABELS} labels")
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            errors.add(f"{prefix}.labels[{key}]", "label keys are 1-63 of [A-Za-z0-9_./-]")
        if len(value) > MAX_LABEL_VALUE:
            errors.add(f"{prefix}.labels[{key}]", f"value longer than {MAX_LABEL_VALUE}")


def _is_numeric_dtype(dtype: str) -> bool:
    base = dtype.split("(", 1)[0]
    return base in {
        "Int8", "Int16", "Int32", "Int64", "Int128",
        "UInt8", "UInt16", "UInt32", "UInt64",
        "Float32", "Float64", "Decimal",
    }  # fmt: skip


def _is_float_dtype(dtype: str) -> bool:
    return dtype.split("(", 1)[0] in {"Float32", "Float64", "Decimal"}


def _resolve_task(
    errors: ErrorCollector, data: ExperimentInput, split: SplitInfo
) -> TaskType | None:
    """The task: the caller's (checked against the target), else the split's guess."""
    target_dtype = split.columns.get(split.target_column, "")
    classes = split.class_count
    if not data.task_type:
        if split.task_type is not None:
            return split.task_type
        if _is_float_dtype(target_dtype) or (classes is None and _is_numeric_dtype(target_dtype)):
            return TaskType.REGRESSION
        if classes == 2 or target_dtype == "Boolean":
            return TaskType.BINARY
        if classes is not None and classes > 2:
            return TaskType.MULTICLASS
        errors.add("experiment.task_type", "cannot infer the task from the split; set task_type")
        return None
    try:
        task = TaskType(data.task_type)
    except ValueError:
        errors.add("experiment.task_type", f"unknown task type {data.task_type!r}")
        return None
    where = "experiment.task_type"
    if task is TaskType.REGRESSION:
        if target_dtype and not _is_numeric_dtype(target_dtype):
            errors.add(where, f"target {split.target_column!r} is {target_dtype}, not a number")
            return None
        return task
    # Classification: the target's classes must fit.
    if _is_float_dtype(target_dtype) and (classes is None or classes > 20):
        errors.add(where, f"target {split.target_column!r} is continuous ({target_dtype})")
        return None
    if classes is not None:
        if task is TaskType.BINARY and classes != 2:
            errors.add(where, f"a binary task needs 2 classes; the target has {classes}")
            return None
        if task is TaskType.MULTICLASS and classes < 3:
            errors.add(
                where, f"the target has {classes} classes; use TASK_TYPE_BINARY for two classes"
            )
            return None
    return task


def _resolve_model_type(errors: ErrorCollector, value: str) -> str | None:
    if not value:
        return ModelType.CATBOOST.value
    if value == ModelType.ENSEMBLE.value:
        errors.add(
            "experiment.model_type",
            "an ensemble is what an AUTO study registers, not a library to train; "
            "use MODEL_TYPE_AUTO with study.ensemble_size",
        )
        return None
    if value not in EXPERIMENT_MODEL_TYPES:
        errors.add("experiment.model_type", f"unknown model type {value!r}")
        return None
    return value


def _resolve_metric(errors: ErrorCollector, metric: str, task: TaskType | None) -> str | None:
    name = metric.strip().lower()
    if name and name not in METRICS:
        errors.add("experiment.metric", f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
        return None
    if task is None:
        return name or None
    allowed = metrics_for_task(task)
    if not name:
        return default_metric(task)
    if name not in allowed:
        errors.add(
            "experiment.metric",
            f"metric {name!r} does not fit a {task.value} task; use one of {', '.join(allowed)}",
        )
        return None
    return name


def _resolve_study(
    errors: ErrorCollector,
    data: ExperimentInput,
    model_type: str | None,
    task: TaskType | None,
    spaces: SearchSpaces,
) -> StudySpec:
    n_trials = data.n_trials
    timeout = data.timeout_seconds
    if n_trials < 0:
        errors.add("experiment.study.n_trials", "must not be negative")
    elif n_trials > MAX_N_TRIALS:
        errors.add("experiment.study.n_trials", f"at most {MAX_N_TRIALS}")
    if timeout is not None and (not _is_finite(timeout) or timeout <= 0):
        errors.add("experiment.study.timeout", "must be a positive duration")
        timeout = None
    if n_trials == 0 and timeout is None:
        n_trials = DEFAULT_N_TRIALS
    sampler = Sampler.TPE
    if data.sampler:
        try:
            sampler = Sampler(data.sampler)
        except ValueError:
            errors.add("experiment.study.sampler", f"unknown sampler {data.sampler!r}")
    if sampler is Sampler.CMAES and not sampler_installed(sampler):
        errors.add(
            "experiment.study.sampler",
            "CMA-ES needs the 'cmaes' package, which this installation lacks; use TPE or QMC",
        )
    pruner = Pruner.MEDIAN
    if data.pruner:
        try:
            pruner = Pruner(data.pruner)
        except ValueError:
            errors.add("experiment.study.pruner", f"unknown pruner {data.pruner!r}")
    if data.early_stopping_rounds < 0:
        errors.add("experiment.study.early_stopping_rounds", "must not be negative")
    if data.cv_folds < 0 or data.cv_folds > MAX_CV_FOLDS:
        errors.add("experiment.study.cv_folds", f"must be in [0, {MAX_CV_FOLDS}]")
    elif data.cv_auto and data.cv_folds > 1:
        errors.add(
            "experiment.study.cv_auto",
            "cv_auto chooses the folds itself: leave cv_folds at 0, or set cv_folds alone",
        )
    final_fit = (data.final_fit or "auto").strip().lower()
    if final_fit not in FINAL_FITS:
        errors.add("experiment.study.final_fit", f"must be one of {', '.join(FINAL_FITS)}")
    if not 0 <= data.ensemble_size <= MAX_ENSEMBLE_SIZE:
        errors.add("experiment.study.ensemble_size", f"must be in [0, {MAX_ENSEMBLE_SIZE}]")
    if data.threads < 0:
        errors.add("experiment.study.threads", "must not be negative")
    device = (data.device or "cpu").strip().lower()
    if device not in ("cpu", "cuda"):
        errors.add("experiment.study.device", "must be 'cpu' or 'cuda'")
    if data.parallelism < 0 or data.parallelism > MAX_PARALLELISM:
        errors.add("experiment.study.parallelism", f"must be in [0, {MAX_PARALLELISM}]")
    if not 0 <= data.max_iterations <= MAX_ITERATIONS:
        errors.add("experiment.study.max_iterations", f"must be in [0, {MAX_ITERATIONS}]")
    space = _resolve_search_space(errors, data.search_space, model_type, task, spaces)
    if sampler is Sampler.CMAES and any(r.kind == "choices" for r in space.values()):
        errors.add(
            "experiment.study.sampler",
            "CMA-ES cannot sample categorical choices; use TPE or random with choices overrides",
        )
    return StudySpec(
        n_trials=n_trials,
        timeout_seconds=timeout,
        sampler=sampler,
        pruner=pruner,
        seed=data.seed,
        search_space=space,
        early_stopping_rounds=data.early_stopping_rounds or DEFAULT_EARLY_STOPPING_ROUNDS,
        threads=max(data.threads, 0),
        device=device,
        parallelism=min(max(data.parallelism, 1), MAX_PARALLELISM),
        max_iterations=data.max_iterations or DEFAULT_MAX_ITERATIONS,
        cv_folds=data.cv_folds if data.cv_folds > 1 else 0,
        cv_auto=data.cv_auto,
        final_fit=final_fit,
        ensemble_size=data.ensemble_size
        or (DEFAULT_AUTO_ENSEMBLE_SIZE if model_type == AUTO else 1),
    )


def _base_spaces(model_type: str, task: TaskType, spaces: SearchSpaces) -> dict[str, ParamSpec]:
    """Overridable parameters; for ``auto`` their names are ``<library>.<param>``."""
    if model_type != AUTO:
        return dict(spaces(ModelType(model_type), task))
    combined: dict[str, ParamSpec] = {}
    for library in LIBRARIES:
        for name, spec in spaces(library, task).items():
            combined[f"{library.value}.{name}"] = spec
    return combined


def _resolve_search_space(
    errors: ErrorCollector,
    overrides: Mapping[str, ParamRangeInput],
    model_type: str | None,
    task: TaskType | None,
    spaces: SearchSpaces,
) -> dict[str, ParamRange]:
    base = _base_spaces(model_type, task, spaces) if model_type and task else None
    resolved: dict[str, ParamRange] = {}
    for name, given in sorted(overrides.items()):
        where = f"experiment.study.search_space[{name}]"
        if base is not None and name not in base:
            hint = ", ".join(sorted(base))
            errors.add(where, f"not a tunable parameter of {model_type}; known: {hint}")
            continue
        checked = check_param_range(errors, where, given, None if base is None else base[name])
        if checked is not None:
            resolved[name] = checked
    return resolved


def check_param_range(
    errors: ErrorCollector, where: str, given: ParamRangeInput, spec: ParamSpec | None
) -> ParamRange | None:
    """One override: the proto's kind must fit the parameter's; arbor_ml checks the range."""
    if given.kind == "choices":
        if len(set(map(repr, given.choices))) != len(given.choices):
            errors.add(where, "choices must not repeat")
            return None
        checked = ParamRange(kind="choices", choices=tuple(given.choices))
    elif given.kind in ("float", "int"):
        kind = None if spec is None else spec.kind
        if kind == "categorical":
            errors.add(where, "a categorical parameter takes choices, not a range")
            return None
        if kind is not None and kind != given.kind:
            errors.add(where, f"a {kind} parameter takes {kind}_range (or choices)")
            return None
        checked = ParamRange(kind=given.kind, low=given.low, high=given.high, log=given.log)
    else:
        errors.add(where, "set exactly one of float_range, int_range or choices")
        return None
    if spec is not None:
        try:
            spec.override(checked.override(), field=where)
        except InvalidArgument as err:
            for violation in err.violations:
                errors.add(where, violation.description)
            return None
    return checked


def _resolve_preprocessing(
    errors: ErrorCollector, data: ExperimentInput, split: SplitInfo
) -> PreprocessingSpec:
    spec = data.preprocessing
    target = split.target_column
    imputation = data.numeric_imputation or "native"
    if imputation not in ("native", "median", "constant"):
        errors.add("experiment.preprocessing.numeric_imputation", f"unknown {imputation!r}")
        imputation = "native"
    if imputation == "constant" and not _is_finite(spec.numeric_fill_value):
        errors.add("experiment.preprocessing.numeric_fill_value", "must be a finite number")
    for path, columns in (
        ("include_columns", spec.include_columns),
        ("exclude_columns", spec.exclude_columns),
    ):
        where = f"experiment.preprocessing.{path}"
        if len(set(columns)) != len(columns):
            errors.add(where, "lists a column twice")
        for column in columns:
            if column == target:
                errors.add(where, f"{column!r} is the target column")
            elif split.columns and column not in split.columns:
                errors.add(where, f"column {column!r} is not in the split")
    if spec.include_columns and spec.exclude_columns:
        both = sorted(set(spec.include_columns) & set(spec.exclude_columns))
        if both:
            errors.add(
                "experiment.preprocessing.exclude_columns",
                f"{both[0]!r} is both included and excluded",
            )
    if split.columns and not feature_columns(split.columns, target, spec):
        errors.add("experiment.preprocessing", "no feature column is left")
    return replace(spec, numeric_imputation=imputation)


def _resolve_postprocessing(
    errors: ErrorCollector, given: PostprocessingInput | None, task: TaskType | None
) -> PostprocessingSpec:
    given = given or PostprocessingInput()
    prefix = "experiment.postprocessing"
    threshold: float | None = None
    if given.decision_threshold:
        threshold = given.decision_threshold
        if not (_is_finite(threshold) and 0.0 < threshold < 1.0):
            errors.add(f"{prefix}.decision_threshold", "must be in (0, 1)")
    objective = given.threshold_objective.strip().lower()
    if objective:
        try:
            objective = parse_threshold_objective(objective).text
        except InvalidArgument:
            errors.add(
                f"{prefix}.threshold_objective",
                "must be 'f1', 'accuracy', 'precision@recall=<0..1>' or 'recall@precision=<0..1>'",
            )
    if objective and threshold is not None:
        errors.add(
            f"{prefix}.threshold_objective", "set either decision_threshold or threshold_objective"
        )
    regression_only = {
        "clip_min": given.clip_min is not None,
        "clip_max": given.clip_max is not None,
        "round_digits": given.round_digits is not None,
        "scale": bool(given.scale) and given.scale != 1.0,
        "offset": bool(given.offset),
        "log_target": given.log_target,
    }
    if task is not None and task.is_classification:
        for name, is_set in regression_only.items():
            if is_set:
                errors.add(f"{prefix}.{name}", f"applies to regression, not a {task.value} task")
        if task is TaskType.MULTICLASS:
            if threshold is not None:
                errors.add(f"{prefix}.decision_threshold", "applies to binary tasks only")
            if objective:
                errors.add(f"{prefix}.threshold_objective", "applies to binary tasks only")
    if task is TaskType.REGRESSION:
        if threshold is not None:
            errors.add(f"{prefix}.decision_threshold", "applies to classification only")
        if objective:
            errors.add(f"{prefix}.threshold_objective", "applies to classification only")
    for name in ("clip_min", "clip_max", "offset"):
        value = getattr(given, name)
        if value is not None and not _is_finite(value):
            errors.add(f"{prefix}.{name}", "must be a finite number")
    if (
        given.clip_min is not None
        and given.clip_max is not None
        and _is_finite(given.clip_min)
        and _is_finite(given.clip_max)
        and given.clip_min > given.clip_max
    ):
        errors.add(f"{prefix}.clip_max", "must not be below clip_min")
    if given.round_digits is not None and not -10 <= given.round_digits <= 15:
        errors.add(f"{prefix}.round_digits", "must be in [-10, 15]")
    if given.scale and not _is_finite(given.scale):
        errors.add(f"{prefix}.scale", "must be a finite number")
    return PostprocessingSpec(
        decision_threshold=threshold,
        threshold_objective=objective,
        clip_min=given.clip_min,
        clip_max=given.clip_max,
        round_digits=given.round_digits,
        scale=given.scale or 1.0,
        offset=given.offset,
        log_target=given.log_target,
    )


def validate_experiment(
    data: ExperimentInput, split: SplitInfo, spaces: SearchSpaces
) -> ExperimentSpec:
    """Check ``data`` against ``split``; resolve every default. Reports all bad fields at once.

    The split must be READY (else ``FailedPrecondition`` SPLIT_NOT_READY) and have train and
    validation parts; everything else is ``InvalidArgument`` with one violation per field.
    """
    if not split.ready:
        raise FailedPrecondition(
            f"split {split.name!r} is not ready",
            reason="SPLIT_NOT_READY",
            violations=[PreconditionViolation("STATE", split.name, "the split must be READY")],
        )
    missing_parts = [p for p in ("train", "validation") if p not in split.parts]
    if missing_parts:
        raise FailedPrecondition(
            f"split {split.name!r} has no {missing_parts[0]} part",
            reason="SPLIT_PART_MISSING",
            violations=[
                PreconditionViolation("PART", split.name, f"the split needs a {p} part")
                for p in missing_parts
            ],
        )
    errors = ErrorCollector()
    check_metadata(errors, data.display_name, data.description, data.labels)
    model_type = _resolve_model_type(errors, data.model_type)
    task = _resolve_task(errors, data, split)
    metric = _resolve_metric(errors, data.metric, task)
    study = _resolve_study(errors, data, model_type, task, spaces)
    preprocessing = _resolve_preprocessing(errors, data, split)
    if study.cv_auto:
        study = replace(study, cv_folds=_auto_cv_folds(split, preprocessing))
    if study.cv_folds:
        study = replace(study, cv_rule=split.fold_rule())
    postprocessing = _resolve_postprocessing(errors, data.postprocessing, task)
    model_name = data.model_name or split.split_id
    if not MODEL_NAME_RE.fullmatch(model_name) or model_name in (".", ".."):
        errors.add("experiment.model_name", "must be 1-128 characters of [A-Za-z0-9_.-]")
    errors.raise_if_any("invalid experiment")
    assert model_type is not None and task is not None and metric is not None
    return ExperimentSpec(
        split=split.name,
        model_type=model_type,
        task_type=task,
        metric=metric,
        direction=metric_direction(metric),
        study=study,
        preprocessing=preprocessing,
        postprocessing=postprocessing,
        model_name=model_name,
        target_column=split.target_column,
        split_content_hash=split.content_hash,
        parts=dict(split.parts),
        columns=dict(split.columns),
    )


def feature_columns(
    columns: Iterable[str], target: str, preprocessing: PreprocessingSpec
) -> list[str]:
    """The columns an experiment trains on, of a split's ``columns``: the included ones,
    else all but the target and the excluded ones."""
    if preprocessing.include_columns:
        known = set(columns)
        return [c for c in preprocessing.include_columns if c in known]
    excluded = {target, *preprocessing.exclude_columns}
    return [c for c in columns if c not in excluded]


def _auto_cv_folds(split: SplitInfo, preprocessing: PreprocessingSpec) -> int:
    """``StudyConfig.cv_auto``: the folds for this split's train + validation rows and
    feature columns (as the split recorded them), by ``arbor_ml.automl.auto_cv_folds``."""
    rows = sum(split.parts[p].row_count for p in ("train", "validation") if p in split.parts)
    features = feature_columns(split.columns, split.target_column, preprocessing)
    return auto_cv_folds(rows, len(features))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Experiment:
    """One experiment as stored."""

    id: str
    spec: ExperimentSpec
    state: ExperimentState
    create_time: datetime
    update_time: datetime
    request_id: str = ""
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cancel_requested: bool = False
    trials_completed: int = 0
    trials_pruned: int = 0
    trials_failed: int = 0
    best_trial_number: int | None = None
    best_value: float | None = None
    model_version: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    error_message: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    delete_time: datetime | None = None
    version: int = 1
    worker: str = ""
    attempt: int = 0
    #: The study in numbers once final (see StudySummary in the proto); {} before.
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"experiments/{self.id}"

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @property
    def is_final(self) -> bool:
        return self.state.is_final


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial, as the service records it (numbers are Optuna's)."""

    experiment_id: str
    number: int
    state: TrialState
    value: float | None
    params: dict[str, Any]
    intermediate_values: list[tuple[int, float]] = field(default_factory=list)
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_seconds: float | None = None
    error_message: str = ""
    model_type: str = ""
    best_iteration: int | None = None
    fit_seconds: float | None = None
    worker: str = ""
    fold_values: list[float] = field(default_factory=list)
    predict_ms_per_1k_rows: float | None = None

    @property
    def name(self) -> str:
        return f"experiments/{self.experiment_id}/trials/{self.number}"


def check_update_mask(paths: list[str]) -> list[str]:
    """UpdateExperiment's mask: only metadata fields, at least one."""
    if not paths:
        raise InvalidArgument(
            "update_mask must name at least one of " + ", ".join(MUTABLE_FIELDS),
            field="update_mask",
            reason="UPDATE_MASK_REQUIRED",
        )
    errors = ErrorCollector()
    for path in paths:
        if path not in MUTABLE_FIELDS:
            errors.add(
                "update_mask",
                f"{path!r} cannot be updated; mutable fields: {', '.join(MUTABLE_FIELDS)}",
            )
    errors.raise_if_any("invalid update_mask")
    return list(dict.fromkeys(paths))


def check_etag(experiment: Experiment, etag: str) -> None:
    """A stale etag is ``Aborted``: the caller re-reads and retries."""
    if etag and etag != experiment.etag:
        raise Aborted(
            f"etag {etag} is stale; the experiment is at {experiment.etag}",
            reason="ETAG_MISMATCH",
            metadata={"current_etag": experiment.etag},
        )


# --------------------------------------------------------------------------- events


def _model_type_pb(model_type: str) -> int:
    return int(common_pb2.ModelType.Value(f"MODEL_TYPE_{model_type.upper()}"))


def state_event(experiment: Experiment, *, worker: str = "", attempt: int = 0) -> events_pb2.Event:
    """The event announcing the state ``experiment`` is in now (after the change)."""
    name = experiment.name
    state = experiment.state
    payload: dict[str, Any]
    match state:
        case ExperimentState.QUEUED:
            payload = {
                "experiment_queued": events_pb2.ExperimentQueued(
                    experiment=name,
                    split=experiment.spec.split,
                    model_type=_model_type_pb(experiment.spec.model_type),  # type: ignore[arg-type]
                )
            }
        case ExperimentState.RUNNING:
            payload = {
                "experiment_started": events_pb2.ExperimentStarted(
                    experiment=name, worker=worker, attempt=attempt
                )
            }
        case ExperimentState.SUCCEEDED:
            payload = {
                "experiment_succeeded": events_pb2.ExperimentSucceeded(
                    experiment=name,
                    model_version=experiment.model_version,
                    best_value=experiment.best_value or 0.0,
                    metrics={k: v for k, v in experiment.metrics.items() if math.isfinite(v)},
                )
            }
        case ExperimentState.FAILED:
            payload = {
                "experiment_failed": events_pb2.ExperimentFailed(
                    experiment=name, error_message=experiment.error_message
                )
            }
        case ExperimentState.CANCELLED:
            payload = {
                "experiment_cancelled": events_pb2.ExperimentCancelled(
                    experiment=name, trials_completed=experiment.trials_completed
                )
            }
    return new_event(
        STATE_EVENTS[state], name, EVENT_SOURCE, request_id=get_request_id() or "", **payload
    )


# --------------------------------------------------------------------------- the service


@dataclass
class Change:
    """A change to one experiment row: column values and the events to stage with it."""

    values: dict[str, Any] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Control:
    """What a worker polls between trials: cheap to read, enough to stop."""

    state: ExperimentState
    cancel_requested: bool
    deleted: bool


class ExperimentStore(Protocol):
    """The repository as the domain sees it (``repository.TrainingRepository``)."""

    def get(self, experiment_id: str, *, show_deleted: bool = False) -> Experiment: ...

    def find_by_request_id(self, request_id: str) -> Experiment | None: ...

    def list_experiments(
        self,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
        state: ExperimentState | None = None,
        split: str = "",
        model_type: str = "",
        labels: Mapping[str, str] | None = None,
        show_deleted: bool = False,
    ) -> list[Experiment]: ...

    def list_trials(
        self,
        experiment_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        state: TrialState | None = None,
        by_value: Direction | None = None,
    ) -> list[TrialRecord]: ...

    def trials(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], TrialRecord]: ...

    def create(
        self, experiment: Experiment, events: list[Any], *, jobs: int, trace_parent: str = ""
    ) -> tuple[Experiment, bool]: ...

    def mutate(
        self,
        experiment_id: str,
        decide: Callable[[Experiment], Change | None],
        *,
        show_deleted: bool = False,
        finalizer: str | None = None,
    ) -> Experiment: ...


@dataclass(frozen=True)
class Page:
    """One page of a listing and the token of the next one ('' at the end)."""

    items: list[Any]
    next_page_token: str


def _final_error(experiment: Experiment, action: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"experiment {experiment.id!r} is already {experiment.state.value}; cannot {action} it",
        reason="EXPERIMENT_ALREADY_FINISHED",
        violations=[
            PreconditionViolation(
                "STATE", experiment.name, f"state is {experiment.state.value}, a final state"
            )
        ],
        metadata={"state": experiment.state.value},
    )


class Experiments:
    """The use cases behind the API and the workers; each is one repository transaction."""

    def __init__(self, store: ExperimentStore) -> None:
        self.store = store

    # ---------------------------------------------------------------- API

    def replay(self, request_id: str) -> Experiment | None:
        """The experiment a previous CreateExperiment with this request_id made, if any."""
        return self.store.find_by_request_id(request_id) if request_id else None

    def create(
        self,
        data: ExperimentInput,
        split: SplitInfo,
        spaces: SearchSpaces,
        *,
        experiment_id: str = "",
        request_id: str = "",
        trace_parent: str = "",
    ) -> tuple[Experiment, bool]:
        """Validate, store QUEUED and enqueue ``parallelism`` jobs, all in one transaction."""
        experiment_id = validate_experiment_id(experiment_id)
        request_id = validate_request_id(request_id)
        spec = validate_experiment(data, split, spaces)
        now = datetime.now(UTC)
        experiment = Experiment(
            id=experiment_id,
            spec=spec,
            state=ExperimentState.QUEUED,
            create_time=now,
            update_time=now,
            request_id=request_id,
            display_name=data.display_name,
            description=data.description,
            labels=dict(data.labels),
        )
        return self.store.create(
            experiment,
            [state_event(experiment)],
            jobs=spec.study.parallelism,
            trace_parent=trace_parent,
        )

    def get(self, experiment_id: str, *, show_deleted: bool = False) -> Experiment:
        return self.store.get(experiment_id, show_deleted=show_deleted)

    def best_trials(self, experiments: list[Experiment]) -> dict[str, TrialRecord]:
        keys = [(e.id, e.best_trial_number) for e in experiments if e.best_trial_number is not None]
        found = self.store.trials(keys)  # type: ignore[arg-type]
        return {exp_id: found[(exp_id, n)] for exp_id, n in keys if (exp_id, n) in found}

    def list_experiments(
        self,
        *,
        page_size: int,
        page_token: str,
        state: ExperimentState | None,
        split: str,
        model_type: str,
        labels: Mapping[str, str],
        show_deleted: bool,
    ) -> Page:
        size = clamp_page_size(page_size, default=50)
        fingerprint = filter_fingerprint(
            "experiments",
            state.value if state else "",
            split,
            model_type,
            sorted(labels.items()),
            show_deleted,
        )
        position = decode_page_token(page_token, fingerprint)
        after: tuple[datetime, str] | None = None
        if position is not None:
            try:
                after = (datetime.fromisoformat(position[0]), str(position[1]))
            except (TypeError, ValueError, IndexError, KeyError):
                raise InvalidArgument(
                    "page_token does not hold a position",
                    field="page_token",
                    reason="INVALID_PAGE_TOKEN",
                ) from None
        rows = self.store.list_experiments(
            limit=size + 1,
            after=after,
            state=state,
            split=split,
            model_type=model_type,
            labels=labels,
            show_deleted=show_deleted,
        )
        items, more = rows[:size], len(rows) > size
        token = ""
        if more:
            last = items[-1]
            token = encode_page_token([last.create_time.isoformat(), last.id], fingerprint)
        return Page(items, token)

    def list_trials(
        self,
        experiment_id: str,
        *,
        page_size: int,
        page_token: str,
        state: TrialState | None,
        order_by: str,
    ) -> Page:
        experiment = self.store.get(experiment_id)
        order = (order_by or "number").strip().lower()
        if order not in ("number", "value"):
            raise InvalidArgument(
                "order_by must be 'number' or 'value'", field="order_by", reason="INVALID_ORDER_BY"
            )
        size = clamp_page_size(page_size, default=100)
        fingerprint = filter_fingerprint(
            "trials", experiment_id, state.value if state else "", order
        )
        offset = decode_offset(page_token, fingerprint)
        rows = self.store.list_trials(
            experiment_id,
            offset=offset,
            limit=size + 1,
            state=state,
            by_value=experiment.spec.direction if order == "value" else None,
        )
        items, more = rows[:size], len(rows) > size
        return Page(items, encode_page_token(offset + size, fingerprint) if more else "")

    def all_trials(self, experiment_id: str) -> list[TrialRecord]:
        return self.store.list_trials(experiment_id)

    def update(
        self,
        experiment_id: str,
        *,
        display_name: str,
        description: str,
        labels: Mapping[str, str],
        mask: list[str],
        etag: str,
    ) -> Experiment:
        """Metadata only: display_name, description, labels, as the mask names them."""
        paths = check_update_mask(mask)
        errors = ErrorCollector()
        check_metadata(errors, display_name, description, labels)
        errors.raise_if_any("invalid experiment")
        given = {"display_name": display_name, "description": description, "labels": dict(labels)}

        def decide(current: Experiment) -> Change | None:
            check_etag(current, etag)
            values = {p: given[p] for p in paths if getattr(current, p) != given[p]}
            return Change(values) if values else None

        return self.store.mutate(experiment_id, decide)

    def cancel(self, experiment_id: str) -> Experiment:
        """QUEUED: CANCELLED now. RUNNING: flagged; the worker stops at its next check."""

        def decide(current: Experiment) -> Change | None:
            if current.state is ExperimentState.QUEUED:
                return self._cancel_now(current)
            if current.state is ExperimentState.RUNNING:
                return None if current.cancel_requested else Change({"cancel_requested": True})
            raise _final_error(current, "cancel")

        return self.store.mutate(experiment_id, decide)

    @staticmethod
    def _cancel_now(current: Experiment, **extra: Any) -> Change:
        check_transition(current.state, ExperimentState.CANCELLED, current.id)
        now = datetime.now(UTC)
        after = replace(current, state=ExperimentState.CANCELLED, end_time=now)
        return Change(
            {
                "state": ExperimentState.CANCELLED.value,
                "cancel_requested": True,
                "end_time": now,
                **extra,
            },
            [state_event(after)],
        )

    def delete(self, experiment_id: str, *, force: bool, etag: str) -> Experiment:
        """Soft delete. An active experiment is refused unless ``force`` (which cancels it)."""

        def decide(current: Experiment) -> Change | None:
            check_etag(current, etag)
            now = datetime.now(UTC)
            if current.state.is_final:
                return Change({"delete_time": now})
            if not force:
                raise FailedPrecondition(
                    f"experiment {current.id!r} is {current.state.value}; cancel it first "
                    "or delete with force",
                    reason="EXPERIMENT_ACTIVE",
                    violations=[
                        PreconditionViolation(
                            "STATE", current.name, "cancel the experiment or pass force=true"
                        )
                    ],
                    metadata={"state": current.state.value},
                )
            if current.state is ExperimentState.QUEUED:
                return self._cancel_now(current, delete_time=now)
            return Change({"cancel_requested": True, "delete_time": now})

        return self.store.mutate(experiment_id, decide)

    # ---------------------------------------------------------------- workers

    def start(self, experiment_id: str, *, worker: str, attempt: int) -> tuple[Experiment, bool]:
        """QUEUED -> RUNNING (this worker starts the study), or join/resume a RUNNING one.

        Returns the experiment and whether this call started it. A final experiment is
        returned unchanged.
        """
        started = False

        def decide(current: Experiment) -> Change | None:
            nonlocal started
            if current.state.is_final:
                return None
            values: dict[str, Any] = {"worker": worker, "attempt": attempt}
            if current.state is ExperimentState.QUEUED:
                started = True
                values |= {"state": ExperimentState.RUNNING.value, "start_time": datetime.now(UTC)}
            after = replace(current, state=ExperimentState.RUNNING)
            return Change(values, [state_event(after, worker=worker, attempt=attempt)])

        experiment = self.store.mutate(experiment_id, decide, show_deleted=True)
        return experiment, started

    def finish(
        self,
        experiment_id: str,
        state: ExperimentState,
        *,
        error_message: str = "",
        model_version: str = "",
        metrics: Mapping[str, float] | None = None,
        summary: Mapping[str, Any] | None = None,
        finalizer: str | None = None,
    ) -> Experiment:
        """Move to a final state once; an experiment already final is left as it is.

        ``finalizer``: the worker finishing as the lease holder; its write is fenced by the
        lease (``repository.FinalizerLeaseLost`` when another worker took it over).
        """
        took: list[float] = []  # seconds from start (or creation), when this call finished it

        def decide(current: Experiment) -> Change | None:
            took.clear()
            if current.state.is_final:
                return None
            check_transition(current.state, state, current.id)
            now = datetime.now(UTC)
            took.append((now - (current.start_time or current.create_time)).total_seconds())
            values: dict[str, Any] = {"state": state.value, "end_time": now}
            if state is ExperimentState.FAILED:
                values["error_message"] = error_message[:4000]
            if state is ExperimentState.SUCCEEDED:
                values["model_version"] = model_version
                values["metrics"] = dict(metrics or {})
            if summary:
                values["summary"] = dict(summary)
            after = replace(
                current,
                state=state,
                end_time=now,
                error_message=values.get("error_message", current.error_message),
                model_version=model_version or current.model_version,
                metrics=dict(metrics or current.metrics),
            )
            return Change(values, [state_event(after)])

        experiment = self.store.mutate(
            experiment_id, decide, show_deleted=True, finalizer=finalizer
        )
        if took:
            arbor_metrics.experiment_finished(state.value, duration_s=took[0])
        return experiment
