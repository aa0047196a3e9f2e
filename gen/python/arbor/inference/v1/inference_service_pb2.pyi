from arbor.common.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExtraColumnsPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXTRA_COLUMNS_POLICY_UNSPECIFIED: _ClassVar[ExtraColumnsPolicy]
    EXTRA_COLUMNS_POLICY_IGNORE: _ClassVar[ExtraColumnsPolicy]
    EXTRA_COLUMNS_POLICY_REJECT: _ClassVar[ExtraColumnsPolicy]

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PROTO: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_ARROW: _ClassVar[OutputFormat]

class ExplainMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPLAIN_METHOD_UNSPECIFIED: _ClassVar[ExplainMethod]
    EXPLAIN_METHOD_SHAP: _ClassVar[ExplainMethod]
    EXPLAIN_METHOD_NATIVE: _ClassVar[ExplainMethod]
EXTRA_COLUMNS_POLICY_UNSPECIFIED: ExtraColumnsPolicy
EXTRA_COLUMNS_POLICY_IGNORE: ExtraColumnsPolicy
EXTRA_COLUMNS_POLICY_REJECT: ExtraColumnsPolicy
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_PROTO: OutputFormat
OUTPUT_FORMAT_ARROW: OutputFormat
EXPLAIN_METHOD_UNSPECIFIED: ExplainMethod
EXPLAIN_METHOD_SHAP: ExplainMethod
EXPLAIN_METHOD_NATIVE: ExplainMethod

class PredictRequest(_message.Message):
    __slots__ = ("model", "input", "include_probabilities", "extra_columns", "output_format")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    EXTRA_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelSelector
    input: _common_pb2.InlineData
    include_probabilities: bool
    extra_columns: ExtraColumnsPolicy
    output_format: OutputFormat
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelSelector, _Mapping]] = ..., input: _Optional[_Union[_common_pb2.InlineData, _Mapping]] = ..., include_probabilities: _Optional[bool] = ..., extra_columns: _Optional[_Union[ExtraColumnsPolicy, str]] = ..., output_format: _Optional[_Union[OutputFormat, str]] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("model_version", "model", "version", "stage", "experiment", "model_type", "task_type")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    model: str
    version: int
    stage: _common_pb2.ModelStage
    experiment: str
    model_type: _common_pb2.ModelType
    task_type: _common_pb2.TaskType
    def __init__(self, model_version: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., stage: _Optional[_Union[_common_pb2.ModelStage, str]] = ..., experiment: _Optional[str] = ..., model_type: _Optional[_Union[_common_pb2.ModelType, str]] = ..., task_type: _Optional[_Union[_common_pb2.TaskType, str]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("served_model", "row_count", "labels", "values", "classes", "probabilities", "arrow_ipc")
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    served_model: ServedModel
    row_count: int
    labels: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    values: _containers.RepeatedScalarFieldContainer[float]
    classes: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    arrow_ipc: bytes
    def __init__(self, served_model: _Optional[_Union[ServedModel, _Mapping]] = ..., row_count: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., values: _Optional[_Iterable[float]] = ..., classes: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Iterable[float]] = ..., arrow_ipc: _Optional[bytes] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "input", "per_row", "top_k", "method")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PER_ROW_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelSelector
    input: _common_pb2.InlineData
    per_row: bool
    top_k: int
    method: ExplainMethod
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelSelector, _Mapping]] = ..., input: _Optional[_Union[_common_pb2.InlineData, _Mapping]] = ..., per_row: _Optional[bool] = ..., top_k: _Optional[int] = ..., method: _Optional[_Union[ExplainMethod, str]] = ...) -> None: ...

class FeatureImportance(_message.Message):
    __slots__ = ("feature", "importance")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    importance: float
    def __init__(self, feature: _Optional[str] = ..., importance: _Optional[float] = ...) -> None: ...

class RowContribution(_message.Message):
    __slots__ = ("row_index", "class_label", "base_value", "contributions")
    ROW_INDEX_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABEL_FIELD_NUMBER: _ClassVar[int]
    BASE_VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    row_index: int
    class_label: str
    base_value: float
    contributions: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, row_index: _Optional[int] = ..., class_label: _Optional[str] = ..., base_value: _Optional[float] = ..., contributions: _Optional[_Iterable[float]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("served_model", "method", "fallback_reason", "global_importance", "features", "rows")
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    served_model: ServedModel
    method: ExplainMethod
    fallback_reason: str
    global_importance: _containers.RepeatedCompositeFieldContainer[FeatureImportance]
    features: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[RowContribution]
    def __init__(self, served_model: _Optional[_Union[ServedModel, _Mapping]] = ..., method: _Optional[_Union[ExplainMethod, str]] = ..., fallback_reason: _Optional[str] = ..., global_importance: _Optional[_Iterable[_Union[FeatureImportance, _Mapping]]] = ..., features: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[RowContribution, _Mapping]]] = ...) -> None: ...
