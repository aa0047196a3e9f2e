"""End to end through the CLI: train with a real worker, then models, predict, explain, events.

Slow (a short study of two LightGBM trials on 300 rows): a training worker runs as its own
process (``python -m arbor_training.worker``), as in ``make up``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import Arbor, json_out, one_line, write_csv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEADER = ["Age", "Income", "Home", "Status"]


def _rows(n: int, seed: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        age = rng.randint(20, 70)
        income = rng.randint(50, 300)
        home = rng.choice(["rent", "owner", "parents"])
        bad = income < 120 or (home == "rent" and age < 30)
        status = "bad" if (bad and rng.random() < 0.85) or rng.random() < 0.05 else "good"
        rows.append((age, income, home, status))
    return rows


@pytest.fixture(scope="module")
def worker(cli_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if not (cli_stack.has("training") and cli_stack.has("inference")):
        pytest.skip("training and inference services are needed for the end-to-end CLI test")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
    env.update({k: v for k, v in cli_stack.env.items() if v is not None})
    env.update(
        {
            "ARBOR_TRAINING_DATABASE_URL": f"sqlite:///{cli_stack.home / 'training.db'}",
            "ARBOR_MIGRATE_ON_START": "0",
            "ARBOR_LOG_LEVEL": "WARNING",
            "OMP_NUM_THREADS": "1",
        }
    )
    workdir = tmp_path_factory.mktemp("worker")  # libraries drop files (catboost_info) in cwd
    log_path = workdir / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "arbor_training.worker"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode not in (0, -15):
            print(log_path.read_text(errors="replace")[-3000:])


@pytest.fixture(scope="module")
def trained(
    cli_stack: Any, worker: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A model trained through the CLI: ``experiments create --watch``, then promoted."""
    arbor = Arbor(cli_stack.env)
    data = write_csv(tmp_path_factory.mktemp("train") / "credit.csv", HEADER, _rows(300, 1))
    split = json_out(
        arbor.ok("splits", "create", str(data), "-t", "Status", "--stratify", "--json").stdout
    )
    model = f"cli-credit-{uuid.uuid4().hex[:6]}"
    watched = arbor(
        "experiments", "create", "--split", split["name"], "--trials", "2", "--model-type",
        "lightgbm", "--max-iterations", "40", "--threads", "1", "--seed", "1",
        "--model-name", model, "--watch", "--watch-timeout", "240", "--json",
    )  # fmt: skip
    assert watched.exit_code == 0, f"{watched.stdout}\n{watched.stderr}"
    lines = [json.loads(line) for line in watched.stdout.splitlines() if line.strip()]
    final = lines[-1]["experiment"]
    assert final["state"] == "EXPERIMENT_STATE_SUCCEEDED", final
    assert final["modelVersion"].startswith(f"models/{model}/versions/")
    assert any("trial" in line for line in lines), "no per-trial update was streamed"
    arbor.ok("models", "promote", final["modelVersion"], "--stage", "production")
    return {"model": model, "experiment": final["name"], "version": final["modelVersion"]}


def test_watch_a_finished_experiment_shows_progress(arbor: Arbor, trained: dict[str, str]) -> None:
    result = arbor.ok("experiments", "watch", trained["experiment"])
    assert "succeeded" in result.stdout
    assert trained["version"] in result.stdout
    assert "trials" in result.stderr  # the progress bar (stderr keeps stdout clean)
    trials = json_out(arbor.ok("experiments", "trials", trained["experiment"], "--json").stdout)
    assert len(trials["trials"]) >= 2


def test_models_commands(arbor: Arbor, trained: dict[str, str]) -> None:
    model = trained["model"]
    listed = json_out(arbor.ok("models", "list", "--json").stdout)
    assert model in [m["model"] for m in listed["models"]]
    got = json_out(arbor.ok("models", "get", model, "--json").stdout)
    assert got["model"]["productionVersion"] == "1"
    assert got["versions"][0]["stage"] == "MODEL_STAGE_PRODUCTION"
    aliased = json_out(arbor.ok("models", "alias", model, "champion", "1", "--json").stdout)
    assert aliased["modelVersion"]["name"] == trained["version"]
    resolved = json_out(arbor.ok("models", "resolve", f"{model}@champion", "--json").stdout)
    assert resolved["name"] == trained["version"]
    assert trained["version"] in arbor.ok("models", "get", f"{model}/1").stdout


def test_predict_from_a_csv_file(arbor: Arbor, trained: dict[str, str], tmp_path: Path) -> None:
    rows = [r[:3] for r in _rows(5, 99)]
    path = write_csv(tmp_path / "score.csv", HEADER[:3], rows)
    response = json_out(
        arbor.ok("predict", "--model", trained["model"], str(path), "-p", "--json").stdout
    )
    assert int(response["rowCount"]) == 5
    assert response["servedModel"]["modelVersion"] == trained["version"]
    assert set(response["labels"]) <= {"bad", "good"}
    assert len(response["probabilities"]) == 5 * len(response["classes"])

    as_csv = arbor.ok("predict", "-m", f"{trained['model']}@champion", str(path), "-o", "csv")
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(table) == 5 and set(table[0]) == {"label"}

    with_input = arbor.ok("predict", "-m", trained["model"], str(path), "-o", "json", "-p",
                          "--with-input", "--wire", "json")  # fmt: skip
    first = json.loads(with_input.stdout)[0]
    assert {"Age", "Income", "Home", "label"} <= set(first)
    assert any(key.startswith("proba_") for key in first)

    human = arbor.ok("predict", "-m", trained["model"], str(path)).stdout
    assert "5 predictions by" in human and trained["version"] in human


def test_predict_from_stdin(arbor: Arbor, trained: dict[str, str]) -> None:
    rows = [{"Age": 25, "Income": 80, "Home": "rent"}, {"Age": 60, "Income": 280, "Home": "owner"}]
    result = arbor.ok("predict", "-m", trained["version"], "-o", "json", input=json.dumps(rows))
    assert len(json.loads(result.stdout)) == 2


def test_predict_with_an_unknown_model_fails_in_one_line(arbor: Arbor, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "x.csv", HEADER[:3], [(30, 100, "rent")])
    result = arbor("predict", "-m", "no-such-model", str(path))
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith("error: NOT_FOUND: ")


def test_explain(arbor: Arbor, trained: dict[str, str], tmp_path: Path) -> None:
    overall = json_out(arbor.ok("explain", "-m", trained["model"], "--json").stdout)
    features = [f["feature"] for f in overall["globalImportance"]]
    assert set(features) <= {"Age", "Income", "Home"} and features
    path = write_csv(tmp_path / "e.csv", HEADER[:3], [r[:3] for r in _rows(3, 5)])
    per_row = json_out(
        arbor.ok("explain", "-m", trained["model"], str(path), "--per-row", "--json").stdout
    )
    assert len(per_row["rows"]) >= 3
    assert "feature importance" in arbor.ok("explain", "-m", trained["model"]).stdout


def test_events_tail_replays_the_experiment(arbor: Arbor, trained: dict[str, str]) -> None:
    result = arbor.ok(
        "events", "tail", "--from-start", "--type", "experiment.*", "--resource",
        trained["experiment"], "--count", "2", "--timeout", "20", "--json",
    )  # fmt: skip
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(events) == 2
    assert all(e["subject"] == trained["experiment"] for e in events)
    assert events[0]["type"] == "experiment.queued"
