"""``arbor events tail``: live (a subprocess listening while a split is created) and replayed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_support import Arbor, json_out, one_line, write_csv

pytestmark = pytest.mark.integration


def _csv(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "e.csv", ["x", "y"], [(i, "a" if i % 2 else "b") for i in range(40)]
    )


def test_live_tail_prints_the_event_as_it_happens(
    cli_stack: Any, arbor: Arbor, tmp_path: Path
) -> None:
    split_id = f"tail-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBOR_")}
    env.update({k: v for k, v in cli_stack.env.items() if v is not None})
    tail = subprocess.Popen(
        [sys.executable, "-m", "arbor_cli", "events", "tail", "--type", "split.*",
         "--resource", f"splits/{split_id}", "--count", "1", "--timeout", "60", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert tail.stderr is not None
        ready = tail.stderr.readline()  # "listening on ..." once subscribed
        assert ready.startswith("listening on "), ready
        arbor.ok("splits", "create", str(_csv(tmp_path)), "-t", "y", "--id", split_id)
        stdout, stderr = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, stderr
    event = json.loads(one_line(stdout))
    assert event["type"] == "split.created"
    assert event["subject"] == f"splits/{split_id}"
    assert event["splitCreated"]["split"] == f"splits/{split_id}"


def test_replay_and_filters(arbor: Arbor, tmp_path: Path) -> None:
    created = json_out(
        arbor.ok("splits", "create", str(_csv(tmp_path)), "-t", "y", "--json").stdout
    )
    name = created["name"]
    arbor.ok("splits", "delete", name)
    deadline = time.monotonic() + 20
    while True:  # the outbox relay publishes within a poll interval
        result = arbor(
            "events", "tail", "--from-start", "--resource", name, "--count", "2",
            "--timeout", "5", "--json",
        )  # fmt: skip
        if result.exit_code == 0 or time.monotonic() > deadline:
            break
    assert result.exit_code == 0, result.stderr
    types = [json.loads(line)["type"] for line in result.stdout.splitlines() if line.strip()]
    assert types == ["split.created", "split.deleted"]

    human = arbor.ok(
        "events", "tail", "--from-start", "--type", "split.deleted", "--resource", name,
        "--count", "1", "--timeout", "10",
    )  # fmt: skip
    assert "split.deleted" in human.stdout and name in human.stdout


def test_tail_that_times_out_short_of_its_count_fails(arbor: Arbor) -> None:
    result = arbor(
        "events", "tail", "--from-start", "--type", "model.promoted", "--resource",
        "models/never-promoted", "--count", "1", "--timeout", "1",
    )  # fmt: skip
    assert result.exit_code == 3
    listening, error = result.stderr.splitlines()  # progress note, then the one-line error
    assert listening.startswith("listening on ")
    assert error.startswith("error: DEADLINE_EXCEEDED: received 0 of 1")
