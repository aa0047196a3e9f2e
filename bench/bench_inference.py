"""Benchmark of Predict: the real gRPC server over loopback beside the same model in-process.

For CatBoost, XGBoost and LightGBM (binary, 300 trees on 30 numeric features), it measures
single-row latency (p50, p99) and 1,000 / 10,000-row batch throughput (rows/s), at
concurrency 1 and 8, for the input shapes (JSON rows, typed columns, Arrow IPC), and the
same batches through ``ModelBundle.predict`` in this process (the floor). The servers
(registry on SQLite, inference, a private nats-server) run in a child process, so client and
server do not share a GIL; requests are serialized once up front.

In the same run it also measures the floors each model's single-row calls are judged against
(issue 11): the model alone on a numpy row (the compiled predictor when there is one,
CatBoost's trees through ``arbor_ml.oblivious``, else the library; one thread), just before,
and a bare ``grpc.aio`` echo of the same request bytes (``bench_floor``'s echo server, on
asyncio's own loop, in a child process too), taking turns of 50 calls with the typed-column
Predict, so that a slowdown of this shared machine hits both alike; for those turns both
servers are pinned to one core and the client to the other, and Predict gets a fresh channel
(``servers_on_one_core``). Per 10,000-row
batch it measures the library's own predict on the same numpy matrix (one thread, as
``bench_floor``).

Targets (checked and printed per model): single-row p50 under 1 ms, and at most echo + model
alone + 150 us; 10,000-row columnar batches at >= 1.0x the library's own in-process predict
for LightGBM and XGBoost, >= 0.8x for CatBoost. LightGBM and XGBoost run through
``arbor_ml.compiled`` on both sides (``--no-compiled``: their libraries on both sides). The
servers log at WARNING by default (``--log-level INFO`` adds the per-call JSON access log).

    python bench/bench_inference.py            # full run
    python bench/bench_inference.py --short    # short mode (also BENCH_MODE=short)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"
MODEL_TYPES = ("catboost", "xgboost", "lightgbm")
FEATURES = 30
TREES = 300
TARGET_P50_MS = 1.0
#: issue 11: single-row p50 <= bare echo + the model alone + this
SINGLE_ROW_SLACK_MS = 0.150
#: 10,000-row columnar throughput / the library's own predict (one thread, numpy)
TARGET_RATIO = {"lightgbm": 1.0, "xgboost": 1.0, "catboost": 0.8}
REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the servers


def serve(work: Path) -> None:
    """Child process: nats-server, registry and inference; prints their addresses, then
    serves until stdin closes."""
    from arbor_core import eventloop
    from arbor_core.config import load_settings
    from arbor_core.logging import configure_logging
    from arbor_core.testing import NatsServerProcess
    from arbor_inference.server import build_runner as build_inference
    from arbor_registry.server import build_runner as build_registry
    from arbor_registry.server import migrate

    configure_logging("inference", os.environ.get("ARBOR_LOG_LEVEL", "WARNING"))
    nats = NatsServerProcess(store_dir=work / "nats").start()

    def settings(service: str, **extra: Any) -> Any:
        return dataclasses.replace(
            load_settings(service),
            host="127.0.0.1",
            port=0,
            home=work,
            nats_url=nats.url,
            nats_namespace="bench",
            artifact_uri=str(work / "artifacts"),
            auth_tokens=[],
            **extra,
        )

    async def main() -> None:
        registry_settings = settings("registry", database_url=f"sqlite:///{work / 'reg.db'}")
        migrate(registry_settings)
        # The registry shares this process (a deployment runs it apart): its outbox relay
        # polls at a calm 0.5 s so its SQL thread does not contend with inference for the GIL.
        registry = build_registry(registry_settings, relay_poll_interval=0.5)
        await registry.start()
        addresses = dict(registry_settings.service_addresses, registry=registry.address)
        inference = build_inference(settings("inference", service_addresses=addresses))
        await inference.start()
        await asyncio.wait_for(inference.events.subscribed.wait(), 30)  # type: ignore[attr-defined]
        await asyncio.wait_for(_serving(inference.address), 120)  # libraries imported, etc.
        started = {
            "registry": registry.address,
            "inference": inference.address,
            "loop": eventloop.loop_name(asyncio.get_running_loop()),
        }
        print(json.dumps(started), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await inference.stop(1)
        await registry.stop(1)

    try:
        eventloop.run(main())  # the loop a service runs on (uvloop by default)
    finally:
        nats.close()


async def _serving(address: str) -> None:
    """Until the server's health says SERVING (its readiness checks passed: the model
    libraries imported in the background, which would otherwise share the first
    measurements' CPU)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            answer = await health.Check(health_pb2.HealthCheckRequest())
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- data


