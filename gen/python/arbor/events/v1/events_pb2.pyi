import datetime

from arbor.common.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("event_id", "type", "time", "source", "subject", "trace_parent", "request_id", "split_created", "split_deleted", "experiment_queued", "experiment_started", "trial_completed", "experiment_succeeded", "experiment_failed", "experiment_cancelled", "model_registered", "model_promoted", "model_alias_moved", "model_archived", "model_deleted", "promotion_decided")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_CREATED_FIELD_NUMBER: _ClassVar[int]
    SPLIT_DELETED_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_QUEUED_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_STARTED_FIELD_NUMBER: _ClassVar[int]
    TRIAL_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FAILED_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    MODEL_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    MODEL_PROMOTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_ALIAS_MOVED_FIELD_NUMBER: _ClassVar[int]
    MODEL_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    MODEL_DELETED_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_DECIDED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    time: _timestamp_pb2.Timestamp
    source: str
    subject: str
    trace_parent: str
    request_id: str
    split_created: SplitCreated
    split_deleted: SplitDeleted
    experiment_queued: ExperimentQueued
    experiment_started: ExperimentStarted
    trial_completed: TrialCompleted
    experiment_succeeded: ExperimentSucceeded
    experiment_failed: ExperimentFailed
    experiment_cancelled: ExperimentCancelled
    model_registered: ModelRegistered
    model_promoted: ModelPromoted
    model_alias_moved: ModelAliasMoved
    model_archived: ModelArchived
    model_deleted: ModelDeleted
    promotion_decided: PromotionDecided
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., subject: _Optional[str] = ..., trace_parent: _Optional[str] = ..., request_id: _Optional[str] = ..., split_created: _Optional[_Union[SplitCreated, _Mapping]] = ..., split_deleted: _Optional[_Union[SplitDeleted, _Mapping]] = ..., experiment_queued: _Optional[_Union[ExperimentQueued, _Mapping]] = ..., experiment_started: _Optional[_Union[ExperimentStarted, _Mapping]] = ..., trial_completed: _Optional[_Union[TrialCompleted, _Mapping]] = ..., experiment_succeeded: _Optional[_Union[ExperimentSucceeded, _Mapping]] = ..., experiment_failed: _Optional[_Union[ExperimentFailed, _Mapping]] = ..., experiment_cancelled: _Optional[_Union[ExperimentCancelled, _Mapping]] = ..., model_registered: _Optional[_Union[ModelRegistered, _Mapping]] = ..., model_promoted: _Optional[_Union[ModelPromoted, _Mapping]] = ..., model_alias_moved: _Optional[_Union[ModelAliasMoved, _Mapping]] = ..., model_archived: _Optional[_Union[ModelArchived, _Mapping]] = ..., model_deleted: _Optional[_Union[ModelDeleted, _Mapping]] = ..., promotion_decided: _Optional[_Union[PromotionDecided, _Mapping]] = ...) -> None: ...

class SplitCreated(_message.Message):
    __slots__ = ("split", "content_hash", "row_counts", "task_type")
    class RowCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    split: str
    content_hash: str
    row_counts: _containers.ScalarMap[str, int]
    task_type: _common_pb2.TaskType
    def __init__(self, split: _Optional[str] = ..., content_hash: _Optional[str] = ..., row_counts: _Optional[_Mapping[str, int]] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ...) -> None: ...

class SplitDeleted(_message.Message):
    __slots__ = ("split", "purged")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    PURGED_FIELD_NUMBER: _ClassVar[int]
    split: str
    purged: bool
    def __init__(self, split: _Optional[str] = ..., purged: _Optional[bool] = ...) -> None: ...

class ExperimentQueued(_message.Message):
    __slots__ = ("experiment", "split", "model_type")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    split: str
    model_type: _common_pb2.ModelType
    def __init__(self, experiment: _Optional[str] = ..., split: _Optional[str] = ..., model_type: _Optional[_Union[_common_pb2.ModelType, str]] = ...) -> None: ...

