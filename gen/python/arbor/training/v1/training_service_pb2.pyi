import datetime

from arbor.common.v1 import common_pb2 as _common_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_QUEUED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_SUCCEEDED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_FAILED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_CANCELLED: _ClassVar[ExperimentState]

class OptimizationDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTIMIZATION_DIRECTION_UNSPECIFIED: _ClassVar[OptimizationDirection]
    OPTIMIZATION_DIRECTION_MAXIMIZE: _ClassVar[OptimizationDirection]
    OPTIMIZATION_DIRECTION_MINIMIZE: _ClassVar[OptimizationDirection]

class Sampler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLER_UNSPECIFIED: _ClassVar[Sampler]
    SAMPLER_TPE: _ClassVar[Sampler]
    SAMPLER_RANDOM: _ClassVar[Sampler]
    SAMPLER_CMAES: _ClassVar[Sampler]
    SAMPLER_QMC: _ClassVar[Sampler]

class Pruner(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRUNER_UNSPECIFIED: _ClassVar[Pruner]
    PRUNER_MEDIAN: _ClassVar[Pruner]
    PRUNER_HYPERBAND: _ClassVar[Pruner]
    PRUNER_NONE: _ClassVar[Pruner]

class NumericImputation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NUMERIC_IMPUTATION_UNSPECIFIED: _ClassVar[NumericImputation]
    NUMERIC_IMPUTATION_KEEP_NAN: _ClassVar[NumericImputation]
    NUMERIC_IMPUTATION_MEDIAN: _ClassVar[NumericImputation]
    NUMERIC_IMPUTATION_CONSTANT: _ClassVar[NumericImputation]

class TrialState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIAL_STATE_UNSPECIFIED: _ClassVar[TrialState]
    TRIAL_STATE_RUNNING: _ClassVar[TrialState]
    TRIAL_STATE_COMPLETE: _ClassVar[TrialState]
    TRIAL_STATE_PRUNED: _ClassVar[TrialState]
    TRIAL_STATE_FAILED: _ClassVar[TrialState]
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_QUEUED: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_SUCCEEDED: ExperimentState
EXPERIMENT_STATE_FAILED: ExperimentState
EXPERIMENT_STATE_CANCELLED: ExperimentState
OPTIMIZATION_DIRECTION_UNSPECIFIED: OptimizationDirection
OPTIMIZATION_DIRECTION_MAXIMIZE: OptimizationDirection
OPTIMIZATION_DIRECTION_MINIMIZE: OptimizationDirection
SAMPLER_UNSPECIFIED: Sampler
SAMPLER_TPE: Sampler
SAMPLER_RANDOM: Sampler
SAMPLER_CMAES: Sampler
SAMPLER_QMC: Sampler
PRUNER_UNSPECIFIED: Pruner
PRUNER_MEDIAN: Pruner
PRUNER_HYPERBAND: Pruner
PRUNER_NONE: Pruner
NUMERIC_IMPUTATION_UNSPECIFIED: NumericImputation
NUMERIC_IMPUTATION_KEEP_NAN: NumericImputation
NUMERIC_IMPUTATION_MEDIAN: NumericImputation
NUMERIC_IMPUTATION_CONSTANT: NumericImputation
TRIAL_STATE_UNSPECIFIED: TrialState
TRIAL_STATE_RUNNING: TrialState
TRIAL_STATE_COMPLETE: TrialState
TRIAL_STATE_PRUNED: TrialState
TRIAL_STATE_FAILED: TrialState

class Experiment(_message.Message):
    __slots__ = ("name", "experiment_id", "display_name", "description", "labels", "split", "model_type", "task_type", "metric", "direction", "study", "preprocessing", "postprocessing", "model_name", "state", "trials_completed", "trials_pruned", "trials_failed", "best_trial", "model_version", "metrics", "error_message", "create_time", "update_time", "start_time", "end_time", "delete_time", "etag", "target_column", "summary")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESSING_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TRIALS_PRUNED_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FAILED_FIELD_NUMBER: _ClassVar[int]
    BEST_TRIAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    TARGET_COLUMN_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    name: str
    experiment_id: str
    display_name: str
    description: str
    labels: _containers.ScalarMap[str, str]
    split: str
    model_type: _common_pb2.ModelType
    task_type: _common_pb2.TaskType
    metric: str
    direction: OptimizationDirection
    study: StudyConfig
    preprocessing: PreprocessingOptions
    postprocessing: PostprocessingOptions
    model_name: str
    state: ExperimentState
    trials_completed: int
    trials_pruned: int
    trials_failed: int
    best_trial: Trial
    model_version: str
    metrics: _containers.ScalarMap[str, float]
    error_message: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    etag: str
    target_column: str
    summary: StudySummary
    def __init__(self, name: _Optional[str] = ..., experiment_id: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., split: _Optional[str] = ..., model_type: _Optional[_Union[_common_pb2.ModelType, str]] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., metric: _Optional[str] = ..., direction: _Optional[_Union[OptimizationDirection, str]] = ..., study: _Optional[_Union[StudyConfig, _Mapping]] = ..., preprocessing: _Optional[_Union[PreprocessingOptions, _Mapping]] = ..., postprocessing: _Optional[_Union[PostprocessingOptions, _Mapping]] = ..., model_name: _Optional[str] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., trials_completed: _Optional[int] = ..., trials_pruned: _Optional[int] = ..., trials_failed: _Optional[int] = ..., best_trial: _Optional[_Union[Trial, _Mapping]] = ..., model_version: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., error_message: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., target_column: _Optional[str] = ..., summary: _Optional[_Union[StudySummary, _Mapping]] = ...) -> None: ...

class StudySummary(_message.Message):
    __slots__ = ("trials_complete", "trials_pruned", "trials_failed", "best_trial_number", "best_value", "best_model_type", "total_time", "trials_time", "final_time", "final_fit", "final_iterations", "trials_stopped_by_budget", "cv_folds")
    TRIALS_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_PRUNED_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FAILED_FIELD_NUMBER: _ClassVar[int]
    BEST_TRIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    BEST_MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIALS_TIME_FIELD_NUMBER: _ClassVar[int]
    FINAL_TIME_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIT_FIELD_NUMBER: _ClassVar[int]
    FINAL_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    TRIALS_STOPPED_BY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    CV_FOLDS_FIELD_NUMBER: _ClassVar[int]
    trials_complete: int
    trials_pruned: int
    trials_failed: int
    best_trial_number: int
    best_value: float
    best_model_type: _common_pb2.ModelType
    total_time: _duration_pb2.Duration
    trials_time: _duration_pb2.Duration
    final_time: _duration_pb2.Duration
    final_fit: str
    final_iterations: int
    trials_stopped_by_budget: int
    cv_folds: int
    def __init__(self, trials_complete: _Optional[int] = ..., trials_pruned: _Optional[int] = ..., trials_failed: _Optional[int] = ..., best_trial_number: _Optional[int] = ..., best_value: _Optional[float] = ..., best_model_type: _Optional[_Union[_common_pb2.ModelType, str]] = ..., total_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., trials_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., final_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., final_fit: _Optional[str] = ..., final_iterations: _Optional[int] = ..., trials_stopped_by_budget: _Optional[int] = ..., cv_folds: _Optional[int] = ...) -> None: ...

class StudyConfig(_message.Message):
    __slots__ = ("n_trials", "timeout", "sampler", "pruner", "seed", "search_space", "early_stopping_rounds", "cv_folds", "threads", "device", "parallelism", "max_iterations", "final_fit", "ensemble_size", "cv_auto")
    class SearchSpaceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamRange
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamRange, _Mapping]] = ...) -> None: ...
    N_TRIALS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    PRUNER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SEARCH_SPACE_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CV_FOLDS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIT_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CV_AUTO_FIELD_NUMBER: _ClassVar[int]
    n_trials: int
    timeout: _duration_pb2.Duration
    sampler: Sampler
    pruner: Pruner
    seed: int
    search_space: _containers.MessageMap[str, ParamRange]
    early_stopping_rounds: int
    cv_folds: int
    threads: int
    device: str
    parallelism: int
    max_iterations: int
    final_fit: str
    ensemble_size: int
    cv_auto: bool
    def __init__(self, n_trials: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., sampler: _Optional[_Union[Sampler, str]] = ..., pruner: _Optional[_Union[Pruner, str]] = ..., seed: _Optional[int] = ..., search_space: _Optional[_Mapping[str, ParamRange]] = ..., early_stopping_rounds: _Optional[int] = ..., cv_folds: _Optional[int] = ..., threads: _Optional[int] = ..., device: _Optional[str] = ..., parallelism: _Optional[int] = ..., max_iterations: _Optional[int] = ..., final_fit: _Optional[str] = ..., ensemble_size: _Optional[int] = ..., cv_auto: _Optional[bool] = ...) -> None: ...

