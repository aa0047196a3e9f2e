"""Persistence scaffold: engines, sessions, error mapping and the Alembic runner.

Each service owns its tables. On PostgreSQL they live in the service's own schema: tables are
declared without a schema and every connection sets ``search_path`` to it, so the same table
definitions and migrations work on PostgreSQL and on the embedded SQLite default (one file per
service). Repositories wrap database calls in ``db_errors()`` so a lost database becomes
``Unavailable`` (and a unique violation ``AlreadyExists`` where asked), never a raw driver error.

Two bounds keep a sick database from hanging a request forever (PostgreSQL):

* every network wait of a connection (a statement, a commit, the pool's pre-ping) gives up after
  ``ARBOR_DB_IO_TIMEOUT_S`` (30 s; 0 = never) and drops the connection, which the pool then
  replaces; opening a connection gives up after ``ARBOR_DB_CONNECT_TIMEOUT_S`` (5 s), and TCP
  keepalives notice a peer that vanished. Either way the caller gets ``Unavailable``.
* work handed to ``run_db`` is *abandoned* when the awaiting call is cancelled (the client's
  deadline passed, it hung up, or shutdown's grace ran out): the thread's next commit (or
  ``check_abandoned()``) raises instead, so the transaction rolls back rather than committing
  for a caller that has gone. It fires once; whatever the unwinding code commits afterwards
  (its own cleanup) goes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import logging
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from arbor_core.config import Settings
from arbor_core.errors import Aborted, ArborError, DeadlineExceeded, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "NAMING_CONVENTION",
    "UtcDateTime",
    "WorkAbandoned",
    "check_abandoned",
    "current",
    "db_errors",
    "downgrade",
    "effective_url",
    "is_unique_violation",
    "make_engine",
    "make_metadata",
    "ping",
    "revision",
    "run_alembic_env",
    "run_db",
    "session_factory",
    "transaction",
    "upgrade",
    "utcnow",
]

# Deterministic constraint names: Alembic needs them to drop or alter constraints, and SQLite's
# batch mode (table rebuilds) cannot work without them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CONNECT_TIMEOUT_S = 5
IO_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_ENV = "ARBOR_DB_CONNECT_TIMEOUT_S"
IO_TIMEOUT_ENV = "ARBOR_DB_IO_TIMEOUT_S"


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise InvalidArgument(f"{name} must be a number of seconds", field=name) from None


def make_metadata() -> sa.MetaData:
    """A MetaData for one service's tables (no schema; the engine's search_path picks it)."""
    return sa.MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite would otherwise drop the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use an aware UTC datetime (arbor_core.db.utcnow)")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- engines


def _check_schema(schema: str) -> str:
    if not _SCHEMA_RE.match(schema):
        raise InvalidArgument(
            f"invalid database schema name {schema!r}: lower-case letters, digits and '_'",
            field="db_schema",
        )
    return schema


def _normalize(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` means psycopg 3 (not psycopg2)."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as err:
        raise InvalidArgument(f"invalid database URL: {err}", field="database_url") from None
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def effective_url(url: str | URL, schema: str) -> URL:
    """The URL the engine really uses: for SQLite, the per-service file.

    ``sqlite:///dir/split.db`` stays as it is for schema ``split``; ``sqlite:///dir/arbor.db``
    becomes ``sqlite:///dir/arbor.split.db``, so services given one shared URL still get one
    file each (every service has an ``outbox`` table, they must not share a file).
    """
    parsed = _normalize(url)
    if parsed.get_backend_name() != "sqlite":
        return parsed
    database = parsed.database or ""
    if database in {"", ":memory:"} or database.startswith("file:"):
        return parsed
    path = Path(database)
    if path.stem == schema:
        return parsed
    return parsed.set(database=str(path.with_name(f"{path.stem}.{schema}{path.suffix or '.db'}")))


def make_engine(
    settings_or_url: Settings | str | URL,
    schema: str | None = None,
    *,
    echo: bool = False,
    pool_size: int = 5,
    max_overflow: int = 10,
    connect_timeout: float | None = None,
    io_timeout: float | None = None,
) -> Engine:
    """An engine bound to one service's schema (PostgreSQL) or file (SQLite).

    ``schema`` defaults to ``settings.db_schema``. On PostgreSQL the schema is created on the
    first connection if missing; on SQLite the file's directory is created, and every
    connection gets foreign keys, WAL and a busy timeout. ``connect_timeout`` / ``io_timeout``
    (seconds, PostgreSQL only; default ``ARBOR_DB_CONNECT_TIMEOUT_S`` / ``ARBOR_DB_IO_TIMEOUT_S``)
    bound opening a connection and each network wait on it; ``io_timeout=0`` means no bound
    (migrations, which may legitimately run long). Every engine refuses to commit work that
    ``run_db``'s caller has abandoned.
    """
    if isinstance(settings_or_url, Settings):
        url: str | URL = settings_or_url.database_url
        schema = schema or settings_or_url.db_schema
    else:
        url = settings_or_url
    if not schema:
        raise InvalidArgument("a database schema (service name) is required", field="db_schema")
    _check_schema(schema)
    parsed = effective_url(url, schema)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        connect_s = _env_seconds(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_S)
        connect_s = connect_s if connect_timeout is None else connect_timeout
        io_s = _env_seconds(IO_TIMEOUT_ENV, IO_TIMEOUT_S) if io_timeout is None else io_timeout
        connect_args: dict[str, Any] = {
            "options": f"-csearch_path={schema}",
            # libpq counts whole seconds and treats anything below 2 as 2.
            "connect_timeout": max(2, round(connect_s)),
            "application_name": f"arbor-{schema}",
            # A peer that vanished (host down, partition) is noticed on idle connections too.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if io_s > 0:
            # Unacknowledged data for longer than this kills the connection at the TCP level.
            connect_args["tcp_user_timeout"] = int(io_s * 1000)
        engine = sa.create_engine(
            parsed,
            echo=echo,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=max_overflow,
            connect_args=connect_args,
        )
        if io_s > 0:
            _install_io_timeout(engine, io_s)
        _install_pg_schema_hook(engine, schema)
    elif backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )
        _install_sqlite_hooks(engine)
    else:
        raise InvalidArgument(
            f"unsupported database {backend!r}: use postgresql:// or sqlite://",
            field="database_url",
        )
    event.listen(engine, "commit", _fence_commit)
    return engine


def _install_io_timeout(engine: Engine, seconds: float) -> None:
    """Open every psycopg connection as one whose network waits give up after ``seconds``.

    A database that stopped answering (a hung server, a half-open connection behind a proxy)
    otherwise blocks a worker thread, and the request with it, forever. On timeout the
    connection is dropped, so SQLAlchemy sees a disconnect: the pool replaces it and the
    caller gets ``Unavailable``.
    """
    connection_class = _bounded_connection_class(seconds)

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> Any:
        return connection_class.connect(*cargs, **cparams)


@functools.cache
def _bounded_connection_class(seconds: float) -> Any:
    import psycopg
    from psycopg import errors as pg_errors

    wait_timeout: type[Exception] = getattr(pg_errors, "_WaitTimeout", pg_errors.OperationalError)

    class BoundedConnection(psycopg.Connection):  # type: ignore[type-arg]
        """A psycopg connection whose every network wait is bounded (see make_engine)."""

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            try:
                return super().wait(gen, interval, seconds if timeout is None else timeout)
            except wait_timeout as err:
                if type(err) is not wait_timeout:
                    raise
                # The protocol state is unknown mid-message: the connection cannot be reused.
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database did not answer within {seconds:g}s; connection dropped"
                ) from None

    return BoundedConnection


def _install_pg_schema_hook(engine: Engine, schema: str) -> None:
    """Create the service schema once, on the first connection that succeeds."""
    lock = threading.Lock()
    done = False

    @event.listens_for(engine, "connect")
    def _create_schema(dbapi_conn: Any, _record: Any) -> None:
        nonlocal done
        if done:
            return
        with lock:
            if done:
                return
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                dbapi_conn.commit()
            except Exception as err:
                dbapi_conn.rollback()
                # Two processes creating the schema at once: the loser sees a unique violation.
                if getattr(err, "sqlstate", None) not in {"23505", "42P06"}:
                    raise
            finally:
                cur.close()
            done = True


def _install_sqlite_hooks(engine: Engine) -> None:
    """Pragmas per connection; explicit BEGIN IMMEDIATE so SAVEPOINTs and writers behave.

    pysqlite's own transaction handling defers BEGIN and breaks savepoints; taking the write
    lock at BEGIN avoids SQLITE_BUSY when a read transaction later tries to write.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (repositories return them)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def transaction(
    factory: sessionmaker[Session], *, conflict: ArborError | None = None
) -> Iterator[Session]:
    """``with transaction(sf) as s:`` commits on success, rolls back on error, maps DB errors."""
    with db_errors(conflict=conflict), factory.begin() as session:
        yield session


