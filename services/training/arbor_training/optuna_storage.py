"""Optuna's RDB storage with fewer round trips per trial, same guarantees.

Plain ``RDBStorage`` (behind Optuna's ``_CachedStorage``) issued ~60 SQL statements and ~20
transactions per trial: one transaction per suggested parameter, three full re-reads of the
trial being run (``Trial.__init__``, ``tell``, the callbacks), three incremental reads of the
study within one ``ask``, a staleness scan per trial and a three-statement heartbeat. On the
2-core machine that was most of the platform's overhead per trial (issue #6). This storage
keeps every row where Optuna puts it (a study stays shareable between workers and resumable
after SIGKILL) and only batches and caches:

* **Parameters** suggested by the worker's own running trial, and the sampler's system
  attributes (``constant_liar``'s relative parameters), are written together, in one
  transaction, by :meth:`ArborStorage.flush` (the objective calls it once the parameters are
  chosen, before fitting, so other workers' ``constant_liar`` sees them while the trial runs;
  a heartbeat flushes too).
* **User attributes and intermediate values** of the own running trial are written in the
  same transaction as its final state (``set_trial_state_values``); its own pruning checks
  read them from memory, and other workers' median pruners only read finished trials. A
  worker killed before that loses nothing that counted: the trial goes stale and is retried,
  as before.
* **The own running trial** is served from memory (this process created it and is its only
  writer; a trial failed meanwhile by another worker's stale check still refuses the final
  write, as before). Once finished it enters the study cache, so the callbacks do not read it.
* **Study reads** within ``read_window`` seconds of the last one are served from the cache
  while :meth:`ArborStorage.coalescing` is on (the trial loop): the sampler's two reads per
  ``ask`` become one. The budget check stays exact: when this worker creates trial ``n`` and
  its cache lacks one of the trials ``0..n-1`` (another worker created it since the last
  read), the next read goes to the database.
* **Stale-trial scans** (Optuna runs one before every trial) run at most once per heartbeat
  interval inside the trial loop: a trial cannot go stale faster than heartbeats are written.
* **Heartbeats** are one upsert on PostgreSQL instead of a read, a lock and a write; the first
  one of a trial goes with its parameters (see ``record_heartbeat``).
* **Statements** are Core statements built once (Optuna's ORM unit of work and per-call
  statement building cost more CPU than the round trips).

It relies on Optuna internals (``_CachedStorage``, ``RDBStorage``'s session helpers and models,
checked with Optuna 5.0); ``tests/training/test_optuna_storage.py`` pins the behaviour.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import json
import threading
import time
from collections.abc import Container, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from optuna import distributions
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects import postgresql, sqlite

#: (name, internal value, distribution, distribution already known for the study or None)
PendingParam = tuple[str, float, distributions.BaseDistribution, Any]


class _Statements:
    """The storage's statements, built once: SQLAlchemy caches a statement's compiled form by
    its structure, but building an upsert per call cost about 1 ms of CPU each."""

    def __init__(self, insert: Any) -> None:
        trials = models.TrialModel.__table__
        params = models.TrialParamModel.__table__
        studies = models.StudyModel.__table__
        values = models.TrialValueModel.__table__
        beats = models.TrialHeartbeatModel.__table__
        trial: Any = sa.bindparam("p_trial")
        study: Any = sa.bindparam("p_study")
        self.lock_trial = (
            sa.select(trials.c.study_id, trials.c.state)
            .where(trials.c.trial_id == trial)
            .with_for_update()
        )
        self.lock_study = (
            sa.select(studies.c.study_id).where(studies.c.study_id == study).with_for_update()
        )
        self.count_trials = (
            sa.select(sa.func.count()).select_from(trials).where(trials.c.study_id == study)
        )
        self.insert_trial = sa.insert(trials)
        self.known_distribution = (
            sa.select(params.c.distribution_json)
            .join(trials, trials.c.trial_id == params.c.trial_id)
            .where(trials.c.study_id == study, params.c.param_name == sa.bindparam("p_name"))
            .limit(1)
        )
        self.insert_params = sa.insert(params)
        self.upsert_user_attr = self._upsert_attr(insert, models.TrialUserAttributeModel)
        self.upsert_system_attr = self._upsert_attr(insert, models.TrialSystemAttributeModel)
        value = insert(values).values(
            trial_id=trial,
            objective=sa.bindparam("p_objective"),
            value=sa.bindparam("p_value", type_=values.c.value.type),
            value_type=sa.bindparam("p_type", type_=values.c.value_type.type),
        )
        self.upsert_value = value.on_conflict_do_update(
            index_elements=[values.c.trial_id, values.c.objective],
            set_={"value": value.excluded.value, "value_type": value.excluded.value_type},
        )
        steps = models.TrialIntermediateValueModel.__table__
        step = insert(steps).values(
            trial_id=trial,
            step=sa.bindparam("p_step"),
            intermediate_value=sa.bindparam("p_value", type_=steps.c.intermediate_value.type),
            intermediate_value_type=sa.bindparam(
                "p_type", type_=steps.c.intermediate_value_type.type
            ),
        )
        self.upsert_step = step.on_conflict_do_update(
            index_elements=[steps.c.trial_id, steps.c.step],
            set_={
                "intermediate_value": step.excluded.intermediate_value,
                "intermediate_value_type": step.excluded.intermediate_value_type,
            },
        )
        self.set_state = (
            sa.update(trials)
            .where(trials.c.trial_id == trial)
            .values(
                state=sa.bindparam("p_state", type_=trials.c.state.type),
                datetime_complete=sa.bindparam("p_complete", type_=trials.c.datetime_complete.type),
            )
        )
        beat = insert(beats).values(trial_id=trial, heartbeat=sa.func.now())
        self.beat = beat.on_conflict_do_update(
            index_elements=[beats.c.trial_id], set_={"heartbeat": sa.func.now()}
        )

    @staticmethod
    def _upsert_attr(insert: Any, model: Any) -> Any:
        table = model.__table__
        statement = insert(table).values(
            trial_id=sa.bindparam("p_trial"),
            key=sa.bindparam("p_key"),
            value_json=sa.bindparam("p_json"),
        )
        return statement.on_conflict_do_update(
            index_elements=[table.c.trial_id, table.c.key],
            set_={"value_json": statement.excluded.value_json},
        )


class ArborRDBStorage(RDBStorage):
    """``RDBStorage`` plus the batched writes :class:`ArborStorage` needs.

    On PostgreSQL and SQLite they are a few Core statements on one connection (Optuna's ORM
    unit of work costs more CPU than the round trips themselves); the rows are Optuna's own.
    """

    def _core(self) -> bool:
        return self.engine.name in ("postgresql", "sqlite")

    @functools.cached_property
    def _sql(self) -> _Statements:
        return _Statements(postgresql.insert if self.engine.name == "postgresql" else sqlite.insert)

    def _locked_state(self, conn: sa.Connection, trial_id: int) -> tuple[int, TrialState]:
        """(study id, state) of a trial, its row locked; refuses a finished trial."""
        row = conn.execute(self._sql.lock_trial, {"p_trial": trial_id}).first()
        if row is None:
            raise KeyError(models.NOT_FOUND_MSG)
        self.check_trial_is_updatable(trial_id, row.state)
        return int(row.study_id), row.state

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        """A new RUNNING trial: its number counted under the study row's lock, as in Optuna."""
        if template_trial is not None or not self._core():
            return super()._create_new_trial(study_id, template_trial)
        sql = self._sql
        start = datetime.datetime.now()
        with self.engine.begin() as conn:
            if conn.execute(sql.lock_study, {"p_study": study_id}).first() is None:
                raise KeyError(models.NOT_FOUND_MSG)
            number = int(conn.execute(sql.count_trials, {"p_study": study_id}).scalar_one())
            result = conn.execute(
                sql.insert_trial,
                {
                    "number": number,
                    "study_id": study_id,
                    "state": TrialState.RUNNING,
                    "datetime_start": start.astimezone(datetime.UTC).replace(tzinfo=None),
                },
            )
            key = result.inserted_primary_key
            assert key is not None
            trial_id = int(key[0])
        return FrozenTrial(
            number=number,
            state=TrialState.RUNNING,
            value=None,
            values=None,
            datetime_start=start,
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=trial_id,
        )

    def set_trial_params(
        self,
        trial_id: int,
        params: Sequence[PendingParam],
        system_attrs: dict[str, Any] | None = None,
        heartbeat: bool = False,
    ) -> None:
        """Several parameters (and system attributes: the sampler's relative parameters that
        ``constant_liar`` shares) of one running trial in one transaction (Optuna: one each)."""
        if not self._core():
            for key, value in (system_attrs or {}).items():
                self.set_trial_system_attr(trial_id, key, value)
            for name, value, distribution, previous in params:
                self._set_trial_param(trial_id, name, value, distribution, previous)
            if heartbeat:
                self.record_heartbeat(trial_id)
            return
        sql = self._sql
        with self.engine.begin() as conn:
            study_id, _ = self._locked_state(conn, trial_id)
            self._upsert_attrs(conn, sql.upsert_system_attr, trial_id, system_attrs)
            if heartbeat:
                conn.execute(sql.beat, {"p_trial": trial_id})
            rows = []
            for name, value, distribution, previous in params:
                if previous is None:
                    known = conn.execute(
                        sql.known_distribution, {"p_study": study_id, "p_name": name}
                    ).scalar()
                    if known is not None:
                        previous = distributions.json_to_distribution(known)
                if previous is not None:
                    distributions.check_distribution_compatibility(previous, distribution)
                rows.append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": value,
                        "distribution_json": distributions.distribution_to_json(distribution),
                    }
                )
            if rows:
                conn.execute(sql.insert_params, rows)

    @staticmethod
    def _upsert_attrs(
        conn: sa.Connection, statement: Any, trial_id: int, attrs: dict[str, Any] | None
    ) -> None:
        for key, value in (attrs or {}).items():
            row = {"p_trial": trial_id, "p_key": key, "p_json": json.dumps(value)}
            conn.execute(statement, row)

    def finish_trial(
        self,
        trial_id: int,
        state: TrialState,
        values: Sequence[float] | None,
        user_attrs: dict[str, Any],
        intermediate: dict[int, float] | None = None,
    ) -> bool:
        """Final state, values and the trial's pending user attributes and intermediate values
        in one transaction."""
        if not self._core():
            for key, value in user_attrs.items():
                self.set_trial_user_attr(trial_id, key, value)
            for step, value in (intermediate or {}).items():
                self.set_trial_intermediate_value(trial_id, step, value)
            return self.set_trial_state_values(trial_id, state, values)
        sql = self._sql
        try:
            with self.engine.begin() as conn:
                self._locked_state(conn, trial_id)
                self._upsert_attrs(conn, sql.upsert_user_attr, trial_id, user_attrs)
                steps = models.TrialIntermediateValueModel
                for step, value in (intermediate or {}).items():
                    at, step_kind = steps.intermediate_value_to_stored_repr(value)
                    row = {"p_trial": trial_id, "p_step": step, "p_value": at, "p_type": step_kind}
                    conn.execute(sql.upsert_step, row)
                for objective, v in enumerate(values or ()):
                    number, kind = models.TrialValueModel.value_to_stored_repr(v)
                    stored = {"p_objective": objective, "p_value": number, "p_type": kind}
                    conn.execute(sql.upsert_value, {"p_trial": trial_id, **stored})
                now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # naive UTC
                done = now if state.is_finished() else None
                conn.execute(
                    sql.set_state, {"p_trial": trial_id, "p_state": state, "p_complete": done}
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def record_heartbeat(self, trial_id: int) -> None:
        """One upsert on PostgreSQL (Optuna: read, lock, write)."""
        if self.engine.name != "postgresql":
            super().record_heartbeat(trial_id)
            return
        with self.engine.begin() as conn:
            conn.execute(self._sql.beat, {"p_trial": trial_id})


class ArborStorage(_CachedStorage):
    """Optuna's cached storage over :class:`ArborRDBStorage`; see the module docstring."""

    def __init__(self, backend: ArborRDBStorage, *, read_window: float = 0.25) -> None:
        super().__init__(backend)
        self._rdb = backend
        self.read_window = read_window
        self._own: dict[int, FrozenTrial] = {}  # running trials this process created
        self._pending_params: dict[int, list[PendingParam]] = {}
        self._pending_attrs: dict[int, dict[str, Any]] = {}
        self._pending_system: dict[int, dict[str, Any]] = {}
        self._pending_steps: dict[int, dict[int, float]] = {}
        self._flushed: set[int] = set()  # own trials whose parameters are written
        self._pending_beats: set[int] = set()  # own trials whose first heartbeat waits
        self._beaten: set[int] = set()  # own trials that had their first heartbeat
        self._last_read: dict[int, float] = {}  # study id -> monotonic time of the last read
        self._last_stale_scan: dict[int, float] = {}
        self._coalescing = threading.local()

    # ---------------------------------------------------------------- plumbing

    @property
    def engine(self) -> sa.Engine:
        return self._rdb.engine

    @property
    def backend(self) -> ArborRDBStorage:
        return self._rdb

    @contextlib.contextmanager
    def coalescing(self) -> Iterator[None]:
        """Within: study reads close together share one database read (this thread)."""
        self._coalescing.on = True
        try:
            yield
        finally:
            self._coalescing.on = False

    def _coalesce(self) -> bool:
        return bool(getattr(self._coalescing, "on", False))

    def flush(self, trial_id: int) -> None:
        """Write the trial's buffered parameters (one transaction)."""
        with self._lock:
            params = self._pending_params.pop(trial_id, None)
            system = self._pending_system.pop(trial_id, None)
            beat = trial_id in self._pending_beats
            self._pending_beats.discard(trial_id)
            if trial_id in self._own:
                self._flushed.add(trial_id)
        if params or system or beat:
            self._rdb.set_trial_params(trial_id, params or [], system, heartbeat=beat)

    # ---------------------------------------------------------------- trials

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        with self._lock:
            study = self._studies[study_id]
            _, number = self._trial_id_to_study_id_and_number[trial_id]
            if not study.trials[number].state.is_finished():
                # Re-read until this process knows it finished (Optuna's cache only tracks the
                # unfinished trials it read itself).
                study.unfinished_trial_ids.add(trial_id)
            if template_trial is None:
                self._own[trial_id] = copy.deepcopy(study.trials[number])
            if len(study.trials) < number + 1:
                # Another worker created trials since the last read: read before relying on
                # the cache (the budget check counts the trials before this one).
                self._last_read.pop(study_id, None)
        return trial_id

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: distributions.BaseDistribution,
    ) -> None:
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
                known = self._studies[study_id].param_distribution
                previous = known.get(param_name)
                if previous is not None:
                    distributions.check_distribution_compatibility(previous, distribution)
                else:
                    known[param_name] = distribution
                self._pending_params.setdefault(trial_id, []).append(
                    (param_name, param_value_internal, distribution, previous)
                )
                own.distributions[param_name] = distribution
                own.params[param_name] = distribution.to_external_repr(param_value_internal)
                return
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                snapshot = json.loads(json.dumps(value))  # as Optuna stores and reads it back
                self._pending_attrs.setdefault(trial_id, {})[key] = snapshot
                own.user_attrs[key] = copy.deepcopy(snapshot)
                return
        super().set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                snapshot = json.loads(json.dumps(value))
                own.system_attrs[key] = copy.deepcopy(snapshot)
                if trial_id not in self._flushed:  # written with the parameters (``flush``)
                    self._pending_system.setdefault(trial_id, {})[key] = snapshot
                    return
        # Later ones (a Hyperband rung) at once: other workers' pruners compare with them.
        super().set_trial_system_attr(trial_id, key, value)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        """An own trial's intermediate values are written with its final state: its pruning
        checks read them from memory (``Trial.should_prune``), other workers' median pruners
        only from finished trials. Optuna wrote one transaction per report."""
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                self._pending_steps.setdefault(trial_id, {})[step] = intermediate_value
                own.intermediate_values[step] = intermediate_value
                return
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with self._lock:
            own = trial_id in self._own
        if state is TrialState.RUNNING and not own:
            # A WAITING trial (enqueued, or a retry) popped by this worker: from here on it is
            # this process's running trial, read once and then served from memory.
            popped = super().set_trial_state_values(trial_id, state, values)
            if popped:
                trial = self._rdb.get_trial(trial_id)
                with self._lock:
                    if trial_id in self._trial_id_to_study_id_and_number:
                        self._own[trial_id] = trial
            return popped
        if not own or not state.is_finished():
            return super().set_trial_state_values(trial_id, state, values)
        with self._lock:  # a finishing trial needs no first heartbeat any more
            self._pending_beats.discard(trial_id)
        self.flush(trial_id)
        with self._lock:
            attrs = self._pending_attrs.pop(trial_id, {})
            steps = self._pending_steps.pop(trial_id, {})
        try:
            done = self._rdb.finish_trial(trial_id, state, values, attrs, steps)
        except Exception:
            with self._lock:  # not written: drop the mirror, the database has the truth
                self._forget(trial_id)
            raise
        with self._lock:
            finished = self._own.get(trial_id)
            self._forget(trial_id)
            if done and finished is not None:
                finished.state = state
                finished.values = list(values) if values is not None else None
                finished.datetime_complete = datetime.datetime.now()
                self._known_finished(finished)
        return done

    def _forget(self, trial_id: int) -> None:
        """Drop what this process kept for a trial it no longer runs (under ``self._lock``)."""
        self._own.pop(trial_id, None)
        self._pending_params.pop(trial_id, None)
        self._pending_system.pop(trial_id, None)
        self._pending_attrs.pop(trial_id, None)
        self._pending_steps.pop(trial_id, None)
        self._flushed.discard(trial_id)
        self._pending_beats.discard(trial_id)
        self._beaten.discard(trial_id)

    def _known_finished(self, trial: FrozenTrial) -> None:
        """Put this process's finished trial in the study cache (under ``self._lock``).

        The next incremental read need not fetch it again: when the cache holds every trial
        numbered up to it (numbers and ids grow together within a study, both assigned under
        the study row's lock), no unseen trial has a smaller id, and every unfinished one is
        in ``unfinished_trial_ids``, so ``last_finished_trial_id`` may move past it.
        """
        study_id, number = self._trial_id_to_study_id_and_number[trial._trial_id]
        study = self._studies[study_id]
        study.trials[number] = trial
        study.unfinished_trial_ids.discard(trial._trial_id)
        if all(n in study.trials for n in range(number)):
            study.last_finished_trial_id = max(study.last_finished_trial_id, trial._trial_id)

    def record_heartbeat(self, trial_id: int) -> None:
        """A beating trial has its parameters written (a trial alive with none looks like the
        orphan of a worker that died before its objective started).

        The first beat of an own trial that has no parameters yet (Optuna's heartbeat thread
        beats as the trial starts, before the objective chose them) waits for the parameters
        and goes in their transaction, a few milliseconds later and before any fitting. A
        worker killed in between leaves a trial without parameters or heartbeat: an orphan,
        failed and retried by the next worker (``StudyRunner.fail_stale``), as before.
        """
        with self._lock:
            own = self._own.get(trial_id)
            first = own is not None and not own.params and trial_id not in self._beaten
            if first:
                self._beaten.add(trial_id)
                self._pending_beats.add(trial_id)
                return
        self.flush(trial_id)
        super().record_heartbeat(trial_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                return copy.deepcopy(own)
        return super().get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        now = time.monotonic()
        with self._lock:
            last = self._last_read.get(study_id)
            fresh = (
                self._coalesce()
                and study_id in self._studies
                and last is not None
                and now - last < self.read_window
            )
        if not fresh:
            self._read_trials_from_remote_storage(study_id)
            with self._lock:
                self._last_read[study_id] = now
        with self._lock:
            trials = self._studies[study_id].trials
            chosen = [t for t in trials.values() if states is None or t.state in states]
            chosen.sort(key=lambda t: t.number)
        return copy.deepcopy(chosen) if deepcopy else chosen

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        interval = self._rdb.heartbeat_interval or 0
        now = time.monotonic()
        with self._lock:
            last = self._last_stale_scan.get(study_id)
            if self._coalesce() and last is not None and now - last < interval:
                return []
            self._last_stale_scan[study_id] = now
        return super()._get_stale_trial_ids(study_id)
