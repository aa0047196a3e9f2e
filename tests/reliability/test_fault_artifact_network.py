"""Fault 10 (artifact store): the network to GCS (fake-gcs-server behind a TCP proxy) paused or
reset in the middle of CreateSplit's part uploads. A reset is retried on a new connection and
the split completes; a pause, or a store that refuses connections, ends in UNAVAILABLE
(``ARTIFACT_STORE_UNAVAILABLE``) within the store's timeout, never INTERNAL and never a hang,
and leaves no split row; the next create works once the network is back.

Objects can outlive such a create: the paused upload reaches the store when the network comes
back (after the call gave up and its clean-up ran), and a clean-up whose delete is refused
leaves the parts uploaded before the outage. The split service's orphan sweep deletes both
once they are older than its grace, and never the parts of a split that has a row: READY,
soft-deleted, or a create running now.
"""

from __future__ import annotations

import asyncio
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
    wait_until,
    write_table,
)

from arbor.split.v1 import split_service_pb2 as spb
from arbor.split.v1 import split_service_pb2_grpc as spb_grpc
from arbor_core.artifacts import GcsArtifactStore
from arbor_core.status_details import error_details
from arbor_split.server import ORPHAN_GRACE_ENV, ORPHAN_SWEEP_ENV
from arbor_split.service import SplitRecord

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.slow]

TIMEOUT_S = 1.0  # the store's per-request timeout, which also bounds its retries
UPLOAD = b"POST /upload/"  # the request line of a GCS media upload (one per part)
GRACE_S = 3.0  # the orphan sweep's grace (more than twice the store's timeout)
SWEEP_S = 0.5  # and its period


