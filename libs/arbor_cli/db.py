"""``arbor db``: each service's Alembic migrations (upgrade, downgrade, current, reset).

Uses ``arbor_core.db``'s runner and the ``migrations/`` directory of each service package,
against the database the service itself would use (``ARBOR_<SVC>_DATABASE_URL``,
``ARBOR_DATABASE_URL``, else SQLite under ``ARBOR_HOME``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer

from arbor_cli._common import JsonOption, console, emit, fail, table
from arbor_client import ArborClientError

app = typer.Typer(
    help="Database migrations of the split, training and registry services.", no_args_is_help=True
)

DB_SERVICES = ("split", "training", "registry")
ServiceOption = Annotated[
    str, typer.Option("--service", "-s", help="split, training, registry or all.")
]
UrlOption = Annotated[
    str | None,
    typer.Option(help="Database URL instead of the service's configured one."),
]


@dataclass(frozen=True)
class Target:
    """One service's database and migrations."""

    service: str
    url: str  # as configured; arbor_core.db derives the per-service SQLite file from it
    effective: Any  # sqlalchemy URL the engine really uses
    home: Path
    migrations: Path
    version_table: str = "alembic_version"

    @property
    def display_url(self) -> str:
        return str(self.effective.render_as_string(hide_password=True))


def migrations_dir(service: str) -> Path:
    """``arbor_<svc>.MIGRATIONS_DIR`` or ``<package>/migrations``; must hold an env.py."""
    try:
        module = importlib.import_module(f"arbor_{service}")
    except ImportError as err:
        raise ArborClientError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"service {service} is not installed: {err}",
            reason="SERVICE_NOT_INSTALLED",
        ) from None
    declared = getattr(module, "MIGRATIONS_DIR", None)
    if declared is not None:
        path = Path(declared)
    else:
        locations = list(getattr(module, "__path__", []))
        path = Path(locations[0]) / "migrations" if locations else Path("migrations")
    if not (path / "env.py").is_file():
        raise ArborClientError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"service {service} has no Alembic migrations at {path}",
            reason="MIGRATIONS_NOT_FOUND",
        )
    return path


def version_table(service: str) -> str:
    """Alembic's bookkeeping table of ``service``: ``VERSION_TABLE`` in its package or its
    ``tables`` module (training renames it, Optuna owns ``alembic_version`` there)."""
    for module_name in (f"arbor_{service}", f"arbor_{service}.tables"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        name = getattr(module, "VERSION_TABLE", None)
        if isinstance(name, str) and name:
            return name
    return "alembic_version"


def targets(service: str, database_url: str | None) -> list[Target]:
    from arbor_core.config import load_settings
    from arbor_core.db import effective_url

    if service == "all":
        names = list(DB_SERVICES)
    elif service in DB_SERVICES:
        names = [service]
    else:
        raise ArborClientError.invalid_argument(
            f"--service must be one of {', '.join(DB_SERVICES)} or all (inference has no database)",
            field="service",
        )
    found = []
    for name in names:
        settings = load_settings(name)
        url = database_url or settings.database_url
        found.append(
            Target(
                name,
                url,
                effective_url(url, name),
                settings.home,
                migrations_dir(name),
                version_table(name),
            )
        )
    return found


def is_development(target: Target) -> bool:
    """SQLite under ARBOR_HOME (or in memory), or a database whose name says dev or test."""
    url = target.effective
    database = url.database or ""
    if url.get_backend_name() == "sqlite":
        if database in {"", ":memory:"} or database.startswith("file:"):
            return True
        return Path(database).resolve().is_relative_to(target.home.resolve())
    lowered = database.lower()
    return "dev" in lowered or "test" in lowered


def head_revision(target: Target) -> str | None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(target.migrations)).get_heads()
    return ",".join(sorted(heads)) if heads else None


def _status(target: Target) -> dict[str, Any]:
    from arbor_core import db

    current = db.current(
        target.url, target.service, target.migrations, version_table=target.version_table
    )
    head = head_revision(target)
    return {
        "service": target.service,
        "database": target.display_url,
        "current": current,
        "head": head,
        "upToDate": current == head,
    }


def _render(statuses: list[dict[str, Any]], title: str) -> None:
    t = table(title, ["service", "database", "current", "head", "status"])
    for s in statuses:
        state = "up to date" if s["upToDate"] else ("empty" if s["current"] is None else "behind")
        t.add_row(s["service"], s["database"], s["current"] or "-", s["head"] or "-", state)
    console().print(t)


@app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    service: ServiceOption = "all",
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    database_url: UrlOption = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Migrate up (to head by default)."""
    from arbor_core import db

    statuses = []
    for target in targets(service, database_url):
        db.upgrade(target.url, target.service, target.migrations, revision)
        statuses.append(_status(target))
    emit(ctx, {"services": statuses}, lambda: _render(statuses, f"upgraded to {revision}"))


@app.command("downgrade")
def downgrade(
    ctx: typer.Context,
    service: ServiceOption = "all",
    revision: Annotated[
        str, typer.Option(help="Target revision: -1 (one step), base (empty) or an id.")
    ] = "-1",
    database_url: UrlOption = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Migrate down (one revision by default)."""
    from arbor_core import db

    statuses = []
    for target in targets(service, database_url):
        db.downgrade(target.url, target.service, target.migrations, revision)
        statuses.append(_status(target))
    emit(ctx, {"services": statuses}, lambda: _render(statuses, f"downgraded to {revision}"))


@app.command("current")
def current(
    ctx: typer.Context,
    service: ServiceOption = "all",
    database_url: UrlOption = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Show each database's revision and the newest one available."""
    statuses = [_status(target) for target in targets(service, database_url)]
    emit(ctx, {"services": statuses}, lambda: _render(statuses, "migrations"))


@app.command("reset")
def reset(
    ctx: typer.Context,
    service: ServiceOption = "all",
    database_url: UrlOption = None,
    yes_really: Annotated[
        bool,
        typer.Option("--yes-really", help="Also reset a database that is not a dev database."),
    ] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Drop every table (downgrade to base) and migrate to head: all data is lost.

    Refused unless the database is a development one (SQLite under ARBOR_HOME, or a name
    containing "dev" or "test") or ``--yes-really`` is given.
    """
    from arbor_core import db

    chosen = targets(service, database_url)
    refused = [t for t in chosen if not is_development(t)]
    if refused and not yes_really:
        names = ", ".join(f"{t.service} ({t.display_url})" for t in refused)
        fail(
            f"refusing to reset {names}: not a development database (SQLite under "
            "ARBOR_HOME, or a database name containing 'dev' or 'test'); pass --yes-really",
            code="FAILED_PRECONDITION",
            reason="NOT_A_DEVELOPMENT_DATABASE",
        )
    statuses = []
    for target in chosen:
        db.downgrade(target.url, target.service, target.migrations, "base")
        db.upgrade(target.url, target.service, target.migrations, "head")
        statuses.append(_status(target))
    emit(ctx, {"services": statuses}, lambda: _render(statuses, "reset to an empty schema at head"))
