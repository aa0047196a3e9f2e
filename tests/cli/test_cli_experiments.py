"""``arbor experiments`` against a real training service (queue, watch, cancel, delete)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from cli_support import Arbor, json_out, one_line, write_csv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def split_name(cli_stack: object, tmp_path_factory: pytest.TempPathFactory) -> str:
    if not cli_stack.has("training"):  # type: ignore[attr-defined]
        pytest.skip("the training service (arbor_training.server.build_runner) is not available")
    rng = random.Random(11)
    rows = [(rng.random(), rng.choice("abc"), rng.choice(["yes", "no"])) for _ in range(120)]
    path = write_csv(tmp_path_factory.mktemp("exp") / "d.csv", ["x", "c", "y"], rows)
    arbor = Arbor(cli_stack.env)  # type: ignore[attr-defined]
    return str(
        json_out(arbor.ok("splits", "create", str(path), "-t", "y", "--json").stdout)["name"]
    )


def test_queue_watch_cancel_delete(arbor: Arbor, split_name: str) -> None:
    created = json_out(
        arbor.ok(
            "experiments",
            "create",
            "--split",
            split_name,
            "--trials",
            "2",
            "--model-type",
            "lightgbm",
            "--label",
            "suite=cli",
            "--json",
        ).stdout
    )
    name = created["name"]
    assert name.startswith("experiments/")
    assert created["modelType"] == "MODEL_TYPE_LIGHTGBM"
    assert created["state"] in {"EXPERIMENT_STATE_QUEUED", "EXPERIMENT_STATE_RUNNING"}

    got = json_out(arbor.ok("experiments", "get", name, "--json").stdout)
    assert got["split"] == split_name

    listed = json_out(arbor.ok("experiments", "list", "--split", split_name, "--json").stdout)
    assert name in [e["name"] for e in listed["experiments"]]
    trials = json_out(arbor.ok("experiments", "trials", name, "--json").stdout)
    assert isinstance(trials["trials"], list)

    cancelled = json_out(arbor.ok("experiments", "cancel", name, "--json").stdout)
    assert cancelled["name"] == name

    # Watching a finished-but-unsuccessful experiment: NDJSON updates, then exit 3 and a line.
    watched = arbor("experiments", "watch", name, "--timeout", "60", "--json")
    assert watched.exit_code == 3, watched.stderr
    updates = [json.loads(line) for line in watched.stdout.splitlines() if line.strip()]
    assert updates and updates[-1]["experiment"]["state"] == "EXPERIMENT_STATE_CANCELLED"
    error = json.loads(one_line(watched.stderr))["error"]
    assert error["code"] == "CANCELLED" and error["reason"] == "EXPERIMENT_CANCELLED"

    human = arbor("experiments", "watch", name, "--timeout", "60")
    assert human.exit_code == 3
    assert "cancelled" in human.stdout
    assert one_line(human.stderr.splitlines()[-1]).startswith("error: CANCELLED: ")

    arbor.ok("experiments", "delete", name)
    gone = arbor("experiments", "get", name)
    assert gone.exit_code == 1
    assert one_line(gone.stderr).startswith("error: NOT_FOUND: ")


def test_experiment_on_a_missing_split_fails_cleanly(arbor: Arbor, split_name: str) -> None:
    result = arbor("experiments", "create", "--split", "splits/nope-nope", "--json")
    assert result.exit_code == 1
    error = json.loads(one_line(result.stderr))["error"]
    assert error["code"] in {"NOT_FOUND", "FAILED_PRECONDITION", "INVALID_ARGUMENT"}
    assert error["reason"]


def test_create_needs_a_split(arbor: Arbor, tmp_path: Path, split_name: str) -> None:
    result = arbor("experiments", "create")
    assert result.exit_code == 1
    assert "--split" in one_line(result.stderr)
    spec = tmp_path / "exp.json"
    spec.write_text(json.dumps({"split": split_name, "study": {"nTrials": 1}}))
    created = json_out(arbor.ok("experiments", "create", "--spec", str(spec), "--json").stdout)
    assert created["study"]["nTrials"] == 1
    arbor.ok("experiments", "cancel", created["name"])
