"""Benchmark of the Open Inference Protocol (KServe v2) path beside Predict and in-process.

The inference benchmark's model and servers (``bench_inference.py``: LightGBM, binary, 300
trees on 30 numeric features; registry + inference + a private nats-server in a child process,
so client and server do not share a GIL), called from this process at 1 row and 10,000 rows,
concurrency 1, one run:

* ``v2 columns`` / ``v2 2-D``: ``inference.GRPCInferenceService/ModelInfer`` with 30 FP64
  tensors, or one ``[rows, 30]`` FP64 tensor, in ``raw_input_contents`` (what tritonclient
  sends), serialized once up front like the Predict rows, answer decoded;
* ``v2 tritonclient``: the same 2-D call through ``tritonclient[grpc]`` end to end (numpy in,
  ``as_numpy`` out: the client library's own cost included);
* ``Predict columns`` / ``Predict arrow``: ``arbor.inference.v1`` Predict, serialized once;
* ``in-process``: ``ModelBundle.predict`` on a Polars frame, no server (the floor).

Every path's labels are checked against in-process first. Prints a table (median and p99 per
call, rows/s at the median, and v2 against Predict columns) and writes bench/results/oip.json.

    python bench/bench_oip.py            # full run
    python bench/bench_oip.py --short    # short mode (also BENCH_MODE=short)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_inference import FEATURES, TREES, request_frame, serve, train_model

RESULTS = Path(__file__).resolve().parent / "results" / "oip.json"
MODEL = "bench-oip"
SIZES = (1, 10_000)
OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def _register(registry_address: str, bundle: Any, work: Path) -> None:
    import grpc

    from arbor.common.v1 import common_pb2
    from arbor.registry.v1 import registry_service_pb2 as reg_pb
    from arbor.registry.v1 import registry_service_pb2_grpc as reg_grpc
    from arbor_core.artifacts import LocalArtifactStore
    from arbor_ml import bundle_prefix, save_bundle

    ref = save_bundle(bundle, LocalArtifactStore(work / "artifacts"), bundle_prefix(MODEL, 1))
    with grpc.insecure_channel(registry_address) as channel:
        registry = reg_grpc.RegistryServiceStub(channel)
        version = registry.RegisterModelVersion(
            reg_pb.RegisterModelVersionRequest(
                model=MODEL,
                model_version=reg_pb.ModelVersion(
                    artifact_uri=ref.uri,
                    artifact_checksums={n: r.sha256 for n, r in ref.files.items()},
                    model_type=common_pb2.MODEL_TYPE_LIGHTGBM,
                    task_type=common_pb2.TASK_TYPE_BINARY,
                ),
            )
        ).model_version
        registry.PromoteModel(
            reg_pb.PromoteModelRequest(name=version.name, stage=common_pb2.MODEL_STAGE_PRODUCTION)
        )


# --------------------------------------------------------------------------- the paths

Path_ = Callable[[], list[str]]  # one call; returns the labels (checked against in-process)


def _v2_request(x: np.ndarray, columns: list[str], matrix: bool) -> bytes:
    """A serialized ModelInferRequest with raw contents, built with tritonclient's own proto."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    if matrix:
        request.inputs.add(name="INPUT0", datatype="FP64", shape=list(x.shape))
        request.raw_input_contents.append(np.ascontiguousarray(x, "<f8").tobytes())
    else:
        for j, name in enumerate(columns):
            request.inputs.add(name=name, datatype="FP64", shape=[x.shape[0]])
            request.raw_input_contents.append(np.ascontiguousarray(x[:, j], "<f8").tobytes())
    for name in ("label", "probabilities"):
        request.outputs.add(name=name)
    return request.SerializeToString()  # type: ignore[no-any-return]


def _v2_labels(response: Any) -> list[str]:
    from tritonclient.utils import deserialize_bytes_tensor

    index = [o.name for o in response.outputs].index("label")
    raw = deserialize_bytes_tensor(response.raw_output_contents[index])
    np.frombuffer(response.raw_output_contents[index + 1], "<f8")  # probabilities
    return [v.decode() for v in raw.tolist()]


