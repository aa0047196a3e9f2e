"""The gRPC servicer: protobuf in, a use case off the event loop, protobuf out. Nothing else.

Errors are ``ArborError``s raised below; the interceptor in ``arbor_core.server`` turns them
into statuses with ``google.rpc`` details.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from arbor.common.v1 import common_pb2
from arbor.split.v1 import split_service_pb2 as pb
from arbor.split.v1 import split_service_pb2_grpc as pb_grpc
from arbor_core.db import run_db
from arbor_core.errors import InvalidArgument
from arbor_split.domain import (
    DataFormat,
    EntityStrategy,
    Fractions,
    InlineColumn,
    InlineSource,
    RandomStrategy,
    Source,
    SplitSpec,
    Strategy,
    TimeStrategy,
    UriSource,
    frame_from_arrow_ipc,
    frame_from_columns,
    frame_from_rows,
)
from arbor_split.service import CreateCommand, ListQuery, SplitRecord, SplitService

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SplitService"].full_name

_FORMATS = {
    common_pb2.DATA_FORMAT_PARQUET: DataFormat.PARQUET,
    common_pb2.DATA_FORMAT_CSV: DataFormat.CSV,
    common_pb2.DATA_FORMAT_NDJSON: DataFormat.NDJSON,
}
_FORMATS_PB = {v: k for k, v in _FORMATS.items()}
_TASKS = {
    "binary": common_pb2.TASK_TYPE_BINARY,
    "multiclass": common_pb2.TASK_TYPE_MULTICLASS,
    "regression": common_pb2.TASK_TYPE_REGRESSION,
}
_STATES = {"READY": pb.SPLIT_STATE_READY, "DELETED": pb.SPLIT_STATE_DELETED}
_COLUMN_KINDS = {
    "double_values": "double",
    "int64_values": "int64",
    "string_values": "string",
    "bool_values": "bool",
    "timestamp_micros": "timestamp_micros",
}


# --------------------------------------------------------------------------- requests


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {}
    if kind == "list_value":
        return []
    return None


def _json_rows(rows: Any) -> list[dict[str, Any]]:
    """Struct rows to dicts with sorted keys: JSON objects have no column order, so sorting
    keeps the written schema identical for identical requests."""
    return [{key: _value(row.fields[key]) for key in sorted(row.fields)} for row in rows]


def source_from_pb(source: pb.DataSource) -> Source:
    kind = source.WhichOneof("source")
    if kind == "uri":
        fmt = _FORMATS.get(source.format)
        if source.format and fmt is None:
            raise InvalidArgument(
                f"unknown data format {source.format}",
                field="split.source.format",
                reason="UNSUPPORTED_FORMAT",
            )
        return UriSource(source.uri, fmt)
    if kind == "inline":
        inline = source.inline
        digest = hashlib.sha256(inline.SerializeToString(deterministic=True)).hexdigest()
        shape = inline.WhichOneof("data")
        if shape == "json_rows":
            frame = frame_from_rows(_json_rows(inline.json_rows.rows))
        elif shape == "columns":
            frame = frame_from_columns(
                [
                    InlineColumn(
                        name=c.name,
                        kind=_COLUMN_KINDS.get(c.WhichOneof("values") or ""),
                        values=getattr(c, c.WhichOneof("values")).values
                        if c.WhichOneof("values")
                        else (),
                        null_indices=list(c.null_indices),
                    )
                    for c in inline.columns.columns
                ]
            )
        elif shape == "arrow_ipc":
            frame = frame_from_arrow_ipc(inline.arrow_ipc)
        else:
            raise InvalidArgument(
                "split.source.inline needs json_rows, columns or arrow_ipc",
                field="split.source.inline",
                reason="NO_SOURCE",
            )
        return InlineSource(frame, shape, digest)
    raise InvalidArgument(
        "split.source is required: inline rows or a uri", field="split.source", reason="NO_SOURCE"
    )


def _utc(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)


def strategy_from_pb(strategy: pb.SplitStrategy) -> Strategy:
    kind = strategy.WhichOneof("strategy")
    if kind == "time":
        t = strategy.time
        boundaries = t.WhichOneof("boundaries")
        if boundaries == "cutoffs":
            return TimeStrategy(
                t.time_column,
                "cutoffs",
                validation_start=(
                    _utc(t.cutoffs.validation_start)
                    if t.cutoffs.HasField("validation_start")
                    else None
                ),
                test_start=_utc(t.cutoffs.test_start) if t.cutoffs.HasField("test_start") else None,
            )
        if boundaries == "by_time_range" and t.by_time_range:
            return TimeStrategy(t.time_column, "time_range")
        return TimeStrategy(t.time_column, "row_fraction")
    if kind == "entity":
        return EntityStrategy(strategy.entity.entity_column, strategy.entity.stratify)
    if kind == "random":
        return RandomStrategy(strategy.random.stratify)
    return RandomStrategy(False)


def create_command_from_pb(request: pb.CreateSplitRequest) -> CreateCommand:
    """The create request as a command; output-only fields of ``request.split`` are ignored."""
    if not request.HasField("split"):
        raise InvalidArgument("split is required", field="split", reason="REQUIRED")
    split = request.split
    if not split.HasField("source"):
        raise InvalidArgument(
            "split.source is required: inline rows or a uri",
            field="split.source",
            reason="NO_SOURCE",
        )
    fractions = (
        Fractions(split.fractions.train, split.fractions.validation, split.fractions.test)
        if split.HasField("fractions")
        else None
    )
    spec = SplitSpec(
        source=source_from_pb(split.source),
        target_column=split.target_column,
        strategy=strategy_from_pb(split.strategy),
        fractions=fractions,  # type: ignore[arg-type]  # validated (defaults) by the service
        seed=split.seed,
    )
    keyed = pb.CreateSplitRequest()
    keyed.CopyFrom(request)
    keyed.request_id = ""
    request_hash = hashlib.sha256(keyed.SerializeToString(deterministic=True)).hexdigest()
    return CreateCommand(
        spec=spec,
        split_id=request.split_id,
        request_id=request.request_id,
        request_hash=request_hash,
        fail_on_leakage=request.fail_on_leakage,
        display_name=split.display_name,
        description=split.description,
        labels=dict(split.labels),
    )


# --------------------------------------------------------------------------- responses


def _timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _strategy_to_pb(data: dict[str, Any]) -> pb.SplitStrategy:
    kind = data.get("kind")
    if kind == "time":
        time = pb.TimeStrategy(time_column=data.get("time_column", ""))
        mode = data.get("mode")
        if mode == "cutoffs":
            for name in ("validation_start", "test_start"):
                if data.get(name):
                    getattr(time.cutoffs, name).FromDatetime(dt.datetime.fromisoformat(data[name]))
            time.cutoffs.SetInParent()
        elif mode == "time_range":
            time.by_time_range = True
        else:
            time.by_row_fraction = True
        return pb.SplitStrategy(time=time)
    if kind == "entity":
        return pb.SplitStrategy(
            entity=pb.EntityStrategy(
                entity_column=data.get("entity_column", ""),
                stratify=bool(data.get("stratify")),
            )
        )
    return pb.SplitStrategy(random=pb.RandomStrategy(stratify=bool(data.get("stratify"))))


def _source_to_pb(data: dict[str, Any]) -> pb.DataSource:
    if "uri" in data:
        fmt = data.get("format")
        return pb.DataSource(
            uri=data["uri"],
            format=_FORMATS_PB[DataFormat(fmt)] if fmt else common_pb2.DATA_FORMAT_UNSPECIFIED,
        )
    # Inline rows are not kept (only their hash, in the database); say that they were inline.
    return pb.DataSource(inline=common_pb2.InlineData())


def split_to_pb(record: SplitRecord) -> pb.Split:
    report = record.leakage_report or {}
    message = pb.Split(
        name=record.name,
        split_id=record.split_id,
        display_name=record.display_name,
        description=record.description,
        labels=record.labels,
        state=_STATES.get(record.state, pb.SPLIT_STATE_UNSPECIFIED),
        source=_source_to_pb(record.source),
        target_column=record.target_column,
        task_type=_TASKS.get(record.task_type, common_pb2.TASK_TYPE_UNSPECIFIED),
        strategy=_strategy_to_pb(record.strategy),
        fractions=pb.Fractions(**record.fractions),
        seed=record.seed,
        schema=[common_pb2.ColumnSchema(name=c["name"], dtype=c["dtype"]) for c in record.columns],
        parts=[
            pb.SplitPart(
                part=p["part"],
                row_count=p["row_count"],
                artifact=common_pb2.ArtifactFile(
                    uri=p["uri"], key=p["key"], sha256=p["sha256"], size_bytes=p["size_bytes"]
                ),
                class_balance=p.get("class_balance", {}),
            )
            for p in record.parts
        ],
        null_counts=record.null_counts,
        content_hash=record.content_hash,
        leakage_report=pb.LeakageReport(
            duplicate_rows_across_parts=report.get("duplicate_rows_across_parts", 0),
            shared_entities=report.get("shared_entities", 0),
            time_order_violations=report.get("time_order_violations", 0),
            suspicious_features=[
                pb.SuspiciousFeature(column=f["column"], score=f["score"], metric=f["metric"])
                for f in report.get("suspicious_features", [])
            ],
            warnings=report.get("warnings", []),
        ),
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
        delete_time=_timestamp(record.delete_time),
        etag=record.etag,
        row_count=record.row_count,
    )
    return message


# --------------------------------------------------------------------------- servicer


class SplitServicer(pb_grpc.SplitServiceServicer):
    """Thin: every call converts, runs the use case in a worker thread, converts back."""

    def __init__(self, service: SplitService) -> None:
        self.service = service

    async def CreateSplit(
        self, request: pb.CreateSplitRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSplitResponse:
        def create() -> SplitRecord:
            # Converting large inline rows is real work too: off the event loop with the rest.
            return self.service.create(create_command_from_pb(request))

        record = await run_db(create)
        return pb.CreateSplitResponse(split=split_to_pb(record))

    async def GetSplit(
        self, request: pb.GetSplitRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSplitResponse:
        record = await run_db(self.service.get, request.name, request.show_deleted)
        return pb.GetSplitResponse(split=split_to_pb(record))

    async def ListSplits(
        self, request: pb.ListSplitsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSplitsResponse:
        state = {pb.SPLIT_STATE_READY: "READY", pb.SPLIT_STATE_DELETED: "DELETED"}.get(
            request.state_filter
        )
        query = ListQuery(
            page_size=request.page_size,
            page_token=request.page_token,
            label_filter=dict(request.label_filter),
            state_filter=state,
            show_deleted=request.show_deleted,
        )
        records, token = await run_db(self.service.list_splits, query)
        return pb.ListSplitsResponse(
            splits=[split_to_pb(r) for r in records], next_page_token=token
        )

    async def UpdateSplit(
        self, request: pb.UpdateSplitRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateSplitResponse:
        split = request.split
        values = {
            "display_name": split.display_name,
            "description": split.description,
            "labels": dict(split.labels),
        }
        record = await run_db(
            self.service.update,
            split.name,
            values,
            list(request.update_mask.paths),
            split.etag,
        )
        return pb.UpdateSplitResponse(split=split_to_pb(record))

    async def DeleteSplit(
        self, request: pb.DeleteSplitRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSplitResponse:
        record = await run_db(self.service.delete, request.name, request.purge, request.etag)
        return pb.DeleteSplitResponse(split=split_to_pb(record))


def register(service: SplitService) -> Callable[[grpc.aio.Server], list[str]]:
    """A ``register`` callable for ``arbor_core.server.build_server``."""

    def add(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_SplitServiceServicer_to_server(SplitServicer(service), server)
        return [SERVICE_NAME]

    return add
