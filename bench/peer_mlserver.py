"""The peer: MLServer serving the same LightGBM and XGBoost models, under the same client load.

MLServer (Seldon; PyPI ``mlserver`` + ``mlserver-lightgbm`` + ``mlserver-xgboost``) runs in its
OWN virtual environment, ``bench/.peer-venv`` (git-ignored), created on first use with the
same LightGBM / XGBoost versions as Arbor's, so both load the same model files. It serves the
Open Inference Protocol (KServe v2) over gRPC with its default settings (one parallel
inference worker process). Arbor's inference service (registry + inference + nats-server in
a child process, as in ``bench_inference.py``) serves the same models on the same protocol.

Both get byte-identical ``ModelInferRequest``s (one ``[rows, 30]`` FP64 tensor in
``raw_input_contents``, serialized once up front), at 1 / 1,000 / 10,000 rows and concurrency
1 and 8, from this process's threads: p50 / p99 per call and rows/s.

When the environment cannot be built (no network to PyPI, a failed install) the benchmark is
skipped with the reason, and ``make bench`` goes on.

    python -m bench.peer_mlserver [--short] [--output bench/results/peer.json]
    python -m bench.peer_mlserver --setup-only     # just build bench/.peer-venv
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench import _models as bench_models
from bench import bench_inference as bi

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peer-venv"
RESULTS = HERE / "results" / "peer.json"
MLSERVER_VERSION = "1.7.1"
INSTALL_TIMEOUT_S = 1800
MODELS = ("lightgbm", "xgboost")
OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


# --------------------------------------------------------------------------- environment


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> str | None:
    """Create bench/.peer-venv with MLServer when missing; None when ready, else why not."""
    marker = VENV / ".arbor-ready-2"  # bump when the pins change
    if marker.exists() and (VENV / "bin" / "mlserver").exists():
        return None
    pins = [
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-lightgbm=={MLSERVER_VERSION}",
        f"mlserver-xgboost=={MLSERVER_VERSION}",
        f"lightgbm=={metadata.version('lightgbm')}",
        f"xgboost=={metadata.version('xgboost')}",
        # MLServer 1.7.1's inference worker calls asyncio.get_event_loop() in a fresh
        # process; uvloop 0.21+ raises there ("no current event loop") and the worker dies.
        "uvloop<0.21",
    ]
    print(f"creating {VENV} with {' '.join(pins)} (first run only)...", file=sys.stderr)
    try:
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True, capture_output=True)
        done = subprocess.run(
            [
                str(_venv_python()),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *pins,
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not create {VENV}: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"pip could not install MLServer into {VENV}: {' | '.join(tail)}"
    marker.write_text(" ".join(pins) + "\n")
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- MLServer


def write_repository(root: Path, bundles: dict[str, Any]) -> dict[str, int]:
    """MLServer's model repository (one folder per model) and settings; returns its ports."""
    ports = {"http_port": _free_port(), "grpc_port": _free_port(), "metrics_port": _free_port()}
    settings = {"debug": False, "host": "127.0.0.1", **ports, "grpc_max_message_length": 64 << 20}
    (root / "settings.json").write_text(json.dumps(settings))
    for model_type, bundle in bundles.items():
        folder = root / f"peer-{model_type}"
        folder.mkdir(parents=True)
        if model_type == "lightgbm":
            (folder / "model.txt").write_bytes(bundle.model.to_bytes())
            implementation, uri = "mlserver_lightgbm.LightGBMModel", "./model.txt"
        else:
            booster = bundle.model.native.copy()
            booster.feature_names = None  # MLServer builds an unnamed DMatrix from the tensor
            booster.feature_types = None
            booster.save_model(str(folder / "model.json"))
            implementation, uri = "mlserver_xgboost.XGBoostModel", "./model.json"
        (folder / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": f"peer-{model_type}",
                    "implementation": implementation,
                    "parameters": {"uri": uri, "version": "v1"},
                }
            )
        )
    return ports


def start_mlserver(root: Path) -> subprocess.Popen[bytes]:
    log = open(root / "mlserver.log", "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [str(VENV / "bin" / "mlserver"), "start", str(root)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env={**os.environ, "PYTHONPATH": "", "MLSERVER_LOGGING_LEVEL": "WARNING"},
    )


def wait_ready(address: str, models: list[str], timeout: float = 180.0) -> None:
    import grpc
    from tritonclient.grpc import service_pb2

    channel = grpc.insecure_channel(address)
    ready = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelReady",
        request_serializer=service_pb2.ModelReadyRequest.SerializeToString,
        response_deserializer=service_pb2.ModelReadyResponse.FromString,
    )
    deadline = time.monotonic() + timeout
    pending = list(models)
    while pending:
        try:
            if ready(service_pb2.ModelReadyRequest(name=pending[0]), timeout=2).ready:
                pending.pop(0)
                continue
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address}: models {pending} not ready after {timeout:.0f}s")
        time.sleep(0.5)
    channel.close()


# --------------------------------------------------------------------------- Arbor


def register(registry_address: str, name: str, model_type: str, bundle: Any, work: Path) -> None:
    import grpc

    from arbor.common.v1 import common_pb2
    from arbor.registry.v1 import registry_service_pb2 as reg_pb
    from arbor.registry.v1 import registry_service_pb2_grpc as reg_grpc
    from arbor_core.artifacts import LocalArtifactStore
    from arbor_ml import bundle_prefix, save_bundle

    ref = save_bundle(bundle, LocalArtifactStore(work / "artifacts"), bundle_prefix(name, 1))
    with grpc.insecure_channel(registry_address) as channel:
        registry = reg_grpc.RegistryServiceStub(channel)
        version = registry.RegisterModelVersion(
            reg_pb.RegisterModelVersionRequest(
                model=name,
                model_version=reg_pb.ModelVersion(
                    artifact_uri=ref.uri,
                    artifact_checksums={n: r.sha256 for n, r in ref.files.items()},
                    model_type=getattr(common_pb2, f"MODEL_TYPE_{model_type.upper()}"),
                    task_type=common_pb2.TASK_TYPE_BINARY,
                ),
            )
        ).model_version
        registry.PromoteModel(
            reg_pb.PromoteModelRequest(name=version.name, stage=common_pb2.MODEL_STAGE_PRODUCTION)
        )


