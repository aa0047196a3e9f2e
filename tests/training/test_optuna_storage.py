"""The batching, caching Optuna storage (arbor_training.optuna_storage): what it serves from
memory is what the database holds, two workers' views stay exact, and it costs far fewer
statements per trial than Optuna's own storage. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from arbor_core.config import load_settings
from arbor_training.optuna_storage import ArborStorage
from arbor_training.server import migrate
from arbor_training.study import StudySettings, open_storage, storage_url

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
]


@dataclasses.dataclass
class Db:
    url: str
    schema: str


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path, db_schema: str) -> Iterator[Db]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'arbor.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    settings = dataclasses.replace(load_settings("training"), database_url=url)
    if url.startswith("postgresql"):
        settings = dataclasses.replace(settings, service=db_schema)
    migrate(settings)
    yield Db(url, settings.db_schema)


def _open(db: Db) -> ArborStorage:
    settings = StudySettings(heartbeat_interval=5, grace_period=10)
    return open_storage(db.url, settings, None, db.schema)


def _plain(db: Db) -> optuna.storages.RDBStorage:
    """Optuna's own storage on the same tables (heartbeats on, as the workers use it)."""
    url, kwargs = storage_url(db.url, db.schema)
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=5)


def _objective(storage: Any) -> Any:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        n = trial.suggest_int("n", 1, 9)
        kind = trial.suggest_categorical("kind", ["a", "b"])
        if isinstance(storage, ArborStorage):
            storage.flush(trial._trial_id)
        trial.report(x, 1)
        trial.set_user_attr("arbor", {"kind": kind, "pair": (1, 2.5), "nan": float("nan")})
        if trial.number % 4 == 3:
            raise optuna.TrialPruned("pruned")
        if trial.number % 5 == 4:
            raise ValueError("boom")
        return x * n

    return objective


def _snapshot(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[Any, ...]]:
    return [
        (
            t.number,
            t.state,
            t.values,
            t.params,
            repr(t.user_attrs),  # repr: NaN != NaN
            t.intermediate_values,
            t.system_attrs,
            t.datetime_start is not None,
            t.datetime_complete is not None,
        )
        for t in trials
    ]


def _study(storage: Any, name: str = "s", seed: int = 1) -> optuna.Study:
    return optuna.create_study(
        storage=storage,
        study_name=name,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3, constant_liar=True),
    )


def test_what_it_serves_is_what_the_database_holds(db: Db) -> None:
    storage = _open(db)
    plain = _plain(db)
    try:
        study = _study(storage)
        study.enqueue_trial({"x": 0.5, "n": 3, "kind": "b"})  # a popped WAITING trial too
        seen: list[optuna.trial.FrozenTrial] = []
        for _ in range(10):
            with storage.coalescing():
                study.optimize(
                    _objective(storage),
                    n_trials=1,
                    catch=(ValueError,),
                    callbacks=[lambda _s, t: seen.append(t)],
                )
        stored = _study(plain).get_trials(deepcopy=False)
        assert [t.state for t in stored].count(TrialState.PRUNED) == 2
        assert [t.state for t in stored].count(TrialState.FAIL) == 2
        assert stored[0].params == {"x": 0.5, "n": 3, "kind": "b"}
        # The callbacks got the finished trials as stored, without reading them back.
        assert _snapshot(seen) == _snapshot(stored)
        assert _snapshot(study.get_trials(deepcopy=False)) == _snapshot(stored)
        assert [t.user_attrs["arbor"]["pair"] for t in stored] == [[1, 2.5]] * 10
    finally:
        storage.engine.dispose()
        plain.engine.dispose()


def test_two_workers_views_stay_exact(db: Db) -> None:
    """Interleaved trials of two workers: each one's view, the budget's count of the trials
    before a new one included, is the database's."""
    a, b = _open(db), _open(db)
    plain = _plain(db)
    try:
        sa_, sb = _study(a), _study(b, seed=2)
        t0 = sa_.ask()
        t1 = sb.ask()
        sa_.tell(t0, 1.0)
        t2 = sa_.ask()  # a's view lacks nothing before trial 2
        with a.coalescing():
            assert [t.number for t in sa_._get_trials(deepcopy=False)] == [0, 1, 2]
        sb.tell(t1, 2.0)
        sa_.tell(t2, 3.0)
        # Coalesced reads: a read just now, then b creates two trials, then a creates one.
        with a.coalescing():
            sa_.get_trials(deepcopy=False)
            sb.ask()
            sb.ask()
            t5 = sa_.ask()
            assert t5.number == 5
            assert [t.number for t in sa_.get_trials(deepcopy=False)] == [0, 1, 2, 3, 4, 5]
        for view in (sa_, sb):
            assert _snapshot(view.get_trials(deepcopy=False)) == _snapshot(
                _study(plain).get_trials(deepcopy=False)
            )
    finally:
        for storage in (a, b):
            storage.engine.dispose()
        plain.engine.dispose()


def test_far_fewer_statements_per_trial(db: Db) -> None:
    def statements(storage: Any, engine: sa.Engine, name: str) -> int:
        study = _study(storage, name)
        count = 0

        def counter(*_: Any) -> None:
            nonlocal count
            count += 1

        sa.event.listen(engine, "before_cursor_execute", counter)
        try:
            for _ in range(8):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if isinstance(storage, ArborStorage):
                        with storage.coalescing():
                            study.optimize(_objective(storage), n_trials=1, catch=(ValueError,))
                    else:
                        study.optimize(_objective(storage), n_trials=1, catch=(ValueError,))
        finally:
            sa.event.remove(engine, "before_cursor_execute", counter)
        return count

    storage = _open(db)
    plain = _plain(db)
    try:
        ours = statements(storage, storage.engine, "ours")
        optunas = statements(plain, plain.engine, "optunas")
    finally:
        storage.engine.dispose()
        plain.engine.dispose()
    print(f"statements for 8 trials: {ours} (Optuna's storage: {optunas})")
    assert ours * 2 < optunas, (ours, optunas)
