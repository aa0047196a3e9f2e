"""Fault 6: a client deadline shorter than the work. The client gets DEADLINE_EXCEEDED and the
server abandons the work: the thread doing it finds its commit refused (``run_db``'s fence),
so nothing is written for a caller that has gone, and what was staged is cleaned up.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from reliability_support import (
    PgCluster,
    TcpProxy,
    all_versions,
    call_code,
    create_split_request,
    register_request,
    start_registry,
    start_split,
    wait_until,
    write_table,
)

from arbor.registry.v1 import registry_service_pb2_grpc as rpb_grpc
from arbor.split.v1 import split_service_pb2 as spb
from arbor.split.v1 import split_service_pb2_grpc as spb_grpc
from arbor_core.artifacts import LocalArtifactStore
from arbor_core.db import make_engine

pytestmark = [pytest.mark.fault, pytest.mark.integration]


async def test_split_deadline_abandons_the_create(
    nats_url: str, nats_namespace: str, tmp_path: Path
) -> None:
    data_root = tmp_path / "data"
    # Big enough that the split outlasts the 0.3 s deadline even on an idle machine.
    source = write_table(data_root / "big.parquet", rows=2_000_000)
    store = LocalArtifactStore(tmp_path / "artifacts")
    db_url = f"sqlite:///{tmp_path / 'split.db'}"
    svc = await start_split(db_url, nats_url, nats_namespace, store, data_root)
    stub = spb_grpc.SplitServiceStub(svc.channel)
    split_id = f"deadline-{uuid.uuid4().hex[:8]}"
    engine = make_engine(db_url, "split")

    def rows() -> int:
        with engine.connect() as conn:
            query = sa.text("SELECT count(*) FROM splits WHERE split_id = :id")
            return int(conn.execute(query, {"id": split_id}).scalar_one())

    try:
        code, err = await call_code(
            stub.CreateSplit(create_split_request(str(source), split_id), timeout=0.3)
        )
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED, err
        assert rows() == 1, "the create should still be running (reserved, CREATING)"

        async def gone() -> bool:
            return rows() == 0 and not store.list(f"splits/{split_id}/")

        assert await wait_until(gone, 60, 0.2), "the abandoned create left a row or artifacts"
        code, err = await call_code(stub.GetSplit(spb.GetSplitRequest(name=f"splits/{split_id}")))
        assert code == grpc.StatusCode.NOT_FOUND, err
        # The service still works, and the same id can be created now.
        reply = await stub.CreateSplit(create_split_request(str(source), split_id), timeout=120)
        assert reply.split.state == spb.SPLIT_STATE_READY
        assert len(store.list(f"splits/{split_id}/")) == 3
    finally:
        engine.dispose()
        await svc.close()


async def test_registry_deadline_abandons_the_write(
    private_pg: PgCluster,
    tcp_proxy: Callable[[str, int], TcpProxy],
    nats_url: str,
    nats_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database is slow (paused) past the deadline, then answers: the write must not land."""
    monkeypatch.setenv("ARBOR_DB_IO_TIMEOUT_S", "5")
    dbname = f"deadline_{uuid.uuid4().hex[:8]}"
    private_pg.create_database(dbname)
    proxy = tcp_proxy("127.0.0.1", private_pg.port)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{dbname}"
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    svc = await start_registry(url, nats_url, nats_namespace, artifacts.root)
    stub = rpb_grpc.RegistryServiceStub(svc.channel)
    model = f"deadline-{uuid.uuid4().hex[:6]}"
    try:
        await stub.RegisterModelVersion(register_request(artifacts, model, "first"), timeout=10)
        proxy.pause()
        code, err = await call_code(
            stub.RegisterModelVersion(register_request(artifacts, model, "late"), timeout=0.5)
        )
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED, err
        await asyncio.sleep(0.3)
        proxy.resume()  # the held statements now reach the database: the commit is fenced
        await asyncio.sleep(1.5)
        assert [v.version for v in await all_versions(stub, model)] == [1]
        reply = await stub.RegisterModelVersion(register_request(artifacts, model, "late"))
        assert reply.created and reply.model_version.version == 2
    finally:
        proxy.resume()
        await svc.close()
