from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_BINARY: _ClassVar[TaskType]
    TASK_TYPE_MULTICLASS: _ClassVar[TaskType]
    TASK_TYPE_REGRESSION: _ClassVar[TaskType]

class ModelType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_TYPE_UNSPECIFIED: _ClassVar[ModelType]
    MODEL_TYPE_CATBOOST: _ClassVar[ModelType]
    MODEL_TYPE_XGBOOST: _ClassVar[ModelType]
    MODEL_TYPE_LIGHTGBM: _ClassVar[ModelType]
    MODEL_TYPE_AUTO: _ClassVar[ModelType]
    MODEL_TYPE_ENSEMBLE: _ClassVar[ModelType]

class ModelStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STAGE_UNSPECIFIED: _ClassVar[ModelStage]
    MODEL_STAGE_NONE: _ClassVar[ModelStage]
    MODEL_STAGE_STAGING: _ClassVar[ModelStage]
    MODEL_STAGE_PRODUCTION: _ClassVar[ModelStage]
    MODEL_STAGE_ARCHIVED: _ClassVar[ModelStage]

class DataFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_FORMAT_UNSPECIFIED: _ClassVar[DataFormat]
    DATA_FORMAT_PARQUET: _ClassVar[DataFormat]
    DATA_FORMAT_CSV: _ClassVar[DataFormat]
    DATA_FORMAT_NDJSON: _ClassVar[DataFormat]
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_BINARY: TaskType
TASK_TYPE_MULTICLASS: TaskType
TASK_TYPE_REGRESSION: TaskType
MODEL_TYPE_UNSPECIFIED: ModelType
MODEL_TYPE_CATBOOST: ModelType
MODEL_TYPE_XGBOOST: ModelType
MODEL_TYPE_LIGHTGBM: ModelType
MODEL_TYPE_AUTO: ModelType
MODEL_TYPE_ENSEMBLE: ModelType
MODEL_STAGE_UNSPECIFIED: ModelStage
MODEL_STAGE_NONE: ModelStage
MODEL_STAGE_STAGING: ModelStage
MODEL_STAGE_PRODUCTION: ModelStage
MODEL_STAGE_ARCHIVED: ModelStage
DATA_FORMAT_UNSPECIFIED: DataFormat
DATA_FORMAT_PARQUET: DataFormat
DATA_FORMAT_CSV: DataFormat
DATA_FORMAT_NDJSON: DataFormat

class InlineData(_message.Message):
    __slots__ = ("json_rows", "columns", "arrow_ipc")
    JSON_ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    json_rows: JsonRows
    columns: ColumnarData
    arrow_ipc: bytes
    def __init__(self, json_rows: _Optional[_Union[JsonRows, _Mapping]] = ..., columns: _Optional[_Union[ColumnarData, _Mapping]] = ..., arrow_ipc: _Optional[bytes] = ...) -> None: ...

class JsonRows(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    def __init__(self, rows: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ...) -> None: ...

class ColumnarData(_message.Message):
    __slots__ = ("columns",)
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "double_values", "int64_values", "string_values", "bool_values", "timestamp_micros", "null_indices")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUES_FIELD_NUMBER: _ClassVar[int]
    INT64_VALUES_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUES_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MICROS_FIELD_NUMBER: _ClassVar[int]
    NULL_INDICES_FIELD_NUMBER: _ClassVar[int]
    name: str
    double_values: DoubleValues
    int64_values: Int64Values
    string_values: StringValues
    bool_values: BoolValues
    timestamp_micros: Int64Values
    null_indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., double_values: _Optional[_Union[DoubleValues, _Mapping]] = ..., int64_values: _Optional[_Union[Int64Values, _Mapping]] = ..., string_values: _Optional[_Union[StringValues, _Mapping]] = ..., bool_values: _Optional[_Union[BoolValues, _Mapping]] = ..., timestamp_micros: _Optional[_Union[Int64Values, _Mapping]] = ..., null_indices: _Optional[_Iterable[int]] = ...) -> None: ...

class DoubleValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Int64Values(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class StringValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class BoolValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, values: _Optional[_Iterable[bool]] = ...) -> None: ...

class ColumnSchema(_message.Message):
    __slots__ = ("name", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ...) -> None: ...

class ArtifactFile(_message.Message):
    __slots__ = ("uri", "key", "sha256", "size_bytes")
    URI_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    uri: str
    key: str
    sha256: str
    size_bytes: int
    def __init__(self, uri: _Optional[str] = ..., key: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ModelSelector(_message.Message):
    __slots__ = ("model_version", "experiment", "stage", "alias")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    experiment: str
    stage: StageSelector
    alias: AliasSelector
    def __init__(self, model_version: _Optional[str] = ..., experiment: _Optional[str] = ..., stage: _Optional[_Union[StageSelector, _Mapping]] = ..., alias: _Optional[_Union[AliasSelector, _Mapping]] = ...) -> None: ...

class StageSelector(_message.Message):
    __slots__ = ("model", "stage")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    stage: ModelStage
    def __init__(self, model: _Optional[str] = ..., stage: _Optional[_Union[ModelStage, str]] = ...) -> None: ...

class AliasSelector(_message.Message):
    __slots__ = ("model", "alias")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    model: str
    alias: str
    def __init__(self, model: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...