def training_frame(rows: int = 3000, seed: int = 1) -> Any:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    frame = pl.DataFrame({f"f{i}": x[:, i] for i in range(FEATURES)})
    score = x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + rng.normal(0, 0.3, rows)
    return frame.with_columns(pl.Series("y", np.where(score > 0, "yes", "no")))


def train_model(model_type: str) -> Any:
    from arbor_ml import FitSettings, train

    data = training_frame()
    cut = int(data.height * 0.8)
    return train(
        data[:cut],
        data[cut:],
        target="y",
        model_type=model_type,
        task="binary",
        settings=FitSettings(iterations=TREES, early_stopping_rounds=None, seed=0, threads=0),
    )


def request_frame(rows: int, seed: int = 7) -> Any:
    import numpy as np
    import polars as pl

    x = np.random.default_rng(seed).normal(size=(rows, FEATURES))
    return pl.DataFrame({f"f{i}": x[:, i] for i in range(FEATURES)})


def inline(frame: Any, shape: str) -> Any:
    import polars as pl
    import pyarrow as pa
    from google.protobuf import struct_pb2

    from arbor.common.v1 import common_pb2

    data = common_pb2.InlineData()
    if shape == "json_rows":
        for row in frame.iter_rows(named=True):
            struct = struct_pb2.Struct()
            struct.update(row)
            data.json_rows.rows.append(struct)
    elif shape == "columns":
        for series in frame.get_columns():
            column = data.columns.columns.add(name=series.name)
            column.double_values.values.extend(series.to_numpy().tolist())
    else:  # arrow_ipc; arrow_f32: the same values as float32 columns (half the bytes)
        sink = io.BytesIO()
        table = (frame.cast(pl.Float32) if shape == "arrow_f32" else frame).to_arrow()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        data.arrow_ipc = sink.getvalue()
    return data


# --------------------------------------------------------------------------- floors


#: the method ``bench_floor``'s echo servers answer
ECHO_METHOD = "/arbor.bench.Echo/Echo"


class EchoServer:
    """One of ``bench_floor``'s echo servers (returns the request bytes; ``kind``: ``bare``,
    ``bare-uvloop`` or ``arbor``) in a child process; ``loop`` is the event loop it runs."""

    def __init__(self, kind: str = "bare") -> None:
        import grpc

        self.child = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_floor", "--serve-echo", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.child.stdout is not None
        started = json.loads(self.child.stdout.readline())
        self.loop: str = started["loop"]
        self.channel = grpc.insecure_channel(started["address"])
        self.call = self.channel.unary_unary(
            ECHO_METHOD, request_serializer=None, response_deserializer=None
        )

    def close(self) -> None:
        self.channel.close()
        if self.child.stdin:
            self.child.stdin.close()
        try:
            self.child.wait(10)
        except subprocess.TimeoutExpired:
            self.child.kill()


