"""The data work of a split, all in Polars: reading sources, assigning rows, leakage checks.

Nothing here knows gRPC or SQL. ``execute_split`` reads a source lazily, collects only the few
columns a strategy needs (row index, target, time or entity) to decide which part every row
goes to, then streams the source once more and, in that one shared scan, writes every part as
Parquet and gathers the feature hashes, null counts and leakage sample, so a file larger than
memory splits with bounded memory. CSV and NDJSON are first parsed once into a Parquet staging
file, so a malformed line fails before anything is written.

Determinism: every random choice is a splitmix64 hash of a row (or entity) number and the seed,
computed in Polars with wrapping 64-bit arithmetic, so the assignment is the same on every
machine and Polars version; rows keep their source order inside a part; Parquet is written
with fixed settings and no timestamps, so with one Polars version the same request gives
byte-identical parts (and the same content hash) whatever the thread count.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import io
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import polars as pl

from arbor_core.artifacts import default_gcs_client
from arbor_core.errors import (
    ArborError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    PreconditionViolation,
    Unavailable,
)

PART_NAMES = ("train", "validation", "test")
ROW = "__arbor_row"
PART = "__arbor_part"
SAMPLE = "__arbor_sample"
INTERNAL_PREFIX = "__arbor_"
NULL_CLASS = "<null>"

# Parquet settings fixed for byte-identical output (no timestamps are ever written by Polars).
# LZ4 costs about a fifth less CPU than zstd for a few percent larger files.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "lz4",
    "statistics": True,
    "row_group_size": 100_000,
}
CSV_INFER_ROWS = 10_000
# Leakage checks: rows sampled for single-feature scores, and when a score is "too good".
LEAKAGE_SAMPLE_ROWS = 20_000
LEAKAGE_MIN_ROWS = 100
LEAKAGE_MIN_CLASS_ROWS = 10
SUSPICIOUS_AUC = 0.99
SUSPICIOUS_R2 = 0.99
NUMERIC_BINS = 100
# Integer-valued targets with at most this many distinct values are guessed to be classes.
MAX_CLASSES = 20
DEFAULT_FRACTIONS = (0.8, 0.2, 0.0)
FRACTION_TOLERANCE = 1e-6

_U64 = pl.UInt64
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
# Distinct hash streams so that the sample and the assignment are independent.
_STREAM_ASSIGN = 0x5EED_0001
_STREAM_SAMPLE = 0x5EED_0002
_STREAM_ENTITY = 0x5EED_0003
_ROW_HASH_SEED = 0xA5B0_5EED


class TaskType(enum.StrEnum):
    """The prediction problem a target column describes."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"

    @property
    def is_classification(self) -> bool:
        return self is not TaskType.REGRESSION


class DataFormat(enum.StrEnum):
    PARQUET = "parquet"
    CSV = "csv"
    NDJSON = "ndjson"


_EXTENSIONS = {
    ".parquet": DataFormat.PARQUET,
    ".pq": DataFormat.PARQUET,
    ".csv": DataFormat.CSV,
    ".ndjson": DataFormat.NDJSON,
    ".jsonl": DataFormat.NDJSON,
}


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class Fractions:
    """Share of rows per part; ``test == 0`` means there is no test part."""

    train: float
    validation: float
    test: float = 0.0

    @property
    def parts(self) -> tuple[str, ...]:
        return PART_NAMES if self.test > 0 else PART_NAMES[:2]


@dataclass(frozen=True)
class RandomStrategy:
    stratify: bool = False


@dataclass(frozen=True)
class TimeStrategy:
    """``mode`` says how boundaries are found; cut-offs are aware UTC datetimes."""

    time_column: str
    mode: Literal["cutoffs", "row_fraction", "time_range"] = "row_fraction"
    validation_start: dt.datetime | None = None
    test_start: dt.datetime | None = None


@dataclass(frozen=True)
class EntityStrategy:
    entity_column: str
    stratify: bool = False


Strategy = RandomStrategy | TimeStrategy | EntityStrategy


@dataclass(frozen=True)
class UriSource:
    """A file: ``gs://bucket/object`` or a local path / ``file://`` URI under an allowed root."""

    uri: str
    format: DataFormat | None = None


@dataclass(frozen=True)
class InlineSource:
    """Rows sent in the request, already turned into a frame; only their hash is recorded."""

    frame: pl.DataFrame
    shape: str  # "json_rows", "columns" or "arrow_ipc"
    sha256: str


Source = UriSource | InlineSource


@dataclass(frozen=True)
class SplitSpec:
    """Everything that decides a split's content (metadata such as labels is not here)."""

    source: Source
    target_column: str
    strategy: Strategy
    fractions: Fractions
    seed: int


@dataclass(frozen=True)
class DataAccess:
    """Where sources may be read from; ``gcs_client`` overrides the default storage client."""

    allowed_roots: Sequence[str]
    gcs_client: Any = None


# --------------------------------------------------------------------------- the outcome


@dataclass(frozen=True)
class SuspiciousFeature:
    column: str
    score: float
    metric: str  # "roc_auc" or "r2"