class ParamRange(_message.Message):
    __slots__ = ("float_range", "int_range", "choices")
    FLOAT_RANGE_FIELD_NUMBER: _ClassVar[int]
    INT_RANGE_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    float_range: FloatRange
    int_range: IntRange
    choices: Choices
    def __init__(self, float_range: _Optional[_Union[FloatRange, _Mapping]] = ..., int_range: _Optional[_Union[IntRange, _Mapping]] = ..., choices: _Optional[_Union[Choices, _Mapping]] = ...) -> None: ...

class FloatRange(_message.Message):
    __slots__ = ("low", "high", "log")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    log: bool
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ..., log: _Optional[bool] = ...) -> None: ...

class IntRange(_message.Message):
    __slots__ = ("low", "high", "log")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    low: int
    high: int
    log: bool
    def __init__(self, low: _Optional[int] = ..., high: _Optional[int] = ..., log: _Optional[bool] = ...) -> None: ...

class Choices(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, values: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class PreprocessingOptions(_message.Message):
    __slots__ = ("include_columns", "exclude_columns", "numeric_imputation", "numeric_fill_value", "keep_constant_columns")
    INCLUDE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_IMPUTATION_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FILL_VALUE_FIELD_NUMBER: _ClassVar[int]
    KEEP_CONSTANT_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    include_columns: _containers.RepeatedScalarFieldContainer[str]
    exclude_columns: _containers.RepeatedScalarFieldContainer[str]
    numeric_imputation: NumericImputation
    numeric_fill_value: float
    keep_constant_columns: bool
    def __init__(self, include_columns: _Optional[_Iterable[str]] = ..., exclude_columns: _Optional[_Iterable[str]] = ..., numeric_imputation: _Optional[_Union[NumericImputation, str]] = ..., numeric_fill_value: _Optional[float] = ..., keep_constant_columns: _Optional[bool] = ...) -> None: ...

class PostprocessingOptions(_message.Message):
    __slots__ = ("decision_threshold", "threshold_objective", "clip_min", "clip_max", "round_digits", "scale", "offset", "log_target")
    DECISION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    CLIP_MIN_FIELD_NUMBER: _ClassVar[int]
    CLIP_MAX_FIELD_NUMBER: _ClassVar[int]
    ROUND_DIGITS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LOG_TARGET_FIELD_NUMBER: _ClassVar[int]
    decision_threshold: float
    threshold_objective: str
    clip_min: float
    clip_max: float
    round_digits: int
    scale: float
    offset: float
    log_target: bool
    def __init__(self, decision_threshold: _Optional[float] = ..., threshold_objective: _Optional[str] = ..., clip_min: _Optional[float] = ..., clip_max: _Optional[float] = ..., round_digits: _Optional[int] = ..., scale: _Optional[float] = ..., offset: _Optional[float] = ..., log_target: _Optional[bool] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("name", "number", "state", "value", "params", "intermediate_values", "start_time", "end_time", "duration", "model_type", "fold_values", "error_message", "best_iteration", "fit_seconds", "predict_ms_per_1k_rows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_VALUES_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    FOLD_VALUES_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BEST_ITERATION_FIELD_NUMBER: _ClassVar[int]
    FIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREDICT_MS_PER_1K_ROWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    number: int
    state: TrialState
    value: float
    params: _struct_pb2.Struct
    intermediate_values: _containers.RepeatedCompositeFieldContainer[IntermediateValue]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    model_type: _common_pb2.ModelType
    fold_values: _containers.RepeatedScalarFieldContainer[float]
    error_message: str
    best_iteration: int
    fit_seconds: float
    predict_ms_per_1k_rows: float
    def __init__(self, name: _Optional[str] = ..., number: _Optional[int] = ..., state: _Optional[_Union[TrialState, str]] = ..., value: _Optional[float] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., intermediate_values: _Optional[_Iterable[_Union[IntermediateValue, _Mapping]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., model_type: _Optional[_Union[_common_pb2.ModelType, str]] = ..., fold_values: _Optional[_Iterable[float]] = ..., error_message: _Optional[str] = ..., best_iteration: _Optional[int] = ..., fit_seconds: _Optional[float] = ..., predict_ms_per_1k_rows: _Optional[float] = ...) -> None: ...

class IntermediateValue(_message.Message):
    __slots__ = ("step", "value")
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    step: int
    value: float
    def __init__(self, step: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("experiment", "experiment_id", "request_id")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    experiment_id: str
    request_id: str
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., experiment_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("name", "show_deleted")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    name: str
    show_deleted: bool
    def __init__(self, name: _Optional[str] = ..., show_deleted: _Optional[bool] = ...) -> None: ...

class GetExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state_filter", "split_filter", "label_filter", "show_deleted", "model_type_filter")
    class LabelFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FILTER_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FILTER_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state_filter: ExperimentState
    split_filter: str
    label_filter: _containers.ScalarMap[str, str]
    show_deleted: bool
    model_type_filter: _common_pb2.ModelType
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state_filter: _Optional[_Union[ExperimentState, str]] = ..., split_filter: _Optional[str] = ..., label_filter: _Optional[_Mapping[str, str]] = ..., show_deleted: _Optional[bool] = ..., model_type_filter: _Optional[_Union[_common_pb2.ModelType, str]] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateExperimentRequest(_message.Message):
    __slots__ = ("experiment", "update_mask")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class DeleteExperimentRequest(_message.Message):
    __slots__ = ("name", "force", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListTrialsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "state_filter", "order_by")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    state_filter: TrialState
    order_by: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state_filter: _Optional[_Union[TrialState, str]] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListTrialsResponse(_message.Message):
    __slots__ = ("trials", "next_page_token")
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    next_page_token: str
    def __init__(self, trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class WatchExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchExperimentResponse(_message.Message):
    __slots__ = ("experiment", "trial")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    trial: Trial
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., trial: _Optional[_Union[Trial, _Mapping]] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("experiment", "trace_parent")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    trace_parent: str
    def __init__(self, experiment: _Optional[str] = ..., trace_parent: _Optional[str] = ...) -> None: ...
