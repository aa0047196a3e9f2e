"""The split service through its real gRPC server on PostgreSQL, NATS and the GCS emulator."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import polars as pl
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from split_support import DATASETS, classification_frame

from arbor.common.v1 import common_pb2
from arbor.split.v1 import split_service_pb2 as pb
from arbor.split.v1 import split_service_pb2_grpc
from arbor_core.events import connect_nats, ensure_streams, subscribe_events
from arbor_core.status_details import error_details
from arbor_core.testing import free_port

pytestmark = [pytest.mark.integration]


def _label() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _data_file(server: Any, frame: pl.DataFrame | None = None, name: str = "") -> str:
    path = server.data_root / (name or f"{uuid.uuid4().hex[:8]}.parquet")
    (frame if frame is not None else classification_frame(200)).write_parquet(path)
    return str(path)


def _split(uri: str, **kwargs: Any) -> pb.Split:
    defaults: dict[str, Any] = {
        "source": pb.DataSource(uri=uri),
        "target_column": "label",
        "fractions": pb.Fractions(train=0.6, validation=0.2, test=0.2),
        "seed": 42,
    }
    defaults.update(kwargs)
    return pb.Split(**defaults)


async def _fails(call: Any, request: Any) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request)
    return error_details(info.value)


async def test_health_is_serving(split_server: Any) -> None:
    async with grpc.aio.insecure_channel(split_server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(50):
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service="arbor.split.v1.SplitService")
            )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.1)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_crud_cycle(split_server: Any) -> None:
    stub = split_server.stub
    label = _label()
    created = (
        await stub.CreateSplit(
            pb.CreateSplitRequest(
                split=_split(
                    _data_file(split_server),
                    display_name="credit",
                    description="first try",
                    labels={"suite": label},
                    strategy=pb.SplitStrategy(random=pb.RandomStrategy(stratify=True)),
                )
            )
        )
    ).split
    assert created.name == f"splits/{created.split_id}"
    assert created.state == pb.SPLIT_STATE_READY
    assert created.task_type == common_pb2.TASK_TYPE_BINARY
    assert [p.part for p in created.parts] == ["train", "validation", "test"]
    assert sum(p.row_count for p in created.parts) == created.row_count == 200
    for part in created.parts:
        assert part.artifact.key == f"splits/{created.split_id}/{part.part}.parquet"
        assert part.artifact.uri.startswith("gs://")
        data = split_server.store.get_bytes(part.artifact.key, part.artifact.sha256)
        assert pl.read_parquet(io.BytesIO(data)).height == part.row_count
        assert sum(part.class_balance.values()) == part.row_count
    assert {c.name for c in created.schema} >= {"x1", "label"}
    assert created.null_counts["x1"] == 0
    assert len(created.content_hash) == 64 and created.etag

    got = (await stub.GetSplit(pb.GetSplitRequest(name=created.name))).split
    assert got == created

    # Update: metadata only, through the mask, with the etag.
    change = pb.Split(
        name=created.name, display_name="credit v2", labels={"suite": label, "x": "1"}
    )
    change.etag = created.etag
    updated = (
        await stub.UpdateSplit(
            pb.UpdateSplitRequest(
                split=change, update_mask=field_mask_pb2.FieldMask(paths=["display_name", "labels"])
            )
        )
    ).split
    assert (updated.display_name, dict(updated.labels)) == ("credit v2", {"suite": label, "x": "1"})
    assert updated.description == "first try"
    assert updated.etag != created.etag
    assert updated.content_hash == created.content_hash

    stale = await _fails(
        stub.UpdateSplit,
        pb.UpdateSplitRequest(
            split=change, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
        ),
    )
    assert (stale["code"], stale["reason"]) == ("ABORTED", "ETAG_MISMATCH")
    bad_mask = await _fails(
        stub.UpdateSplit,
        pb.UpdateSplitRequest(
            split=pb.Split(name=created.name, target_column="x1"),
            update_mask=field_mask_pb2.FieldMask(paths=["target_column"]),
        ),
    )
    assert bad_mask["code"] == "INVALID_ARGUMENT"
    assert bad_mask["field_violations"][0]["field"] == "update_mask"

    # Soft delete: hidden from Get and List, kept with show_deleted; the parts stay.
    deleted = (
        await stub.DeleteSplit(pb.DeleteSplitRequest(name=created.name, etag=updated.etag))
    ).split
    assert deleted.state == pb.SPLIT_STATE_DELETED and deleted.HasField("delete_time")
    missing = await _fails(stub.GetSplit, pb.GetSplitRequest(name=created.name))
    assert (missing["code"], missing["reason"]) == ("NOT_FOUND", "SPLIT_NOT_FOUND")
    shown = (await stub.GetSplit(pb.GetSplitRequest(name=created.name, show_deleted=True))).split
    assert shown.state == pb.SPLIT_STATE_DELETED
    listed = await stub.ListSplits(pb.ListSplitsRequest(label_filter={"suite": label}))
    assert list(listed.splits) == []
    listed = await stub.ListSplits(
        pb.ListSplitsRequest(label_filter={"suite": label}, show_deleted=True)
    )
    assert [s.name for s in listed.splits] == [created.name]
    assert split_server.store.list(f"splits/{created.split_id}/") != []
    again = await _fails(stub.DeleteSplit, pb.DeleteSplitRequest(name=created.name))
    assert again["code"] == "NOT_FOUND"

    # A later purge removes the parts.
    purged = (await stub.DeleteSplit(pb.DeleteSplitRequest(name=created.name, purge=True))).split
    assert purged.state == pb.SPLIT_STATE_DELETED
    assert split_server.store.list(f"splits/{created.split_id}/") == []


async def test_purge_deletes_the_artifacts_at_once(split_server: Any) -> None:
    stub = split_server.stub
    created = (
        await stub.CreateSplit(pb.CreateSplitRequest(split=_split(_data_file(split_server))))
    ).split
    assert len(split_server.store.list(f"splits/{created.split_id}/")) == 3
    await stub.DeleteSplit(pb.DeleteSplitRequest(name=created.name, purge=True))
    assert split_server.store.list(f"splits/{created.split_id}/") == []


async def test_pagination_across_pages(split_server: Any) -> None:
    stub = split_server.stub
    label = _label()
    uri = _data_file(split_server, classification_frame(60))
    names = []
    for i in range(5):
        reply = await stub.CreateSplit(
            pb.CreateSplitRequest(split=_split(uri, seed=i, labels={"page": label}))
        )
        names.append(reply.split.name)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListSplits(
            pb.ListSplitsRequest(page_size=2, page_token=token, label_filter={"page": label})
        )
        pages += 1
        seen += [s.name for s in page.splits]
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(names))  # newest first, each exactly once

    first = await stub.ListSplits(pb.ListSplitsRequest(page_size=2, label_filter={"page": label}))
    other_filter = await _fails(
        stub.ListSplits,
        pb.ListSplitsRequest(page_size=2, page_token=first.next_page_token),
    )
    assert other_filter["reason"] == "PAGE_TOKEN_FILTER_MISMATCH"
    tampered = await _fails(
        stub.ListSplits,
        pb.ListSplitsRequest(
            page_token=first.next_page_token[:-3] + "AAA", label_filter={"page": label}
        ),
    )
    assert tampered["field_violations"][0]["field"] == "page_token"


async def test_repeated_request_id_returns_the_first_split(split_server: Any) -> None:
    stub = split_server.stub
    label = _label()
    request = pb.CreateSplitRequest(
        split=_split(_data_file(split_server), labels={"idem": label}), request_id=uuid.uuid4().hex
    )
    first, second = await asyncio.gather(
        stub.CreateSplit(request), stub.CreateSplit(request), return_exceptions=True
    )
    results = [r for r in (first, second) if not isinstance(r, Exception)]
    errors = [error_details(r) for r in (first, second) if isinstance(r, grpc.aio.AioRpcError)]
    # Concurrent twins: one creates, the other gets the same split or is told to retry.
    assert results and all(e["reason"] == "REQUEST_IN_PROGRESS" for e in errors)
    third = await stub.CreateSplit(request)
    assert {r.split.name for r in results} == {third.split.name}
    listed = await stub.ListSplits(pb.ListSplitsRequest(label_filter={"idem": label}))
    assert len(listed.splits) == 1

    changed = pb.CreateSplitRequest()
    changed.CopyFrom(request)
    changed.split.seed = 99
    err = await _fails(stub.CreateSplit, changed)
    assert (err["code"], err["reason"]) == ("INVALID_ARGUMENT", "REQUEST_ID_REUSED")


async def test_same_request_gives_the_same_content(split_server: Any) -> None:
    stub = split_server.stub
    uri = _data_file(split_server)
    split = _split(
        uri, strategy=pb.SplitStrategy(entity=pb.EntityStrategy(entity_column="customer"))
    )
    a = (await stub.CreateSplit(pb.CreateSplitRequest(split=split))).split
    b = (await stub.CreateSplit(pb.CreateSplitRequest(split=split))).split
    assert a.split_id != b.split_id
    assert a.content_hash == b.content_hash
    assert [p.artifact.sha256 for p in a.parts] == [p.artifact.sha256 for p in b.parts]


async def test_split_events_reach_a_subscriber(split_server: Any, nats_url: str) -> None:
    nc = await connect_nats(nats_url)
    received: list[Any] = []
    try:
        js = nc.jetstream()
        await ensure_streams(js, split_server.namespace)

        async def handler(event: Any) -> None:
            received.append(event)

        sub = await subscribe_events(
            js, handler, pattern="arbor.events.split.>", namespace=split_server.namespace
        )
        created = (
            await split_server.stub.CreateSplit(
                pb.CreateSplitRequest(split=_split(_data_file(split_server)))
            )
        ).split
        await split_server.stub.DeleteSplit(pb.DeleteSplitRequest(name=created.name))
        for _ in range(100):
            mine = [e for e in received if e.subject == created.name]
            if len(mine) >= 2:
                break
            await asyncio.sleep(0.05)
        await sub.stop()
    finally:
        await nc.close()
    by_type = {e.type: e for e in received if e.subject == created.name}
    event = by_type["split.created"]
    assert event.source == "arbor.split"
    assert event.split_created.split == created.name
    assert event.split_created.content_hash == created.content_hash
    assert dict(event.split_created.row_counts) == {p.part: p.row_count for p in created.parts}
    assert event.split_created.task_type == common_pb2.TASK_TYPE_BINARY
    assert by_type["split.deleted"].split_deleted.purged is False


async def test_bad_input_maps_to_codes_and_fields(split_server: Any, tmp_path: Path) -> None:
    stub = split_server.stub
    uri = _data_file(split_server)
    cases = [
        (_split(uri, target_column="nope"), "INVALID_ARGUMENT", "split.target_column"),
        (
            _split(uri, fractions=pb.Fractions(train=0.5, validation=0.2)),
            "INVALID_ARGUMENT",
            "split.fractions",
        ),
        (
            _split(uri, strategy=pb.SplitStrategy(time=pb.TimeStrategy(time_column="x1"))),
            "INVALID_ARGUMENT",
            "split.strategy.time.time_column",
        ),
        (pb.Split(target_column="label"), "INVALID_ARGUMENT", "split.source"),
    ]
    for split, code, field in cases:
        err = await _fails(stub.CreateSplit, pb.CreateSplitRequest(split=split))
        assert err["code"] == code, (field, err)
        assert err["field_violations"][0]["field"] == field
        assert err["domain"] == "arbor.dev"
    outside = tmp_path / "outside.parquet"
    classification_frame(20).write_parquet(outside)
    denied = await _fails(stub.CreateSplit, pb.CreateSplitRequest(split=_split(str(outside))))
    assert (denied["code"], denied["reason"]) == ("PERMISSION_DENIED", "DATA_PATH_NOT_ALLOWED")
    bad_id = await _fails(
        stub.CreateSplit, pb.CreateSplitRequest(split=_split(uri), split_id="Not_Valid")
    )
    assert bad_id["field_violations"][0]["field"] == "split_id"


async def test_failed_create_leaves_nothing_behind(split_server: Any) -> None:
    stub = split_server.stub
    frame = classification_frame(300).with_columns((pl.col("label") == "yes").alias("leak"))
    split_id = f"leaky-{uuid.uuid4().hex[:8]}"
    request = pb.CreateSplitRequest(
        split=_split(_data_file(split_server, frame)),
        split_id=split_id,
        fail_on_leakage=True,
        request_id=uuid.uuid4().hex,
    )
    err = await _fails(stub.CreateSplit, request)
    assert (err["code"], err["reason"]) == ("FAILED_PRECONDITION", "SPLIT_LEAKAGE_DETECTED")
    assert any("leak" in v["description"] for v in err["precondition_violations"])
    assert split_server.store.list(f"splits/{split_id}/") == []
    gone = await _fails(
        stub.GetSplit, pb.GetSplitRequest(name=f"splits/{split_id}", show_deleted=True)
    )
    assert gone["code"] == "NOT_FOUND"
    # Warnings only without the flag; the same id (and request id) is free again.
    request.fail_on_leakage = False
    created = (await stub.CreateSplit(request)).split
    assert created.split_id == split_id
    assert [f.column for f in created.leakage_report.suspicious_features] == ["leak"]
    assert created.leakage_report.warnings
    taken = await _fails(
        stub.CreateSplit,
        pb.CreateSplitRequest(split=_split(_data_file(split_server)), split_id=split_id),
    )
    assert (taken["code"], taken["reason"]) == ("ALREADY_EXISTS", "SPLIT_ALREADY_EXISTS")


async def test_inline_columnar_and_arrow_sources(split_server: Any) -> None:
    frame = classification_frame(50).select("x1", "color", "label")
    columns = common_pb2.ColumnarData(
        columns=[
            common_pb2.Column(
                name="x1", double_values=common_pb2.DoubleValues(values=frame["x1"].to_list())
            ),
            common_pb2.Column(
                name="color", string_values=common_pb2.StringValues(values=frame["color"].to_list())
            ),
            common_pb2.Column(
                name="label", string_values=common_pb2.StringValues(values=frame["label"].to_list())
            ),
        ]
    )
    ipc = io.BytesIO()
    frame.write_ipc_stream(ipc)
    hashes = []
    for inline in (
        common_pb2.InlineData(columns=columns),
        common_pb2.InlineData(arrow_ipc=ipc.getvalue()),
    ):
        split = pb.Split(
            source=pb.DataSource(inline=inline),
            target_column="label",
            fractions=pb.Fractions(train=0.8, validation=0.2),
        )
        created = (await split_server.stub.CreateSplit(pb.CreateSplitRequest(split=split))).split
        assert created.source.WhichOneof("source") == "inline"
        assert [p.row_count for p in created.parts] == [40, 10]
        hashes.append(created.content_hash)
    assert hashes[0] == hashes[1]  # same rows, same dtypes -> same bytes


async def test_gcs_source(split_server: Any, run_id: str) -> None:
    bucket = f"arbor-{run_id}"
    data = io.BytesIO()
    pl.read_parquet(DATASETS / "credit_data.parquet").head(500).write_parquet(data)
    split_server.gcs.client().bucket(bucket).blob("sources/credit.parquet").upload_from_string(
        data.getvalue()
    )
    created = (
        await split_server.stub.CreateSplit(
            pb.CreateSplitRequest(
                split=_split(f"gs://{bucket}/sources/credit.parquet", target_column="Status")
            )
        )
    ).split
    assert created.row_count == 500
    assert created.source.uri == f"gs://{bucket}/sources/credit.parquet"


async def test_grpcurl_creates_a_split_from_json_rows(split_server: Any) -> None:
    """The server runs on this event loop: the subprocess is awaited, not waited for."""
    grpcurl = Path(sys.executable).parent / "grpcurl"
    rows = [
        {"age": 20 + i, "city": ["oslo", "rome"][i % 2], "churn": i % 3 == 0} for i in range(20)
    ]
    body = {
        "split": {
            "displayName": "from grpcurl",
            "source": {"inline": {"jsonRows": {"rows": rows}}},
            "targetColumn": "churn",
            "fractions": {"train": 0.75, "validation": 0.25},
            "seed": "1",
        }
    }
    process = await asyncio.create_subprocess_exec(
        str(grpcurl),
        "-plaintext",
        "-d",
        json.dumps(body),
        split_server.address,
        "arbor.split.v1.SplitService/CreateSplit",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    split = json.loads(stdout)["split"]  # grpcurl prints the proto field names
    assert split["state"] == "SPLIT_STATE_READY"
    assert split["task_type"] == "TASK_TYPE_BINARY"
    assert [(p["part"], int(p["row_count"])) for p in split["parts"]] == [
        ("train", 15),
        ("validation", 5),
    ]
    assert {c["name"]: c["dtype"] for c in split["schema"]} == {
        "age": "Int64",
        "churn": "Boolean",
        "city": "String",
    }


def test_json_struct_rows_convert_like_grpcurl_sends_them() -> None:
    from arbor_split.api import _json_rows

    row = struct_pb2.Struct()
    row.update({"b": 1, "a": "x", "n": None})
    assert _json_rows([row]) == [{"a": "x", "b": 1.0, "n": None}]


async def test_python_m_arbor_split_serves_until_sigterm(
    tmp_path: Path, nats_url: str, nats_namespace: str
) -> None:
    """The service entry point: migrates its SQLite file, serves, and exits 0 on SIGTERM."""
    port = free_port()
    env = {
        **os.environ,
        "ARBOR_HOME": str(tmp_path / "home"),
        "ARBOR_SPLIT_PORT": str(port),
        "ARBOR_NATS_URL": nats_url,
        "ARBOR_NATS_NAMESPACE": nats_namespace,
        "ARBOR_ALLOWED_DATA_ROOTS": str(DATASETS),
        "ARBOR_GRACE_SECONDS": "1",
    }
    env.pop("ARBOR_SPLIT_DATABASE_URL", None)
    env.pop("ARBOR_DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "arbor_split",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = None
            for _ in range(150):
                try:
                    status = (await health.Check(health_pb2.HealthCheckRequest())).status
                except grpc.aio.AioRpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING
            stub = split_service_pb2_grpc.SplitServiceStub(channel)
            reply = await stub.CreateSplit(
                pb.CreateSplitRequest(
                    split=_split(str(DATASETS / "credit_data.parquet"), target_column="Status")
                )
            )
            assert reply.split.row_count == 4454
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (tmp_path / "home" / "split.db").exists()
