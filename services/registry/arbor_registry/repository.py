"""The registry's persistence: SQLAlchemy Core over ``tables.py``, PostgreSQL or SQLite.

``SqlRegistryStore.run`` executes one domain unit in a transaction and retries it when the
database reports a lost race: a unique violation (two first registrations of one model name,
one request_id twice, a second PRODUCTION row), a compare-and-set update that matched no row
(``Conflict``), or a PostgreSQL deadlock / serialization failure. Every mutation of a row is a
compare-and-set on its ``revision`` (or, for the version counter, on ``latest_version``), so a
race can only ever cost a retry, never a duplicate or a lost update. On PostgreSQL the model row
is also locked (``SELECT ... FOR UPDATE``) so that writers of one model queue instead of
retrying; SQLite serializes writers itself (``BEGIN IMMEDIATE`` in arbor_core.db).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Engine, Row
from sqlalchemy.orm import Session, sessionmaker

from arbor.events.v1 import events_pb2
from arbor_core.db import db_errors, is_unique_violation, session_factory
from arbor_core.errors import Aborted, InvalidArgument
from arbor_core.outbox import add_event
from arbor_core.pagination import clamp_page_size, decode_page_token, encode_page_token
from arbor_core.pagination import filter_fingerprint as fingerprint
from arbor_registry.domain import (
    Conflict,
    InputColumn,
    ModelRecord,
    ModelVersionRecord,
    NewVersion,
    Page,
    PromotionGate,
    Signature,
    Stage,
)
from arbor_registry.tables import model_aliases, model_versions, models, outbox

log = logging.getLogger("arbor.registry")

T = TypeVar("T")

MAX_ATTEMPTS = 12

mv = model_versions
m = models
al = model_aliases


def _signature_to_json(sig: Signature) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": c.name, "dtype": c.dtype, "nullable": c.nullable, "categorical": c.categorical}
            for c in sig.inputs
        ],
        "class_labels": list(sig.class_labels),
        "label_dtype": sig.label_dtype,
    }


def _signature_from_json(data: Mapping[str, Any]) -> Signature:
    return Signature(
        inputs=tuple(
            InputColumn(
                name=c["name"],
                dtype=c.get("dtype", ""),
                nullable=bool(c.get("nullable", False)),
                categorical=bool(c.get("categorical", False)),
            )
            for c in data.get("inputs", [])
        ),
        class_labels=tuple(data.get("class_labels", [])),
        label_dtype=data.get("label_dtype", ""),
    )


_VERSION_COLUMNS = [*mv.c, m.c.name.label("model_name")]


def _version_select() -> sa.Select[Any]:
    return sa.select(*_VERSION_COLUMNS).select_from(mv.join(m, mv.c.model_id == m.c.id))


def _version_from_row(row: Row[Any], aliases: tuple[str, ...] = ()) -> ModelVersionRecord:
    r = row._mapping
    data = NewVersion(
        model=r["model_name"],
        experiment=r["experiment"] or "",
        best_trial_number=r["best_trial_number"],
        split=r["split"] or "",
        split_content_hash=r["split_content_hash"],
        model_type=r["model_type"],
        task_type=r["task_type"],
        metrics=dict(r["metrics"] or {}),
        params=dict(r["params"] or {}),
        signature=_signature_from_json(r["signature"] or {}),
        artifact_uri=r["artifact_uri"],
        artifact_checksums=dict(r["artifact_checksums"] or {}),
        library_versions=dict(r["library_versions"] or {}),
        labels=dict(r["labels"] or {}),
        description=r["description"],
        training_rows=r["training_rows"],
    )
    return ModelVersionRecord(
        id=r["id"],
        model_id=r["model_id"],
        model=r["model_name"],
        version=r["version"],
        data=data,
        stage=Stage(r["stage"]),
        revision=r["revision"],
        request_id=r["request_id"],
        create_time=r["create_time"],
        update_time=r["update_time"],
        delete_time=r["delete_time"],
        purge_time=r["purge_time"],
        aliases=aliases,
    )


def _with_aliases(session: Session, rows: list[Row[Any]]) -> list[ModelVersionRecord]:
    ids = [row.id for row in rows]
    names: dict[int, list[str]] = {}
    if ids:
        query = sa.select(al.c.version_id, al.c.alias).where(al.c.version_id.in_(ids))
        for version_id, alias in session.execute(query.order_by(al.c.alias)):
            names.setdefault(version_id, []).append(alias)
    return [_version_from_row(row, tuple(names.get(row.id, ()))) for row in rows]


def _models_from_rows(session: Session, rows: list[Row[Any]]) -> list[ModelRecord]:
    """Models with their PRODUCTION version and aliases, in two queries for the whole page."""
    ids = [row.id for row in rows]
    production: dict[int, int] = {}
    aliases: dict[int, dict[str, int]] = {}
    if ids:
        production = {
            model_id: version
            for model_id, version in session.execute(
                sa.select(mv.c.model_id, mv.c.version).where(
                    mv.c.model_id.in_(ids),
                    mv.c.stage == Stage.PRODUCTION.value,
                    mv.c.delete_time.is_(None),
                )
            )
        }
        for model_id, alias, version in session.execute(
            sa.select(al.c.model_id, al.c.alias, mv.c.version)
            .select_from(al.join(mv, al.c.version_id == mv.c.id))
            .where(al.c.model_id.in_(ids))
        ):
            aliases.setdefault(model_id, {})[alias] = version
    return [
        ModelRecord(
            id=r.id,
            name=r.name,
            description=r.description,
            labels=dict(r.labels or {}),
            latest_version=r.latest_version,
            create_time=r.create_time,
            update_time=r.update_time,
            delete_time=r.delete_time,
            production_version=production.get(r.id, 0),
            aliases=aliases.get(r.id, {}),
            promotion_gate=PromotionGate.from_json(r.promotion_gate) if r.promotion_gate else None,
        )
        for r in rows
    ]


class SqlTx:
    """``domain.RegistryTx`` over one SQLAlchemy session (one database transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _one_version(self, query: sa.Select[Any]) -> ModelVersionRecord | None:
        rows = list(self.session.execute(query))
        return _with_aliases(self.session, rows)[0] if rows else None

    # models ------------------------------------------------------------------------------------
    def get_model(self, name: str, *, lock: bool = False) -> ModelRecord | None:
        query = sa.select(m).where(m.c.name == name)
        if lock:
            query = query.with_for_update()
        row = self.session.execute(query).first()
        return None if row is None else _models_from_rows(self.session, [row])[0]

    def insert_model(self, name: str, labels: Mapping[str, str], now: datetime) -> ModelRecord:
        self.session.execute(
            sa.insert(m).values(
                name=name,
                description="",
                labels=dict(labels),
                latest_version=0,
                create_time=now,
                update_time=now,
            )
        )
        created = self.get_model(name, lock=True)
        assert created is not None
        return created

    def update_model(
        self,
        model: ModelRecord,
        now: datetime,
        *,
        latest_version: int | None = None,
        labels: Mapping[str, str] | None = None,
        delete_time: datetime | None = None,
        undelete: bool = False,
    ) -> None:
        values: dict[str, Any] = {"update_time": now}
        query = sa.update(m).where(m.c.id == model.id)
        if latest_version is not None:
            values["latest_version"] = latest_version
            query = query.where(m.c.latest_version == model.latest_version)
        if labels is not None:
            values["labels"] = dict(labels)
        if delete_time is not None:
            values["delete_time"] = delete_time
        if undelete:
            values["delete_time"] = None
        if self.session.execute(query.values(**values)).rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"model {model.name} changed concurrently")

    def set_promotion_gate(
        self, model: ModelRecord, gate: Mapping[str, Any] | None, now: datetime
    ) -> None:
        query = (
            sa.update(m)
            .where(m.c.id == model.id)
            .values(promotion_gate=None if gate is None else dict(gate), update_time=now)
        )
        if self.session.execute(query).rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"model {model.name} changed concurrently")

    # versions ----------------------------------------------------------------------------------
    def version_by_request_id(self, request_id: str) -> ModelVersionRecord | None:
        return self._one_version(_version_select().where(mv.c.request_id == request_id))

    def live_version_by_experiment(self, experiment: str) -> ModelVersionRecord | None:
        return self._one_version(
            _version_select().where(mv.c.experiment == experiment, mv.c.delete_time.is_(None))
        )

    def get_version(self, model_id: int, version: int) -> ModelVersionRecord | None:
        return self._one_version(
            _version_select().where(mv.c.model_id == model_id, mv.c.version == version)
        )

    def production_version(self, model_id: int) -> ModelVersionRecord | None:
        return self._one_version(
            _version_select().where(
                mv.c.model_id == model_id,
                mv.c.stage == Stage.PRODUCTION.value,
                mv.c.delete_time.is_(None),
            )
        )

    def versions(
        self, model_id: int, *, deleted: bool | None, limit: int | None = None
    ) -> list[ModelVersionRecord]:
        query = _version_select().where(mv.c.model_id == model_id).limit(limit)
        if deleted is True:
            query = query.where(mv.c.delete_time.is_not(None))
        elif deleted is False:
            query = query.where(mv.c.delete_time.is_(None))
        rows = list(self.session.execute(query.order_by(mv.c.version.desc())))
        return _with_aliases(self.session, rows)

    def insert_version(
        self,
        model: ModelRecord,
        version: int,
        data: NewVersion,
        request_id: str | None,
        now: datetime,
    ) -> ModelVersionRecord:
        self.session.execute(
            sa.insert(mv).values(
                model_id=model.id,
                version=version,
                request_id=request_id,
                experiment=data.experiment or None,
                best_trial_number=data.best_trial_number,
                split=data.split or None,
                split_content_hash=data.split_content_hash,
                model_type=data.model_type,
                task_type=data.task_type,
                metrics=dict(data.metrics),
                params=dict(data.params),
                signature=_signature_to_json(data.signature),
                artifact_uri=data.artifact_uri,
                artifact_checksums=dict(data.artifact_checksums),
                library_versions=dict(data.library_versions),
                labels=dict(data.labels),
                description=data.description,
                training_rows=data.training_rows,
                stage=Stage.NONE.value,
                revision=1,
                create_time=now,
                update_time=now,
            )
        )
        created = self.get_version(model.id, version)
        assert created is not None
        return created

    def update_version(
        self,
        version: ModelVersionRecord,
        now: datetime,
        *,
        stage: Stage | None = None,
        delete_time: datetime | None = None,
        purge_time: datetime | None = None,
    ) -> ModelVersionRecord:
        values: dict[str, Any] = {"update_time": now, "revision": version.revision + 1}
        if stage is not None:
            values["stage"] = stage.value
        if delete_time is not None:
            values["delete_time"] = delete_time
        if purge_time is not None:
            values["purge_time"] = purge_time
        result = self.session.execute(
            sa.update(mv)
            .where(mv.c.id == version.id, mv.c.revision == version.revision)
            .values(**values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"{version.name} changed concurrently")
        return replace(
            version,
            stage=stage or version.stage,
            revision=version.revision + 1,
            update_time=now,
            delete_time=delete_time or version.delete_time,
            purge_time=purge_time or version.purge_time,
            aliases=() if delete_time is not None else version.aliases,
        )

    def live_versions_sharing_uri(self, artifact_uri: str, exclude_ids: set[int]) -> list[str]:
        """Names of live versions whose bundle contains, equals or lies inside this one."""
        base = artifact_uri.rstrip("/")
        parents: list[str] = []
        cut = base.rfind("/")
        while cut > 0:
            parents += [base[:cut], base[: cut + 1]]
            cut = base.rfind("/", 0, cut)
        query = (
            sa.select(m.c.name, mv.c.version)
            .select_from(mv.join(m, mv.c.model_id == m.c.id))
            .where(
                mv.c.delete_time.is_(None),
                sa.or_(
                    mv.c.artifact_uri.in_([base, base + "/", *parents]),
                    mv.c.artifact_uri.startswith(base + "/", autoescape=True),
                ),
            )
        )
        if exclude_ids:
            query = query.where(mv.c.id.not_in(exclude_ids))
        return [f"models/{n}/versions/{v}" for n, v in self.session.execute(query.limit(5))]

    # aliases -----------------------------------------------------------------------------------
    def set_alias(self, model_id: int, alias: str, version_id: int, now: datetime) -> int:
        current = self.session.execute(
            sa.select(al.c.id, mv.c.version, al.c.version_id)
            .select_from(al.join(mv, al.c.version_id == mv.c.id))
            .where(al.c.model_id == model_id, al.c.alias == alias)
        ).first()
        if current is None:
            self.session.execute(
                sa.insert(al).values(
                    model_id=model_id,
                    alias=alias,
                    version_id=version_id,
                    create_time=now,
                    update_time=now,
                )
            )
            return 0
        if current.version_id != version_id:
            result = self.session.execute(
                sa.update(al)
                .where(al.c.id == current.id, al.c.version_id == current.version_id)
                .values(version_id=version_id, update_time=now)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(f"alias {alias} moved concurrently")
        return int(current.version)

    def delete_alias(self, model_id: int, alias: str) -> int | None:
        current = self.session.execute(
            sa.select(al.c.id, mv.c.version)
            .select_from(al.join(mv, al.c.version_id == mv.c.id))
            .where(al.c.model_id == model_id, al.c.alias == alias)
        ).first()
        if current is None:
            return None
        if self.session.execute(sa.delete(al).where(al.c.id == current.id)).rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"alias {alias} removed concurrently")
        return int(current.version)

    def delete_aliases_of_version(self, version_id: int) -> list[str]:
        names = list(
            self.session.execute(
                sa.select(al.c.alias).where(al.c.version_id == version_id).order_by(al.c.alias)
            ).scalars()
        )
        if names:
            self.session.execute(sa.delete(al).where(al.c.version_id == version_id))
        return names

    # events ------------------------------------------------------------------------------------
    def add_event(self, event: events_pb2.Event) -> None:
        add_event(self.session, event, table=outbox)


class SqlRegistryStore:
    """``domain.RegistryStore`` on an engine (PostgreSQL schema ``registry`` or a SQLite file)."""

    def __init__(self, engine: Engine, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.engine = engine
        self.sessions: sessionmaker[Session] = session_factory(engine)
        self.max_attempts = max_attempts

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        with db_errors(), self.sessions.begin() as session:
            yield SqlTx(session)

    def run(self, unit: Callable[[SqlTx], T]) -> T:
        """Run ``unit`` in a transaction, retrying lost races with jittered backoff."""
        delay = 0.005
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self.transaction() as tx:
                    return unit(tx)
            except Conflict as err:
                why = str(err)
            except exc.IntegrityError as err:
                if not is_unique_violation(err):
                    raise
                why = "unique violation"
            except Aborted as err:
                if err.reason != "DATABASE_CONFLICT":
                    raise
                why = err.message
            log.debug("retrying after a lost race (attempt %d): %s", attempt, why)
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.25)
        raise Aborted(
            "too many concurrent changes to this model; retry the request",
            reason="CONCURRENT_MODIFICATION",
        )

    # listings ----------------------------------------------------------------------------------
    def list_models(
        self,
        page_size: int,
        page_token: str,
        label_filter: Mapping[str, str],
        show_deleted: bool,
    ) -> Page[ModelRecord]:
        size = clamp_page_size(page_size)
        fp = fingerprint("models", sorted(label_filter.items()), show_deleted)
        after = decode_page_token(page_token, fp)
        if after is not None and not isinstance(after, str):
            raise InvalidArgument("page_token holds no model name", field="page_token")
        query = sa.select(m)
        for key, value in sorted(label_filter.items()):
            query = query.where(m.c.labels[key].as_string() == value)
        if not show_deleted:
            query = query.where(m.c.delete_time.is_(None))
        if after is not None:
            query = query.where(m.c.name > after)
        with self.transaction() as tx:
            rows = list(tx.session.execute(query.order_by(m.c.name).limit(size + 1)))
            items = _models_from_rows(tx.session, rows[:size])
        token = encode_page_token(items[-1].name, fp) if len(rows) > size else ""
        return Page(items, token)

    def list_versions(
        self,
        model_id: int,
        page_size: int,
        page_token: str,
        stage: Stage | None,
        show_deleted: bool,
    ) -> Page[ModelVersionRecord]:
        size = clamp_page_size(page_size)
        fp = fingerprint("versions", model_id, stage.value if stage else "", show_deleted)
        before = decode_page_token(page_token, fp)
        if before is not None and (not isinstance(before, int) or isinstance(before, bool)):
            raise InvalidArgument("page_token holds no version", field="page_token")
        query = _version_select().where(mv.c.model_id == model_id)
        if stage is not None:
            query = query.where(mv.c.stage == stage.value)
        if not show_deleted:
            query = query.where(mv.c.delete_time.is_(None))
        if before is not None:
            query = query.where(mv.c.version < before)
        with self.transaction() as tx:
            rows = list(tx.session.execute(query.order_by(mv.c.version.desc()).limit(size + 1)))
            items = _with_aliases(tx.session, rows[:size])
        token = encode_page_token(items[-1].version, fp) if len(rows) > size else ""
        return Page(items, token)

    def resolve(
        self,
        *,
        model: str | None = None,
        version: int | None = None,
        experiment: str | None = None,
        stage: Stage | None = None,
        alias: str | None = None,
    ) -> ModelVersionRecord | None:
        """The live version a selector names; for a stage other than PRODUCTION, the newest."""
        query = _version_select().where(mv.c.delete_time.is_(None), m.c.delete_time.is_(None))
        if experiment is not None:
            query = query.where(mv.c.experiment == experiment)
        elif model is None:
            return None
        else:
            query = query.where(m.c.name == model)
            if version is not None:
                query = query.where(mv.c.version == version)
            elif stage is not None:
                query = query.where(mv.c.stage == stage.value)
            elif alias is not None:
                query = query.join(al, al.c.version_id == mv.c.id).where(al.c.alias == alias)
            else:
                return None
        with self.transaction() as tx:
            return tx._one_version(query.order_by(mv.c.version.desc()).limit(1))