def model_alone(bundle: Any, compiled: bool) -> Callable[[Any], Any]:
    """``f(x)``: the model on a float64 numpy matrix, one thread, no Arbor code: the compiled
    predictor when attached (what the server's fast path calls), for CatBoost's small batches
    the ``arbor_ml.oblivious`` arrays, else the library."""
    from bench.bench_floor import library_call

    predictor = bundle.model.compiled if compiled else None
    if predictor is not None:
        return lambda x: predictor.predict(x, threads=1)
    library = library_call(bundle)
    if compiled and bundle.model.library == "catboost":  # small batches: arbor_ml.oblivious
        from arbor_inference.fastpath import OBLIVIOUS_TREE_ROWS
        from arbor_ml.oblivious import build_checked

        arrays = build_checked(bundle.model.native, bundle.model.output_prediction_type)
        if arrays is not None:
            most = max(1, OBLIVIOUS_TREE_ROWS // arrays.n_trees)
            return lambda x: arrays.predict(x) if len(x) <= most else library(x)
    return library


# --------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class Result:
    model: str
    path: str  # grpc / in-process
    shape: str
    rows: int
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    rows_per_s: float


def measure(call: Callable[[], Any], requests: int, concurrency: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, wall seconds) of ``requests`` calls spread over ``concurrency`` threads."""
    import numpy as np

    for _ in range(min(20, requests)):
        call()
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = max(1, requests // concurrency)

    def worker() -> None:
        local = []
        for _ in range(per_thread):
            started = time.perf_counter()
            call()
            local.append(time.perf_counter() - started)
        with lock:
            latencies.extend(local)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - started
    values = np.array(latencies) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99)), wall


def _record(
    results: list[Result],
    model: str,
    rows: int,
    path: str,
    kind: str,
    concurrency: int,
    count: int,
    timing: tuple[float, float, float],
) -> None:
    """One measurement into ``results``, and its line on stderr."""
    p50, p99, seconds = timing
    results.append(
        Result(model, path, kind, rows, concurrency, count, p50, p99, rows * count / seconds)
    )
    print(
        f"  {model:8} {path:11} {kind:9} rows={rows:<6} c={concurrency} "
        f"p50={p50:7.3f}ms p99={p99:7.3f}ms {rows * count / seconds:12,.0f} rows/s",
        file=sys.stderr,
    )


#: calls per turn in :func:`measure_in_turns` (the first few of a turn, while the server
#: that was idle warms up again, are not counted)
TURN_CALLS = 50
TURN_WARMUP = 3


def measure_in_turns(
    calls: list[Callable[[], Any]], requests: int, turn: int = TURN_CALLS
) -> list[tuple[float, float, float]]:
    """(p50 ms, p99 ms, seconds spent) over ``requests`` calls of each, the calls taking
    turns of ``turn`` calls: a slowdown of this shared machine then hits all of them
    alike, while each still runs warm within its turn (one thread)."""
    import numpy as np

    samples: list[list[float]] = [[] for _ in calls]
    while len(samples[0]) < requests:
        for call, taken in zip(calls, samples, strict=True):
            for i in range(turn + TURN_WARMUP):
                started = time.perf_counter()
                call()
                if i >= TURN_WARMUP:
                    taken.append(time.perf_counter() - started)
    out = []
    for taken in (s[:requests] for s in samples):
        values = np.array(taken) * 1000
        out.append((float(np.percentile(values, 50)), float(np.percentile(values, 99)), sum(taken)))
    return out


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` onto ``cpus`` (threads started later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


@contextlib.contextmanager
def servers_on_one_core(*server_pids: int) -> Iterator[bool]:
    """The servers on the last core, this client on the others, for the block (yields
    whether it could: Linux with two cores or more).

    Why: the bare echo and Arbor are two processes, and where the scheduler happens to put
    each beside the client moves their one-row latency by 50 to 100 µs for minutes at a time
    (measured: Predict - echo from +20 to +150 µs with the same server code); with both
    servers on the same core and the client on another, the difference is the servers' own
    work (+87 to +104 µs over four phases of the same session).
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2 or not Path("/proc/self/task").exists():
        yield False
        return
    pids = (*server_pids, os.getpid())
    try:
        for pid in server_pids:
            _pin(pid, {cores[-1]})
        _pin(os.getpid(), set(cores[:-1]))
        yield True
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):  # a server that ended meanwhile
                _pin(pid, set(cores))