async def test_artifact_store_network_paused_or_reset_mid_create(
    fake_gcs: FakeGcsServer,
    tcp_proxy: Callable[[str, int], TcpProxy],
    nats_url: str,
    nats_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ORPHAN_GRACE_ENV, str(GRACE_S))
    monkeypatch.setenv(ORPHAN_SWEEP_ENV, str(SWEEP_S))
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

    async def no_split(split_id: str) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetSplit(spb.GetSplitRequest(name=f"splits/{split_id}"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    async def objects_appear(split_id: str) -> bool:
        return truth.list(f"splits/{split_id}/") != []

    async def swept(*split_ids: str) -> bool:
        return all(truth.list(f"splits/{i}/") == [] for i in split_ids)

    def parts_check_out(created: spb.Split) -> None:
        assert len(created.parts) == 3
        for part in created.parts:  # whole objects whose bytes match the recorded checksums
            assert truth.get_bytes(part.artifact.key, expected_sha256=part.artifact.sha256)

    try:
        code, _, healthy = await create("healthy")
        assert code == grpc.StatusCode.OK, healthy
        parts_check_out(healthy)  # type: ignore[arg-type]

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
        await no_split("paused")
        # The network returns with the held upload: it lands after the call gave up and its
        # clean-up ran. Whole and checksum-true, but no split owns it.
        proxy.resume()
        assert await wait_until(lambda: objects_appear("paused"), 10), "no late upload"
        await no_split("paused")
        for key in truth.list("splits/paused/"):
            assert truth.get_bytes(key)

        # Reset at the second part, then refused (the store is unreachable): UNAVAILABLE
        # quickly; the clean-up's delete is refused too, so the first part stays behind.
        proxy.arm(UPLOAD, "reset", occurrence=2, refuse=True)
        code, took, err = await create("refused")
        assert code == grpc.StatusCode.UNAVAILABLE, err
        assert error_details(err)["reason"] == "ARTIFACT_STORE_UNAVAILABLE"  # type: ignore[arg-type]
        assert took < 4 * TIMEOUT_S + 3, f"took {took:.1f}s"
        proxy.refuse(False)
        await no_split("refused")
        assert len(truth.list("splits/refused/")) == 1, "the first part was not left behind"

        code, _, after = await create("after")  # recovered, nothing to restart
        assert code == grpc.StatusCode.OK, after
        parts_check_out(after)  # type: ignore[arg-type]

        # Splits the sweep must leave alone, and one it must clean: soft-deleted (parts kept),
        # purged (a part that reappears under it is an orphan), and a create running now (its
        # CREATING row is reserved before any upload; here one that has been uploading for
        # longer than the grace).
        code, _, soft = await create("soft")
        assert code == grpc.StatusCode.OK, soft
        await stub.DeleteSplit(spb.DeleteSplitRequest(name="splits/soft"), timeout=10)
        code, _, gone = await create("gone")
        assert code == grpc.StatusCode.OK, gone
        await stub.DeleteSplit(spb.DeleteSplitRequest(name="splits/gone", purge=True), timeout=10)
        truth.put_bytes("splits/gone/train.parquet", b"late copy")
        service = split.runner.service  # type: ignore[attr-defined]
        service.repository.reserve(SplitRecord(split_id="creating", state="CREATING"), "", "")
        truth.put_bytes("splits/creating/train.parquet", b"uploading now")

        # The service's own periodic sweep removes the orphans once they are older than the
        # grace, through the same store (and proxy) as its creates.
        assert await wait_until(lambda: swept("paused", "refused", "gone"), 6 * GRACE_S), (
            truth.list("splits/")
        )
        await asyncio.sleep(GRACE_S + 3 * SWEEP_S)  # every live object is past the grace now
        assert sorted({k.split("/")[1] for k in truth.list("splits/")}) == [
            "after",
            "creating",
            "healthy",
            "reset",
            "soft",
        ]
        for live in (healthy, created, after, soft):
            parts_check_out(live)  # type: ignore[arg-type]
        assert truth.get_bytes("splits/creating/train.parquet") == b"uploading now"
        assert service.repository.get("creating").state == "CREATING"
        # A create that reserves an orphan's id between the sweep's check and its delete
        # keeps its parts: the sweep's own reservation of the id is refused.
        assert service._remove_orphan("creating") == 0
        assert truth.exists("splits/creating/train.parquet")
        assert service.repository.get("creating").state == "CREATING"
    finally:
        proxy.resume()
        proxy.refuse(False)
        await split.close()


async def test_a_late_upload_never_replaces_a_later_splits_part(
    fake_gcs: FakeGcsServer,
    tcp_proxy: Callable[[str, int], TcpProxy],
    nats_url: str,
    nats_namespace: str,
    tmp_path: Path,
) -> None:
    """A create whose upload is held by the network fails; the same id is then created again
    (another replica, whose network is fine) with other content; when the held upload finally
    reaches the store it is refused (parts are written create-only), so the READY split's
    parts stay whole and checksum-true."""
    bucket = f"arbor-late-{uuid.uuid4().hex[:8]}"
    fake_gcs.client().create_bucket(bucket)
    proxy = tcp_proxy("127.0.0.1", fake_gcs.port)
    via_proxy = fake_gcs.client(f"http://{proxy.address}")
    held = GcsArtifactStore(bucket, "arbor", client=via_proxy, timeout=TIMEOUT_S)
    truth = GcsArtifactStore(bucket, "arbor", client=fake_gcs.client())
    data = tmp_path / "data"
    source = str(write_table(data / "t.parquet", rows=300))
    database = f"sqlite:///{tmp_path / 'split.db'}"
    stalled = await start_split(database, nats_url, nats_namespace, held, data)
    healthy = await start_split(database, nats_url, nats_namespace, truth, data)
    try:
        proxy.arm(UPLOAD, "pause")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await spb_grpc.SplitServiceStub(stalled.channel).CreateSplit(
                create_split_request(source, "late"), timeout=60
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert proxy.fired.is_set()

        other = create_split_request(source, "late")
        other.split.seed = 8  # other rows in each part: other bytes
        split = (
            await spb_grpc.SplitServiceStub(healthy.channel).CreateSplit(other, timeout=60)
        ).split
        before = {p.artifact.key: p.artifact.sha256 for p in split.parts}
        proxy.resume()  # the held upload (and its retries) reach the store now
        await asyncio.sleep(3 * TIMEOUT_S)
        for key, sha256 in before.items():
            assert truth.get_bytes(key, expected_sha256=sha256)
        reply = await spb_grpc.SplitServiceStub(healthy.channel).GetSplit(
            spb.GetSplitRequest(name="splits/late"), timeout=10
        )
        assert {p.artifact.key: p.artifact.sha256 for p in reply.split.parts} == before
    finally:
        proxy.resume()
        await stalled.close()
        await healthy.close()