def ping(engine: Engine) -> bool:
    """Health probe: can we run ``SELECT 1`` right now?"""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except Exception as err:
        log.warning("database ping failed: %s", err)
        return False


class WorkAbandoned(DeadlineExceeded):
    """The caller of ``run_db`` went away (deadline, cancellation, shutdown): do not commit."""

    default_reason = "WORK_ABANDONED"


class _Work:
    """One ``run_db`` call as seen from its worker thread."""

    __slots__ = ("abandoned", "fired")

    def __init__(self) -> None:
        self.abandoned = threading.Event()
        self.fired = False


_current_work: contextvars.ContextVar[_Work | None] = contextvars.ContextVar(
    "arbor_db_work", default=None
)


def check_abandoned() -> None:
    """Raise ``WorkAbandoned`` once if the ``run_db`` call running this code was abandoned.

    Engines call it before every commit; long loops (data work between transactions) may call
    it to stop early. After it has fired it stays quiet, so the unwinding code can commit its
    own cleanup.
    """
    work = _current_work.get()
    if work is not None and work.abandoned.is_set() and not work.fired:
        work.fired = True
        raise WorkAbandoned(
            "the caller went away (deadline passed, cancelled or shutting down); "
            "the work was abandoned and nothing was committed"
        )


def _fence_commit(conn: Connection) -> None:
    check_abandoned()


