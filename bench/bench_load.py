"""Bounded load test on loopback: 8 concurrent clients for 30 s of Predict, plus List traffic on
split, training and registry. Reports per-RPC counts, errors and p50/p99 latency; any error
fails the run. Not part of the default test run:

    .venv/bin/python -m bench.bench_load [--seconds 30] [--clients 8] [--json out.json]

Everything runs in this process on ephemeral loopback ports (SQLite, local artifacts); NATS is
the local server (ARBOR_NATS_URL, default nats://127.0.0.1:4222) under a private namespace.
The loops stop by themselves after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reliability"))

import grpc  # noqa: E402
from reliability_support import (  # noqa: E402
    create_split_request,
    predict_request,
    registration_for,
    service_settings,
    start_inference,
    start_registry,
    start_split,
    tiny_bundle,
    write_table,
)

from arbor.inference.v1 import inference_service_pb2_grpc as ipb_grpc  # noqa: E402
from arbor.registry.v1 import registry_service_pb2 as rpb  # noqa: E402
from arbor.registry.v1 import registry_service_pb2_grpc as rpb_grpc  # noqa: E402
from arbor.split.v1 import split_service_pb2 as spb  # noqa: E402
from arbor.split.v1 import split_service_pb2_grpc as spb_grpc  # noqa: E402
from arbor.training.v1 import training_service_pb2 as tpb  # noqa: E402
from arbor.training.v1 import training_service_pb2_grpc as tpb_grpc  # noqa: E402
from arbor_core.artifacts import LocalArtifactStore  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(seconds: float, clients: int) -> dict[str, Any]:
    from arbor_training.server import build_runner as training_runner
    from arbor_training.server import migrate as training_migrate

    nats_url = os.environ.get("ARBOR_NATS_URL", "nats://127.0.0.1:4222")
    ns = f"bench{uuid.uuid4().hex[:8]}"
    home = Path(tempfile.mkdtemp(prefix="arbor-bench-"))
    store = LocalArtifactStore(home / "artifacts")
    data = write_table(home / "data" / "t.parquet", rows=500)
    registry = await start_registry(f"sqlite:///{home / 'registry.db'}", nats_url, ns, store.root)
    split = await start_split(f"sqlite:///{home / 'split.db'}", nats_url, ns, store, data.parent)
    inference = await start_inference(nats_url, ns, store.root, registry.address)
    t_settings = service_settings(
        "training",
        database_url=f"sqlite:///{home / 'training.db'}",
        nats_url=nats_url,
        nats_namespace=ns,
        home=home,
        service_addresses={"split": split.address},
    )
    training_migrate(t_settings)
    training = training_runner(t_settings, relay_poll_interval=0.1)
    await training.start()
    t_channel = grpc.aio.insecure_channel(training.address)
    try:
        rstub = rpb_grpc.RegistryServiceStub(registry.channel)
        sstub = spb_grpc.SplitServiceStub(split.channel)
        istub = ipb_grpc.InferenceServiceStub(inference.channel)
        tstub = tpb_grpc.TrainingServiceStub(t_channel)
        version = (
            await rstub.RegisterModelVersion(registration_for(tiny_bundle(), store, "bench", 1))
        ).model_version
        await sstub.CreateSplit(create_split_request(str(data), "bench-split"), timeout=60)
        predict = predict_request(version.name, rows=16)
        await istub.Predict(predict, timeout=60)  # load the model before timing

        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "Predict": lambda: istub.Predict(predict, timeout=10),
            "ListModels": lambda: rstub.ListModels(rpb.ListModelsRequest(page_size=20), timeout=10),
            "ListSplits": lambda: sstub.ListSplits(spb.ListSplitsRequest(page_size=20), timeout=10),
            "ListExperiments": lambda: tstub.ListExperiments(
                tpb.ListExperimentsRequest(page_size=20), timeout=10
            ),
        }
        # Predict is the main traffic: 3 of every 4 calls; List calls rotate over the rest.
        mix = ["Predict", "Predict", "Predict", "ListModels", "Predict", "Predict", "Predict",
               "ListSplits", "Predict", "Predict", "Predict", "ListExperiments"]  # fmt: skip
        latencies: dict[str, list[float]] = defaultdict(list)
        errors: dict[str, list[str]] = defaultdict(list)
        deadline = time.monotonic() + seconds

        async def client(worker: int) -> None:
            i = worker
            while time.monotonic() < deadline:
                name = mix[i % len(mix)]
                i += 1
                started = time.perf_counter()
                try:
                    await calls[name]()
                except grpc.aio.AioRpcError as err:
                    errors[name].append(f"{err.code().name}: {err.details()}"[:200])
                    continue
                latencies[name].append((time.perf_counter() - started) * 1000)

        wall = time.monotonic()
        await asyncio.gather(*(client(w) for w in range(clients)))
        wall = time.monotonic() - wall
    finally:
        await t_channel.close()
        await training.stop(1)
        for svc in (inference, split, registry):
            await svc.close(1)
    every = [v for values in latencies.values() for v in values]
    report: dict[str, Any] = {
        "seconds": round(wall, 2),
        "clients": clients,
        "calls": len(every),
        "errors": sum(len(e) for e in errors.values()),
        "throughput_rps": round(len(every) / wall, 1),
        "p50_ms": round(statistics.median(every), 2) if every else 0.0,
        "p99_ms": round(_percentile(every, 0.99), 2),
        "by_rpc": {
            name: {
                "calls": len(values),
                "errors": len(errors[name]),
                "p50_ms": round(statistics.median(values), 2) if values else 0.0,
                "p99_ms": round(_percentile(values, 0.99), 2),
            }
            for name, values in sorted(latencies.items())
        },
        "first_errors": {name: errs[:3] for name, errs in errors.items()},
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    report = asyncio.run(run(args.seconds, args.clients))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    if report["errors"]:
        raise SystemExit(f"{report['errors']} calls failed")


if __name__ == "__main__":
    main()
