"""The registry's Alembic migrations go base -> head -> base on PostgreSQL and SQLite."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from arbor_core.db import current, downgrade, make_engine, upgrade
from arbor_registry import MIGRATIONS_DIR
from arbor_registry.tables import metadata

pytestmark = pytest.mark.integration

TABLES = {"models", "model_versions", "model_aliases", "outbox"}


def _tables(url: str, schema: str) -> set[str]:
    engine = make_engine(url, schema)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            names = (
                inspector.get_table_names(schema=schema)
                if conn.dialect.name == "postgresql"
                else inspector.get_table_names()
            )
            return set(names) - {"alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_and_downgrade(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
        schema = f"t_{uuid.uuid4().hex[:8]}"
    else:
        url, schema = f"sqlite:///{tmp_path / 'registry.db'}", "registry"
    assert current(url, schema) is None
    upgrade(url, schema, MIGRATIONS_DIR)
    assert current(url, schema) == "0002"
    assert _tables(url, schema) == TABLES
    # The migration and tables.py describe the same columns.
    engine = make_engine(url, schema)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            for table in metadata.sorted_tables:
                kwargs = {"schema": schema} if conn.dialect.name == "postgresql" else {}
                columns = {c["name"] for c in inspector.get_columns(table.name, **kwargs)}
                assert columns == set(table.c.keys()), table.name
                indexes = {i["name"] for i in inspector.get_indexes(table.name, **kwargs)}
                expected = {i.name for i in table.indexes}
                assert expected <= indexes, table.name
    finally:
        engine.dispose()
    downgrade(url, schema, MIGRATIONS_DIR, "base")
    assert _tables(url, schema) == set()
    assert current(url, schema) is None
    upgrade(url, schema, MIGRATIONS_DIR)
    assert _tables(url, schema) == TABLES
