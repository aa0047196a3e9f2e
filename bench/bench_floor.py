"""The floors Predict is judged against, measured on the models ``bench_inference`` serves.

* **echo**: a bare ``grpc.aio`` unary round trip over loopback (a generic handler that returns
  the request bytes, in a child process like the inference server), with a one-row Predict
  request as payload, at concurrency 1 and 8: what any gRPC service pays before doing work.
  Then the same handler served by ``arbor_core.server`` (interceptors for telemetry, request
  id, errors, access log; health; reflection) on the event loop services run on
  (``arbor_core.eventloop``: uvloop by default): what Arbor's bootstrap adds to every call. The
  bare echo on uvloop is measured too, so the loop's share and the bootstrap's stay apart
  (the floor the targets use is the bare echo on asyncio's own loop).
* **library**: the model library's own predict on a numpy matrix, one thread, no Arbor code
  (LightGBM ``Booster.predict``, XGBoost ``inplace_predict``, CatBoost ``predict``): 1 row
  p50/p99, rows/s at 1,000 and 10,000 rows.
* **compiled**: the same through ``arbor_ml.compiled`` (LightGBM, XGBoost), with its build
  time and its load time from the cache.
* **cold load**: ``load_bundle`` from a local artifact store (checksums verified) plus the
  first one-row prediction, median of several loads of a 300-tree model in a running process
  (the library already imported); with compiled inference the cached library is attached
  too. Also once in a fresh process, where importing the library comes first.

Models are ``bench_inference.train_model``'s (binary, 300 trees, 30 numeric features, same
seed), so "the same model" holds across the files of one ``make bench``.

    python -m bench.bench_floor [--short] [--output bench/results/floor.json]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import _models as bench_models
from bench import bench_inference as bi

RESULTS = Path(__file__).resolve().parent / "results" / "floor.json"


# --------------------------------------------------------------------------- echo server


#: ``--serve-echo`` kinds: bare grpc.aio on asyncio's loop, the same on uvloop, Arbor's
#: bootstrap on the loop services use
ECHO_KINDS = ("bare", "bare-uvloop", "arbor")


def serve_echo(kind: str) -> None:
    """Child process: a grpc.aio server whose one method returns the request bytes; for
    ``arbor``, served by ``arbor_core.server`` (its interceptors, health, reflection) on the
    services' event loop exactly as a service is, so the difference to the bare echo is the
    bootstrap's cost (and the loop's: ``bare-uvloop`` tells them apart)."""
    import grpc

    from arbor_core import eventloop

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "arbor.bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo, request_deserializer=None, response_serializer=None
            )
        },
    )

    async def bare() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        loop = eventloop.loop_name(asyncio.get_running_loop())
        print(json.dumps({"address": f"127.0.0.1:{port}", "loop": loop}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop(0.5)

    async def arbor() -> None:
        import dataclasses

        from arbor_core.config import load_settings
        from arbor_core.logging import configure_logging
        from arbor_core.server import build_server

        configure_logging("inference", os.environ.get("ARBOR_LOG_LEVEL", "WARNING"))
        settings = dataclasses.replace(
            load_settings("inference"), host="127.0.0.1", port=0, auth_tokens=[]
        )

        def register(server: Any) -> list[str]:
            server.add_generic_rpc_handlers((handler,))
            return ["arbor.bench.Echo"]

        runner = build_server(settings, register)
        await runner.start()
        loop = eventloop.loop_name(asyncio.get_running_loop())
        print(json.dumps({"address": runner.address, "loop": loop}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.stop(0.5)

    if kind == "bare":
        asyncio.run(bare())
    elif kind == "bare-uvloop":
        eventloop.run(bare(), choice="uvloop")
    else:
        eventloop.run(arbor())


def measure_echoes(requests: int, kinds: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each echo server (``--serve-echo`` kind) in its own process; at concurrency 1 the
    calls take turns of 50 (``measure_in_turns``), so a slow minute of this shared machine
    hits every kind alike and their differences (the loop's, the bootstrap's) are the
    figures (the servers on one core, the client on another: ``servers_on_one_core``); at
    concurrency 8 one kind after the other."""
    from arbor.common.v1 import common_pb2
    from arbor.inference.v1 import inference_service_pb2 as pb

    selector = common_pb2.ModelSelector(stage=common_pb2.StageSelector(model="bench"))
    payload = pb.PredictRequest(
        model=selector, input=bi.inline(bi.request_frame(1), "columns")
    ).SerializeToString()
    servers: list[bi.EchoServer] = []
    try:
        for kind in kinds:
            servers.append(bi.EchoServer(kind))
        calls: list[Callable[[], Any]] = [
            functools.partial(server.call, payload, timeout=10) for server in servers
        ]
        out = {
            kind: {"payload_bytes": len(payload), "loop": server.loop}
            for kind, server in zip(kinds, servers, strict=True)
        }
        for call in calls:  # warm each connection before the turns
            for _ in range(50):
                call()
        # all on one core, the client on the other, as for the one-row budget
        with bi.servers_on_one_core(*(server.child.pid for server in servers)):
            turns = bi.measure_in_turns(calls, requests)
        for kind, (p50, p99, wall) in zip(kinds, turns, strict=True):
            out[kind]["c1"] = {"p50_ms": p50, "p99_ms": p99, "calls_per_s": requests / wall}
        for kind, call in zip(kinds, calls, strict=True):
            count = requests * 2
            p50, p99, wall = bi.measure(call, count, 8)
            per = max(1, count // 8) * 8
            out[kind]["c8"] = {"p50_ms": p50, "p99_ms": p99, "calls_per_s": per / wall}
        return out
    finally:
        for server in servers:
            server.close()


# --------------------------------------------------------------------------- library floor


def library_call(bundle: Any) -> Any:
    """``f(x)`` -> the library's own predict on a float64 matrix, one thread."""
    model = bundle.model
    native = model.native
    kind = model.model_type.value
    if kind == "lightgbm":
        return lambda x: native.predict(x, num_threads=1)
    if kind == "xgboost":
        native.set_param({"nthread": 1})
        return lambda x: native.inplace_predict(x.astype(np.float32, copy=False))
    return lambda x: native.predict(
        x.astype(np.float32, copy=False), prediction_type="Probability", thread_count=1
    )


def oblivious_floor(bundle: Any, requests: int) -> dict[str, Any]:
    """One row through ``arbor_ml.oblivious`` (CatBoost's trees walked in C, or numpy without
    a compiler), as the inference fast path calls it: the 1-row floor Arbor's CatBoost
    answers are judged against."""
    from arbor_ml.oblivious import build_checked

    arrays = build_checked(bundle.model.native, bundle.model.output_prediction_type)
    if arrays is None:
        return {"unavailable": "not replicable (see log)"}
    x = np.ascontiguousarray(bi.request_frame(1).to_numpy(), dtype=np.float64)
    out: dict[str, Any] = {"1": timed(arrays.predict, x, requests)}
    out["evaluator"] = "c" if arrays.native is not None else "numpy"
    return out


def timed(call: Any, x: np.ndarray, requests: int) -> dict[str, float]:
    for _ in range(min(20, requests)):
        call(x)
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        call(x)
        samples.append(time.perf_counter() - started)
    values = np.array(samples)
    p50 = float(np.percentile(values, 50))
    return {
        "p50_ms": p50 * 1000,
        "p99_ms": float(np.percentile(values, 99)) * 1000,
        "rows_per_s": x.shape[0] / p50,
    }


def sizes_plan(short: bool) -> list[tuple[int, int]]:
    scale = 0.25 if short else 1.0
    return [(1, int(4000 * scale)), (1_000, int(200 * scale)), (10_000, max(8, int(40 * scale)))]


def cold_load(bundle: Any, work: Path, loads: int, compiled_cache: Path | None) -> dict[str, Any]:
    from arbor_core.artifacts import LocalArtifactStore
    from arbor_ml import bundle_prefix, compiled, load_bundle, save_bundle

    store = LocalArtifactStore(work / "artifacts")
    ref = save_bundle(bundle, store, bundle_prefix(f"cold-{bundle.model_type.value}", 1))
    one = bi.request_frame(1)
    samples, attach = [], []
    for _ in range(loads):
        started = time.perf_counter()
        loaded = load_bundle(store, ref.prefix, expected_manifest_sha256=ref.manifest_sha256)
        mid = time.perf_counter()
        if compiled_cache is not None:
            compiled.enable_compiled(loaded, compiled_cache, background=True)
        attached = time.perf_counter()
        loaded.predict_raw(one)
        samples.append(time.perf_counter() - started)
        attach.append(attached - mid)
    return {
        "p50_ms": float(np.median(samples)) * 1000,
        "max_ms": float(np.max(samples)) * 1000,
        "compiled_attach_ms": float(np.median(attach)) * 1000 if compiled_cache else None,
        "bundle_bytes": sum(r.size for r in ref.files.values()),
    }


_FRESH = """
import json, sys, time
started = time.perf_counter()
import polars as pl
from arbor_core.artifacts import LocalArtifactStore
from arbor_ml import load_bundle
base = time.perf_counter()
__import__(sys.argv[3])
imported = time.perf_counter()
bundle = load_bundle(LocalArtifactStore(sys.argv[1]), sys.argv[2])
bundle.predict_raw(pl.DataFrame({f"f{i}": [0.5] for i in range(30)}))
done = time.perf_counter()
print(json.dumps({"library_import_ms": (imported - base) * 1000,
                  "load_and_predict_ms": (done - imported) * 1000}))
"""


def fresh_process_load(bundle: Any, work: Path) -> dict[str, Any]:
    """The first model of its library in a new process: the library's import comes first."""
    from arbor_core.artifacts import LocalArtifactStore
    from arbor_ml import bundle_prefix, save_bundle

    store = LocalArtifactStore(work / "fresh")
    ref = save_bundle(bundle, store, bundle_prefix(f"fresh-{bundle.model_type.value}", 1))
    done = subprocess.run(
        [sys.executable, "-c", _FRESH, str(store.root), ref.prefix, bundle.model.library],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ARBOR_COMPILED_INFERENCE": "off"},
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(short: bool, models: tuple[str, ...] = bi.MODEL_TYPES) -> dict[str, Any]:
    from arbor_ml import compiled

    work = Path(tempfile.mkdtemp(prefix="arbor-bench-floor-"))
    cache = work / "compiled"
    report: dict[str, Any] = {
        "benchmark": "floor",
        "mode": "short" if short else "full",
        "models": {},
    }
    echoes = measure_echoes(400 if short else 2000, ("bare", "bare-uvloop", "arbor"))
    report["echo"] = echoes["bare"]
    report["echo_uvloop"] = echoes["bare-uvloop"]
    report["echo_bootstrap"] = echoes["arbor"]
    for key in ("echo", "echo_uvloop", "echo_bootstrap"):
        print(
            f"  {key} c=1 p50={report[key]['c1']['p50_ms']:.3f}ms "
            f"c=8 p50={report[key]['c8']['p50_ms']:.3f}ms",
            file=sys.stderr,
        )
    for model_type in models:
        bundle = bench_models.model(model_type)
        entry: dict[str, Any] = {"library": {}, "compiled": {}}
        call = library_call(bundle)
        predictor = None
        reason = compiled.unavailable_reason(bundle.model_type)
        if reason is None:
            predictor = compiled.compile_model(bundle.model, cache)
            if predictor is not None:
                entry["compile_seconds"] = predictor.compile_seconds
                again = compiled.CompiledPredictor(predictor.path, predictor.model_sha256)
                entry["compiled_load_ms"] = again.load_seconds * 1000
            else:
                reason = "self-check or build failed (see log)"
        entry["compiled_unavailable"] = reason
        if model_type == "catboost":  # what serves its small batches: the oblivious trees
            entry["oblivious"] = oblivious_floor(bundle, 400 if short else 2000)
        for rows, requests in sizes_plan(short):
            x = np.ascontiguousarray(bi.request_frame(rows).to_numpy(), dtype=np.float64)
            entry["library"][str(rows)] = timed(call, x, requests)
            if predictor is not None:
                one_thread = predictor
                entry["compiled"][str(rows)] = timed(
                    lambda x, p=one_thread: p.predict(x, threads=1), x, requests
                )
                expected = np.asarray(call(x), dtype=np.float64).reshape(rows, -1)
                got = predictor.predict(x, threads=1)
                entry.setdefault("compiled_max_abs_diff", 0.0)
                entry["compiled_max_abs_diff"] = max(
                    entry["compiled_max_abs_diff"],
                    float(np.max(np.abs(expected[:, -1] - got[:, -1]))),
                )
            lib = entry["library"][str(rows)]
            comp = entry["compiled"].get(str(rows))
            print(
                f"  {model_type:8} rows={rows:<6} library p50={lib['p50_ms']:.3f}ms "
                f"{lib['rows_per_s']:12,.0f} rows/s"
                + (
                    f" | compiled p50={comp['p50_ms']:.3f}ms {comp['rows_per_s']:12,.0f} rows/s"
                    if comp
                    else ""
                ),
                file=sys.stderr,
            )
        entry["cold_load"] = cold_load(bundle, work / model_type, 3 if short else 7, None)
        entry["cold_load_fresh_process"] = fresh_process_load(bundle, work / model_type)
        if predictor is not None:
            entry["cold_load_compiled"] = cold_load(bundle, work / model_type, 3, cache)
        report["models"][model_type] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--models", default=",".join(bi.MODEL_TYPES))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--serve-echo", choices=ECHO_KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return 0
    short = args.short or os.environ.get("BENCH_MODE") == "short"
    report = run(short, tuple(m for m in args.models.split(",") if m))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