class ExperimentStarted(_message.Message):
    __slots__ = ("experiment", "worker", "attempt")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    worker: str
    attempt: int
    def __init__(self, experiment: _Optional[str] = ..., worker: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class TrialCompleted(_message.Message):
    __slots__ = ("experiment", "number", "state", "value", "best_value", "trials_completed")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    number: int
    state: str
    value: float
    best_value: float
    trials_completed: int
    def __init__(self, experiment: _Optional[str] = ..., number: _Optional[int] = ..., state: _Optional[str] = ..., value: _Optional[float] = ..., best_value: _Optional[float] = ..., trials_completed: _Optional[int] = ...) -> None: ...

class ExperimentSucceeded(_message.Message):
    __slots__ = ("experiment", "model_version", "best_value", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    model_version: str
    best_value: float
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, experiment: _Optional[str] = ..., model_version: _Optional[str] = ..., best_value: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ExperimentFailed(_message.Message):
    __slots__ = ("experiment", "error_message")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    error_message: str
    def __init__(self, experiment: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class ExperimentCancelled(_message.Message):
    __slots__ = ("experiment", "trials_completed")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    TRIALS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    trials_completed: int
    def __init__(self, experiment: _Optional[str] = ..., trials_completed: _Optional[int] = ...) -> None: ...

class ModelRegistered(_message.Message):
    __slots__ = ("model_version", "model", "version", "experiment")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    model: str
    version: int
    experiment: str
    def __init__(self, model_version: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., experiment: _Optional[str] = ...) -> None: ...

class ModelPromoted(_message.Message):
    __slots__ = ("model_version", "model", "version", "old_stage", "new_stage", "previous_production_version")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OLD_STAGE_FIELD_NUMBER: _ClassVar[int]
    NEW_STAGE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PRODUCTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    model: str
    version: int
    old_stage: _common_pb2.ModelStage
    new_stage: _common_pb2.ModelStage
    previous_production_version: int
    def __init__(self, model_version: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., old_stage: _Optional[_Union[_common_pb2.ModelStage, str]] = ..., new_stage: _Optional[_Union[_common_pb2.ModelStage, str]] = ..., previous_production_version: _Optional[int] = ...) -> None: ...

class ModelAliasMoved(_message.Message):
    __slots__ = ("model", "alias", "old_version", "new_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    OLD_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEW_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    alias: str
    old_version: int
    new_version: int
    def __init__(self, model: _Optional[str] = ..., alias: _Optional[str] = ..., old_version: _Optional[int] = ..., new_version: _Optional[int] = ...) -> None: ...

class ModelArchived(_message.Message):
    __slots__ = ("model_version", "model", "version", "old_stage")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OLD_STAGE_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    model: str
    version: int
    old_stage: _common_pb2.ModelStage
    def __init__(self, model_version: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., old_stage: _Optional[_Union[_common_pb2.ModelStage, str]] = ...) -> None: ...

class ModelDeleted(_message.Message):
    __slots__ = ("model_version", "model", "version", "old_stage", "purged")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OLD_STAGE_FIELD_NUMBER: _ClassVar[int]
    PURGED_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    model: str
    version: int
    old_stage: _common_pb2.ModelStage
    purged: bool
    def __init__(self, model_version: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., old_stage: _Optional[_Union[_common_pb2.ModelStage, str]] = ..., purged: _Optional[bool] = ...) -> None: ...

class PromotionDecided(_message.Message):
    __slots__ = ("model_version", "model", "version", "target", "incumbent_version", "accepted", "bypassed", "metric", "candidate_value", "incumbent_value", "required_value", "candidate_latency", "max_latency", "reasons")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    INCUMBENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    BYPASSED_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VALUE_FIELD_NUMBER: _ClassVar[int]
    INCUMBENT_VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_VALUE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LATENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    model: str
    version: int
    target: str
    incumbent_version: int
    accepted: bool
    bypassed: bool
    metric: str
    candidate_value: float
    incumbent_value: float
    required_value: float
    candidate_latency: float
    max_latency: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_version: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., target: _Optional[str] = ..., incumbent_version: _Optional[int] = ..., accepted: _Optional[bool] = ..., bypassed: _Optional[bool] = ..., metric: _Optional[str] = ..., candidate_value: _Optional[float] = ..., incumbent_value: _Optional[float] = ..., required_value: _Optional[float] = ..., candidate_latency: _Optional[float] = ..., max_latency: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...
