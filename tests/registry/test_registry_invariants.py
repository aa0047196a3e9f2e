"""The invariants races could break are enforced by the database itself, not only by code."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from arbor_core.db import is_unique_violation, make_engine, upgrade
from arbor_registry import MIGRATIONS_DIR
from arbor_registry.tables import model_versions, models

pytestmark = pytest.mark.integration

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        url, schema = request.getfixturevalue("pg_url"), f"t_{uuid.uuid4().hex[:8]}"
    else:
        url, schema = f"sqlite:///{tmp_path / 'registry.db'}", "registry"
    upgrade(url, schema, MIGRATIONS_DIR)
    eng = make_engine(url, schema)
    yield eng
    eng.dispose()


def _version(model_id: int, version: int, **values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "model_id": model_id,
        "version": version,
        "model_type": "CATBOOST",
        "task_type": "BINARY",
        "metrics": {},
        "params": {},
        "signature": {},
        "artifact_uri": f"gs://b/m/v{version}/",
        "artifact_checksums": {},
        "library_versions": {},
        "labels": {},
        "stage": "NONE",
        "create_time": NOW,
        "update_time": NOW,
    }
    row.update(values)
    return row


def _insert_fails(engine: Engine, row: dict[str, object]) -> bool:
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(model_versions).values(**row))
    except sa.exc.IntegrityError as err:
        return is_unique_violation(err)
    return False


def test_database_refuses_duplicates_and_a_second_production(engine: Engine) -> None:
    with engine.begin() as conn:
        model_id = conn.execute(
            sa.insert(models)
            .values(name="m", labels={}, create_time=NOW, update_time=NOW)
            .returning(models.c.id)
        ).scalar_one()
        for row in (
            _version(model_id, 1, stage="PRODUCTION", experiment="experiments/a"),
            # A deleted PRODUCTION row does not count.
            _version(model_id, 2, stage="PRODUCTION", delete_time=NOW),
            _version(model_id, 3, stage="ARCHIVED", request_id="r1"),
        ):
            conn.execute(sa.insert(model_versions).values(**row))
    assert _insert_fails(engine, _version(model_id, 1))  # duplicate version number
    assert _insert_fails(engine, _version(model_id, 4, stage="PRODUCTION"))  # second PRODUCTION
    assert _insert_fails(engine, _version(model_id, 4, experiment="experiments/a"))
    assert _insert_fails(engine, _version(model_id, 4, request_id="r1"))
    assert not _insert_fails(engine, _version(model_id, 4, stage="STAGING"))
