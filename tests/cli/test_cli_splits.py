"""``arbor splits`` and the CLI's error contract against a real split service."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from cli_support import TOKEN, Arbor, json_out, one_line, write_csv

pytestmark = pytest.mark.integration


@pytest.fixture
def credit_csv(tmp_path: Path) -> Path:
    """200 rows, a binary target and a categorical column: enough for every strategy."""
    rng = random.Random(7)
    rows = []
    for i in range(200):
        age = rng.randint(20, 70)
        income = rng.randint(50, 300)
        home = rng.choice(["rent", "owner", "parents"])
        status = "bad" if (income < 120 and rng.random() < 0.7) else "good"
        rows.append((i, age, income, home, status))
    return write_csv(tmp_path / "credit.csv", ["id", "Age", "Income", "Home", "Status"], rows)


def test_split_lifecycle_with_json(arbor: Arbor, credit_csv: Path) -> None:
    created = json_out(
        arbor.ok(
            "splits",
            "create",
            str(credit_csv),
            "--target",
            "Status",
            "--stratify",
            "--train",
            "0.7",
            "--validation",
            "0.3",
            "--seed",
            "3",
            "--label",
            "team=cli",
            "--json",
        ).stdout
    )
    name = created["name"]
    assert name.startswith("splits/")
    assert created["state"] == "SPLIT_STATE_READY"
    assert created["targetColumn"] == "Status"
    assert int(created["rowCount"]) == 200
    parts = {p["part"]: int(p["rowCount"]) for p in created["parts"]}
    assert parts["train"] + parts["validation"] == 200

    got = json_out(arbor.ok("splits", "get", name, "--json").stdout)
    assert got["name"] == name and got["contentHash"] == created["contentHash"]
    # The bare id works as well as the resource name.
    assert json_out(arbor.ok("splits", "get", got["splitId"], "--json").stdout)["name"] == name

    listed = json_out(arbor.ok("splits", "list", "--label", "team=cli", "--json").stdout)
    assert name in [s["name"] for s in listed["splits"]]

    updated = json_out(
        arbor.ok(
            "splits",
            "update",
            name,
            "--display-name",
            "credit (cli)",
            "--label",
            "team=ml",
            "--json",
        ).stdout
    )
    assert updated["displayName"] == "credit (cli)"
    assert updated["labels"] == {"team": "ml"}

    deleted = json_out(arbor.ok("splits", "delete", name, "--purge", "--json").stdout)
    assert deleted["state"] == "SPLIT_STATE_DELETED"
    gone = arbor("splits", "get", name)
    assert gone.exit_code == 1
    assert "NOT_FOUND" in one_line(gone.stderr)


def test_human_output_is_a_table(arbor: Arbor, credit_csv: Path) -> None:
    out = arbor.ok("splits", "create", str(credit_csv), "-t", "Status").stdout
    assert "splits/" in out and "train" in out and "validation" in out
    listing = arbor.ok("splits", "list").stdout
    assert "display name" in listing


def test_missing_split_is_a_one_line_error(arbor: Arbor) -> None:
    result = arbor("splits", "get", "does-not-exist")
    assert result.exit_code != 0
    line = one_line(result.stderr)
    assert line.startswith("error: NOT_FOUND: ")
    assert "[SPLIT_NOT_FOUND]" in line
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_missing_split_with_json_reports_the_error_as_json(arbor: Arbor) -> None:
    result = arbor("splits", "get", "does-not-exist", "--json")
    assert result.exit_code == 1
    error = json.loads(one_line(result.stderr))["error"]
    assert error["code"] == "NOT_FOUND"
    assert error["reason"] == "SPLIT_NOT_FOUND"
    assert error["method"] == "split.GetSplit"


def test_bad_request_names_the_field(arbor: Arbor, credit_csv: Path) -> None:
    result = arbor(
        "splits",
        "create",
        str(credit_csv),
        "-t",
        "Status",
        "--train",
        "0.9",
        "--validation",
        "0.5",
        "--json",
    )
    assert result.exit_code == 1
    error = json.loads(one_line(result.stderr))["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    fields = [v["field"] for v in error["fieldViolations"]]
    assert any(f.startswith("split.fractions") or f.startswith("fractions") for f in fields), fields


def test_client_side_errors_use_the_same_shape(arbor: Arbor, tmp_path: Path) -> None:
    result = arbor("splits", "create", str(tmp_path / "missing.csv"), "-t", "y")
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert line.startswith("error: INVALID_ARGUMENT: no such file")
    assert "[CLIENT_INVALID_ARGUMENT]" in line


def test_bearer_token(arbor: Arbor, secured_split: str) -> None:
    env = {"ARBOR_SPLIT_ADDRESS": secured_split}
    missing = arbor("splits", "list", env=env)
    assert missing.exit_code == 1
    assert one_line(missing.stderr).startswith("error: UNAUTHENTICATED: ")
    wrong = arbor("splits", "list", env={**env, "ARBOR_CLIENT_TOKEN": "wrong"})
    assert "[INVALID_CREDENTIALS]" in one_line(wrong.stderr)
    assert arbor.ok("splits", "list", "--json", env={**env, "ARBOR_CLIENT_TOKEN": TOKEN})
    assert arbor.ok("--token", TOKEN, "splits", "list", env=env)


def test_unreachable_service_is_unavailable(arbor: Arbor) -> None:
    result = arbor("--timeout", "2", "splits", "list", env={"ARBOR_SPLIT_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith("error: UNAVAILABLE: ")


def test_status_reports_each_service(arbor: Arbor) -> None:
    result = arbor("status", "--json")
    services = {s["service"]: s["health"] for s in json_out(result.stdout)["services"]}
    assert services["split"] == "SERVING"
    assert services["registry"] == "SERVING"
    # Exit 3 unless everything serves; training/inference may not be part of this stack.
    assert result.exit_code == (0 if set(services.values()) == {"SERVING"} else 3)
