"""``arbor db``: each service's migrations up, down, current and reset, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from cli_support import Arbor, json_out, one_line

pytestmark = pytest.mark.integration

SERVICES = ["split", "training", "registry"]
PG_ADMIN_URL = os.environ.get(
    "ARBOR_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def local(home: Path) -> Arbor:
    """The CLI with a fresh ARBOR_HOME and no database URL: SQLite files under the home."""
    return Arbor({"ARBOR_HOME": str(home), "ARBOR_DATABASE_URL": None, "COLUMNS": "200"})


def revisions(result_stdout: str) -> dict[str, str | None]:
    return {s["service"]: s["current"] for s in json_out(result_stdout)["services"]}


def test_upgrade_current_downgrade_on_sqlite(local: Arbor, home: Path) -> None:
    before = json_out(local.ok("db", "current", "--json").stdout)["services"]
    assert [s["service"] for s in before] == SERVICES
    assert all(s["current"] is None and s["head"] for s in before)

    upgraded = json_out(local.ok("db", "upgrade", "--service", "all", "--json").stdout)
    assert all(s["upToDate"] for s in upgraded["services"])
    assert {f.name for f in home.glob("*.db")} >= {"split.db", "training.db", "registry.db"}

    heads = revisions(local.ok("db", "current", "--json").stdout)
    assert all(heads.values())

    down = revisions(
        local.ok("db", "downgrade", "--service", "split", "--revision", "base", "--json").stdout
    )
    assert down == {"split": None}
    after = revisions(local.ok("db", "current", "--json").stdout)
    assert after["split"] is None
    assert after["registry"] == heads["registry"]

    human = local.ok("db", "current", "--service", "registry").stdout
    assert "registry" in human and "up to date" in human


def test_reset_a_dev_database(local: Arbor) -> None:
    local.ok("db", "upgrade", "-s", "registry")
    reset = json_out(local.ok("db", "reset", "-s", "registry", "--json").stdout)
    assert reset["services"][0]["upToDate"] is True


def test_reset_refuses_a_database_outside_the_home(local: Arbor, tmp_path: Path) -> None:
    elsewhere = f"sqlite:///{tmp_path / 'prod' / 'arbor.db'}"
    local.ok("db", "upgrade", "-s", "split", "--database-url", elsewhere)
    refused = local("db", "reset", "-s", "split", "--database-url", elsewhere)
    assert refused.exit_code == 1
    line = one_line(refused.stderr)
    assert line.startswith("error: FAILED_PRECONDITION: refusing to reset split")
    assert "[NOT_A_DEVELOPMENT_DATABASE]" in line
    forced = local.ok(
        "db", "reset", "-s", "split", "--database-url", elsewhere, "--yes-really", "--json"
    )
    assert json_out(forced.stdout)["services"][0]["upToDate"] is True


def test_unknown_service_is_a_usage_error(local: Arbor) -> None:
    result = local("db", "current", "--service", "inference", "--json")
    assert result.exit_code == 1
    error = json.loads(one_line(result.stderr))["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["fieldViolations"][0]["field"] == "service"


@pytest.fixture
def pg_database(run_id: str) -> Iterator[str]:
    """A database of its own (the session's pg_url database is shared with service tests,
    whose schemas a reset here would drop)."""
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    name = f"arbor_cli_test_{run_id}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL unreachable: {err}".splitlines()[0])
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield urlparse(PG_ADMIN_URL)._replace(path=f"/{name}").geturl()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_migrations_on_postgresql(local: Arbor, pg_database: str) -> None:
    url = ["--database-url", pg_database]
    up = revisions(local.ok("db", "upgrade", *url, "--json").stdout)
    assert all(up.values()) and set(up) == set(SERVICES)
    # The database name contains "test": reset is allowed without --yes-really.
    reset = json_out(local.ok("db", "reset", "-s", "training", *url, "--json").stdout)
    assert reset["services"][0]["upToDate"] is True
    down = revisions(local.ok("db", "downgrade", "--revision", "base", *url, "--json").stdout)
    assert down == dict.fromkeys(SERVICES)