def plan(short: bool, sizes: tuple[int, ...] = (1, 1_000, 10_000)) -> list[tuple[int, str, int]]:
    """(rows, shape, requests at concurrency 1)."""
    scale = 0.2 if short else 1.0

    def n(count: int) -> int:
        return max(5, int(count * scale))

    full = [
        (1, "json_rows", n(2000)),
        (1, "columns", n(2000)),
        (1_000, "json_rows", n(60)),
        (1_000, "columns", n(200)),
        (1_000, "arrow_ipc", n(200)),
        # 10,000 rows: 100 calls in turns with the library (30 left the ratio to a few slow
        # calls: 0.71 to 0.85 for the same CatBoost code within ten minutes)
        (10_000, "columns", n(100)),
        (10_000, "arrow_ipc", n(40)),
        (10_000, "arrow_f32", n(40)),
    ]
    return [step for step in full if step[0] in sizes]


def run(
    short: bool,
    models: tuple[str, ...] = MODEL_TYPES,
    sizes: tuple[int, ...] = (1, 1_000, 10_000),
    compiled: bool = True,
) -> dict[str, Any]:
    import grpc

    from arbor.common.v1 import common_pb2
    from arbor.inference.v1 import inference_service_pb2 as pb
    from arbor.registry.v1 import registry_service_pb2 as reg_pb
    from arbor.registry.v1 import registry_service_pb2_grpc as reg_grpc
    from arbor_core.artifacts import LocalArtifactStore
    from arbor_ml import bundle_prefix, save_bundle

    work = Path(tempfile.mkdtemp(prefix="arbor-bench-inference-"))
    store = LocalArtifactStore(work / "artifacts")
    bundles = {}
    for model_type in models:
        started = time.perf_counter()
        bundles[model_type] = train_model(model_type)
        print(f"trained {model_type}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
        if compiled:
            # Build (or reuse) the compiled predictor now: the server then attaches it from
            # the shared on-disk cache when it loads the model, and the in-process floor
            # uses it too, so both sides run the same code from the first measurement.
            from arbor_ml.compiled import enable_compiled

            started = time.perf_counter()
            predictor = enable_compiled(bundles[model_type])
            print(
                f"compiled {model_type}: {predictor is not None} "
                f"({time.perf_counter() - started:.1f}s)",
                file=sys.stderr,
            )

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(work)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        addresses = json.loads(child.stdout.readline())
        registry = reg_grpc.RegistryServiceStub(grpc.insecure_channel(addresses["registry"]))

        def predict_channel() -> tuple[Any, Callable[..., Any]]:
            channel = grpc.insecure_channel(
                addresses["inference"],
                options=[
                    ("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.max_send_message_length", 64 << 20),
                ],
            )
            # requests are serialized once: the client's encoding cost is not the server's
            return channel, channel.unary_unary(
                "/arbor.inference.v1.InferenceService/Predict",
                request_serializer=None,
                response_deserializer=pb.PredictResponse.FromString,
            )

        _, predict = predict_channel()
        import numpy as np
        import polars as pl

        from bench.bench_floor import library_call

        echo = EchoServer()
        results: list[Result] = []
        budget_pinned = False
        for model_type, bundle in bundles.items():
            ref = save_bundle(bundle, store, bundle_prefix(f"bench-{model_type}", 1))
            version = registry.RegisterModelVersion(
                reg_pb.RegisterModelVersionRequest(
                    model=f"bench-{model_type}",
                    model_version=reg_pb.ModelVersion(
                        artifact_uri=ref.uri,
                        artifact_checksums={n: r.sha256 for n, r in ref.files.items()},
                        model_type=getattr(common_pb2, f"MODEL_TYPE_{model_type.upper()}"),
                        task_type=common_pb2.TASK_TYPE_BINARY,
                    ),
                )
            ).model_version
            registry.PromoteModel(
                reg_pb.PromoteModelRequest(
                    name=version.name, stage=common_pb2.MODEL_STAGE_PRODUCTION
                )
            )
            selector = common_pb2.ModelSelector(
                stage=common_pb2.StageSelector(model=f"bench-{model_type}")
            )
            for rows, shape, requests in plan(short, sizes):
                frame = request_frame(rows)
                payload = pb.PredictRequest(model=selector, input=inline(frame, shape))
                raw = payload.SerializeToString()
                answer = predict(raw, timeout=60)
                sent = frame.cast(pl.Float32).cast(pl.Float64) if shape == "arrow_f32" else frame
                expected = bundle.predict(sent).labels.to_list()
                assert [v.string_value for v in answer.labels] == expected, "wrong answer"
                x = np.ascontiguousarray(frame.to_numpy(), dtype=np.float64)

                call = functools.partial(predict, raw, timeout=60)
                levels: tuple[int, ...] = (1, 8)
                if rows == 1 and shape == "columns":
                    # the budget's parts: the model alone just before, then the echo and
                    # Predict taking turns, so one slowdown of this shared machine hits both
                    alone = functools.partial(model_alone(bundle, compiled), x)
                    _record(
                        results,
                        model_type,
                        rows,
                        "model-alone",
                        "numpy",
                        1,
                        requests,
                        measure(alone, requests, 1),
                    )
                    echo_call = functools.partial(echo.call, raw, timeout=60)
                    # Predict on a channel of its own, like the echo's: one that 8 client
                    # threads have used (the c=8 runs above) answers ~40 µs slower per call
                    # from then on, on the client's side (a new channel to the same server
                    # does not), which is not the server's cost
                    quiet, quiet_predict = predict_channel()
                    with quiet, servers_on_one_core(child.pid, echo.child.pid) as pinned:
                        echoed, served = measure_in_turns(
                            [echo_call, functools.partial(quiet_predict, raw, timeout=60)],
                            requests,
                        )
                    budget_pinned = pinned
                    _record(results, model_type, rows, "echo", "bytes", 1, requests, echoed)
                    _record(results, model_type, rows, "grpc", shape, 1, requests, served)
                    levels = (8,)
                elif rows == 10_000 and shape == "columns":
                    # the library's own predict and Predict taking turns, as for one row
                    lib = functools.partial(library_call(bundle), x)
                    own, served = measure_in_turns([lib, call], requests, turn=10)
                    _record(results, model_type, rows, "library", "numpy", 1, requests, own)
                    _record(results, model_type, rows, "grpc", shape, 1, requests, served)
                    levels = (8,)
                elif shape == "arrow_f32":
                    levels = (1,)  # beside the doubles' figures; the checks are on those
                for concurrency in levels:
                    count = requests if concurrency == 1 else requests * 2
                    timing = measure(call, count, concurrency)
                    per = max(1, count // concurrency) * concurrency
                    _record(results, model_type, rows, "grpc", shape, concurrency, per, timing)
            for rows in sorted({r for r, _, _ in plan(short, sizes)}):
                requests = next(n for r, _, n in plan(short, sizes) if r == rows)
                frame = request_frame(rows)
                for concurrency in (1, 8):
                    count = requests if concurrency == 1 else requests * 2
                    timing = measure(functools.partial(bundle.predict, frame), count, concurrency)
                    per = max(1, count // concurrency) * concurrency
                    _record(
                        results, model_type, rows, "in-process", "polars", concurrency, per, timing
                    )
        echo.close()
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
        shutil.rmtree(work, ignore_errors=True)
    report = summarize(results, short, models)
    report["server_event_loop"] = addresses.get("loop", "asyncio")
    # the one-row budget's echo and Predict ran with both servers on one core
    report["one_row_servers_pinned"] = budget_pinned
    return report


def summarize(results: list[Result], short: bool, models: tuple[str, ...]) -> dict[str, Any]:
    floor = {
        (r.model, r.rows, r.concurrency): r.rows_per_s for r in results if r.path == "in-process"
    }
    rows_out = []
    for r in results:
        row = dataclasses.asdict(r)
        base = floor.get((r.model, r.rows, r.concurrency))
        row["vs_in_process"] = round(r.rows_per_s / base, 3) if base and r.path == "grpc" else None
        rows_out.append(row)
    checks = []
    for model in models:
        single = [
            r
            for r in results
            if r.model == model and r.path == "grpc" and r.rows == 1 and r.concurrency == 1
        ]
        best = min((r.p50_ms for r in single), default=float("nan"))
        checks.append(
            {
                "model": model,
                "check": "single-row p50 (ms)",
                "value": round(best, 3),
                "target": TARGET_P50_MS,
                "ok": best < TARGET_P50_MS,
            }
        )
        part = {
            r.path: r.p50_ms
            for r in results
            if r.model == model and r.rows == 1 and r.path in ("echo", "model-alone")
        }
        paired = next((r.p50_ms for r in single if r.shape == "columns"), None)
        if len(part) == 2 and paired is not None:  # typed columns took turns with the echo
            budget = part["echo"] + part["model-alone"] + SINGLE_ROW_SLACK_MS
            checks.append(
                {
                    "model": model,
                    "check": (
                        f"1-row p50 (columns) <= echo {part['echo']:.3f} + model "
                        f"{part['model-alone']:.3f} + 0.150"
                    ),
                    "value": round(paired, 3),
                    "target": round(budget, 3),
                    "ok": paired <= budget,
                }
            )
        library = next(
            (r.rows_per_s for r in results if r.model == model and r.path == "library"), None
        )
        for concurrency in (1, 8):
            big = [
                r
                for r in results
                if r.model == model
                and r.path == "grpc"
                and r.rows == 10_000
                and r.concurrency == concurrency
                and r.shape in ("columns", "arrow_ipc")
            ]
            for r in big:
                if library is None:
                    continue
                ratio = r.rows_per_s / library
                target = TARGET_RATIO.get(model, 1.0)
                checks.append(
                    {
                        "model": model,
                        "check": f"10k {r.shape} c={concurrency} / library (1 thread)",
                        "value": round(ratio, 3),
                        "target": target,
                        "ok": ratio >= target,
                    }
                )
    return {
        "benchmark": "inference",
        "mode": "short" if short else "full",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "model": {"trees": TREES, "features": FEATURES, "task": "binary"},
        "server_log_level": os.environ.get("ARBOR_LOG_LEVEL", "WARNING"),
        "compiled": os.environ.get("ARBOR_INFERENCE_COMPILED", "1") != "0",
        "results": rows_out,
        "checks": checks,
    }


def print_table(report: dict[str, Any]) -> None:
    header = (
        f"{'model':9} {'path':10} {'shape':9} {'rows':>6} {'conc':>4} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'rows/s':>12} {'vs in-proc':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        ratio = "" if r["vs_in_process"] is None else f"{r['vs_in_process']:.2f}"
        print(
            f"{r['model']:9} {r['path']:10} {r['shape']:9} {r['rows']:>6} {r['concurrency']:>4} "
            f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['rows_per_s']:>12,.0f} {ratio:>10}"
        )
    print()
    for c in report["checks"]:
        mark = "ok " if c["ok"] else "MISS"
        print(f"[{mark}] {c['model']:9} {c['check']:32} {c['value']:>8} (target {c['target']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="fewer requests (BENCH_MODE=short)")
    parser.add_argument("--models", default=",".join(MODEL_TYPES), help="comma-separated")
    parser.add_argument("--sizes", default="1,1000,10000", help="batch sizes, comma-separated")
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON")
    parser.add_argument(
        "--no-compiled",
        action="store_true",
        help="serve LightGBM/XGBoost with their libraries (no arbor_ml.compiled predictor)",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="the servers' log level (INFO: access log per call)"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(Path(args.serve))
        return 0
    short = args.short or os.environ.get("BENCH_MODE", "") == "short"
    os.environ["ARBOR_LOG_LEVEL"] = args.log_level
    os.environ["ARBOR_INFERENCE_COMPILED"] = "0" if args.no_compiled else "1"
    models = tuple(m for m in args.models.split(",") if m)
    sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    report = run(short, models, sizes, compiled=not args.no_compiled)
    print_table(report)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
