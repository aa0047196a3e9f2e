"""The repository on both backends: migrations up and down, idempotent trial recording, the
best trial computed in SQL, the finalizer lease, and jobs staged in the outbox."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from arbor.training.v1 import training_service_pb2
from arbor_core.config import load_settings
from arbor_core.db import make_engine, session_factory
from arbor_ml.types import TaskType
from arbor_training.domain import (
    ExperimentInput,
    Experiments,
    ExperimentState,
    SplitInfo,
    SplitPartInfo,
    TrialRecord,
    TrialState,
)
from arbor_training.repository import TrainingRepository
from arbor_training.server import current_revision, migrate
from arbor_training.study import search_spaces, trial_event
from arbor_training.tables import outbox

SPLIT = SplitInfo(
    name="splits/s1",
    ready=True,
    target_column="y",
    task_type=TaskType.REGRESSION,
    columns={"x": "Float64", "y": "Float64"},
    parts={
        p: SplitPartInfo(p, f"splits/s1/{p}.parquet", "", "0" * 64, 1, 10)
        for p in ("train", "validation")
    },
    content_hash="h",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'arbor.db'}"
    return request.getfixturevalue("pg_url")  # type: ignore[no-any-return]


def _trial(experiment_id: str, number: int, value: float | None, state: TrialState) -> TrialRecord:
    return TrialRecord(experiment_id, number, state, value, {"x": number})


def test_repository_on_both_backends(database_url: str, db_schema: str) -> None:
    settings = dataclasses.replace(load_settings("training"), database_url=database_url)
    if database_url.startswith("postgresql"):
        settings = dataclasses.replace(settings, service=db_schema)  # a schema of its own
    migrate(settings)
    assert current_revision(settings) == "0003"
    engine = make_engine(settings)
    repo = TrainingRepository(session_factory(engine))
    experiments = Experiments(repo)
    try:
        created, fresh = experiments.create(
            ExperimentInput(split="splits/s1", metric="rmse", parallelism=3),
            SPLIT,
            search_spaces,
            request_id="r-1",
        )
        again, fresh_again = experiments.create(
            ExperimentInput(split="splits/s1"), SPLIT, search_spaces, request_id="r-1"
        )
        assert (fresh, fresh_again, again.id) == (True, False, created.id)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(outbox.c.subject, outbox.c.payload)).all()
        jobs = [r for r in rows if r.subject == "arbor.jobs.training"]
        assert len(jobs) == 3  # parallelism 3: three workers may join
        job = training_service_pb2.TrainingJob.FromString(jobs[0].payload)
        assert job.experiment == created.name
        assert [r.subject for r in rows].count("arbor.events.experiment.queued") == 1

        running, started = experiments.start(created.id, worker="w1", attempt=1)
        assert started and running.state is ExperimentState.RUNNING
        _, started_again = experiments.start(created.id, worker="w2", attempt=1)
        assert not started_again

        def record(number: int, value: float | None, state: TrialState) -> object:
            return repo.record_trial(
                _trial(created.id, number, value, state),
                created.spec.direction,
                lambda exp: trial_event(exp, _trial(created.id, number, value, state)),
            )

        record(0, 5.0, TrialState.COMPLETE)
        record(1, 3.0, TrialState.COMPLETE)  # rmse: smaller is better
        record(2, 4.0, TrialState.COMPLETE)
        record(3, None, TrialState.PRUNED)
        record(4, None, TrialState.FAILED)
        assert record(1, 1.0, TrialState.COMPLETE) is None  # recorded once only
        current = experiments.get(created.id)
        assert (current.best_trial_number, current.best_value) == (1, 3.0)
        assert (current.trials_completed, current.trials_pruned, current.trials_failed) == (
            5,
            1,
            1,
        )
        by_value = repo.list_trials(created.id, by_value=created.spec.direction)
        assert [t.number for t in by_value] == [1, 2, 0, 3, 4]

        assert repo.claim_finalizer(created.id, "w1", 30)
        assert not repo.claim_finalizer(created.id, "w2", 30)
        assert repo.claim_finalizer(created.id, "w1", 30)  # renewal
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE experiments SET finalizer_lease_until = :t"),
                {"t": dt.datetime(2000, 1, 1, tzinfo=dt.UTC)},
            )
        assert repo.claim_finalizer(created.id, "w2", 30)  # an expired lease moves

        done = experiments.finish(
            created.id, ExperimentState.SUCCEEDED, model_version="models/m/versions/1"
        )
        assert done.state is ExperimentState.SUCCEEDED and done.end_time is not None
        assert experiments.finish(created.id, ExperimentState.FAILED).state is (
            ExperimentState.SUCCEEDED
        )
    finally:
        engine.dispose()


def test_migrations_go_up_and_down_beside_optunas_tables(database_url: str, db_schema: str) -> None:
    from arbor_core.db import downgrade
    from arbor_training.server import MIGRATIONS_DIR
    from arbor_training.study import StudySettings, open_storage

    settings = dataclasses.replace(load_settings("training"), database_url=database_url)
    if database_url.startswith("postgresql"):
        settings = dataclasses.replace(settings, service=db_schema)
    migrate(settings)
    # The migration created Optuna's tables (0003): a storage opening finds them and stamps
    # nothing; Optuna's alembic_version is its own, ours is apart.
    assert {"studies", "trials", "version_info", "alembic_version"} <= _tables(settings)
    storage = open_storage(database_url, StudySettings(), schema=settings.db_schema)
    assert storage.backend.get_current_version() == storage.backend.get_head_version()
    storage.engine.dispose()
    assert current_revision(settings) == "0003"
    downgrade(settings.database_url, settings.db_schema, MIGRATIONS_DIR, "base")
    assert current_revision(settings) is None
    assert not {"studies", "trials", "alembic_version"} & _tables(settings)
    migrate(settings)
    assert current_revision(settings) == "0003"


def _tables(settings: Any) -> set[str]:
    engine = make_engine(settings)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
