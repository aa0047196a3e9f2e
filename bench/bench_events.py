"""Event latency: a committed state change to a JetStream subscriber's handler.

The path every Arbor event takes: a transaction updates a row and stages the event with
``arbor_core.outbox.add_event``; on commit the process's ``OutboxRelay`` is woken, publishes
the row to JetStream (``Nats-Msg-Id`` = event id) and marks it sent; a subscriber made with
``arbor_core.events.subscribe_events`` decodes it and calls its handler. The clock starts
before the transaction and stops in the handler. Events go one at a time (each waits for the
previous one to arrive), so this is latency, not throughput.

PostgreSQL on 127.0.0.1:5432 (a fresh database, dropped afterwards) when reachable, else a
SQLite file; NATS at ``ARBOR_NATS_URL`` (default nats://127.0.0.1:4222) under a private
namespace whose streams are deleted afterwards. Target: p99 under 50 ms.

    python -m bench.bench_events [--events 300] [--output bench/results/events.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "events.json"
TARGET_P99_MS = 50.0
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _database() -> tuple[str, str, Any]:
    """(backend, url, cleanup)."""
    name = f"arbor_bench_events_{uuid.uuid4().hex[:8]}"
    try:
        import sqlalchemy as sa

        admin = sa.create_engine(
            PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        return "postgresql", PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", drop
    except Exception as exc:  # no PostgreSQL here: SQLite still measures the path
        print(f"PostgreSQL unavailable ({exc.__class__.__name__}); using SQLite", file=sys.stderr)
        path = Path(tempfile.mkdtemp(prefix="arbor-bench-events-")) / "events.db"
        return "sqlite", f"sqlite:///{path}", lambda: None


async def run(events: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from arbor_core.db import make_engine, make_metadata, session_factory, transaction
    from arbor_core.events import (
        connect_nats,
        ensure_streams,
        events_stream_name,
        jobs_stream_name,
        new_event,
        subscribe_events,
    )
    from arbor_core.outbox import OutboxRelay, add_event, outbox_table

    backend, url, drop = _database()
    nats_url = os.environ.get("ARBOR_NATS_URL", "nats://127.0.0.1:4222")
    namespace = f"benchev{uuid.uuid4().hex[:8]}"
    metadata = make_metadata()
    state = sa.Table(
        "experiments",
        metadata,
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("state", sa.String, nullable=False),
    )
    outbox = outbox_table(metadata)
    engine = make_engine(url, "bench")
    metadata.create_all(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as s:
        s.execute(sa.insert(state).values(id="exp-1", state="QUEUED"))

    relay = OutboxRelay(sessions, outbox, nats_url, namespace, name="bench-relay")
    nc = await connect_nats(nats_url, name="bench-events")
    js = nc.jetstream()
    await ensure_streams(js, namespace)
    arrived: dict[str, asyncio.Future[float]] = {}
    loop = asyncio.get_running_loop()

    async def handler(event: Any) -> None:
        future = arrived.get(event.event_id)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    subscription = await subscribe_events(js, handler, namespace=namespace)
    await relay.start()

    def change(i: int, event_id: str) -> float:
        started = time.perf_counter()
        with transaction(sessions) as s:
            s.execute(sa.update(state).where(state.c.id == "exp-1").values(state=f"RUNNING-{i}"))
            add_event(
                s,
                new_event("experiment.started", "experiments/exp-1", "bench", event_id=event_id),
            )
        return started

    latencies: list[float] = []
    try:
        for i in range(events + 10):
            event_id = str(uuid.uuid4())
            arrived[event_id] = loop.create_future()
            started = await loop.run_in_executor(None, change, i, event_id)
            try:
                done = await asyncio.wait_for(arrived[event_id], 10)
            finally:
                arrived.pop(event_id, None)
            if i >= 10:  # warm-up: connections, prepared statements, consumer start
                latencies.append(done - started)
            await asyncio.sleep(0.005)
    finally:
        await relay.stop()
        await subscription.stop()
        for stream in (events_stream_name(namespace), jobs_stream_name(namespace)):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        await nc.close()
        engine.dispose()
        drop()
    values = np.array(latencies) * 1000
    p99 = float(np.percentile(values, 99))
    return {
        "benchmark": "events",
        "backend": backend,
        "events": len(latencies),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": p99,
        "max_ms": float(values.max()),
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": p99 < TARGET_P99_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args.events))
    print(
        f"event latency ({report['backend']}): p50={report['p50_ms']:.2f}ms "
        f"p99={report['p99_ms']:.2f}ms over {report['events']} events",
        file=sys.stderr,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