def paths(address: str, bundle: Any, x: np.ndarray) -> dict[str, Path_]:
    import grpc
    import polars as pl
    import tritonclient.grpc as triton
    from tritonclient.grpc import service_pb2

    from arbor.common.v1 import common_pb2
    from arbor.inference.v1 import inference_service_pb2 as pb
    from bench.bench_inference import inline

    frame = pl.DataFrame({f"f{i}": x[:, i] for i in range(x.shape[1])})
    columns = list(frame.columns)
    channel = grpc.insecure_channel(address, options=OPTIONS)
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=None,
        response_deserializer=service_pb2.ModelInferResponse.FromString,
    )
    predict = channel.unary_unary(
        "/arbor.inference.v1.InferenceService/Predict",
        request_serializer=None,
        response_deserializer=pb.PredictResponse.FromString,
    )
    selector = common_pb2.ModelSelector(stage=common_pb2.StageSelector(model=MODEL))
    v2_columns = _v2_request(x, columns, matrix=False)
    v2_matrix = _v2_request(x, columns, matrix=True)
    predict_requests = {
        shape: pb.PredictRequest(
            model=selector, input=inline(frame, shape), include_probabilities=True
        ).SerializeToString()
        for shape in ("columns", "arrow_ipc")
    }
    client = triton.InferenceServerClient(address)
    outputs = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probabilities")]

    def tritonclient_2d() -> list[str]:
        tensor = triton.InferInput("INPUT0", list(x.shape), "FP64")
        tensor.set_data_from_numpy(x)
        result = client.infer(MODEL, [tensor], outputs=outputs)
        result.as_numpy("probabilities")
        return [v.decode() for v in result.as_numpy("label").tolist()]

    def predict_labels(raw: bytes) -> list[str]:
        return [v.string_value for v in predict(raw, timeout=60).labels]

    return {
        "v2 columns": lambda: _v2_labels(infer(v2_columns, timeout=60)),
        "v2 2-D": lambda: _v2_labels(infer(v2_matrix, timeout=60)),
        "v2 tritonclient": tritonclient_2d,
        "Predict columns": lambda: predict_labels(predict_requests["columns"]),
        "Predict arrow": lambda: predict_labels(predict_requests["arrow_ipc"]),
        "in-process": lambda: bundle.predict(frame).labels.to_list(),
    }


def measure(call: Path_, requests: int) -> list[float]:
    for _ in range(min(20, requests)):
        call()
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


def summary(timings: list[float], rows: int) -> dict[str, Any]:
    values = np.array(timings) * 1000
    p50 = float(np.percentile(values, 50))
    return {
        "rows": rows,
        "requests": len(timings),
        "p50_ms": round(p50, 4),
        "p99_ms": round(float(np.percentile(values, 99)), 4),
        "mean_ms": round(float(values.mean()), 4),
        "rows_per_s": round(rows / (p50 / 1000), 1),
    }


# --------------------------------------------------------------------------- main


def run(short: bool) -> dict[str, Any]:
    started = time.perf_counter()
    bundle = train_model("lightgbm")
    print(f"trained lightgbm: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    requests = {1: 200, 10_000: 10} if short else {1: 1000, 10_000: 30}
    work = Path(tempfile.mkdtemp(prefix="arbor-bench-oip-"))
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(work)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        assert child.stdout is not None
        addresses = json.loads(child.stdout.readline())
        _register(addresses["registry"], bundle, work)
        for rows in SIZES:
            x = request_frame(rows).to_numpy()
            calls = paths(addresses["inference"], bundle, x)
            expected = calls["in-process"]()
            for name, call in calls.items():
                assert call() == expected, f"{name} disagrees with in-process at {rows} rows"
            for name, call in calls.items():
                entry = summary(measure(call, requests[rows]), rows)
                results.setdefault(name, {})[str(rows)] = entry
                print(
                    f"  {name:16} rows={rows:<6} p50={entry['p50_ms']:8.3f}ms "
                    f"p99={entry['p99_ms']:8.3f}ms {entry['rows_per_s']:12,.0f} rows/s",
                    file=sys.stderr,
                )
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(30)
    return {
        "benchmark": "oip",
        "mode": "short" if short else "full",
        "model": {"library": "lightgbm", "task": "binary", "features": FEATURES, "trees": TREES},
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "python": platform.python_version(),
        "concurrency": 1,
        "paths": results,
    }


def print_table(report: dict[str, Any]) -> None:
    base = report["paths"]["Predict columns"]
    header = f"{'path':16}" + "".join(
        f" | {f'{n:,} row' + ('s' if n > 1 else ''):>11} p50 ms  p99 ms       rows/s  vs Predict"
        for n in SIZES
    )
    print(header)
    print("-" * len(header))
    for name, by_rows in report["paths"].items():
        line = f"{name:16}"
        for n in SIZES:
            r = by_rows[str(n)]
            ratio = r["rows_per_s"] / base[str(n)]["rows_per_s"]
            line += (
                f" | {r['p50_ms']:>18.3f} {r['p99_ms']:>7.3f} {r['rows_per_s']:>12,.0f} "
                f"{ratio:>10.2f}x"
            )
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--short", action="store_true", default=os.environ.get("BENCH_MODE") == "short"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    report = run(args.short)
    print_table(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
