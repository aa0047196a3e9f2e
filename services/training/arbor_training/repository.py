"""The training service's database access: experiments, recorded trials, outbox rows.

Every method is one transaction. State changes go through :meth:`TrainingRepository.mutate`,
which locks the experiment row, lets the caller decide the change from the current row, bumps
the version (etag) and stages the change's events in the same transaction. The finalizer lease
is one conditional UPDATE, so several workers on one study never finalize it twice.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session, sessionmaker

from arbor.training.v1 import training_service_pb2
from arbor_core.db import db_errors, is_unique_violation, utcnow
from arbor_core.errors import Aborted, AlreadyExists, NotFound
from arbor_core.events import job_subject
from arbor_core.outbox import add_event
from arbor_ml.types import Direction
from arbor_training.domain import (
    JOB_QUEUE,
    Change,
    Control,
    Experiment,
    ExperimentSpec,
    ExperimentState,
    TrialRecord,
    TrialState,
)
from arbor_training.tables import experiment_trials, experiments, outbox

E = experiments.c
T = experiment_trials.c


class _Job:
    """A TrainingJob dressed as an outbox event: the row id becomes its Nats-Msg-Id."""

    def __init__(self, experiment_name: str, trace_parent: str) -> None:
        self.event_id = str(uuid.uuid4())
        self.message = training_service_pb2.TrainingJob(
            experiment=experiment_name, trace_parent=trace_parent
        )

    def SerializeToString(self, **kwargs: Any) -> bytes:
        return self.message.SerializeToString(**kwargs)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """JSON columns refuse NaN/inf (PostgreSQL's JSONB): store them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _experiment(row: Row[Any]) -> Experiment:
    m = row._mapping
    return Experiment(
        id=m["id"],
        spec=ExperimentSpec.from_dict(m["spec"]),
        state=ExperimentState(m["state"]),
        create_time=m["create_time"],
        update_time=m["update_time"],
        request_id=m["request_id"] or "",
        display_name=m["display_name"],
        description=m["description"],
        labels=dict(m["labels"] or {}),
        cancel_requested=bool(m["cancel_requested"]),
        trials_completed=m["trials_completed"],
        trials_pruned=m["trials_pruned"],
        trials_failed=m["trials_failed"],
        best_trial_number=m["best_trial_number"],
        best_value=m["best_value"],
        model_version=m["model_version"],
        metrics={
            k: float(v) if v is not None else math.nan for k, v in (m["metrics"] or {}).items()
        },
        error_message=m["error_message"],
        start_time=m["start_time"],
        end_time=m["end_time"],
        delete_time=m["delete_time"],
        version=m["version"],
        worker=m["worker"],
        attempt=m["attempt"],
        summary=dict(m["summary"] or {}),
    )


def _trial(row: Row[Any]) -> TrialRecord:
    m = row._mapping
    return TrialRecord(
        experiment_id=m["experiment_id"],
        number=m["number"],
        state=TrialState(m["state"]),
        value=m["value"],
        params=dict(m["params"] or {}),
        intermediate_values=[
            (int(step), float(v) if v is not None else math.nan)
            for step, v in (m["intermediate_values"] or [])
        ],
        start_time=m["start_time"],
        end_time=m["end_time"],
        duration_seconds=m["duration_seconds"],
        error_message=m["error_message"],
        model_type=m["model_type"],
        best_iteration=m["best_iteration"],
        fit_seconds=m["fit_seconds"],
        worker=m["worker"],
        fold_values=[float(v) if v is not None else math.nan for v in m["fold_values"] or ()],
        predict_ms_per_1k_rows=m["predict_ms_per_1k_rows"],
    )


def _insert(session: Session) -> Any:
    """The dialect's INSERT (PostgreSQL's or SQLite's), which has ON CONFLICT DO NOTHING."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


@functools.cache
def _record_insert(dialect: str) -> Any:
    """record_trial's insert, built once per dialect (values bound at execution)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(experiment_trials)
        .on_conflict_do_nothing(index_elements=["experiment_id", "number"])
        .returning(T.number)
    )


