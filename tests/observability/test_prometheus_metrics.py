"""Prometheus metrics: the per-RPC series and Arbor's named instruments on a real HTTP endpoint,
the endpoint a real service process opens on ``ARBOR_<SVC>_METRICS_PORT``, and
``arbor maintenance export-metrics`` reading it from the default location."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from arbor.split.v1 import split_service_pb2 as split_pb
from arbor.split.v1 import split_service_pb2_grpc as split_grpc
from arbor_core.config import load_settings
from arbor_core.errors import InvalidArgument
from arbor_core.healthcheck import is_serving
from arbor_core.metrics import (
    ArborMetrics,
    MetricsEndpoint,
    default_metrics_port,
    metrics_port,
    serve_metrics,
)
from arbor_core.server import ServiceRunner
from arbor_core.telemetry import Telemetry, configure_telemetry, use_telemetry

pytestmark = pytest.mark.integration

SPLIT = "arbor.split.v1.SplitService"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name`` whose labels include ``labels`` (None if absent)."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class MeteredSplit:
    runner: ServiceRunner
    endpoint: MetricsEndpoint
    telemetry: Telemetry
    stub: split_grpc.SplitServiceStub


@pytest.fixture
async def metered_split(
    tmp_path: Path, nats_url: str, nats_namespace: str
) -> AsyncIterator[MeteredSplit]:
    """An in-process split server whose meter provider feeds a Prometheus endpoint."""
    from arbor_split.server import build_runner, migrate

    endpoint = MetricsEndpoint("127.0.0.1", 0)
    telemetry = configure_telemetry(
        "split",
        span_processors=[],
        metric_readers=[],
        extra_metric_readers=[endpoint.reader],
        install_global=False,
    )
    settings = dataclasses.replace(
        load_settings("split"),
        host="127.0.0.1",
        port=0,
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'split.db'}",
        nats_url=nats_url,
        nats_namespace=f"{nats_namespace}metrics",
        artifact_uri=str(tmp_path / "artifacts"),
        auth_tokens=[],
        grace_seconds=0.2,
    )
    migrate(settings)
    use_telemetry("split", telemetry)
    try:
        runner = build_runner(settings)
        await runner.start()
    finally:
        use_telemetry("split", None)
    channel = grpc.aio.insecure_channel(runner.address)
    try:
        yield MeteredSplit(runner, endpoint, telemetry, split_grpc.SplitServiceStub(channel))
    finally:
        await channel.close()
        await runner.stop(0.2)
        endpoint.stop()
        telemetry.shutdown()


async def test_the_endpoint_serves_request_count_and_latency_per_rpc_and_code(
    metered_split: MeteredSplit,
) -> None:
    stub = metered_split.stub
    await stub.ListSplits(split_pb.ListSplitsRequest())
    await stub.ListSplits(split_pb.ListSplitsRequest())
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetSplit(split_pb.GetSplitRequest(name="splits/nope"))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND

    text = await asyncio.to_thread(scrape, metered_split.endpoint.url)
    ok = {"rpc_service": SPLIT, "rpc_method": "ListSplits", "rpc_grpc_status_code": "0"}
    assert sample(text, "rpc_server_requests_total", **ok) == 2
    assert sample(text, "rpc_server_duration_milliseconds_count", **ok) == 2
    assert (sample(text, "rpc_server_duration_milliseconds_sum", **ok) or 0) > 0
    not_found = {"rpc_method": "GetSplit", "rpc_grpc_status_code": "5"}
    assert sample(text, "rpc_server_requests_total", **not_found) == 1
    assert sample(text, "rpc_server_duration_milliseconds_bucket", le="+Inf", **not_found) == 1
    # health checks are not counted (probes would drown the real traffic)
    assert "grpc.health.v1.Health" not in text
    assert sample(text, "target_info", service_name="arbor-split") == 1


class _Model:
    nbytes = 1000


async def test_named_instruments_appear_with_their_units_and_attributes() -> None:
    from arbor_inference.cache import ModelCache

    endpoint = MetricsEndpoint("127.0.0.1", 0)
    telemetry = configure_telemetry(
        "inference", metric_readers=[endpoint.reader], install_global=False
    )
    instruments = ArborMetrics(telemetry.meter_provider)
    executor = ThreadPoolExecutor(1)
    try:
        cache: ModelCache[_Model] = ModelCache(executor, max_models=2)
        instruments.observe_model_cache(cache)
        await cache.get("models/a/versions/1", _Model)  # a miss and a load
        await cache.get("models/a/versions/1", _Model)  # a hit
        instruments.trial_recorded("COMPLETE", model_type="lightgbm", duration_s=1.5)
        instruments.trial_recorded("pruned", model_type="lightgbm", duration_s=0.5)
        instruments.experiment_finished("succeeded", duration_s=12.0)
        instruments.predictions_served(7, model="credit")
        instruments.predictions_served(0, model="credit")  # nothing served: not counted
        text = await asyncio.to_thread(scrape, endpoint.url)
    finally:
        executor.shutdown()
        endpoint.stop()
        telemetry.shutdown()
    trial = {"state": "complete", "model_type": "lightgbm"}
    assert sample(text, "arbor_training_trials_total", **trial) == 1
    assert sample(text, "arbor_training_trials_total", state="pruned") == 1
    assert sample(text, "arbor_training_trial_duration_seconds_sum", **trial) == 1.5
    assert sample(text, "arbor_training_experiment_duration_seconds_count", state="succeeded") == 1
    assert sample(text, "arbor_inference_predictions_total", model="credit") == 7
    assert sample(text, "arbor_inference_model_cache_hits_total") == 1
    assert sample(text, "arbor_inference_model_cache_misses_total") == 1
    assert sample(text, "arbor_inference_model_cache_loads_total") == 1
    assert sample(text, "arbor_inference_model_cache_models") == 1
    assert sample(text, "arbor_inference_model_cache_bytes") == 1000


def test_ports_default_per_component_and_zero_turns_the_endpoint_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert [default_metrics_port(c) for c in ("split", "training", "registry", "inference")] == [
        9464,
        9465,
        9466,
        9467,
    ]
    assert default_metrics_port("training-worker") == 9468
    monkeypatch.delenv("ARBOR_TRAINING_WORKER_METRICS_PORT", raising=False)
    assert metrics_port("training-worker") == 9468
    monkeypatch.setenv("ARBOR_SPLIT_METRICS_PORT", "0")
    assert serve_metrics("split") is None
    monkeypatch.setenv("ARBOR_SPLIT_METRICS_PORT", "http")
    with pytest.raises(InvalidArgument) as bad:
        metrics_port("split")
    assert bad.value.violations[0].field == "ARBOR_SPLIT_METRICS_PORT"
    assert bad.value.reason == "METRICS_PORT_INVALID"


def test_a_taken_port_is_logged_and_the_process_goes_on_without_an_endpoint(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("ARBOR_REGISTRY_METRICS_PORT", str(taken.getsockname()[1]))
        with caplog.at_level(logging.WARNING, logger="arbor_core.metrics"):
            assert serve_metrics("registry") is None
    assert "no Prometheus endpoint: cannot listen" in caplog.text
    assert "ARBOR_REGISTRY_METRICS_PORT" in caplog.text


@pytest.fixture
def split_process(tmp_path: Path, nats_url: str, nats_namespace: str) -> Iterator[dict[str, str]]:
    """``python -m arbor_split`` with metrics on a free port; the env that points at it."""
    port, metrics = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
    env.update(
        {
            "ARBOR_HOME": str(tmp_path),
            "ARBOR_SPLIT_PORT": str(port),
            "ARBOR_SPLIT_METRICS_PORT": str(metrics),
            "ARBOR_NATS_URL": nats_url,
            "ARBOR_NATS_NAMESPACE": f"{nats_namespace}metricsproc",
        }
    )
    log_path = tmp_path / "split.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "arbor_split"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not is_serving(f"127.0.0.1:{port}", SPLIT, timeout=1):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield env
    finally:
        process.terminate()
        process.wait(30)
    assert f"metrics at http://127.0.0.1:{metrics}/metrics" in log_path.read_text()


def test_a_service_process_serves_metrics_and_the_cli_finds_them_by_default(
    split_process: dict[str, str],
) -> None:
    address = f"127.0.0.1:{split_process['ARBOR_SPLIT_PORT']}"
    with grpc.insecure_channel(address) as channel:
        split_grpc.SplitServiceStub(channel).ListSplits(split_pb.ListSplitsRequest(), timeout=10)
    url = f"http://127.0.0.1:{split_process['ARBOR_SPLIT_METRICS_PORT']}/metrics"
    text = scrape(url)
    assert sample(text, "rpc_server_requests_total", rpc_method="ListSplits") == 1

    # The CLI reads each service's metrics port (here: the split's, the rest switched off).
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ARBOR_")}
    env.update(
        {
            "ARBOR_SPLIT_ADDRESS": address,
            "ARBOR_SPLIT_METRICS_PORT": split_process["ARBOR_SPLIT_METRICS_PORT"],
            **{
                f"ARBOR_{name}_METRICS_PORT": "0"
                for name in ("TRAINING", "REGISTRY", "INFERENCE", "TRAINING_WORKER")
            },
            **{f"ARBOR_{name}_ADDRESS": "127.0.0.1:1" for name in ("TRAINING", "REGISTRY")},
            "ARBOR_INFERENCE_ADDRESS": "127.0.0.1:1",
        }
    )
    from arbor_cli.main import app

    result = CliRunner().invoke(
        app, ["maintenance", "export-metrics", "--json"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["available"] is True
    assert report["health"]["split"] == "SERVING"
    assert sample(report["metrics"]["split"], "rpc_server_requests_total", rpc_method="ListSplits")
    assert set(report["metrics"]) == {"split"}
