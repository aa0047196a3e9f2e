"""``make demo`` (``python -m arbor_cli.demo``): the whole life of a model on real data.

The end-to-end run is slow (a short study on a 600-row sample of credit_data, with a training
worker as its own process, as in ``make up``); the refusals are quick.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arbor_cli import demo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo_worker(cli_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A training worker process on the CLI stack's database and NATS namespace."""
    if not (cli_stack.has("training") and cli_stack.has("inference")):
        pytest.skip("training and inference services are needed for the demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
    env.update({k: v for k, v in cli_stack.env.items() if v is not None})
    env.update(
        {
            "ARBOR_TRAINING_DATABASE_URL": f"sqlite:///{cli_stack.home / 'training.db'}",
            "ARBOR_MIGRATE_ON_START": "0",
            "ARBOR_LOG_LEVEL": "WARNING",
            "ARBOR_TRAINING_WORKER_METRICS_PORT": "0",
            "OMP_NUM_THREADS": "1",
        }
    )
    workdir = tmp_path_factory.mktemp("demo-worker")
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


#: The machine's copy of the datasets, for a clone that has no ``../shared`` beside it.
SHARED_DATASETS = Path("/work/shared/datasets")


def demo_dataset() -> Path:
    """The dataset the demo finds by itself, else the machine's shared copy (else skip)."""
    try:
        return demo.find_dataset()
    except demo.DemoError as err:
        for name in demo.DATASETS:
            if (SHARED_DATASETS / name).is_file():
                return SHARED_DATASETS / name
        pytest.skip(str(err))


@pytest.mark.slow
def test_the_demo_walks_from_data_to_explanations(
    cli_stack: Any, demo_worker: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dataset = demo_dataset()
    for name, value in cli_stack.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    lines: list[str] = []
    argv = ["--rows", "600", "--trials", "2", "--max-iterations", "30"]
    argv += ["--model-name", "demo-test", "--workdir", str(tmp_path), "--timeout", "120"]
    argv += ["--dataset", str(dataset)]
    code = demo.main(argv, say=lines.append)
    output = "\n".join(lines)
    assert code == 0, output
    # Every step shows the CLI command that does the same.
    for expected in (
        "$ arbor status",
        f"$ arbor splits create {tmp_path / (dataset.stem + '.sample.parquet')} --target",
        "$ arbor experiments create --split splits/",
        "$ arbor models promote demo-test 1 --stage production",
        f"$ arbor predict --model demo-test {tmp_path / 'holdout.csv'} --probabilities",
        "$ arbor explain --model demo-test@champion",
    ):
        assert expected in output, output
    assert "SUCCEEDED -> models/demo-test/versions/1" in output
    assert "trial 1: complete" in output
    assert "served by models/demo-test/versions/1" in output
    assert "accuracy on 200 held-out rows" in output
    assert "global importance" in output
    # The files the printed commands name are there to paste.
    assert (tmp_path / "holdout.csv").read_text().count("\n") == 1 + demo.HOLDOUT_ROWS


def test_a_missing_dataset_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--dataset", "/nonexistent/credit_data.parquet"]) == 2
    assert "no such dataset file: /nonexistent/credit_data.parquet" in capsys.readouterr().err


def test_a_platform_that_is_down_says_to_start_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for service in ("SPLIT", "TRAINING", "REGISTRY", "INFERENCE"):
        monkeypatch.setenv(f"ARBOR_{service}_ADDRESS", "127.0.0.1:1")
    lines: list[str] = []
    dataset = demo_dataset()
    argv = ["--workdir", str(tmp_path), "--dataset", str(dataset)]
    assert demo.main(argv, say=lines.append) == 1
    err = capsys.readouterr().err
    assert "not serving: split, training, registry, inference" in err
    assert "make up" in err