@functools.cache
def _record_update(kind: str, direction: Direction) -> Any:
    """record_trial's counters-and-best-trial UPDATE for one kind of trial, built once.

    The comparison with the best value happens in SQL, against the row the UPDATE locks, so
    concurrent workers never lose a better trial."""
    changes: dict[str, Any] = {
        "trials_completed": E.trials_completed + 1,
        "version": E.version + 1,
        "update_time": sa.bindparam("p_now", type_=E.update_time.type),
    }
    if kind == "pruned":
        changes["trials_pruned"] = E.trials_pruned + 1
    elif kind == "failed":
        changes["trials_failed"] = E.trials_failed + 1
    elif kind == "complete":
        value = sa.bindparam("p_value", type_=E.best_value.type)
        beats = E.best_value < value if direction is Direction.MAXIMIZE else E.best_value > value
        better = sa.or_(E.best_value.is_(None), beats)
        number = sa.bindparam("p_number", type_=E.best_trial_number.type)
        changes["best_trial_number"] = sa.case((better, number), else_=E.best_trial_number)
        changes["best_value"] = sa.case((better, value), else_=E.best_value)
    return (
        sa.update(experiments)
        .where(E.id == sa.bindparam("p_id"))
        .values(**changes)
        .returning(*experiments.c)
    )


def _not_found(experiment_id: str) -> NotFound:
    return NotFound("experiment", f"experiments/{experiment_id}")


class FinalizerLeaseLost(Aborted):
    """A worker's final write refused: another worker claimed the finalizer lease meanwhile
    (this one stalled past it), so only the new holder may finish the experiment."""

    default_reason = "FINALIZER_LEASE_LOST"

    def __init__(self, experiment_id: str, worker: str, holder: str | None) -> None:
        super().__init__(
            f"worker {worker!r} no longer holds the finalizer lease of experiment "
            f"{experiment_id!r} (held by {holder!r})",
            metadata={"experiment": experiment_id, "worker": worker, "holder": holder or ""},
        )


