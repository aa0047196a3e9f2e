"""db.py on SQLite and PostgreSQL: per-service isolation, migrations, error mapping."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc

from arbor_core import db
from arbor_core.errors import AlreadyExists, InvalidArgument, Unavailable
from arbor_core.testing import free_port

MIGRATIONS = Path(__file__).parent / "testdata" / "migrations"

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def _widgets(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "widgets",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", db.UtcDateTime(), nullable=True),
    )


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_and_downgrade(url: str, db_schema: str) -> None:
    assert db.current(url, db_schema) is None
    db.upgrade(url, db_schema, MIGRATIONS, "0001")
    assert db.current(url, db_schema) == "0001"
    db.upgrade(url, db_schema, MIGRATIONS)
    assert db.current(url, db_schema) == "0002"
    engine = db.make_engine(url, db_schema)
    try:
        assert {"widgets", "parts", "outbox", "alembic_version"} <= _tables(engine)
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes("outbox")}
        assert "ix_outbox_published_at" in indexes
        cols = {c["name"] for c in sa.inspect(engine).get_columns("widgets")}
        assert cols == {"id", "name", "colour"}
        db.upgrade(url, db_schema, MIGRATIONS)  # at head already: a no-op
        db.downgrade(url, db_schema, MIGRATIONS, "0001")
        assert db.current(url, db_schema) == "0001"
        db.downgrade(url, db_schema, MIGRATIONS, "base")
        assert db.current(url, db_schema) is None
        assert _tables(engine) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_postgres_tables_live_in_the_service_schema(pg_url: str, db_schema: str) -> None:
    db.upgrade(pg_url, db_schema, MIGRATIONS)
    engine = db.make_engine(pg_url, db_schema)
    other = db.make_engine(pg_url, db_schema + "_other")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_schema()")).scalar() == db_schema
            where = conn.execute(
                sa.text(
                    "SELECT table_schema FROM information_schema.tables"
                    " WHERE table_name = 'widgets' AND table_schema = :s"
                ),
                {"s": db_schema},
            ).all()
            assert where == [(db_schema,)]
            version = conn.execute(
                sa.text(
                    "SELECT count(*) FROM information_schema.tables"
                    " WHERE table_name = 'alembic_version' AND table_schema = :s"
                ),
                {"s": db_schema},
            ).scalar()
            assert version == 1
        # another service's engine sees its own (empty) schema, not these tables
        assert "widgets" not in _tables(other)
    finally:
        engine.dispose()
        other.dispose()


def test_sqlite_one_file_per_service_with_pragmas(sqlite_url: str, tmp_path: Path) -> None:
    assert str(db.effective_url(sqlite_url, "split").database).endswith("arbor.split.db")
    same = f"sqlite:///{tmp_path / 'split.db'}"
    assert db.effective_url(same, "split").database == str(tmp_path / "split.db")
    engine = db.make_engine(sqlite_url, "split")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert (tmp_path / "arbor.split.db").exists()
    finally:
        engine.dispose()


def test_make_engine_rejects_bad_input(sqlite_url: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        db.make_engine(sqlite_url, "Bad-Schema")
    assert info.value.violations[0].field == "db_schema"
    with pytest.raises(InvalidArgument):
        db.make_engine("mysql://x/y", "split")
    with pytest.raises(InvalidArgument):
        db.make_engine("not a url", "split")


def test_transactions_and_unique_violations(url: str, db_schema: str) -> None:
    metadata = db.make_metadata()
    widgets = _widgets(metadata)
    engine = db.make_engine(url, db_schema)
    metadata.create_all(engine)
    factory = db.session_factory(engine)
    try:
        now = db.utcnow()
        with db.transaction(factory) as session:
            session.execute(sa.insert(widgets).values(name="a", created_at=now))
        with pytest.raises(RuntimeError), db.transaction(factory) as session:
            session.execute(sa.insert(widgets).values(name="b"))
            raise RuntimeError("boom")  # rolled back
        conflict = AlreadyExists("widget 'a' exists", reason="WIDGET_ALREADY_EXISTS")
        with pytest.raises(AlreadyExists) as info, db.transaction(factory, conflict=conflict) as s:
            s.execute(sa.insert(widgets).values(name="a"))
        assert info.value.reason == "WIDGET_ALREADY_EXISTS"
        # without a conflict error the IntegrityError is a bug and propagates as-is
        with pytest.raises(exc.IntegrityError), db.transaction(factory) as session:
            session.execute(sa.insert(widgets).values(name="a"))
        with factory() as session:
            rows = session.execute(sa.select(widgets.c.name, widgets.c.created_at)).all()
        assert [r.name for r in rows] == ["a"]
        assert rows[0].created_at == now
        assert rows[0].created_at.tzinfo is not None
        # savepoints work on both backends
        with db.transaction(factory) as session:
            with pytest.raises(exc.IntegrityError), session.begin_nested():
                session.execute(sa.insert(widgets).values(name="a"))
            session.execute(sa.insert(widgets).values(name="c"))
        with factory() as session:
            assert session.execute(sa.select(sa.func.count()).select_from(widgets)).scalar() == 2
    finally:
        engine.dispose()


def test_naive_datetimes_are_refused(sqlite_url: str) -> None:
    metadata = db.make_metadata()
    widgets = _widgets(metadata)
    engine = db.make_engine(sqlite_url, "svc")
    metadata.create_all(engine)
    try:
        with pytest.raises(exc.StatementError), db.transaction(db.session_factory(engine)) as s:
            s.execute(sa.insert(widgets).values(name="x", created_at=dt.datetime(2024, 1, 1)))
    finally:
        engine.dispose()


def test_unreachable_database_is_unavailable(db_schema: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nope"
    engine = db.make_engine(url, db_schema)
    assert db.ping(engine) is False
    with pytest.raises(Unavailable) as info, db.transaction(db.session_factory(engine)) as s:
        s.execute(sa.text("SELECT 1"))
    assert info.value.reason == "DATABASE_UNAVAILABLE"

    @db.with_db_errors()
    def query() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    with pytest.raises(Unavailable):
        query()
    with pytest.raises(Unavailable):
        db.upgrade(url, db_schema, MIGRATIONS)


def test_ping_and_run_db(url: str, db_schema: str) -> None:
    engine = db.make_engine(url, db_schema)
    try:
        assert db.ping(engine) is True

        def where() -> int:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return threading.get_ident()

        assert asyncio.run(db.run_db(where)) != threading.get_ident()
    finally:
        engine.dispose()


def test_concurrent_first_connections_create_the_schema_once(pg_url: str, db_schema: str) -> None:
    engines = [db.make_engine(pg_url, db_schema) for _ in range(4)]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda e=e: results.append(db.ping(e))) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert results == [True] * 4
