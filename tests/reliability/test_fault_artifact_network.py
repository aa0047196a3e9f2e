"""Fault 10 (artifact store): the network to GCS (fake-gcs-server behind a TCP proxy) paused or
reset in the middle of CreateSplit's part uploads. A reset is retried on a new connection and
the split completes; a pause, or a store that refuses connections, ends in UNAVAILABLE
(``ARTIFACT_STORE_UNAVAILABLE``) within the store's timeout, never INTERNAL and never a hang,
and leaves no split row and no object behind; the next create works once the network is back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from reliability_support import (
    FakeGcsServer,
    TcpProxy,
    create_split_request,
    start_split,
    write_table,
)

from arbor.split.v1 import split_service_pb2 as spb
from arbor.split.v1 import split_service_pb2_grpc as spb_grpc
from arbor_core.artifacts import GcsArtifactStore
from arbor_core.status_details import error_details

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.slow]

TIMEOUT_S = 1.0  # the store's per-request timeout, which also bounds its retries
UPLOAD = b"POST /upload/"  # the request line of a GCS media upload (one per part)


async def test_artifact_store_network_paused_or_reset_mid_create(
    fake_gcs: FakeGcsServer,
    tcp_proxy: Callable[[str, int], TcpProxy],
    nats_url: str,
    nats_namespace: str,
    tmp_path: Path,
) -> None:
    bucket = f"arbor-net-{uuid.uuid4().hex[:8]}"
    fake_gcs.client().create_bucket(bucket)
    proxy = tcp_proxy("127.0.0.1", fake_gcs.port)
    via_proxy = fake_gcs.client(f"http://{proxy.address}")
    store = GcsArtifactStore(bucket, "arbor", client=via_proxy, timeout=TIMEOUT_S)
    truth = GcsArtifactStore(bucket, "arbor", client=fake_gcs.client())  # past the proxy
    data = tmp_path / "data"
    source = str(write_table(data / "t.parquet", rows=300))
    split = await start_split(
        f"sqlite:///{tmp_path / 'split.db'}", nats_url, nats_namespace, store, data
    )
    stub = spb_grpc.SplitServiceStub(split.channel)

    async def create(split_id: str) -> tuple[grpc.StatusCode, float, object]:
        started = time.monotonic()
        try:
            reply = await stub.CreateSplit(create_split_request(source, split_id), timeout=60)
        except grpc.aio.AioRpcError as err:
            return err.code(), time.monotonic() - started, err
        return grpc.StatusCode.OK, time.monotonic() - started, reply.split

    async def left_nothing(split_id: str) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetSplit(spb.GetSplitRequest(name=f"splits/{split_id}"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert truth.list(f"splits/{split_id}/") == []

    def parts_check_out(created: spb.Split) -> None:
        assert len(created.parts) == 3
        for part in created.parts:  # whole objects whose bytes match the recorded checksums
            assert truth.get_bytes(part.artifact.key, expected_sha256=part.artifact.sha256)

    try:
        code, _, created = await create("healthy")
        assert code == grpc.StatusCode.OK, created
        parts_check_out(created)  # type: ignore[arg-type]

        # Reset while the second part uploads: retried on a new connection, transparently.
        proxy.arm(UPLOAD, "reset", occurrence=2)
        code, _, created = await create("reset")
        assert proxy.fired.is_set()
        assert code == grpc.StatusCode.OK, created
        parts_check_out(created)  # type: ignore[arg-type]

        # Paused while the first part uploads: bounded retries, then UNAVAILABLE.
        proxy.arm(UPLOAD, "pause")
        code, took, err = await create("paused")
        assert proxy.fired.is_set()
        assert code == grpc.StatusCode.UNAVAILABLE, err
        assert error_details(err)["reason"] == "ARTIFACT_STORE_UNAVAILABLE"  # type: ignore[arg-type]
        assert took < 6 * TIMEOUT_S + 3, f"took {took:.1f}s"
        # The held connection does not survive the outage (a late copy of its upload could
        # still land after the call gave up: see docs/reliability.md); the network returns.
        proxy.reset()
        proxy.resume()
        await left_nothing("paused")

        # Reset and then refused (the store is unreachable): UNAVAILABLE quickly.
        proxy.arm(UPLOAD, "reset", refuse=True)
        code, took, err = await create("refused")
        assert code == grpc.StatusCode.UNAVAILABLE, err
        assert error_details(err)["reason"] == "ARTIFACT_STORE_UNAVAILABLE"  # type: ignore[arg-type]
        assert took < 4 * TIMEOUT_S + 3, f"took {took:.1f}s"
        proxy.refuse(False)
        await left_nothing("refused")

        code, _, created = await create("after")  # recovered, nothing to restart
        assert code == grpc.StatusCode.OK, created
        parts_check_out(created)  # type: ignore[arg-type]
        assert sorted({k.split("/")[1] for k in truth.list("splits/")}) == [
            "after",
            "healthy",
            "reset",
        ]
    finally:
        proxy.resume()
        proxy.refuse(False)
        await split.close()
