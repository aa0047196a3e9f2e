"""Faults 3 and 10 (database): PostgreSQL restarted under traffic, and the network to it paused
or reset mid-call. The registry answers UNAVAILABLE while the database is away (never INTERNAL,
never a hang), reports NOT_SERVING, recovers without a restart, and no write is lost, doubled
or half-applied: every registration retried with its request_id lands exactly once.
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
    CallLog,
    PgCluster,
    TcpProxy,
    aio_health,
    all_versions,
    call_code,
    register_request,
    start_registry,
    wait_until,
)

from arbor.registry.v1 import registry_service_pb2 as rpb
from arbor.registry.v1 import registry_service_pb2_grpc as rpb_grpc
from arbor_core.artifacts import LocalArtifactStore
from arbor_core.status_details import error_details

pytestmark = [pytest.mark.fault, pytest.mark.integration]

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
OK = grpc.StatusCode.OK


@pytest.fixture
def short_db_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounds small enough for a test: 2 s to connect, 1.5 s per network wait."""
    monkeypatch.setenv("ARBOR_DB_CONNECT_TIMEOUT_S", "2")
    monkeypatch.setenv("ARBOR_DB_IO_TIMEOUT_S", "1.5")


async def _assert_exactly_once(
    stub: rpb_grpc.RegistryServiceStub, artifacts: LocalArtifactStore, model: str, rids: set[str]
) -> None:
    """Re-send every registration by request_id: each exists once, numbers are 1..n."""
    for rid in sorted(rids):
        reply = await stub.RegisterModelVersion(register_request(artifacts, model, rid), timeout=10)
        assert reply.model_version.model == model
    versions = await all_versions(stub, model)
    assert sorted(v.version for v in versions) == list(range(1, len(rids) + 1))
    assert len(versions) == len(rids), "a registration was lost or doubled"


@pytest.mark.slow
async def test_postgres_restart_under_traffic(
    private_pg: PgCluster,
    short_db_timeouts: None,
    nats_url: str,
    nats_namespace: str,
    tmp_path: Path,
) -> None:
    url = private_pg.create_database(f"restart_{uuid.uuid4().hex[:8]}")
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    svc = await start_registry(url, nats_url, nats_namespace, artifacts.root)
    stub = rpb_grpc.RegistryServiceStub(svc.channel)
    model = f"restart-{uuid.uuid4().hex[:6]}"
    calls = CallLog()
    sent: set[str] = set()
    stop = asyncio.Event()

    async def client(worker: int) -> None:
        i = 0
        while not stop.is_set():
            rid = f"r-{worker}-{i}"
            i += 1
            sent.add(rid)
            code, reply = await call_code(
                stub.RegisterModelVersion(register_request(artifacts, model, rid), timeout=15)
            )
            calls.record(code, "" if code == OK else reply.details())
            code, reply = await call_code(
                stub.GetModel(rpb.GetModelRequest(name=f"models/{model}"), timeout=15)
            )
            calls.record(code, "" if code == OK else reply.details())
            await asyncio.sleep(0.02)

    try:
        workers = [asyncio.create_task(client(w)) for w in range(4)]
        await asyncio.sleep(0.6)
        assert calls.codes["OK"] > 0

        await asyncio.to_thread(private_pg.stop, "fast")
        down = time.monotonic()
        assert await wait_until(lambda: _is(aio_health(svc.channel), "NOT_SERVING"), 5), (
            "health did not report NOT_SERVING while the database was down"
        )
        code, err = await call_code(
            stub.GetModel(rpb.GetModelRequest(name=f"models/{model}"), timeout=15)
        )
        assert code == UNAVAILABLE, err
        assert error_details(err)["reason"] == "DATABASE_UNAVAILABLE"
        assert time.monotonic() - down < 10

        await asyncio.sleep(0.5)
        await asyncio.to_thread(private_pg.start)
        assert await wait_until(lambda: _is(aio_health(svc.channel), "SERVING"), 10)
        recovered = calls.codes["OK"]
        await asyncio.sleep(0.8)
        assert calls.codes["OK"] > recovered, "calls did not succeed again after the restart"
        stop.set()
        await asyncio.gather(*workers)

        assert calls.codes["UNAVAILABLE"] > 0, "the outage was never observed"
        assert calls.unexpected([UNAVAILABLE]) == [], calls.errors[:5]
        await _assert_exactly_once(stub, artifacts, model, sent)
    finally:
        stop.set()
        await svc.close()


async def _is(status: object, wanted: str) -> bool:
    return await status == wanted  # type: ignore[misc]


async def test_postgres_network_paused_then_reset(
    private_pg: PgCluster,
    short_db_timeouts: None,
    tcp_proxy: Callable[[str, int], TcpProxy],
    nats_url: str,
    nats_namespace: str,
    tmp_path: Path,
) -> None:
    dbname = f"proxy_{uuid.uuid4().hex[:8]}"
    private_pg.create_database(dbname)
    proxy = tcp_proxy("127.0.0.1", private_pg.port)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{dbname}"
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    svc = await start_registry(url, nats_url, nats_namespace, artifacts.root)
    stub = rpb_grpc.RegistryServiceStub(svc.channel)
    model = f"proxy-{uuid.uuid4().hex[:6]}"
    get = rpb.GetModelRequest(name=f"models/{model}")
    try:
        await stub.RegisterModelVersion(register_request(artifacts, model, "before"), timeout=10)

        # Paused: the database looks hung. Bounded waits turn it into UNAVAILABLE, not a hang.
        proxy.pause()
        started = time.monotonic()
        code, err = await call_code(stub.GetModel(get, timeout=30))
        assert code == UNAVAILABLE, err
        code, err = await call_code(
            stub.RegisterModelVersion(register_request(artifacts, model, "paused"), timeout=30)
        )
        assert code == UNAVAILABLE, err
        assert time.monotonic() - started < 15, "a paused database was waited on unboundedly"
        assert await wait_until(lambda: _is(aio_health(svc.channel), "NOT_SERVING"), 8)

        proxy.resume()
        assert await wait_until(lambda: _is(aio_health(svc.channel), "SERVING"), 10)
        # The write sent while paused reached the server after its connection was dropped: it
        # was rolled back, so the model still has one version...
        assert [v.version for v in await all_versions(stub, model)] == [1]

        # Reset: every connection gets an RST. The pool's pre-ping notices and reconnects, so
        # a call made afterwards simply succeeds (a bounded retry, invisible to the client).
        assert proxy.reset() > 0
        assert (await stub.GetModel(get, timeout=10)).model.latest_version == 1

        # Reset and refuse new connections: UNAVAILABLE quickly, then recovery.
        proxy.refuse(True)
        proxy.reset()
        started = time.monotonic()
        code, err = await call_code(stub.GetModel(get, timeout=30))
        assert code == UNAVAILABLE, err
        assert time.monotonic() - started < 10
        proxy.refuse(False)
        assert (await stub.GetModel(get, timeout=10)).model.latest_version == 1

        # ...and the request refused while paused lands exactly once when retried.
        await _assert_exactly_once(stub, artifacts, model, {"before", "paused"})
    finally:
        proxy.resume()
        proxy.refuse(False)
        await svc.close()
