"""The split service's persistence: SQLAlchemy Core over ``tables.py``, PostgreSQL or SQLite.

Every change of a row is a compare-and-set on its ``revision`` inside a transaction, and events
are staged in the same transaction (outbox), so an event exists exactly when its change
committed. Database failures surface as ``Unavailable`` / ``Aborted`` via ``db_errors``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Engine, Row
from sqlalchemy.orm import Session

from arbor_core.db import db_errors, is_unique_violation, session_factory
from arbor_core.errors import Aborted, AlreadyExists, NotFound
from arbor_core.outbox import add_event
from arbor_split.service import RESOURCE, Replay, SplitRecord
from arbor_split.tables import idempotency, outbox, splits

log = logging.getLogger("arbor.split")

_RECORD_COLUMNS = (
    "split_id",
    "state",
    "display_name",
    "description",
    "labels",
    "source",
    "target_column",
    "task_type",
    "strategy",
    "fractions",
    "seed",
    "columns",
    "parts",
    "null_counts",
    "row_count",
    "content_hash",
    "leakage_report",
    "revision",
    "create_time",
    "update_time",
    "delete_time",
    "purge_time",
)


def _to_row(record: SplitRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _RECORD_COLUMNS}


def _from_row(row: Row[Any]) -> SplitRecord:
    data = row._mapping
    return SplitRecord(**{name: data[name] for name in _RECORD_COLUMNS})


def _execute(session: Session, statement: Any) -> sa.CursorResult[Any]:
    """An UPDATE/DELETE whose ``rowcount`` the caller checks."""
    return cast(sa.CursorResult[Any], session.execute(statement))


def _stale(split_id: str) -> Aborted:
    return Aborted(
        f"etag does not match the current version of splits/{split_id}; read it again and retry",
        reason="ETAG_MISMATCH",
        metadata={"resource_name": f"splits/{split_id}"},
    )


class SqlSplitRepository:
    """``SplitRepository`` on an engine made by ``arbor_core.db.make_engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)

    def _select(self, session: Session, split_id: str, *, lock: bool = False) -> SplitRecord | None:
        query = sa.select(splits).where(splits.c.split_id == split_id)
        if lock and session.bind is not None and session.bind.dialect.name == "postgresql":
            query = query.with_for_update()
        row = session.execute(query).first()
        return _from_row(row) if row is not None else None

    # create ------------------------------------------------------------------
    def lookup_request(self, request_id: str) -> Replay | None:
        with db_errors(), self.sessions() as session:
            row = session.execute(
                sa.select(idempotency.c.split_id, idempotency.c.request_hash).where(
                    idempotency.c.request_id == request_id
                )
            ).first()
        return Replay(row.split_id, row.request_hash) if row is not None else None

    def reserve(self, record: SplitRecord, request_id: str, request_hash: str) -> Replay | None:
        """Insert the CREATING row (and the request id) or say who was first.

        A taken split id is ALREADY_EXISTS; a taken request id (a concurrent replay) returns
        the earlier request's ``Replay``.
        """
        try:
            with db_errors(), self.sessions.begin() as session:
                session.execute(sa.insert(splits).values(**_to_row(record)))
                if request_id:
                    session.execute(
                        sa.insert(idempotency).values(
                            request_id=request_id,
                            split_id=record.split_id,
                            request_hash=request_hash,
                            create_time=record.create_time,
                        )
                    )
        except exc.IntegrityError as err:
            if not is_unique_violation(err):
                raise
            if request_id:
                replay = self.lookup_request(request_id)
                if replay is not None:
                    return replay
            raise AlreadyExists(
                f"split {record.name!r} already exists",
                reason="SPLIT_ALREADY_EXISTS",
                metadata={"resource_name": record.name},
            ) from None
        return None

    def finalize(self, record: SplitRecord, event: Any) -> SplitRecord:
        """CREATING -> READY with every output field, plus the split.created event."""
        values = _to_row(record)
        values.pop("split_id")
        with db_errors(), self.sessions.begin() as session:
            result = _execute(
                session,
                sa.update(splits)
                .where(splits.c.split_id == record.split_id, splits.c.state == "CREATING")
                .values(**values),
            )
            if result.rowcount != 1:
                raise Aborted(
                    f"split {record.name!r} was removed while it was being created",
                    reason="SPLIT_CREATE_INTERRUPTED",
                )
            add_event(session, event, table=outbox)
            stored = self._select(session, record.split_id)
        assert stored is not None
        return stored

    def discard(self, split_id: str) -> None:
        """Delete a CREATING row (and its request id); READY rows are never touched."""
        with db_errors(), self.sessions.begin() as session:
            gone = _execute(
                session,
                sa.delete(splits).where(
                    splits.c.split_id == split_id, splits.c.state == "CREATING"
                ),
            ).rowcount
            if gone:
                session.execute(sa.delete(idempotency).where(idempotency.c.split_id == split_id))

    def stale_creating(self, before: dt.datetime) -> list[str]:
        with db_errors(), self.sessions() as session:
            rows = session.execute(
                sa.select(splits.c.split_id).where(
                    splits.c.state == "CREATING", splits.c.create_time < before
                )
            )
            return [r.split_id for r in rows]

    def lifecycle(self, split_ids: Sequence[str]) -> dict[str, tuple[str, bool]]:
        """``{split_id: (state, purged)}`` of those ids that have a row (the orphan sweep)."""
        found: dict[str, tuple[str, bool]] = {}
        ids = list(split_ids)
        with db_errors(), self.sessions() as session:
            for start in range(0, len(ids), 500):
                rows = session.execute(
                    sa.select(splits.c.split_id, splits.c.state, splits.c.purge_time).where(
                        splits.c.split_id.in_(ids[start : start + 500])
                    )
                )
                found.update({r.split_id: (r.state, r.purge_time is not None) for r in rows})
        return found

    # read ----------------------------------------------------------------------
    def get(self, split_id: str) -> SplitRecord | None:
        with db_errors(), self.sessions() as session:
            return self._select(session, split_id)

    def list_page(
        self,
        states: Sequence[str],
        labels: Mapping[str, str],
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[SplitRecord]:
        """Newest first (create_time, then split_id, descending), after a keyset cursor."""
        query = sa.select(splits).where(splits.c.state.in_(list(states)))
        for key, value in sorted(labels.items()):
            query = query.where(splits.c.labels[key].as_string() == value)
        if after is not None:
            when, split_id = after
            query = query.where(
                sa.or_(
                    splits.c.create_time < when,
                    sa.and_(splits.c.create_time == when, splits.c.split_id < split_id),
                )
            )
        query = query.order_by(splits.c.create_time.desc(), splits.c.split_id.desc()).limit(limit)
        with db_errors(), self.sessions() as session:
            return [_from_row(row) for row in session.execute(query)]

    # update --------------------------------------------------------------------
    def update_metadata(
        self, split_id: str, etag: str, changes: Mapping[str, Any], now: dt.datetime
    ) -> SplitRecord:
        values: dict[str, Any] = {}
        if "display_name" in changes:
            values["display_name"] = changes["display_name"] or ""
        if "description" in changes:
            values["description"] = changes["description"] or ""
        if "labels" in changes:
            values["labels"] = dict(changes["labels"] or {})
        with db_errors(), self.sessions.begin() as session:
            current = self._select(session, split_id, lock=True)
            if current is None or current.state != "READY":
                raise NotFound(RESOURCE, f"splits/{split_id}")
            if etag and etag != current.etag:
                raise _stale(split_id)
            result = _execute(
                session,
                sa.update(splits)
                .where(splits.c.split_id == split_id, splits.c.revision == current.revision)
                .values(**values, revision=current.revision + 1, update_time=now),
            )
            if result.rowcount != 1:
                raise _stale(split_id)
            stored = self._select(session, split_id)
        assert stored is not None
        return stored

    # delete --------------------------------------------------------------------
    def mark_deleted(self, split_id: str, etag: str, now: dt.datetime, event: Any) -> SplitRecord:
        """READY -> DELETED with the split.deleted event, compare-and-set on the revision."""
        with db_errors(), self.sessions.begin() as session:
            current = self._select(session, split_id, lock=True)
            if current is None or current.state != "READY":
                raise NotFound(RESOURCE, f"splits/{split_id}")
            if etag and etag != current.etag:
                raise _stale(split_id)
            result = _execute(
                session,
                sa.update(splits)
                .where(splits.c.split_id == split_id, splits.c.revision == current.revision)
                .values(
                    state="DELETED",
                    delete_time=now,
                    update_time=now,
                    revision=current.revision + 1,
                ),
            )
            if result.rowcount != 1:
                raise _stale(split_id)
            add_event(session, event, table=outbox)
            stored = self._select(session, split_id)
        assert stored is not None
        return stored

    def mark_purged(self, split_id: str, now: dt.datetime, event: Any | None) -> SplitRecord:
        with db_errors(), self.sessions.begin() as session:
            session.execute(
                sa.update(splits)
                .where(splits.c.split_id == split_id, splits.c.state == "DELETED")
                .values(purge_time=now, update_time=now, revision=splits.c.revision + 1)
            )
            if event is not None:
                add_event(session, event, table=outbox)
            stored = self._select(session, split_id)
        if stored is None:
            raise NotFound(RESOURCE, f"splits/{split_id}")
        return stored
