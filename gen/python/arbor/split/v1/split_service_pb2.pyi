import datetime

from arbor.common.v1 import common_pb2 as _common_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SplitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_STATE_UNSPECIFIED: _ClassVar[SplitState]
    SPLIT_STATE_READY: _ClassVar[SplitState]
    SPLIT_STATE_DELETED: _ClassVar[SplitState]
SPLIT_STATE_UNSPECIFIED: SplitState
SPLIT_STATE_READY: SplitState
SPLIT_STATE_DELETED: SplitState

class Split(_message.Message):
    __slots__ = ("name", "split_id", "display_name", "description", "labels", "state", "source", "target_column", "task_type", "strategy", "fractions", "seed", "schema", "parts", "null_counts", "content_hash", "leakage_report", "create_time", "update_time", "delete_time", "etag", "row_count")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class NullCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPLIT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_COLUMN_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FRACTIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    NULL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    LEAKAGE_REPORT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    split_id: str
    display_name: str
    description: str
    labels: _containers.ScalarMap[str, str]
    state: SplitState
    source: DataSource
    target_column: str
    task_type: _common_pb2.TaskType
    strategy: SplitStrategy
    fractions: Fractions
    seed: int
    schema: _containers.RepeatedCompositeFieldContainer[_common_pb2.ColumnSchema]
    parts: _containers.RepeatedCompositeFieldContainer[SplitPart]
    null_counts: _containers.ScalarMap[str, int]
    content_hash: str
    leakage_report: LeakageReport
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    etag: str
    row_count: int
    def __init__(self, name: _Optional[str] = ..., split_id: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., state: _Optional[_Union[SplitState, str]] = ..., source: _Optional[_Union[DataSource, _Mapping]] = ..., target_column: _Optional[str] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ..., strategy: _Optional[_Union[SplitStrategy, _Mapping]] = ..., fractions: _Optional[_Union[Fractions, _Mapping]] = ..., seed: _Optional[int] = ..., schema: _Optional[_Iterable[_Union[_common_pb2.ColumnSchema, _Mapping]]] = ..., parts: _Optional[_Iterable[_Union[SplitPart, _Mapping]]] = ..., null_counts: _Optional[_Mapping[str, int]] = ..., content_hash: _Optional[str] = ..., leakage_report: _Optional[_Union[LeakageReport, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., row_count: _Optional[int] = ...) -> None: ...

class DataSource(_message.Message):
    __slots__ = ("inline", "uri", "format")
    INLINE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    inline: _common_pb2.InlineData
    uri: str
    format: _common_pb2.DataFormat
    def __init__(self, inline: _Optional[_Union[_common_pb2.InlineData, _Mapping]] = ..., uri: _Optional[str] = ..., format: _Optional[_Union[_common_pb2.DataFormat, str]] = ...) -> None: ...

class SplitStrategy(_message.Message):
    __slots__ = ("random", "time", "entity")
    RANDOM_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    random: RandomStrategy
    time: TimeStrategy
    entity: EntityStrategy
    def __init__(self, random: _Optional[_Union[RandomStrategy, _Mapping]] = ..., time: _Optional[_Union[TimeStrategy, _Mapping]] = ..., entity: _Optional[_Union[EntityStrategy, _Mapping]] = ...) -> None: ...

class RandomStrategy(_message.Message):
    __slots__ = ("stratify",)
    STRATIFY_FIELD_NUMBER: _ClassVar[int]
    stratify: bool
    def __init__(self, stratify: _Optional[bool] = ...) -> None: ...

class TimeStrategy(_message.Message):
    __slots__ = ("time_column", "cutoffs", "by_row_fraction", "by_time_range")
    TIME_COLUMN_FIELD_NUMBER: _ClassVar[int]
    CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    BY_ROW_FRACTION_FIELD_NUMBER: _ClassVar[int]
    BY_TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    time_column: str
    cutoffs: TimeCutoffs
    by_row_fraction: bool
    by_time_range: bool
    def __init__(self, time_column: _Optional[str] = ..., cutoffs: _Optional[_Union[TimeCutoffs, _Mapping]] = ..., by_row_fraction: _Optional[bool] = ..., by_time_range: _Optional[bool] = ...) -> None: ...

class TimeCutoffs(_message.Message):
    __slots__ = ("validation_start", "test_start")
    VALIDATION_START_FIELD_NUMBER: _ClassVar[int]
    TEST_START_FIELD_NUMBER: _ClassVar[int]
    validation_start: _timestamp_pb2.Timestamp
    test_start: _timestamp_pb2.Timestamp
    def __init__(self, validation_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., test_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EntityStrategy(_message.Message):
    __slots__ = ("entity_column", "stratify")
    ENTITY_COLUMN_FIELD_NUMBER: _ClassVar[int]
    STRATIFY_FIELD_NUMBER: _ClassVar[int]
    entity_column: str
    stratify: bool
    def __init__(self, entity_column: _Optional[str] = ..., stratify: _Optional[bool] = ...) -> None: ...

class Fractions(_message.Message):
    __slots__ = ("train", "validation", "test")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    train: float
    validation: float
    test: float
    def __init__(self, train: _Optional[float] = ..., validation: _Optional[float] = ..., test: _Optional[float] = ...) -> None: ...

class SplitPart(_message.Message):
    __slots__ = ("part", "row_count", "artifact", "class_balance")
    class ClassBalanceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PART_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    CLASS_BALANCE_FIELD_NUMBER: _ClassVar[int]
    part: str
    row_count: int
    artifact: _common_pb2.ArtifactFile
    class_balance: _containers.ScalarMap[str, int]
    def __init__(self, part: _Optional[str] = ..., row_count: _Optional[int] = ..., artifact: _Optional[_Union[_common_pb2.ArtifactFile, _Mapping]] = ..., class_balance: _Optional[_Mapping[str, int]] = ...) -> None: ...

class LeakageReport(_message.Message):
    __slots__ = ("duplicate_rows_across_parts", "shared_entities", "time_order_violations", "suspicious_features", "warnings")
    DUPLICATE_ROWS_ACROSS_PARTS_FIELD_NUMBER: _ClassVar[int]
    SHARED_ENTITIES_FIELD_NUMBER: _ClassVar[int]
    TIME_ORDER_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    SUSPICIOUS_FEATURES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    duplicate_rows_across_parts: int
    shared_entities: int
    time_order_violations: int
    suspicious_features: _containers.RepeatedCompositeFieldContainer[SuspiciousFeature]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, duplicate_rows_across_parts: _Optional[int] = ..., shared_entities: _Optional[int] = ..., time_order_violations: _Optional[int] = ..., suspicious_features: _Optional[_Iterable[_Union[SuspiciousFeature, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class SuspiciousFeature(_message.Message):
    __slots__ = ("column", "score", "metric")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    column: str
    score: float
    metric: str
    def __init__(self, column: _Optional[str] = ..., score: _Optional[float] = ..., metric: _Optional[str] = ...) -> None: ...

class CreateSplitRequest(_message.Message):
    __slots__ = ("split", "split_id", "request_id", "fail_on_leakage")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FAIL_ON_LEAKAGE_FIELD_NUMBER: _ClassVar[int]
    split: Split
    split_id: str
    request_id: str
    fail_on_leakage: bool
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ..., split_id: _Optional[str] = ..., request_id: _Optional[str] = ..., fail_on_leakage: _Optional[bool] = ...) -> None: ...

class CreateSplitResponse(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class GetSplitRequest(_message.Message):
    __slots__ = ("name", "show_deleted")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    name: str
    show_deleted: bool
    def __init__(self, name: _Optional[str] = ..., show_deleted: _Optional[bool] = ...) -> None: ...

class GetSplitResponse(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class ListSplitsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "label_filter", "state_filter", "show_deleted")
    class LabelFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    STATE_FILTER_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    label_filter: _containers.ScalarMap[str, str]
    state_filter: SplitState
    show_deleted: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., label_filter: _Optional[_Mapping[str, str]] = ..., state_filter: _Optional[_Union[SplitState, str]] = ..., show_deleted: _Optional[bool] = ...) -> None: ...

class ListSplitsResponse(_message.Message):
    __slots__ = ("splits", "next_page_token")
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    splits: _containers.RepeatedCompositeFieldContainer[Split]
    next_page_token: str
    def __init__(self, splits: _Optional[_Iterable[_Union[Split, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateSplitRequest(_message.Message):
    __slots__ = ("split", "update_mask")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    split: Split
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateSplitResponse(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class DeleteSplitRequest(_message.Message):
    __slots__ = ("name", "purge", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    purge: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., purge: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteSplitResponse(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...
