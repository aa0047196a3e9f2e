"""``arbor maintenance``: storage-verify, cleanup-artifacts, export-metrics, seed-demo."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import Arbor, json_out, one_line, write_csv

from arbor_core.artifacts import LocalArtifactStore

pytestmark = pytest.mark.integration

DAY = 24 * 3600


@pytest.fixture
def store(cli_stack: Any) -> LocalArtifactStore:
    return LocalArtifactStore(cli_stack.artifact_uri)


@pytest.fixture
def split(arbor: Arbor, tmp_path: Path) -> dict[str, Any]:
    rows = [(i, i % 7, "yes" if i % 3 else "no") for i in range(60)]
    path = write_csv(tmp_path / "m.csv", ["id", "x", "y"], rows)
    return json_out(arbor.ok("splits", "create", str(path), "-t", "y", "--json").stdout)


def _age(store: LocalArtifactStore, key: str, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(store.root / key, (when, when))


def test_storage_verify_finds_a_corrupted_part(
    arbor: Arbor, split: dict[str, Any], store: LocalArtifactStore
) -> None:
    prefix = f"splits/{split['splitId']}/"
    clean = arbor.ok("maintenance", "storage-verify", "--prefix", prefix, "--references", "--json")
    report = json_out(clean.stdout)
    assert report["problems"] == [] and report["checked"] == report["ok"] >= 2

    key = split["parts"][0]["artifact"]["key"]
    (store.root / key).write_bytes(b"PAR1 this is no longer the parquet file PAR1")
    bad = arbor("maintenance", "storage-verify", "--prefix", prefix, "--json")
    assert bad.exit_code == 3
    problems = json_out(bad.stdout)["problems"]
    assert [(p["key"], p["problem"]) for p in problems] == [(key, "ARTIFACT_CHECKSUM_MISMATCH")]
    error = json.loads(one_line(bad.stderr))["error"]
    assert error["code"] == "DATA_LOSS" and error["reason"] == "ARTIFACT_VERIFICATION_FAILED"

    human = arbor("maintenance", "storage-verify", "--prefix", prefix)
    assert human.exit_code == 3 and key in human.stdout
    assert one_line(human.stderr).startswith("error: DATA_LOSS: 1 of ")
    arbor.ok("splits", "delete", split["name"], "--purge")


def test_cleanup_artifacts_dry_run_then_apply(
    arbor: Arbor, split: dict[str, Any], store: LocalArtifactStore
) -> None:
    tag = uuid.uuid4().hex[:8]
    old_split = f"splits/orphan-{tag}/train.parquet"
    old_model = f"models/ghost-{tag}/v1/model.bin"
    young = f"splits/young-{tag}/train.parquet"
    unknown = f"scratch-{tag}/notes.txt"
    for key in (old_split, old_model, young, unknown):
        store.put_bytes(key, b"orphan")
    for key in (old_split, old_model, unknown):
        _age(store, key, 2 * DAY)
    referenced = [p["artifact"]["key"] for p in split["parts"]]
    for key in referenced:
        _age(store, key, 2 * DAY)  # old but referenced: never a candidate

    dry = json_out(arbor.ok("maintenance", "cleanup-artifacts", "--json").stdout)
    orphans = {o["key"] for o in dry["orphans"]}
    assert {old_split, old_model} <= orphans
    assert not orphans & set(referenced)
    assert young in dry["keptYoung"] and young not in orphans
    assert unknown in dry["skippedUnknown"]
    assert dry["applied"] is False and dry["deleted"] == []
    assert store.exists(old_split) and store.exists(old_model)
    assert "dry run" in arbor.ok("maintenance", "cleanup-artifacts").stdout

    applied = json_out(arbor.ok("maintenance", "cleanup-artifacts", "--apply", "--json").stdout)
    assert {old_split, old_model} <= set(applied["deleted"])
    assert not store.exists(old_split) and not store.exists(old_model)
    assert store.exists(young) and store.exists(unknown)
    assert all(store.exists(key) for key in referenced)
    arbor.ok("maintenance", "storage-verify", "--prefix", f"splits/{split['splitId']}/")
    store.delete(young)
    store.delete(unknown)


def test_cleanup_refuses_without_the_registry(arbor: Arbor) -> None:
    result = arbor(
        "--timeout", "2", "maintenance", "cleanup-artifacts",
        env={"ARBOR_REGISTRY_ADDRESS": "127.0.0.1:1"},
    )  # fmt: skip
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith("error: UNAVAILABLE: ")


# Every metrics port off: a developer's `make up` on the default ports must not answer here.
NO_METRICS_PORTS: dict[str, str | None] = {
    f"ARBOR_{name}_METRICS_PORT": "0"
    for name in ("SPLIT", "TRAINING", "REGISTRY", "INFERENCE", "TRAINING_WORKER")
}


def test_export_metrics_says_clearly_when_there_are_none(arbor: Arbor) -> None:
    result = arbor.ok("maintenance", "export-metrics", "--json", env=NO_METRICS_PORTS)
    report = json_out(result.stdout)
    assert report["available"] is False
    assert "ARBOR_<SVC>_METRICS_PORT" in report["message"]
    assert "ARBOR_OTEL_EXPORTER" in report["message"]
    assert report["health"]["split"] == "SERVING"
    text = arbor.ok("maintenance", "export-metrics", env=NO_METRICS_PORTS).stdout
    assert "no metrics endpoint" in text


@pytest.fixture
def metrics_endpoint() -> Iterator[str]:
    """A plain HTTP server answering like a Prometheus /metrics endpoint."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"# TYPE rpc_server_requests counter\nrpc_server_requests 3\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


def test_export_metrics_reads_a_configured_endpoint(arbor: Arbor, metrics_endpoint: str) -> None:
    result = arbor.ok(
        "maintenance",
        "export-metrics",
        "--json",
        env={**NO_METRICS_PORTS, "ARBOR_SPLIT_METRICS_URL": metrics_endpoint},
    )
    report = json_out(result.stdout)
    assert report["available"] is True
    assert "rpc_server_requests 3" in report["metrics"]["split"]


def test_seed_demo_uses_the_shared_credit_data(arbor: Arbor) -> None:
    from arbor_cli.maintenance import default_dataset

    dataset = default_dataset() or Path("/work/shared/datasets/credit_data.parquet")
    if not dataset.is_file():
        pytest.skip("../shared/datasets/credit_data.parquet is not next to this repository")
    result = json_out(
        arbor.ok("maintenance", "seed-demo", str(dataset), "--rows", "300", "--json").stdout
    )
    split = result["split"]
    assert split["targetColumn"] == "Status"
    assert int(split["rowCount"]) == 300
    assert split["labels"] == {"demo": "true", "dataset": "credit_data"}
    arbor.ok("splits", "delete", split["name"], "--purge")


def test_seed_demo_needs_a_target_without_a_manifest(arbor: Arbor, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "plain.csv", ["a", "b"], [(1, 2)])
    result = arbor("maintenance", "seed-demo", str(path))
    assert result.exit_code == 1
    assert "--target" in one_line(result.stderr)
