"""Transactional outbox: events are rows written in the same transaction as the change.

A service never publishes to NATS inside a request: it stages the event with ``add_event`` in
the transaction that changes its tables, so the event exists if and only if the change
committed. ``OutboxRelay`` (one asyncio task per service process) publishes pending rows in
order with ``Nats-Msg-Id`` = event id and marks them published; if NATS is down the rows wait
and the relay retries with backoff. A crash between publish and mark re-publishes a row, which
JetStream drops as a duplicate within its 2-minute window (and consumers drop by event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import uuid
import weakref
from dataclasses import dataclass

import nats.errors
import sqlalchemy as sa
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

from arbor_core.db import UtcDateTime, make_metadata, utcnow
from arbor_core.errors import ArborError, InvalidArgument
from arbor_core.events import (
    ProtoEvent,
    connect_nats,
    ensure_streams,
    namespaced,
    publish,
    subject_for_type,
)

log = logging.getLogger(__name__)

OUTBOX_TABLE = "outbox"

__all__ = [
    "OutboxRelay",
    "add_event",
    "notify_relays",
    "outbox_columns",
    "outbox_table",
    "pending_count",
]


def outbox_columns() -> list[sa.schema.SchemaItem]:
    """Fresh columns and indexes of the outbox table, for ``outbox_table`` and migrations.

    In a migration: ``op.create_table("outbox", *outbox_columns())``. Migrations import this,
    so it is frozen: a change to the outbox's shape gets a new migration (and a new function
    for later migrations), never an edit here.
    """
    return [
        # Publication order; the event id is not ordered.
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("published_at", UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        # Explicit names: identical whether created from a service's MetaData (with its naming
        # convention) or from a migration's op.create_table (without one).
        sa.PrimaryKeyConstraint("seq", name="pk_outbox"),
        sa.UniqueConstraint("id", name="uq_outbox_id"),
        sa.Index("ix_outbox_published_at", "published_at"),
    ]


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """Add the ``outbox`` table to a service's own MetaData (no schema, like its other tables)."""
    return sa.Table(OUTBOX_TABLE, metadata, *outbox_columns())


# The same definition on a private MetaData: every service's outbox has this exact shape, so
# statements built from it run against any service's engine (the schema comes from the engine).
_DEFAULT_TABLE = outbox_table(make_metadata())


def add_event(
    session: Session,
    event: ProtoEvent,
    subject: str | None = None,
    *,
    table: sa.Table | None = None,
) -> str:
    """Stage ``event`` in the caller's transaction; return its id.

    ``subject`` is the NATS subject without namespace (the relay adds it); by default it is
    derived from ``event.type`` (``split.created`` -> ``arbor.events.split.created``). An empty
    ``event_id`` is filled with a new UUID. After the transaction commits, every relay in this
    process is woken, so the event leaves within milliseconds instead of the next poll.
    """
    if not event.event_id:
        event.event_id = str(uuid.uuid4())
    if subject is None:
        event_type = getattr(event, "type", "")
        if not event_type:
            raise InvalidArgument("event has no type; pass the subject", field="subject")
        subject = subject_for_type(event_type)
    if len(subject) > 255:
        raise InvalidArgument("subject longer than 255 characters", field="subject")
    target = _DEFAULT_TABLE if table is None else table
    session.execute(
        sa.insert(target).values(
            id=event.event_id,
            subject=subject,
            payload=event.SerializeToString(),
            created_at=utcnow(),
            attempts=0,
        )
    )
    if not session.info.get("arbor_outbox_hook"):
        session.info["arbor_outbox_hook"] = True
        sa_event.listen(session, "after_commit", _after_commit)
    return event.event_id


def _after_commit(session: Session) -> None:
    notify_relays()


def pending_count(session: Session, table: sa.Table | None = None) -> int:
    """How many rows wait to be published (a metric and a test helper)."""
    target = _DEFAULT_TABLE if table is None else table
    query = sa.select(sa.func.count()).select_from(target).where(target.c.published_at.is_(None))
    return int(session.execute(query).scalar_one())


_RELAYS: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()
_RELAYS_LOCK = threading.Lock()


def notify_relays() -> None:
    """Wake every running relay in this process (thread-safe)."""
    with _RELAYS_LOCK:
        relays = list(_RELAYS)
    for relay in relays:
        relay.notify()


@dataclass(frozen=True)
class _Row:
    seq: int
    id: str
    subject: str
    payload: bytes