# --------------------------------------------------------------------------- load


def v2_request(name: str, x: np.ndarray) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=name)
    request.inputs.add(name="input-0", datatype="FP64", shape=list(x.shape))
    request.raw_input_contents.append(np.ascontiguousarray(x, "<f8").tobytes())
    return request.SerializeToString()  # type: ignore[no-any-return]


def probabilities(response: Any, rows: int) -> np.ndarray:
    """Class-1 probabilities from either server's answer (first FP64/FP32 output)."""
    for i, output in enumerate(response.outputs):
        if output.datatype in ("FP64", "FP32"):
            dtype = "<f8" if output.datatype == "FP64" else "<f4"
            if len(response.raw_output_contents) > i:
                values = np.frombuffer(response.raw_output_contents[i], dtype)
            else:
                contents = output.contents
                values = np.array(contents.fp64_contents or contents.fp32_contents)
            values = values.reshape(rows, -1)
            return values[:, -1]
    raise AssertionError(f"no float output in {[o.name for o in response.outputs]}")


def plan(short: bool) -> list[tuple[int, int]]:
    if short:  # the two sizes the targets name
        return [(1, 200), (10_000, 4)]
    return [(1, 1000), (1_000, 100), (10_000, 30)]


def run(short: bool) -> dict[str, Any]:
    import grpc
    from tritonclient.grpc import service_pb2

    reason = ensure_venv()
    if reason is not None:
        print(f"peer benchmark skipped: {reason}", file=sys.stderr)
        return {"benchmark": "peer", "skipped": reason}
    bundles = {}
    for model_type in MODELS:
        bundles[model_type] = bench_models.model(model_type)
    from arbor_ml import compiled

    for bundle in bundles.values():  # as a restarted server would: the build is cached
        compiled.compile_model(bundle.model)
    work = Path(tempfile.mkdtemp(prefix="arbor-bench-peer-"))
    repo = work / "mlserver"
    repo.mkdir()
    ports = write_repository(repo, bundles)
    peer = start_mlserver(repo)
    arbor = subprocess.Popen(
        [sys.executable, bi.__file__, "--serve", str(work / "arbor")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    results: list[dict[str, Any]] = []
    try:
        assert arbor.stdout is not None
        addresses = json.loads(arbor.stdout.readline())
        for model_type, bundle in bundles.items():
            register(
                addresses["registry"], f"arbor-{model_type}", model_type, bundle, work / "arbor"
            )
        peer_address = f"127.0.0.1:{ports['grpc_port']}"
        wait_ready(peer_address, [f"peer-{m}" for m in MODELS])
        servers = {"mlserver": (peer_address, "peer"), "arbor": (addresses["inference"], "arbor")}
        stubs = {}
        for server, (address, _) in servers.items():
            channel = grpc.insecure_channel(address, options=OPTIONS)
            stubs[server] = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=None,
                response_deserializer=service_pb2.ModelInferResponse.FromString,
            )
        for model_type, bundle in bundles.items():
            for rows, requests in plan(short):
                x = np.ascontiguousarray(bi.request_frame(rows).to_numpy(), dtype=np.float64)
                expected = bundle.predict_raw(bi.request_frame(rows))[:, -1]
                for server, (_, prefix) in servers.items():
                    raw = v2_request(f"{prefix}-{model_type}", x)
                    infer = stubs[server]
                    got = probabilities(infer(raw, timeout=120), rows)
                    diff = float(np.max(np.abs(got - expected)))
                    for concurrency in (1, 8):
                        count = requests if concurrency == 1 else requests * 2
                        p50, p99, wall = bi.measure(
                            lambda raw=raw, infer=infer: infer(raw, timeout=120), count, concurrency
                        )
                        per = max(1, count // concurrency) * concurrency
                        entry = {
                            "server": server,
                            "model": model_type,
                            "rows": rows,
                            "concurrency": concurrency,
                            "requests": per,
                            "p50_ms": p50,
                            "p99_ms": p99,
                            "rows_per_s": rows * per / wall,
                            "max_abs_diff_vs_in_process": diff,
                        }
                        results.append(entry)
                        print(
                            f"  {server:8} {model_type:8} rows={rows:<6} c={concurrency} "
                            f"p50={p50:8.3f}ms p99={p99:8.3f}ms "
                            f"{entry['rows_per_s']:12,.0f} rows/s",
                            file=sys.stderr,
                        )
    finally:
        if arbor.stdin:
            arbor.stdin.close()
        peer.terminate()
        for process in (arbor, peer):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    return {
        "benchmark": "peer",
        "mode": "short" if short else "full",
        "peer": {
            "name": "MLServer",
            "version": MLSERVER_VERSION,
            "settings": "defaults (parallel_workers=1), gRPC, raw_input_contents",
        },
        "protocol": "Open Inference Protocol v2 (gRPC), one [rows, 30] FP64 tensor",
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--setup-only", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.setup_only:
        reason = ensure_venv()
        print(reason or f"{VENV} ready", file=sys.stderr)
        return 0 if reason is None else 1
    short = args.short or os.environ.get("BENCH_MODE") == "short"
    report = run(short)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