class TrainingRepository:
    """Experiments and trials in the service's own tables (sync; call through ``run_db``)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    # ------------------------------------------------------------------ reads

    def get(self, experiment_id: str, *, show_deleted: bool = False) -> Experiment:
        with db_errors(), self.session_factory() as session:
            row = session.execute(sa.select(experiments).where(E.id == experiment_id)).first()
        if row is None or (row.delete_time is not None and not show_deleted):
            raise _not_found(experiment_id)
        return _experiment(row)

    def find_by_request_id(self, request_id: str) -> Experiment | None:
        with db_errors(), self.session_factory() as session:
            row = session.execute(sa.select(experiments).where(E.request_id == request_id)).first()
        return None if row is None else _experiment(row)

    def list_experiments(
        self,
        *,
        limit: int,
        after: tuple[dt.datetime, str] | None = None,
        state: ExperimentState | None = None,
        split: str = "",
        model_type: str = "",
        labels: Mapping[str, str] | None = None,
        show_deleted: bool = False,
    ) -> list[Experiment]:
        """Newest first (create_time, id descending), ``limit`` rows after the cursor."""
        query = sa.select(experiments)
        if not show_deleted:
            query = query.where(E.delete_time.is_(None))
        if state is not None:
            query = query.where(E.state == state.value)
        if split:
            query = query.where(E.split == split)
        if model_type:
            query = query.where(E.model_type == model_type)
        for key, value in (labels or {}).items():
            query = query.where(E.labels[key].as_string() == value)
        if after is not None:
            time, ident = after
            query = query.where(
                sa.or_(E.create_time < time, sa.and_(E.create_time == time, E.id < ident))
            )
        query = query.order_by(E.create_time.desc(), E.id.desc()).limit(limit)
        with db_errors(), self.session_factory() as session:
            return [_experiment(row) for row in session.execute(query)]

    def list_trials(
        self,
        experiment_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        state: TrialState | None = None,
        by_value: Direction | None = None,
    ) -> list[TrialRecord]:
        """By number, or by value (best first for ``by_value``; no value last)."""
        query = sa.select(experiment_trials).where(T.experiment_id == experiment_id)
        if state is not None:
            query = query.where(T.state == state.value)
        if by_value is not None:
            order = T.value.desc() if by_value is Direction.MAXIMIZE else T.value.asc()
            query = query.order_by(T.value.is_(None), order, T.number)
        else:
            query = query.order_by(T.number)
        query = query.offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with db_errors(), self.session_factory() as session:
            return [_trial(row) for row in session.execute(query)]

    def trials(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], TrialRecord]:
        """Trials by (experiment id, number), in one query (best trials of a page)."""
        if not keys:
            return {}
        query = sa.select(experiment_trials).where(
            sa.or_(*(sa.and_(T.experiment_id == e, T.number == n) for e, n in keys))
        )
        with db_errors(), self.session_factory() as session:
            found = [_trial(row) for row in session.execute(query)]
        return {(t.experiment_id, t.number): t for t in found}

    def trial_numbers(self, experiment_id: str) -> set[int]:
        with db_errors(), self.session_factory() as session:
            rows = session.execute(sa.select(T.number).where(T.experiment_id == experiment_id))
            return {int(r[0]) for r in rows}

    def control(self, experiment_id: str) -> Control:
        with db_errors(), self.session_factory() as session:
            row = session.execute(
                sa.select(E.state, E.cancel_requested, E.delete_time).where(E.id == experiment_id)
            ).first()
        if row is None:
            raise _not_found(experiment_id)
        return Control(
            ExperimentState(row.state), bool(row.cancel_requested), row.delete_time is not None
        )

    # ------------------------------------------------------------------ writes

    def create(
        self,
        experiment: Experiment,
        events: Iterable[Any],
        *,
        jobs: int,
        trace_parent: str = "",
    ) -> tuple[Experiment, bool]:
        """Insert ``experiment`` with its events and ``jobs`` TrainingJob outbox rows.

        Returns ``(experiment, created)``: a repeated request_id returns the first experiment
        (``created`` False); an experiment id in use is ``AlreadyExists``.
        """
        values = {
            "id": experiment.id,
            "request_id": experiment.request_id or None,
            "display_name": experiment.display_name,
            "description": experiment.description,
            "labels": experiment.labels,
            "split": experiment.spec.split,
            "model_type": experiment.spec.model_type,
            "spec": json_safe(experiment.spec.to_dict()),
            "state": experiment.state.value,
            "metrics": {},
            "version": experiment.version,
            "create_time": experiment.create_time,
            "update_time": experiment.update_time,
        }
        try:
            with db_errors(), self.session_factory.begin() as session:
                session.execute(sa.insert(experiments).values(**values))
                for event in events:
                    add_event(session, event, table=outbox)
                for _ in range(jobs):
                    self._enqueue(session, experiment.name, trace_parent)
        except sa.exc.IntegrityError as err:
            if not is_unique_violation(err):
                raise
            if experiment.request_id:
                existing = self.find_by_request_id(experiment.request_id)
                if existing is not None:
                    return existing, False
            raise AlreadyExists(
                f"experiment {experiment.id!r} already exists",
                reason="EXPERIMENT_ALREADY_EXISTS",
                metadata={"resource_name": experiment.name},
            ) from err
        return self.get(experiment.id), True

    @staticmethod
    def _enqueue(session: Session, experiment_name: str, trace_parent: str) -> None:
        job = _Job(experiment_name, trace_parent)
        add_event(session, job, subject=job_subject(JOB_QUEUE), table=outbox)

    def mutate(
        self,
        experiment_id: str,
        decide: Callable[[Experiment], Change | None],
        *,
        show_deleted: bool = False,
        finalizer: str | None = None,
    ) -> Experiment:
        """Lock the row, ask ``decide`` for a change, write it (version + 1) with its events.

        ``decide`` may raise (a precondition) or return None (nothing to do). ``finalizer``
        fences a finalizing worker's write: it lands only while the row still names that
        worker as its finalizer (no one claimed the lease since), else ``FinalizerLeaseLost``.
        """
        with db_errors(), self.session_factory.begin() as session:
            row = session.execute(
                sa.select(experiments).where(E.id == experiment_id).with_for_update()
            ).first()
            if row is None or (row.delete_time is not None and not show_deleted):
                raise _not_found(experiment_id)
            if finalizer is not None and row.finalizer != finalizer:
                raise FinalizerLeaseLost(experiment_id, finalizer, row.finalizer)
            current = _experiment(row)
            change = decide(current)
            if change is None:
                return current
            values = dict(change.values)
            for key in ("metrics", "labels", "summary"):
                if key in values:
                    values[key] = json_safe(values[key])
            values["version"] = E.version + 1
            values["update_time"] = utcnow()
            session.execute(sa.update(experiments).where(E.id == experiment_id).values(**values))
            for event in change.events:
                add_event(session, event, table=outbox)
            row = session.execute(sa.select(experiments).where(E.id == experiment_id)).one()
            return _experiment(row)

    # ------------------------------------------------------------------ workers

    def record_trial(
        self,
        trial: TrialRecord,
        direction: Direction,
        make_event: Callable[[Experiment], Any],
    ) -> Experiment | None:
        """Record a finished trial once: counters, best trial and its event in one transaction.

        Three statements on the hot path of every trial: the insert (a no-op for a number
        already recorded), the counters and best trial as one UPDATE (the row lock orders
        concurrent workers; the comparison with the best value happens in SQL, against the
        locked row), and the outbox row. Returns the updated experiment, or None when the
        trial was already recorded.
        """
        values = {
            "experiment_id": trial.experiment_id,
            "number": trial.number,
            "state": trial.state.value,
            "value": _finite(trial.value),
            "params": json_safe(trial.params),
            "intermediate_values": json_safe([list(p) for p in trial.intermediate_values]),
            "start_time": trial.start_time,
            "end_time": trial.end_time,
            "duration_seconds": trial.duration_seconds,
            "fit_seconds": trial.fit_seconds,
            "error_message": trial.error_message[:4000],
            "model_type": trial.model_type,
            "best_iteration": trial.best_iteration,
            "worker": trial.worker,
            "create_time": utcnow(),
            "fold_values": json_safe(list(trial.fold_values)),
            "predict_ms_per_1k_rows": _finite(trial.predict_ms_per_1k_rows),
        }
        value = _finite(trial.value)
        if trial.state is TrialState.PRUNED:
            kind = "pruned"
        elif trial.state is TrialState.FAILED:
            kind = "failed"
        else:
            kind = "complete" if value is not None else "no_value"
        with db_errors(), self.session_factory.begin() as session:
            conn = session.connection()  # Core statements: no ORM execution path
            inserted = conn.execute(_record_insert(conn.dialect.name), values).first()
            if inserted is None:
                return None
            row = conn.execute(
                _record_update(kind, direction),
                {
                    "p_id": trial.experiment_id,
                    "p_now": utcnow(),
                    "p_number": trial.number,
                    "p_value": value,
                },
            ).first()
            if row is None:
                raise _not_found(trial.experiment_id)
            updated = _experiment(row)
            add_event(session, make_event(updated), table=outbox)
            return updated

    def claim_finalizer(self, experiment_id: str, owner: str, lease_seconds: float) -> bool:
        """Become the one worker that refits and registers (or renew the claim)."""
        now = utcnow()
        with db_errors(), self.session_factory.begin() as session:
            result = session.execute(
                sa.update(experiments)
                .where(
                    E.id == experiment_id,
                    E.state == ExperimentState.RUNNING.value,
                    sa.or_(
                        E.finalizer.is_(None),
                        E.finalizer == owner,
                        E.finalizer_lease_until < now,
                    ),
                )
                .values(
                    finalizer=owner,
                    finalizer_lease_until=now + dt.timedelta(seconds=lease_seconds),
                )
            )
            return bool(cast(sa.CursorResult[Any], result).rowcount)