async def run_db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking database code off the event loop (contextvars are carried over).

    If the awaiting call is cancelled (the client's deadline passed, it hung up, or shutdown's
    grace ran out) the thread cannot be stopped, but its work is marked abandoned: its next
    commit raises ``WorkAbandoned`` and rolls back instead of writing for nobody.
    """
    work = _Work()

    def call() -> T:
        token = _current_work.set(work)
        try:
            return fn(*args, **kwargs)
        finally:
            _current_work.reset(token)

    try:
        return await asyncio.to_thread(call)
    except asyncio.CancelledError:
        work.abandoned.set()
        raise


# --------------------------------------------------------------------------- errors

_PG_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300", "53400", "08000", "08001", "08003", "08004"}
_PG_UNAVAILABLE.update({"08006", "08007", "08P01"})
_PG_RETRY = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error")


def _sqlstate(err: exc.DBAPIError) -> str | None:
    return getattr(err.orig, "sqlstate", None)


def is_unique_violation(err: BaseException) -> bool:
    """True for a unique / primary-key violation on PostgreSQL or SQLite."""
    if not isinstance(err, exc.IntegrityError):
        return False
    if _sqlstate(err) == "23505":
        return True
    name = getattr(err.orig, "sqlite_errorname", "")
    if name in {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}:
        return True
    return "UNIQUE constraint failed" in str(err.orig)


def _is_unavailable(err: exc.DBAPIError) -> bool:
    if err.connection_invalidated:
        return True
    state = _sqlstate(err)
    if state is not None:
        return state in _PG_UNAVAILABLE or state.startswith("08")
    if not isinstance(err, exc.OperationalError):
        return isinstance(err, exc.InterfaceError)
    module = type(err.orig).__module__
    if module.startswith("psycopg"):
        return True  # no SQLSTATE: the connection itself failed (refused, timeout, DNS)
    return str(err.orig).lower().startswith(_SQLITE_UNAVAILABLE)


@contextlib.contextmanager
def db_errors(
    *,
    conflict: ArborError | Callable[[exc.IntegrityError], ArborError] | None = None,
) -> Iterator[None]:
    """Translate database failures into Arbor errors; also usable as a decorator.

    - connection refused / lost, admin shutdown, too many clients, SQLite locked -> Unavailable
    - serialization failure, deadlock -> Aborted (the caller may retry the transaction)
    - unique violation -> ``conflict`` (an error instance or a factory) when given;
      otherwise the IntegrityError propagates (it is a bug, not bad input).
    """
    try:
        yield
    except exc.IntegrityError as err:
        if conflict is not None and is_unique_violation(err):
            raise (conflict if isinstance(conflict, ArborError) else conflict(err)) from err
        raise
    except exc.DBAPIError as err:
        if _is_unavailable(err):
            raise Unavailable(
                f"database unavailable: {type(err.orig).__name__}: {_first_line(err.orig)}",
                reason="DATABASE_UNAVAILABLE",
            ) from err
        if _sqlstate(err) in _PG_RETRY:
            raise Aborted(
                "concurrent update conflict; retry the request", reason="DATABASE_CONFLICT"
            ) from err
        raise
    except (exc.TimeoutError, exc.DisconnectionError) as err:
        raise Unavailable(f"database unavailable: {err}", reason="DATABASE_UNAVAILABLE") from err


def _first_line(obj: object) -> str:
    text = str(obj).strip()
    return text.splitlines()[0] if text else ""


def with_db_errors(
    conflict: ArborError | Callable[[exc.IntegrityError], ArborError] | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator form of ``db_errors`` with a typed signature."""

    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> T:
            with db_errors(conflict=conflict):
                return fn(*args, **kwargs)

        return inner

    return wrap