@dataclass
class LeakageReport:
    duplicate_rows_across_parts: int = 0
    shared_entities: int = 0
    time_order_violations: int = 0
    suspicious_features: list[SuspiciousFeature] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def has_findings(self) -> bool:
        return bool(
            self.duplicate_rows_across_parts
            or self.shared_entities
            or self.time_order_violations
            or self.suspicious_features
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "duplicate_rows_across_parts": self.duplicate_rows_across_parts,
            "shared_entities": self.shared_entities,
            "time_order_violations": self.time_order_violations,
            "suspicious_features": [
                {"column": f.column, "score": f.score, "metric": f.metric}
                for f in self.suspicious_features
            ],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeakageReport:
        return cls(
            duplicate_rows_across_parts=int(data.get("duplicate_rows_across_parts", 0)),
            shared_entities=int(data.get("shared_entities", 0)),
            time_order_violations=int(data.get("time_order_violations", 0)),
            suspicious_features=[
                SuspiciousFeature(f["column"], float(f["score"]), f["metric"])
                for f in data.get("suspicious_features", [])
            ],
            warnings=list(data.get("warnings", [])),
        )


@dataclass(frozen=True)
class PartFile:
    """One part written to a local file, not yet uploaded."""

    name: str
    row_count: int
    path: Path
    sha256: str
    size: int
    class_balance: dict[str, int]


@dataclass(frozen=True)
class SplitOutcome:
    row_count: int
    schema: list[tuple[str, str]]
    null_counts: dict[str, int]
    task_type: TaskType
    parts: list[PartFile]
    content_hash: str
    leakage: LeakageReport


# --------------------------------------------------------------------------- validation


def validate_fractions(fractions: Fractions | None) -> Fractions:
    """Unset (all zero) means 0.8 / 0.2 / 0; otherwise each in range and the sum exactly 1."""
    if fractions is None or (
        fractions.train == 0 and fractions.validation == 0 and fractions.test == 0
    ):
        return Fractions(*DEFAULT_FRACTIONS)
    problems: list[tuple[str, str]] = []
    for name, value, low_open in (
        ("train", fractions.train, True),
        ("validation", fractions.validation, True),
        ("test", fractions.test, False),
    ):
        if not math.isfinite(value):
            problems.append((name, f"must be a finite number (got {value})"))
        elif (value <= 0 if low_open else value < 0) or value >= 1:
            interval = "(0, 1)" if low_open else "[0, 1)"
            problems.append((name, f"must be in {interval} (got {value})"))
    if problems:
        name, why = problems[0]
        raise InvalidArgument(
            f"split.fractions.{name} {why}",
            field=f"split.fractions.{name}",
            reason="INVALID_FRACTIONS",
        )
    total = fractions.train + fractions.validation + fractions.test
    if abs(total - 1.0) > FRACTION_TOLERANCE:
        raise InvalidArgument(
            f"split.fractions must sum to 1 (train + validation + test = {total:g})",
            field="split.fractions",
            reason="INVALID_FRACTIONS",
        )
    return fractions


_SPLIT_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_split_id(split_id: str) -> str:
    if not _SPLIT_ID.match(split_id):
        raise InvalidArgument(
            f"split_id {split_id!r} must be 1-63 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit",
            field="split_id",
            reason="INVALID_SPLIT_ID",
        )
    return split_id


# --------------------------------------------------------------------------- inline data


@dataclass(frozen=True)
class InlineColumn:
    """One typed column of ``ColumnarData``; ``kind`` is double, int64, string, bool or
    timestamp_micros (``None`` when the request set no values)."""

    name: str
    kind: str | None
    values: Sequence[Any]
    null_indices: Sequence[int] = ()


_INLINE_DTYPES: dict[str, pl.DataType] = {
    "double": pl.Float64(),
    "int64": pl.Int64(),
    "string": pl.String(),
    "bool": pl.Boolean(),
}


def frame_from_rows(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """JSON-friendly rows (one dict per row, same keys in every row) to a frame.

    JSON has only one number type, so a numeric column whose values are all integral becomes
    Int64 (grpcurl users send ``1``, not ``1.0``, for class labels and ids).
    """
    base = "split.source.inline.json_rows.rows"
    if not rows:
        raise InvalidArgument("the inline rows are empty", field=base, reason="EMPTY_DATASET")
    names = list(rows[0].keys())
    if not names:
        raise InvalidArgument("rows[0] has no columns", field=f"{base}[0]", reason="EMPTY_DATASET")
    expected = set(names)
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for i, row in enumerate(rows):
        keys = set(row.keys())
        if keys != expected:
            missing = sorted(expected - keys)
            extra = sorted(keys - expected)
            detail = "; ".join(
                part
                for part in (
                    f"missing {missing}" if missing else "",
                    f"unexpected {extra}" if extra else "",
                )
                if part
            )
            raise InvalidArgument(
                f"rows[{i}] has different columns than rows[0]: {detail}",
                field=f"{base}[{i}]",
                reason="INCONSISTENT_COLUMNS",
            )
        for name in names:
            value = row[name]
            if isinstance(value, dict | list):
                raise InvalidArgument(
                    f"rows[{i}].{name}: nested values are not supported; send scalars",
                    field=f"{base}[{i}].{name}",
                    reason="UNSUPPORTED_VALUE",
                )
            columns[name].append(value)
    series = []
    for name, values in columns.items():
        kinds = {_json_kind(v) for v in values if v is not None}
        if len(kinds) > 1:
            raise InvalidArgument(
                f"column {name!r} mixes value types ({', '.join(sorted(kinds))})",
                field=base,
                reason="INCONSISTENT_COLUMN_TYPES",
                metadata={"column": name},
            )
        if kinds == {"number"}:
            values = [None if v is None else float(v) for v in values]
        s = pl.Series(name, values, strict=False)
        if s.dtype == pl.Float64 and s.null_count() < len(s):
            finite = s.drop_nulls()
            if (
                finite.is_finite().all()
                and (finite == finite.floor()).all()
                and finite.abs().max() < 2**53  # type: ignore[operator]
            ):
                s = s.cast(pl.Int64)
        series.append(s)
    return pl.DataFrame(series)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def frame_from_columns(columns: Sequence[InlineColumn]) -> pl.DataFrame:
    """Typed columns (all the same length) to a frame, applying ``null_indices``."""
    base = "split.source.inline.columns.columns"
    if not columns:
        raise InvalidArgument("the inline columns are empty", field=base, reason="EMPTY_DATASET")
    seen: set[str] = set()
    length: int | None = None
    series: list[pl.Series] = []
    for i, col in enumerate(columns):
        where = f"{base}[{i}]"
        if not col.name:
            raise InvalidArgument(f"{where}.name is required", field=f"{where}.name")
        if col.name in seen:
            raise InvalidArgument(
                f"column {col.name!r} appears twice",
                field=f"{where}.name",
                reason="DUPLICATE_COLUMN",
            )
        seen.add(col.name)
        if col.kind is None:
            raise InvalidArgument(
                f"column {col.name!r} has no values; set one of the value kinds",
                field=f"{where}.values",
            )
        if length is None:
            length = len(col.values)
        elif len(col.values) != length:
            raise InvalidArgument(
                f"column {col.name!r} has {len(col.values)} values, column "
                f"{columns[0].name!r} has {length}: rows are inconsistent",
                field=f"{where}.values",
                reason="INCONSISTENT_COLUMNS",
            )
        if col.kind == "timestamp_micros":
            s = pl.Series(col.name, list(col.values), dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
        elif col.kind in _INLINE_DTYPES:
            s = pl.Series(col.name, list(col.values), dtype=_INLINE_DTYPES[col.kind])
        else:
            raise InvalidArgument(f"unknown value kind {col.kind!r}", field=f"{where}.values")
        if col.null_indices:
            bad = [j for j in col.null_indices if not 0 <= j < len(s)]
            if bad:
                raise InvalidArgument(
                    f"column {col.name!r}: null index {bad[0]} is out of range",
                    field=f"{where}.null_indices",
                )
            s = s.scatter(list(col.null_indices), None)
        series.append(s)
    return pl.DataFrame(series)


def frame_from_arrow_ipc(data: bytes) -> pl.DataFrame:
    """An Arrow IPC stream (or file) to a frame."""
    if not data:
        raise InvalidArgument(
            "arrow_ipc is empty", field="split.source.inline.arrow_ipc", reason="EMPTY_DATASET"
        )
    errors: list[str] = []
    for reader in (pl.read_ipc_stream, pl.read_ipc):
        try:
            return reader(io.BytesIO(data))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    raise InvalidArgument(
        f"arrow_ipc is not an Arrow IPC stream or file ({errors[0][:200]})",
        field="split.source.inline.arrow_ipc",
        reason="SOURCE_UNREADABLE",
    )


# --------------------------------------------------------------------------- sources


def detect_format(path: str, explicit: DataFormat | None) -> DataFormat:
    if explicit is not None:
        return explicit
    lower = path.lower()
    for ext, fmt in _EXTENSIONS.items():
        if lower.endswith(ext):
            return fmt
    raise InvalidArgument(
        f"cannot tell the format of {path!r}: use a .parquet, .csv, .ndjson or .jsonl file, "
        "or set split.source.format",
        field="split.source.format",
        reason="UNSUPPORTED_FORMAT",
    )


def resolve_local_path(uri: str, allowed_roots: Sequence[str]) -> Path:
    """The real path of a local source, refused unless it lies under an allowed root.

    ``..`` segments are refused outright; symlinks are resolved before the check, so a link
    inside a root that points outside it is refused too.
    """
    field_name = "split.source.uri"
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in {"", "localhost"}:
            raise InvalidArgument(
                f"file URI {uri!r} names a host; only local files are supported",
                field=field_name,
                reason="UNSUPPORTED_URI",
            )
        raw = unquote(parsed.path)
    elif "://" in uri:
        raise InvalidArgument(
            f"unsupported URI scheme in {uri!r}: use gs://, file:// or a local path",
            field=field_name,
            reason="UNSUPPORTED_URI",
        )
    else:
        raw = uri
    if "\x00" in raw:
        raise InvalidArgument("the path contains a NUL byte", field=field_name)
    if ".." in Path(raw).parts or ".." in raw.split("/"):
        raise InvalidArgument(
            f"path {uri!r} must not contain '..'", field=field_name, reason="PATH_TRAVERSAL"
        )
    path = Path(raw)
    if not path.is_absolute():
        raise InvalidArgument(
            f"path {uri!r} must be absolute", field=field_name, reason="RELATIVE_PATH"
        )
    real = path.resolve()
    for root in allowed_roots:
        if root.startswith("gs://"):
            continue
        root_real = Path(root).resolve()
        if real == root_real or real.is_relative_to(root_real):
            break
    else:
        raise PermissionDenied(
            f"path {uri!r} is outside the allowed data roots",
            reason="DATA_PATH_NOT_ALLOWED",
            metadata={"uri": uri},
        )
    if not real.exists():
        raise InvalidArgument(f"no such file: {uri!r}", field=field_name, reason="SOURCE_NOT_FOUND")
    if not real.is_file():
        raise InvalidArgument(f"{uri!r} is not a file", field=field_name, reason="SOURCE_NOT_FILE")
    if not os.access(real, os.R_OK):
        raise InvalidArgument(
            f"{uri!r} is not readable", field=field_name, reason="SOURCE_UNREADABLE"
        )
    return real


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/object`` -> (bucket, object)."""
    field_name = "split.source.uri"
    parsed = urlparse(uri)
    bucket, name = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not name:
        raise InvalidArgument(
            f"{uri!r} must look like gs://bucket/path", field=field_name, reason="INVALID_URI"
        )
    if ".." in name.split("/"):
        raise InvalidArgument(
            f"{uri!r} must not contain '..'", field=field_name, reason="PATH_TRAVERSAL"
        )
    return bucket, name


def download_gcs(uri: str, dest: Path, access: DataAccess) -> Path:
    """Copy ``gs://bucket/object`` to ``dest``; gs roots in the allowed list restrict buckets."""
    bucket, name = parse_gcs_uri(uri)
    gs_roots = [r.rstrip("/") + "/" for r in access.allowed_roots if r.startswith("gs://")]
    if gs_roots and not any(uri.startswith(root) for root in gs_roots):
        raise PermissionDenied(
            f"{uri!r} is outside the allowed data roots",
            reason="DATA_PATH_NOT_ALLOWED",
            metadata={"uri": uri},
        )
    from google.api_core import exceptions as gexc

    client = access.gcs_client or default_gcs_client()
    try:
        blob = client.bucket(bucket).blob(name)
        blob.download_to_filename(str(dest), timeout=120)
    except gexc.NotFound:
        dest.unlink(missing_ok=True)
        raise InvalidArgument(
            f"no such object: {uri!r}", field="split.source.uri", reason="SOURCE_NOT_FOUND"
        ) from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        dest.unlink(missing_ok=True)
        raise PermissionDenied(
            f"storage refused access to {uri!r}", reason="SOURCE_ACCESS_DENIED"
        ) from exc
    except (gexc.GoogleAPIError, OSError) as exc:
        dest.unlink(missing_ok=True)
        raise Unavailable(f"cannot download {uri!r}: {exc}", reason="SOURCE_UNAVAILABLE") from exc
    return dest


def open_source(source: Source, access: DataAccess, workdir: Path) -> pl.LazyFrame:
    """A lazy frame over the source (gs:// objects are downloaded into ``workdir`` first)."""
    if isinstance(source, InlineSource):
        return source.frame.lazy()
    uri = source.uri.strip()
    if not uri:
        raise InvalidArgument(
            "split.source needs inline data or a uri", field="split.source", reason="NO_SOURCE"
        )
    if uri.startswith("gs://"):
        fmt = detect_format(parse_gcs_uri(uri)[1], source.format)
        path = download_gcs(uri, workdir / f"source.{fmt.value}", access)
    else:
        path = resolve_local_path(uri, access.allowed_roots)
        fmt = detect_format(uri, source.format)
    if path.stat().st_size == 0:
        raise InvalidArgument(
            f"{uri!r} is an empty file", field="split.source", reason="EMPTY_DATASET"
        )
    if fmt is DataFormat.PARQUET:
        with source_errors():
            return pl.scan_parquet(path)
    # Text formats are parsed once, here, into a Parquet staging file: every malformed line
    # fails now (not halfway through writing the parts) and the later passes read columns.
    staged = workdir / "source.staged.parquet"
    with source_errors():
        if fmt is DataFormat.CSV:
            text = pl.scan_csv(path, infer_schema_length=CSV_INFER_ROWS)
        else:
            text = pl.scan_ndjson(path, infer_schema_length=CSV_INFER_ROWS)
        text.sink_parquet(staged, compression="lz4", statistics=False)
        return pl.scan_parquet(staged)


@contextlib.contextmanager
def source_errors() -> Iterator[None]:
    """Reading failures (malformed file, ragged rows, bad types) name the source field."""
    try:
        yield
    except ArborError:
        raise
    except pl.exceptions.NoDataError as exc:
        raise InvalidArgument(
            f"the source is empty: {_first_line(exc)}",
            field="split.source",
            reason="EMPTY_DATASET",
        ) from exc
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise InvalidArgument(
            f"cannot read the source: {_first_line(exc)}",
            field="split.source",
            reason="SOURCE_UNREADABLE",
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# --------------------------------------------------------------------------- hashing


def _shr(expr: pl.Expr, bits: int) -> pl.Expr:
    return expr // pl.lit(1 << bits, dtype=_U64)


def _splitmix_expr(expr: pl.Expr) -> pl.Expr:
    """splitmix64 of a UInt64 expression (Polars integer arithmetic wraps, as needed)."""
    z = expr + pl.lit(_GOLDEN, dtype=_U64)
    z = z.xor(_shr(z, 30)) * pl.lit(0xBF58476D1CE4E5B9, dtype=_U64)
    z = z.xor(_shr(z, 27)) * pl.lit(0x94D049BB133111EB, dtype=_U64)
    return z.xor(_shr(z, 31))


def splitmix64(x: int) -> int:
    """The same function in Python (for offsets and tests)."""
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def random_key(index: pl.Expr, seed: int, stream: int) -> pl.Expr:
    """A reproducible pseudo-random UInt64 per index: distinct indices get distinct keys."""
    offset = splitmix64((seed & _MASK64) ^ stream)
    return _splitmix_expr(index.cast(_U64) + pl.lit(offset, dtype=_U64))


def row_hash(columns: Sequence[str]) -> pl.Expr:
    """A 64-bit hash of a row's values in ``columns``, for spotting duplicate rows.

    Column hashes are combined with wrapping multiply-add: vectorised per column, which is
    several times cheaper than hashing a struct row by row. Only compared within one run.
    """
    combined: pl.Expr | None = None
    for name in columns:
        h = pl.col(name).hash(_ROW_HASH_SEED)
        combined = h if combined is None else combined * pl.lit(_GOLDEN, dtype=_U64) + h
    assert combined is not None
    return combined


# --------------------------------------------------------------------------- task and target


def guess_task(target: pl.Series) -> TaskType:
    """binary / multiclass / regression from the target's dtype and distinct values."""
    field_name = "split.target_column"
    values = target.drop_nulls()
    if values.dtype.is_float():
        values = values.filter(values.is_not_nan())
    n_unique = values.n_unique()
    if n_unique < 2:
        raise InvalidArgument(
            f"target column {target.name!r} has {n_unique} distinct non-null value(s); "
            "a split needs at least two",
            field=field_name,
            reason="CONSTANT_TARGET",
        )
    dtype = values.dtype
    if dtype == pl.Boolean or dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return TaskType.BINARY if n_unique == 2 else TaskType.MULTICLASS
    if dtype.is_numeric():
        if n_unique == 2:
            return TaskType.BINARY
        integral = dtype.is_integer() or bool((values == values.floor()).all())
        if integral and n_unique <= MAX_CLASSES:
            return TaskType.MULTICLASS
        return TaskType.REGRESSION
    raise InvalidArgument(
        f"target column {target.name!r} has dtype {dtype}; use a numeric, boolean or string column",
        field=field_name,
        reason="UNSUPPORTED_TARGET_DTYPE",
    )


def _class_labels(target: pl.Series) -> pl.Series:
    """Class values as text, nulls as ``<null>`` (keys of SplitPart.class_balance)."""
    return target.cast(pl.String).fill_null(NULL_CLASS)


# --------------------------------------------------------------------------- assignment


def _part_from_position(pos: pl.Expr, fractions: Fractions) -> pl.Expr:
    """0/1/2 from a position in [0, 1): train below ``train``, then validation, then test."""
    c1 = fractions.train
    if fractions.test <= 0:
        return pl.when(pos < c1).then(0).otherwise(1).cast(pl.UInt8)
    c2 = fractions.train + fractions.validation
    return pl.when(pos < c1).then(0).when(pos < c2).then(1).otherwise(2).cast(pl.UInt8)


def assign_random(keys: pl.DataFrame, target: str, spec: SplitSpec, stratify: bool) -> pl.Series:
    """Rows ordered by a seeded hash of their number; within each class when stratified.

    A row at rank ``j`` of ``n`` (within its class) sits at position ``(j + 0.5) / n`` and the
    fractions cut positions into parts, so each class has ``round(n * fraction)`` rows per
    part: within one row of exact.
    """
    key = random_key(pl.col(ROW), spec.seed, _STREAM_ASSIGN)
    rank = key.rank("ordinal")
    count = pl.len()
    if stratify:
        rank, count = rank.over(target), count.over(target)
    pos = (rank.cast(pl.Float64) - 0.5) / count.cast(pl.Float64)
    return keys.select(_part_from_position(pos, spec.fractions).alias(PART)).to_series()


def time_micros(column: pl.Series) -> pl.Series:
    """A temporal (or date-like string) column as microseconds since the epoch, UTC.

    Naive datetimes and dates are taken as UTC, like the cut-offs they are compared with.
    """
    field_name = "split.strategy.time.time_column"
    dtype = column.dtype
    if dtype == pl.String:
        try:
            column = column.str.to_datetime(strict=True, time_unit="us")
        except Exception as exc:
            raise InvalidArgument(
                f"time column {column.name!r} holds strings that are not dates or timestamps "
                f"({_first_line(exc)})",
                field=field_name,
                reason="TIME_COLUMN_NOT_TEMPORAL",
            ) from exc
        dtype = column.dtype
    if dtype == pl.Date:
        column = column.cast(pl.Datetime("us"))
    elif not isinstance(dtype, pl.Datetime):
        raise InvalidArgument(
            f"time column {column.name!r} has dtype {dtype}; it must be a Date, a Datetime "
            "or a string of dates",
            field=field_name,
            reason="TIME_COLUMN_NOT_TEMPORAL",
        )
    micros = column.dt.epoch("us")
    if micros.null_count():
        raise InvalidArgument(
            f"time column {column.name!r} has {micros.null_count()} missing value(s); every "
            "row needs a time to be ordered",
            field=field_name,
            reason="TIME_COLUMN_HAS_NULLS",
        )
    return micros


def _to_micros(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def assign_time(micros: pl.Series, strategy: TimeStrategy, fractions: Fractions) -> pl.Series:
    """Parts by time: every validation row is later than every train row, and test later still."""
    t = pl.col("t")
    frame = pl.DataFrame({"t": micros})
    n = len(micros)
    if strategy.mode == "cutoffs":
        if strategy.validation_start is None:
            raise InvalidArgument(
                "cutoffs need validation_start",
                field="split.strategy.time.cutoffs.validation_start",
            )
        b1 = _to_micros(strategy.validation_start)
        if strategy.test_start is None:
            expr = pl.when(t < b1).then(0).otherwise(1)
        else:
            b2 = _to_micros(strategy.test_start)
            if b2 <= b1:
                raise InvalidArgument(
                    "test_start must be later than validation_start",
                    field="split.strategy.time.cutoffs.test_start",
                    reason="INVALID_CUTOFFS",
                )
            expr = pl.when(t < b1).then(0).when(t < b2).then(1).otherwise(2)
    elif strategy.mode == "time_range":
        lo, hi = int(micros.min()), int(micros.max())  # type: ignore[arg-type]
        span = float(hi - lo)
        b1f = lo + fractions.train * span
        expr = pl.when(t.cast(pl.Float64) < b1f).then(0)
        if fractions.test > 0:
            b2f = lo + (fractions.train + fractions.validation) * span
            expr = expr.when(t.cast(pl.Float64) < b2f).then(1).otherwise(2)
        else:
            expr = expr.otherwise(1)
    else:  # row_fraction: boundaries at the times of row quantiles; ties stay together
        ordered = micros.sort()
        n1 = math.ceil(fractions.train * n - 0.5)
        first_val: int | None = int(ordered[n1]) if n1 < n else None
        first_test: int | None = None
        if fractions.test > 0:
            n2 = math.ceil((fractions.train + fractions.validation) * n - 0.5)
            first_test = int(ordered[n2]) if n2 < n else None
        if first_val is None:
            expr = pl.lit(0)
        elif first_test is None:
            expr = pl.when(t < first_val).then(0).otherwise(1)
        else:
            expr = pl.when(t < first_val).then(0).when(t < first_test).then(1).otherwise(2)
    return frame.select(expr.cast(pl.UInt8).alias(PART)).to_series()


def assign_entity(
    keys: pl.DataFrame, entity: str, target: str, spec: SplitSpec, stratify: bool
) -> pl.Series:
    """Whole entities per part, in a seeded order, cut by their cumulative row share.

    Entities are numbered in sorted order (so the numbering does not depend on row order),
    shuffled by a seeded hash of that number, and an entity goes to the part its cumulative
    midpoint falls into. With ``stratify`` this happens separately per majority class, so
    every part gets a similar class mix while groups stay whole.
    """
    groups = keys.group_by(entity).agg(pl.len().alias("w"))
    if groups.height < 2:
        raise InvalidArgument(
            f"entity column {entity!r} has a single entity; an entity split needs several",
            field="split.strategy.entity.entity_column",
            reason="SINGLE_ENTITY",
        )
    strata: list[str] = []
    if stratify:
        majority = (
            keys.group_by(entity, target)
            .agg(pl.len().alias("c"))
            .with_columns(pl.col(target).cast(pl.String).fill_null(NULL_CLASS).alias("cls"))
            .sort([entity, "c", "cls"], descending=[False, True, False], nulls_last=True)
            .group_by(entity, maintain_order=True)
            .first()
            .select(entity, "cls")
        )
        groups = groups.join(majority, on=entity, how="left", nulls_equal=True)
        strata = ["cls"]
    groups = groups.sort(entity, nulls_last=True).with_row_index("eidx")
    groups = groups.with_columns(random_key(pl.col("eidx"), spec.seed, _STREAM_ENTITY).alias("k"))
    groups = groups.sort([*strata, "k"])
    w = pl.col("w").cast(pl.Float64)
    cum = w.cum_sum() - w / 2
    total = w.sum()
    if strata:
        cum, total = cum.over(strata), total.over(strata)
    groups = groups.with_columns(_part_from_position(cum / total, spec.fractions).alias(PART))
    joined = keys.select(entity).join(
        groups.select(entity, PART), on=entity, how="left", nulls_equal=True, maintain_order="left"
    )
    return joined.get_column(PART)


# --------------------------------------------------------------------------- leakage


def _auc(score: pl.Series, positive: pl.Series) -> float | None:
    """Rank-based ROC AUC (Mann-Whitney U) with ties averaged; None if a class is missing."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos < LEAKAGE_MIN_CLASS_ROWS or n_neg < LEAKAGE_MIN_CLASS_ROWS:
        return None
    ranks = score.rank("average")
    rank_sum = float(ranks.filter(positive).sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _oof_encoding(frame: pl.DataFrame, category: str, y_cols: list[str]) -> pl.DataFrame:
    """Out-of-fold per-category means of ``y_cols``: each row is encoded by the other fold's
    rows of its category (that fold's mean for unseen categories), so an id-like column that
    only memorises rows scores like noise instead of perfectly."""
    stats = frame.group_by("fold", category).agg(
        pl.len().alias("n"), *[pl.col(y).sum().alias(f"s_{y}") for y in y_cols]
    )
    priors = frame.group_by("fold").agg(*[pl.col(y).mean().alias(f"p_{y}") for y in y_cols])
    other = stats.with_columns((1 - pl.col("fold")).alias("fold"))
    priors_other = priors.with_columns((1 - pl.col("fold")).alias("fold"))
    enc = (
        frame.join(other, on=["fold", category], how="left", nulls_equal=True)
        .join(priors_other, on="fold", how="left")
        .with_columns(pl.col("n").fill_null(0))
    )
    return enc.select(
        *[
            pl.when(pl.col("n") > 0)
            .then(pl.col(f"s_{y}") / pl.col("n"))
            .otherwise(pl.col(f"p_{y}"))
            .alias(f"e_{y}")
            for y in y_cols
        ],
        *y_cols,
    )


def _feature_kind(dtype: pl.DataType) -> str | None:
    if dtype.is_numeric() or dtype.is_temporal():
        return "numeric"
    if dtype in (pl.String, pl.Boolean, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "categorical"
    return None


def single_feature_scores(
    sample: pl.DataFrame, target: str, task: TaskType
) -> list[SuspiciousFeature]:
    """Score every feature alone against the target; return those that score too well.

    Binary: rank AUC of numeric columns (either direction) and out-of-fold AUC of per-category
    target means. Multiclass: macro one-vs-rest AUC of out-of-fold class frequencies per
    category (numeric columns in quantile bins). Regression: out-of-fold R^2 on the target's
    ranks (robust to outliers) of per-category / per-bin means.
    """
    frame = sample.filter(pl.col(target).is_not_null())
    if target in frame.columns and frame.schema[target].is_float():
        frame = frame.filter(pl.col(target).is_not_nan())
    if frame.height < LEAKAGE_MIN_ROWS:
        return []
    frame = frame.with_columns(
        (random_key(pl.int_range(pl.len()), 0, _STREAM_SAMPLE) // pl.lit(1 << 63, dtype=_U64))
        .cast(pl.Int64)
        .alias("fold")
    )
    y = frame.get_column(target)
    if task is TaskType.REGRESSION:
        y_cols = {"y": (y.rank("average") / len(y)).alias("y")}
    else:
        labels = _class_labels(y)
        classes = sorted(labels.unique().to_list())
        if task is TaskType.BINARY:
            classes = classes[-1:]
        y_cols = {
            f"y{i}": (labels == c).cast(pl.Float64).alias(f"y{i}") for i, c in enumerate(classes)
        }
    found: list[SuspiciousFeature] = []
    for name, dtype in frame.schema.items():
        if name in (target, "fold"):
            continue
        kind = _feature_kind(dtype)
        if kind is None:
            continue
        col = frame.get_column(name)
        if kind == "numeric":
            x = col.to_physical().cast(pl.Float64)
            x = x.fill_nan(None)
            if task is TaskType.BINARY:
                keep = x.is_not_null()
                if int(keep.sum()) < LEAKAGE_MIN_ROWS or x.filter(keep).n_unique() < 2:
                    continue
                auc = _auc(x.filter(keep), y_cols["y0"].filter(keep).cast(pl.Boolean))
                if auc is not None:
                    score = max(auc, 1 - auc)
                    if score >= SUSPICIOUS_AUC:
                        found.append(SuspiciousFeature(name, round(score, 6), "roc_auc"))
                continue
            if x.drop_nulls().n_unique() < 2:
                continue
            n = len(x)
            bins = min(NUMERIC_BINS, max(2, n // 20))
            category = ((x.rank("min") - 1) * bins // n).cast(pl.Int64)
        else:
            category = col.cast(pl.String)
            if category.n_unique() < 2:
                continue
        work = pl.DataFrame([category.alias("cat"), frame.get_column("fold"), *y_cols.values()])
        enc = _oof_encoding(work, "cat", list(y_cols))
        if task is TaskType.REGRESSION:
            yv, ev = enc.get_column("y"), enc.get_column("e_y")
            sst = float(((yv - yv.mean()) ** 2).sum())  # type: ignore[operator]
            if sst <= 0:
                continue
            r2 = 1 - float(((yv - ev) ** 2).sum()) / sst
            if r2 >= SUSPICIOUS_R2:
                found.append(SuspiciousFeature(name, round(r2, 6), "r2"))
            continue
        aucs = [
            a
            for a in (
                _auc(enc.get_column(f"e_{yc}"), enc.get_column(yc).cast(pl.Boolean))
                for yc in y_cols
            )
            if a is not None
        ]
        if aucs:
            score = sum(aucs) / len(aucs)
            if score >= SUSPICIOUS_AUC:
                found.append(SuspiciousFeature(name, round(score, 6), "roc_auc"))
    return found


def duplicate_rows_across_parts(hashes: pl.DataFrame) -> int:
    """Rows whose feature hash occurs in more than one part."""
    if hashes.is_empty():
        return 0
    groups = hashes.group_by("h").agg(pl.col(PART).n_unique().alias("parts"), pl.len().alias("n"))
    return int(groups.filter(pl.col("parts") > 1).get_column("n").sum())


def shared_entities(keys: pl.DataFrame, entity: str) -> int:
    groups = keys.group_by(entity).agg(pl.col(PART).n_unique().alias("parts"))
    return int((groups.get_column("parts") > 1).sum())


def time_order_violations(micros: pl.Series, parts: pl.Series) -> int:
    """Validation rows not later than the latest train row, and test rows not later than the
    latest train or validation row."""
    frame = pl.DataFrame({"t": micros, "p": parts})
    violations = 0
    latest: int | None = None
    for part in range(3):
        times = frame.filter(pl.col("p") == part).get_column("t")
        if times.is_empty():
            continue
        if latest is not None:
            violations += int((times <= latest).sum())
        top = int(times.max())  # type: ignore[arg-type]
        latest = top if latest is None else max(latest, top)
    return violations


# --------------------------------------------------------------------------- the split


def _check_columns(schema: pl.Schema, spec: SplitSpec) -> None:
    names = list(schema.names())
    if not names:
        raise InvalidArgument(
            "the source has no columns", field="split.source", reason="EMPTY_DATASET"
        )
    clash = [n for n in names if n.startswith(INTERNAL_PREFIX)]
    if clash:
        raise InvalidArgument(
            f"column name {clash[0]!r} uses the reserved prefix {INTERNAL_PREFIX!r}",
            field="split.source",
            reason="RESERVED_COLUMN_NAME",
        )

    def need(column: str, field_name: str, what: str) -> None:
        if not column:
            raise InvalidArgument(f"{field_name} is required", field=field_name, reason="REQUIRED")
        if column not in schema:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise InvalidArgument(
                f"{what} {column!r} is not a column of the source (columns: {shown})",
                field=field_name,
                reason="UNKNOWN_COLUMN",
                metadata={"column": column},
            )

    need(spec.target_column, "split.target_column", "target column")
    strategy = spec.strategy
    if isinstance(strategy, TimeStrategy):
        field_name = "split.strategy.time.time_column"
        need(strategy.time_column, field_name, "time column")
        if strategy.time_column == spec.target_column:
            raise InvalidArgument("the time column cannot be the target column", field=field_name)
    elif isinstance(strategy, EntityStrategy):
        field_name = "split.strategy.entity.entity_column"
        need(strategy.entity_column, field_name, "entity column")
        if strategy.entity_column == spec.target_column:
            raise InvalidArgument("the entity column cannot be the target column", field=field_name)


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def content_hash(parts: Sequence[tuple[str, str]]) -> str:
    """sha256 over ``part:sha256`` lines in part order: equal hashes mean equal parts."""
    text = "".join(f"{name}:{sha}\n" for name, sha in parts)
    return hashlib.sha256(text.encode()).hexdigest()


def _empty_part_error(part: str, strategy: Strategy) -> InvalidArgument:
    if isinstance(strategy, TimeStrategy) and strategy.mode == "cutoffs":
        field_name = (
            "split.strategy.time.cutoffs.validation_start"
            if part in ("train", "validation")
            else "split.strategy.time.cutoffs.test_start"
        )
    else:
        field_name = f"split.fractions.{part}"
    return InvalidArgument(
        f"the {part} part would be empty; adjust {field_name} or use more data",
        field=field_name,
        reason="EMPTY_PART",
        metadata={"part": part},
    )


def execute_split(
    spec: SplitSpec,
    access: DataAccess,
    workdir: Path,
    *,
    fail_on_leakage: bool = False,
) -> SplitOutcome:
    """Read, assign, check for leakage and write the parts under ``workdir``.

    Raises InvalidArgument / PermissionDenied for bad input and FailedPrecondition when
    ``fail_on_leakage`` is set and the report has findings (no part is written then).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    lf = open_source(spec.source, access, workdir)
    with source_errors():
        schema = lf.collect_schema()
    _check_columns(schema, spec)
    target = spec.target_column
    strategy = spec.strategy
    key_columns = [target]
    if isinstance(strategy, TimeStrategy):
        key_columns.append(strategy.time_column)
    elif isinstance(strategy, EntityStrategy):
        key_columns.append(strategy.entity_column)

    # Pass 1: only the columns that decide the assignment.
    with source_errors():
        keys = lf.with_row_index(ROW).select(ROW, *key_columns).collect(engine="streaming")
    n = keys.height
    if n == 0:
        raise InvalidArgument(
            "the source has no rows", field="split.source", reason="EMPTY_DATASET"
        )
    task = guess_task(keys.get_column(target))

    micros: pl.Series | None = None
    match strategy:
        case RandomStrategy(stratify=stratify):
            if stratify and not task.is_classification:
                raise InvalidArgument(
                    "stratify needs a classification target; the target looks like regression",
                    field="split.strategy.random.stratify",
                    reason="STRATIFY_NEEDS_CLASSES",
                )
            parts = assign_random(keys, target, spec, stratify)
        case TimeStrategy():
            micros = time_micros(keys.get_column(strategy.time_column))
            parts = assign_time(micros, strategy, spec.fractions)
        case EntityStrategy(entity_column=entity, stratify=stratify):
            if stratify and not task.is_classification:
                raise InvalidArgument(
                    "stratify needs a classification target; the target looks like regression",
                    field="split.strategy.entity.stratify",
                    reason="STRATIFY_NEEDS_CLASSES",
                )
            parts = assign_entity(keys, entity, target, spec, stratify)
    keys = keys.with_columns(parts)

    has_test = spec.fractions.test > 0
    if isinstance(strategy, TimeStrategy) and strategy.mode == "cutoffs":
        has_test = strategy.test_start is not None
    part_names = PART_NAMES if has_test else PART_NAMES[:2]
    counts = dict(
        keys.group_by(PART).agg(pl.len()).iter_rows()  # type: ignore[arg-type]
    )
    for index, name in enumerate(part_names):
        if counts.get(index, 0) == 0:
            raise _empty_part_error(name, strategy)

    sample_rate = min(1.0, LEAKAGE_SAMPLE_ROWS / n)
    sample_mask = keys.select(
        (
            random_key(pl.col(ROW), spec.seed, _STREAM_SAMPLE).cast(pl.Float64)
            < sample_rate * float(1 << 64)
        ).alias(SAMPLE)
    ).to_series()

    # Pass 2: every part, the feature hashes, null counts and the sample, sharing one scan.
    columns = list(schema.names())
    features = [c for c in columns if c != target]
    tagged = lf.with_columns(keys.get_column(PART), sample_mask)
    paths = [workdir / f"{name}.parquet" for name in part_names]
    sinks = [
        tagged.filter(pl.col(PART) == index)
        .drop(PART, SAMPLE)
        .sink_parquet(path, lazy=True, **PARQUET_OPTIONS)
        for index, path in enumerate(paths)
    ]
    queries = [
        tagged.select(pl.col(c).null_count() for c in columns),
        tagged.filter(pl.col(SAMPLE)).drop(PART, SAMPLE),
    ]
    if features:
        queries.append(tagged.select(row_hash(features).alias("h"), pl.col(PART)))
    with source_errors():
        results = pl.collect_all([*sinks, *queries], engine="streaming")
    null_frame, sample = results[len(sinks)], results[len(sinks) + 1]
    hashes = results[len(sinks) + 2] if features else pl.DataFrame()

    leakage = LeakageReport()
    leakage.duplicate_rows_across_parts = duplicate_rows_across_parts(hashes)
    if isinstance(strategy, EntityStrategy):
        leakage.shared_entities = shared_entities(keys, strategy.entity_column)
    if micros is not None:
        leakage.time_order_violations = time_order_violations(micros, keys.get_column(PART))
    leakage.suspicious_features = single_feature_scores(sample, target, task)
    leakage.warnings = _warnings(leakage)
    if fail_on_leakage and leakage.has_findings:
        for path in paths:
            path.unlink(missing_ok=True)
        raise FailedPrecondition(
            "the split has leakage findings and fail_on_leakage is set: "
            + "; ".join(leakage.warnings),
            reason="SPLIT_LEAKAGE_DETECTED",
            violations=[
                PreconditionViolation("LEAKAGE", "split.leakage_report", w)
                for w in leakage.warnings
            ],
        )

    balance: dict[int, dict[str, int]] = {}
    if task.is_classification:
        labelled = keys.select(pl.col(PART), _class_labels(keys.get_column(target)).alias("cls"))
        for part, cls, count in (
            labelled.group_by(PART, "cls").agg(pl.len()).sort(PART, "cls").iter_rows()
        ):
            balance.setdefault(part, {})[cls] = count
    outputs = []
    for index, (name, path) in enumerate(zip(part_names, paths, strict=True)):
        sha, size = _sha256_file(path)
        outputs.append(PartFile(name, int(counts[index]), path, sha, size, balance.get(index, {})))
    return SplitOutcome(
        row_count=n,
        schema=[(name, str(dtype)) for name, dtype in schema.items()],
        null_counts={c: int(null_frame.get_column(c)[0]) for c in columns},
        task_type=task,
        parts=outputs,
        content_hash=content_hash([(p.name, p.sha256) for p in outputs]),
        leakage=leakage,
    )


def _warnings(report: LeakageReport) -> list[str]:
    lines = []
    if report.duplicate_rows_across_parts:
        lines.append(
            f"{report.duplicate_rows_across_parts} rows have feature values identical to a row "
            "in another part"
        )
    if report.shared_entities:
        lines.append(f"{report.shared_entities} entities appear in more than one part")
    if report.time_order_violations:
        lines.append(
            f"{report.time_order_violations} validation/test rows are not later than every "
            "earlier-part row"
        )
    lines.extend(
        f"column {f.column!r} alone predicts the target ({f.metric}={f.score:.4f})"
        for f in report.suspicious_features
    )
    return lines


@contextlib.contextmanager
def scratch_dir(base: Path | None = None) -> Iterator[Path]:
    """A temporary working directory removed afterwards, whatever happens."""
    with tempfile.TemporaryDirectory(prefix="arbor-split-", dir=base) as name:
        yield Path(name)
