"""Tables in and out of requests: JSON rows, Arrow IPC, files on disk, prediction results.

Polars is imported lazily so that importing the client stays cheap for callers who only send
``list[dict]`` rows.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, struct_pb2

from arbor.common.v1 import common_pb2
from arbor_client.errors import ArborClientError

if TYPE_CHECKING:
    import polars as pl

    from arbor.inference.v1 import inference_service_pb2

__all__ = [
    "FORMATS",
    "detect_format",
    "frame_to_inline",
    "parse_table",
    "predictions_to_rows",
    "read_table",
    "rows_to_inline",
]

FORMATS = ("csv", "parquet", "json", "ndjson")
_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}


def _json_value(value: Any) -> Any:
    """A value Struct can hold: numbers, strings, bools, None, lists and dicts of those."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [_json_value(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _json_value(item())
    return str(value)


def rows_to_inline(rows: Iterable[Mapping[str, Any]]) -> common_pb2.InlineData:
    """JSON-friendly rows (one Struct per row); NaN becomes null, datetimes ISO 8601 text."""
    inline = common_pb2.InlineData()
    json_rows = inline.json_rows
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ArborClientError.invalid_argument(
                f"row {index} is a {type(row).__name__}, not an object", field=f"rows[{index}]"
            )
        struct = struct_pb2.Struct()
        struct.update({str(k): _json_value(v) for k, v in row.items()})
        json_rows.rows.append(struct)
    return inline


def frame_to_inline(frame: pl.DataFrame) -> common_pb2.InlineData:
    """The fast shape: a Polars frame as one Arrow IPC stream, dtypes and nulls preserved."""
    buffer = io.BytesIO()
    frame.write_ipc_stream(buffer)
    return common_pb2.InlineData(arrow_ipc=buffer.getvalue())


def detect_format(path: str | Path | None, data: bytes | None = None) -> str:
    """``csv``/``parquet``/``json``/``ndjson`` from the suffix, else from the first bytes."""
    if path is not None and str(path) != "-":
        fmt = _SUFFIXES.get(Path(str(path)).suffix.lower())
        if fmt:
            return fmt
    if data is not None:
        head = data.lstrip()[:1]
        if data[:4] == b"PAR1":
            return "parquet"
        if head == b"[":
            return "json"
        if head == b"{":
            first_line = data.lstrip().split(b"\n", 1)[0].strip()
            try:
                json.loads(first_line)
            except ValueError:
                return "json"
            rest = data.lstrip()[len(first_line) :].strip()
            return "ndjson" if rest.startswith(b"{") else "json"
        return "csv"
    raise ArborClientError.invalid_argument(
        f"cannot tell the format of {path}; use one of {', '.join(FORMATS)}", field="format"
    )


def _json_records(data: bytes) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(data)
    except ValueError as err:
        raise ArborClientError.invalid_argument(f"invalid JSON: {err}", field="input") from None
    if isinstance(parsed, dict):
        for key in ("rows", "instances", "data"):
            if isinstance(parsed.get(key), list):
                parsed = parsed[key]
                break
        else:
            parsed = [parsed]
    if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
        raise ArborClientError.invalid_argument(
            'JSON input must be an array of objects (or {"rows": [...]})', field="input"
        )
    return parsed


def parse_table(data: bytes, fmt: str) -> pl.DataFrame:
    """Parse bytes in ``fmt`` into a Polars frame; errors become INVALID_ARGUMENT."""
    import polars as pl

    try:
        if fmt == "csv":
            return pl.read_csv(io.BytesIO(data), infer_schema_length=10_000)
        if fmt == "parquet":
            return pl.read_parquet(io.BytesIO(data))
        if fmt == "ndjson":
            return pl.read_ndjson(io.BytesIO(data))
        if fmt == "json":
            return pl.from_dicts(_json_records(data), infer_schema_length=None)
    except ArborClientError:
        raise
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        raise ArborClientError.invalid_argument(
            f"cannot read {fmt} input: {message}", field="input"
        ) from None
    raise ArborClientError.invalid_argument(
        f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", field="format"
    )


def read_table(path: str | Path, fmt: str | None = None) -> pl.DataFrame:
    """Read a CSV / Parquet / JSON / NDJSON file into a Polars frame."""
    file = Path(path)
    if not file.is_file():
        raise ArborClientError.invalid_argument(f"no such file: {file}", field="path")
    data = file.read_bytes()
    return parse_table(data, fmt or detect_format(file, data))


def _arrow_rows(data: bytes) -> list[dict[str, Any]]:
    import polars as pl

    return pl.read_ipc_stream(io.BytesIO(data)).to_dicts()


def predictions_to_rows(
    response: inference_service_pb2.PredictResponse,
) -> list[dict[str, Any]]:
    """One dict per input row: ``label`` (classification) or ``value`` (regression), plus
    ``proba_<class>`` columns when probabilities were asked for."""
    if response.arrow_ipc:
        return _arrow_rows(response.arrow_ipc)
    count = int(response.row_count) or max(len(response.labels), len(response.values))
    classes = list(response.classes)
    probabilities = list(response.probabilities)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        row: dict[str, Any] = {}
        if i < len(response.labels):
            row["label"] = json_format.MessageToDict(response.labels[i])
        if i < len(response.values):
            row["value"] = response.values[i]
        if classes and len(probabilities) >= (i + 1) * len(classes):
            for j, cls in enumerate(classes):
                row[f"proba_{cls}"] = probabilities[i * len(classes) + j]
        rows.append(row)
    return rows