# --------------------------------------------------------------------------- alembic


def _alembic_config(migrations_dir: Path | str, url: str | URL, schema: str) -> Any:
    from alembic.config import Config

    script_location = Path(migrations_dir)
    if not (script_location / "env.py").is_file():
        raise FileNotFoundError(f"no Alembic env.py in {script_location}")
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    rendered = effective_url(url, schema).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    cfg.attributes["arbor_schema"] = schema
    return cfg


@contextlib.contextmanager
def _alembic_run(url: str | URL, schema: str, migrations_dir: Path | str) -> Iterator[Any]:
    cfg = _alembic_config(migrations_dir, url, schema)
    engine = make_engine(url, schema, pool_size=1, max_overflow=0, io_timeout=0)
    try:
        with db_errors(), engine.connect() as conn:
            cfg.attributes["connection"] = conn
            yield cfg
            conn.commit()
    finally:
        engine.dispose()


def upgrade(
    url: str | URL, schema: str, migrations_dir: Path | str, revision: str = "head"
) -> None:
    """Migrate the service schema up to ``revision`` (Alembic, no alembic.ini needed)."""
    from alembic import command

    with _alembic_run(url, schema, migrations_dir) as cfg:
        command.upgrade(cfg, revision)


def downgrade(url: str | URL, schema: str, migrations_dir: Path | str, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` removes every table the migrations created)."""
    from alembic import command

    with _alembic_run(url, schema, migrations_dir) as cfg:
        command.downgrade(cfg, revision)


def current(
    url: str | URL,
    schema: str,
    migrations_dir: Path | str | None = None,
    *,
    version_table: str = "alembic_version",
) -> str | None:
    """The revision the service schema is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url, schema, pool_size=1, max_overflow=0, io_timeout=0)
    try:
        with db_errors(), engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": version_table})
            return ctx.get_current_revision()
    finally:
        engine.dispose()


def revision(
    url: str | URL,
    schema: str,
    migrations_dir: Path | str,
    message: str,
    *,
    autogenerate: bool = True,
    rev_id: str | None = None,
) -> None:
    """Write a new migration script (autogenerated against a database at head) — a dev tool."""
    from alembic import command

    with _alembic_run(url, schema, migrations_dir) as cfg:
        command.revision(cfg, message=message, autogenerate=autogenerate, rev_id=rev_id)


def _is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate never proposes dropping a table the service does not declare.

    A schema may hold tables owned by someone else (Optuna's storage in training's schema);
    dropping one of our own tables is rare enough to write by hand.
    """
    return not (type_ == "table" and reflected and compare_to is None)


def run_alembic_env(
    target_metadata: sa.MetaData | None, *, version_table: str = "alembic_version"
) -> None:
    """The body of every service's ``migrations/env.py``.

    ``env.py`` is just::

        from arbor_core.db import run_alembic_env
        from arbor_split.tables import metadata
        run_alembic_env(metadata)

    With ``upgrade()`` et al. the connection comes from ``config.attributes``; run through the
    alembic CLI it builds an engine from ``sqlalchemy.url`` and the ``arbor_schema`` option.
    The version table lives in the service schema (via search_path), and on PostgreSQL an
    advisory lock keeps replicas that start together from migrating at the same time.
    ``version_table`` renames Alembic's bookkeeping table when another tool already owns
    ``alembic_version`` in the same schema (the training service shares its schema with
    Optuna's storage, which stamps its own).
    """
    from alembic import context

    config = context.config
    schema = config.attributes.get("arbor_schema") or config.get_main_option("arbor_schema")
    if not schema:
        raise RuntimeError("alembic: no arbor_schema configured")
    opts: dict[str, Any] = {
        "target_metadata": target_metadata,
        "render_as_batch": True,  # portable migrations: SQLite needs table rebuilds for ALTER
        "compare_type": True,
        "render_item": _render_item,
        "include_object": _include_object,
        "version_table": version_table,
    }

    if context.is_offline_mode():
        url = config.get_main_option("sqlalchemy.url")
        context.configure(url=url, literal_binds=True, **opts)
        with context.begin_transaction():
            context.run_migrations()
        return

    def run(conn: Connection) -> None:
        # No version_table_schema: search_path already puts the version table in the service
        # schema, and naming the schema would make autogenerate propose dropping that table.
        context.configure(connection=conn, **opts)
        with context.begin_transaction():
            if _is_pg(conn):
                key = zlib.crc32(f"arbor-migrate:{schema}".encode())
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            context.run_migrations()

    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "", schema, io_timeout=0)
    try:
        with engine.connect() as conn:
            run(conn)
            conn.commit()
    finally:
        engine.dispose()