class OutboxRelay:
    """Publishes a service's outbox rows to JetStream, in order, until stopped.

    ``await relay.start()`` spawns the task; ``await relay.stop()`` ends it. It connects (and
    keeps reconnecting) to ``nats_url``, ensures the streams exist, then loops: publish every
    pending row, sleep until ``notify()`` or ``poll_interval``. Failures (NATS down, database
    down) are logged and retried with exponential backoff up to ``max_backoff``; rows stay
    pending meanwhile. A row that keeps failing blocks the ones after it: order matters more
    than progress, and its ``attempts``/``last_error`` columns say why.

    One relay per service database is the expected deployment; several are safe (duplicates
    are dropped by Nats-Msg-Id) but interleave.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        table: sa.Table | None = None,
        nats_url: str = "nats://127.0.0.1:4222",
        namespace: str = "",
        *,
        name: str = "outbox-relay",
        batch_size: int = 100,
        poll_interval: float = 0.5,
        max_backoff: float = 5.0,
        publish_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        create_streams: bool = True,
        retain_published: dt.timedelta | None = dt.timedelta(days=1),
    ) -> None:
        self.session_factory = session_factory
        self.table = _DEFAULT_TABLE if table is None else table
        self.nats_url = nats_url
        self.namespace = namespace
        self.name = name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.create_streams = create_streams
        self.retain_published = retain_published
        namespaced("x", namespace)  # validates the namespace now, not in the task
        self.published = 0
        self.last_error: str | None = None
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._streams_ready = False
        self._last_purge = 0.0

    # lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name=self.name)
        with _RELAYS_LOCK:
            _RELAYS.add(self)

    async def stop(self) -> None:
        """Stop after the current publish; pending rows stay for the next start."""
        with _RELAYS_LOCK:
            _RELAYS.discard(self)
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(task, timeout=self.publish_timeout + 3)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._close_nats()

    def notify(self) -> None:
        """Wake the relay now (callable from any thread, e.g. a ``run_db`` worker)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is loop:
                wake.set()
                return
        except RuntimeError:
            pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(wake.set)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def healthy(self) -> bool:
        """Health probe: the task runs, NATS is connected and the last pass succeeded."""
        return (
            self._task is not None
            and not self._task.done()
            and self.connected
            and self.last_error is None
        )

    # main loop -------------------------------------------------------------------
    async def run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                await self._ensure_connected()
                count = await self.publish_pending()
                await self._maybe_purge()
                self.last_error = None
                backoff = 0.1
                if count >= self.batch_size:
                    continue  # more waiting: keep going without sleeping
                await self._sleep(self.poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                message = f"{type(err).__name__}: {err}"
                # Once per distinct failure, not once per retry of a long outage.
                level = logging.DEBUG if message == self.last_error else logging.WARNING
                log.log(level, "%s: %s; retrying in %.1fs", self.name, message, backoff)
                self.last_error = message
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _ensure_connected(self) -> JetStreamContext:
        if self._nc is None or self._nc.is_closed:
            self._nc = await connect_nats(
                self.nats_url, name=self.name, timeout=self.connect_timeout
            )
            self._js = self._nc.jetstream(timeout=self.publish_timeout)
            self._streams_ready = False
        if not self._nc.is_connected:
            # Publishing now would only buffer in the client; wait for the reconnect instead.
            raise ConnectionError(f"NATS at {self.nats_url} is not connected")
        assert self._js is not None
        if self.create_streams and not self._streams_ready:
            await ensure_streams(self._js, self.namespace)
            self._streams_ready = True
        return self._js

    async def _close_nats(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    async def publish_pending(self) -> int:
        """One pass: publish up to ``batch_size`` pending rows in order; return how many."""
        js = await self._ensure_connected()
        rows = await asyncio.to_thread(self._fetch_pending)
        done: list[int] = []
        try:
            for row in rows:
                if self._stopping:
                    break
                ack = await publish(
                    js,
                    namespaced(row.subject, self.namespace),
                    row.payload,
                    msg_id=row.id,
                    timeout=self.publish_timeout,
                )
                if ack.duplicate:
                    log.debug("%s: %s was already published", self.name, row.id)
                done.append(row.seq)
        except (nats.errors.Error, TimeoutError, OSError, ArborError) as err:
            failed = rows[len(done)]
            await asyncio.to_thread(self._mark, done, failed.seq, f"{type(err).__name__}: {err}")
            self.published += len(done)
            raise
        if done:
            await asyncio.to_thread(self._mark, done, None, None)
        self.published += len(done)
        return len(done)

    # database (run in a worker thread) ------------------------------------------
    def _fetch_pending(self) -> list[_Row]:
        t = self.table
        query = (
            sa.select(t.c.seq, t.c.id, t.c.subject, t.c.payload)
            .where(t.c.published_at.is_(None))
            .order_by(t.c.seq)
            .limit(self.batch_size)
        )
        with self.session_factory() as session:
            return [_Row(r.seq, r.id, r.subject, bytes(r.payload)) for r in session.execute(query)]

    def _mark(self, done: list[int], failed: int | None, error: str | None) -> None:
        t = self.table
        with self.session_factory.begin() as session:
            if done:
                session.execute(
                    sa.update(t)
                    .where(t.c.seq.in_(done))
                    .values(published_at=utcnow(), attempts=t.c.attempts + 1, last_error=None)
                )
            if failed is not None:
                session.execute(
                    sa.update(t)
                    .where(t.c.seq == failed)
                    .values(attempts=t.c.attempts + 1, last_error=(error or "")[:2000])
                )

    async def _maybe_purge(self) -> None:
        if self.retain_published is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._last_purge < 60:
            return
        self._last_purge = now
        cutoff = utcnow() - self.retain_published
        await asyncio.to_thread(self._purge, cutoff)

    def _purge(self, cutoff: dt.datetime) -> None:
        t = self.table
        with self.session_factory.begin() as session:
            session.execute(sa.delete(t).where(t.c.published_at < cutoff))
