"""The Optuna study runner: trials on a shared RDB study, then the refit of the best one.

How a study survives workers dying and is shared by several of them:

* **Storage.** Optuna's ``RDBStorage`` on the service's own database (on PostgreSQL in the
  ``training`` schema, through the ``search_path`` connect option); the study name is the
  experiment id, and every worker opens it with ``load_if_exists``. Finished trials live
  there, so a worker that picks up a redelivered job resumes the same study.
* **Budget.** ``n_trials`` is counted in the storage, so every worker sees the same count: the
  first ``n_trials`` trials by number that *count* make the study (a trial counts unless it was
  failed by the heartbeat check or discarded). Each worker runs one trial per
  ``study.optimize(n_trials=1)`` call while the count is below the budget; a trial created
  past the budget by a race between workers sees its rank at the objective's start and
  discards itself before training. Nothing is reserved, so nothing leaks when a worker dies.
* **Dead workers.** Heartbeats (``heartbeat_interval``/``grace_period``) mark the running trial
  of a killed worker stale; ``fail_stale_trials`` (run by Optuna before each trial, and by the
  runner while it waits) fails it and calls :meth:`StudyRunner._on_stale`, which re-enqueues
  the same parameters (``RetryHeartbeatStaleTrialCallback``). A trial whose worker died
  between creating it and its first heartbeat has no heartbeat to go stale; the runner fails
  such an orphan (RUNNING, no parameters, older than the grace period) the same way. A stale
  trial is not a finished trial: it neither counts nor is recorded in ``experiment_trials``.
* **Recording.** Each finished trial (COMPLETE, PRUNED, or FAIL raised by the objective) is
  written to ``experiment_trials`` with its event in one transaction, keyed by Optuna's trial
  number, so recording twice is a no-op; before finalizing, trials Optuna finished but the
  service did not record (a worker killed in between) are recorded from the storage.
* **Defaults first.** The worker that starts the study enqueues the library's default
  parameters (``study.enqueue_trial``) as trial 0, so a study never ends worse than defaults.

The refit rule: the best trial is retrained on the train part with its parameters and the
iteration count its early stopping kept (``best_iteration + 1``, no early stopping), which
reproduces the trial's model without storing every trial's model.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np
import optuna
import polars as pl
import sqlalchemy as sa
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaTrialState

from arbor.events.v1 import events_pb2
from arbor_core import metrics as arbor_metrics
from arbor_core.artifacts import ArtifactRef, ArtifactStore
from arbor_core.db import effective_url, utcnow
from arbor_core.errors import FailedPrecondition
from arbor_core.events import new_event
from arbor_ml import metrics as M
from arbor_ml.automl import (
    MAX_RESERVE_FRACTION,
    RESERVE_MARGIN_S,
    RESIZE_PROBE_ROUNDS,
    FinalFit,
    TimeBudget,
    averaged_models,
    choose_final_fit,
    ensemble_members,
    estimate_final_seconds,
    fold_time_share,
    parse_final_fit,
    refit_iterations,
    resized_rounds,
    startup_trials,
    warm_start,
)
from arbor_ml.bundle import (
    IMPORTANCE_ROWS,
    BundleRef,
    ModelBundle,
    build_bundle,
    load_bundle,
    save_bundle,
)
from arbor_ml.cv import FoldRule, make_folds
from arbor_ml.cv import pool as cv_pool
from arbor_ml.data import PreparedData, prepare_data
from arbor_ml.ensemble import (
    POOL_SIZE,
    Blend,
    EnsembleModel,
    ValidationPool,
    shared_preprocessor,
)
from arbor_ml.latency import LATENCY_METRIC, importance_rows_within, predict_ms_per_1k_rows
from arbor_ml.postprocessing import PostprocessingOptions, inverse_target_transform
from arbor_ml.preprocessing import PreprocessingOptions
from arbor_ml.threshold import tune_threshold
from arbor_ml.trainers import FitResult, FitSettings, TrainedModel, Trainer, get_trainer
from arbor_ml.types import Direction, ModelType, TaskType
from arbor_ml.weights import CLASS_WEIGHT_PARAM, class_weight_spec
from arbor_training.domain import (
    AUTO,
    EVENT_SOURCE,
    Experiment,
    ExperimentSpec,
    ExperimentState,
    Pruner,
    Sampler,
    TrialRecord,
    TrialState,
    feature_columns,
    sampler_installed,
)
from arbor_training.optuna_storage import ArborRDBStorage, ArborStorage
from arbor_training.repository import TrainingRepository

log = logging.getLogger("arbor.training.study")

#: Trial user attribute holding what the objective measured (one write per trial).
ATTR = "arbor"
MODEL_TYPE_PARAM = "model_type"
SEED_MODULUS = 2**31
#: Folder (under the experiment's prefix) of a parallel study's trial validation outputs.
VALIDATION_OUTPUTS = "validation-outputs/"
#: At most this many seconds of a timed study go to the bundle's global SHAP ranking.
IMPORTANCE_SECONDS = 5.0
#: The fixed part of ``estimate_final_seconds`` (packaging), and what the final fit may
#: really spend besides fitting (SHAP ranking included), for averaging seeds.
ESTIMATE_OVERHEAD_S = 2.0
FINAL_OVERHEAD_S = ESTIMATE_OVERHEAD_S + IMPORTANCE_SECONDS


@dataclass(frozen=True)
class StudySettings:
    """Timing of the worker side; tests shorten every interval."""

    heartbeat_interval: int = 10  # seconds between trial heartbeats (Optuna wants an int)
    grace_period: int = 30  # seconds without a heartbeat before a running trial is stale
    control_interval: float = 0.5  # seconds between reads of the cancel flag
    # Intermediate values (and pruning checks) per trial at most: each report is a storage
    # write and each check a read, so every boosting round would cost more than it prunes.
    report_points: int = 10
    finalizer_lease: float = 120.0  # seconds a finalizing worker's claim holds unrenewed
    # Most threads one trial may use (fit, predict, numpy, OpenMP), 0: no cap. Workers sharing
    # a host set it to cores / workers (``ARBOR_TRAINING_WORKERS_PER_HOST``), else each
    # trial's libraries would start a thread per core and the workers would fight for them.
    trial_threads: int = 0


class Outcome(StrEnum):
    """Why a worker's trial loop ended."""

    BUDGET_DONE = "budget_done"  # the budget is used and no trial runs anywhere
    TIMEOUT = "timeout"  # the study's time budget is spent
    CANCELLED = "cancelled"  # cancel (or a forced delete) was requested
    NOT_RUNNING = "not_running"  # someone else moved the experiment on
    SHUTDOWN = "shutdown"  # this worker is stopping (SIGTERM): another one takes over


# --------------------------------------------------------------------------- storage


#: Tries to open the storage when another process is creating Optuna's tables at the same time.
OPEN_ATTEMPTS = 5


def storage_url(database_url: str, schema: str = "training") -> tuple[str, dict[str, Any]]:
    """Optuna's URL and engine options: same database as the service, its schema on PG."""
    url = effective_url(database_url, schema)
    # No pool_pre_ping: Optuna checks a connection out for every storage call (dozens per
    # trial) and a ping is a round trip each time, which doubled the per-trial overhead. A
    # connection lost with the database fails one call; the job is then retried.
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        # synchronous_commit=off on Optuna's connections only (about 0.5 ms less per commit,
        # several commits per trial). A worker crashing loses nothing: a commit is in the
        # server's WAL buffers before it returns. Only a PostgreSQL crash (server or host)
        # can lose the newest of these commits (wal_writer_delay, 200 ms, x3 at most), and only
        # those after the last synchronous commit, since flushing the WAL up to a commit
        # flushes everything before it. Every finished trial is followed by the service's own
        # (synchronous) record_trial commit, so what such a crash can lose is the running
        # trial's start (its row, parameters, heartbeat): after recovery it is an orphan or
        # stale trial, failed and retried as for a killed worker, or absent.
        options = f"-csearch_path={schema} -csynchronous_commit=off"
        kwargs["connect_args"] = {"options": options, "connect_timeout": 5}
    else:
        kwargs["connect_args"] = {"timeout": 30}
    return url.render_as_string(hide_password=False), kwargs


def open_storage(
    database_url: str,
    settings: StudySettings,
    on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    schema: str = "training",
) -> ArborStorage:
    """The shared storage, with heartbeats and a callback for trials of dead workers.

    Optuna's tables come from the training migration (0003); Optuna still creates any that
    are missing (a database nobody migrated), and a race of two processes doing that at once
    (``UniqueViolation`` on ``pg_type``, "already exists") is retried once the winner is done.
    """
    url, kwargs = storage_url(database_url, schema)
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                backend = ArborRDBStorage(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=settings.heartbeat_interval,
                    grace_period=settings.grace_period,
                    heartbeat_stale_trial_callback=on_stale,
                )
            return ArborStorage(backend)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError) as err:
            if attempt == OPEN_ATTEMPTS:
                raise
            log.warning("creating Optuna's tables raced another process (%s); retrying", err)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def make_sampler(spec: ExperimentSpec, *, reseed: bool) -> optuna.samplers.BaseSampler:
    if not sampler_installed(spec.study.sampler):
        raise FailedPrecondition(
            f"the {spec.study.sampler.value} sampler is not installed on this worker",
            reason="SAMPLER_UNAVAILABLE",
        )
    seed = spec.study.seed % SEED_MODULUS
    match spec.study.sampler:
        case Sampler.RANDOM:
            sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
        case Sampler.CMAES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        case Sampler.QMC:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
        case _:
            # multivariate: one draw per trial instead of one storage read per parameter;
            # group: AUTO's conditional space (each library's parameters) is modelled per
            # library instead of falling back to independent draws; constant_liar: workers
            # sharing a study do not propose the same point; the start-up phase is short, since
            # the fixed defaults-first trials already cover the space (arbor_ml.automl).
            fixed = 2 * len(spec.model_types)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.TPESampler(
                    seed=seed,
                    multivariate=True,
                    group=True,
                    constant_liar=True,
                    n_startup_trials=startup_trials(fixed),
                )
    if reseed:
        # A second worker on the same study must not replay the first one's random draws.
        sampler.reseed_rng()
    return sampler


def make_pruner(spec: ExperimentSpec, report_every: int) -> optuna.pruners.BasePruner:
    folds = spec.study.cv_folds
    match spec.study.pruner:
        case Pruner.NONE:
            return optuna.pruners.NopPruner()
        case Pruner.HYPERBAND if folds:
            return optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=folds, reduction_factor=3
            )
        case _ if folds:
            # With cross-validation a trial reports once per fold: judge it from the first.
            return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
        case Pruner.HYPERBAND:
            return optuna.pruners.HyperbandPruner(
                min_resource=report_every, max_resource=max_iterations(spec), reduction_factor=3
            )
        case _:
            return optuna.pruners.MedianPruner(
                n_startup_trials=5, n_warmup_steps=report_every, interval_steps=1
            )


def max_iterations(spec: ExperimentSpec) -> int:
    return spec.study.max_iterations


def study_direction(spec: ExperimentSpec) -> StudyDirection:
    if spec.direction is Direction.MAXIMIZE:
        return StudyDirection.MAXIMIZE
    return StudyDirection.MINIMIZE


# --------------------------------------------------------------------------- data


def read_part(store: ArtifactStore, spec: ExperimentSpec, part: str) -> pl.DataFrame | None:
    """A split part from the artifact store, checked against the split's recorded sha256."""
    info = spec.parts.get(part)
    if info is None:
        return None
    payload = store.get_bytes(info.key, expected_sha256=info.sha256 or None)
    return pl.read_parquet(io.BytesIO(payload))


class StudyData:
    """The split's parts, read once, prepared once per library (fit on train only)."""

    def __init__(self, store: ArtifactStore, spec: ExperimentSpec) -> None:
        self.spec = spec
        self.store = store
        train = read_part(store, spec, "train")
        valid = read_part(store, spec, "validation")
        if train is None or valid is None:
            raise FailedPrecondition(
                "the split has no train or validation part", reason="SPLIT_PART_MISSING"
            )
        self.train: pl.DataFrame = train
        self.valid: pl.DataFrame = valid
        self._prepared: dict[ModelType, PreparedData] = {}
        self._folds: dict[ModelType, list[PreparedData]] = {}
        self._all: dict[ModelType, PreparedData] = {}
        self._pooled: pl.DataFrame | None = None
        self._lock = threading.Lock()

    def _prepare(
        self, model_type: ModelType, train: pl.DataFrame, valid: pl.DataFrame | None
    ) -> PreparedData:
        spec = self.spec
        return prepare_data(
            train,
            valid,
            target=spec.target_column,
            task=spec.task_type,
            model_type=model_type,
            preprocessing=PreprocessingOptions.from_dict(spec.preprocessing.ml_options()),
            target_transform="log1p" if spec.postprocessing.log_target else "none",
        )

    def prepared(self, model_type: ModelType) -> PreparedData:
        with self._lock:
            if model_type not in self._prepared:
                self._prepared[model_type] = self._prepare(model_type, self.train, self.valid)
            return self._prepared[model_type]

    @property
    def cv_folds(self) -> int:
        return self.spec.study.cv_folds

    def pooled(self) -> pl.DataFrame:
        """Train and validation together: what cross-validation cuts and ``all`` refits on."""
        if self._pooled is None:
            self._pooled = cv_pool(self.train, self.valid)
        return self._pooled

    def folds(self, model_type: ModelType) -> list[PreparedData]:
        """The cross-validation folds for a library (preprocessing fit on each fold's train)."""
        with self._lock:
            if model_type not in self._folds:
                study = self.spec.study
                pooled = self.pooled()
                rule = FoldRule(**study.cv_rule) if study.cv_rule else FoldRule()  # type: ignore[arg-type]
                self._folds[model_type] = [
                    self._prepare(model_type, pooled[f.train], pooled[f.valid])
                    for f in make_folds(pooled, study.cv_folds, rule, seed=study.seed)
                ]
            return self._folds[model_type]

    def trial_parts(self, model_type: ModelType) -> list[PreparedData]:
        """What one trial fits on: every fold with cross-validation, else train/validation."""
        return self.folds(model_type) if self.cv_folds else [self.prepared(model_type)]

    def prepared_all(self, model_type: ModelType) -> PreparedData:
        """Train + validation as one train part, for the ``all`` final fit."""
        with self._lock:
            if model_type not in self._all:
                self._all[model_type] = self._prepare(model_type, self.pooled(), None)
            return self._all[model_type]

    def fit_rows(self) -> int:
        """Rows a trial trains on (a fold's train part, on average, with cross-validation)."""
        if not self.cv_folds:
            return self.train.height
        rows = self.pooled().height
        if self.spec.study.cv_rule.get("kind") == "time":
            return (
                rows // 2
            )  # forward chaining: the folds' train parts grow from 1/(k+1) to k/(k+1)
        return rows * (self.cv_folds - 1) // self.cv_folds

    def test(self) -> pl.DataFrame | None:
        return read_part(self.store, self.spec, "test")


def trainers_for(spec: ExperimentSpec) -> dict[ModelType, Trainer]:
    """One trainer per library the study may use, with the caller's search-space overrides."""
    trainers: dict[ModelType, Trainer] = {}
    for library in spec.model_types:
        overrides: dict[str, Any] = {}
        for name, rng in spec.study.search_space.items():
            if spec.model_type == AUTO:
                prefix = f"{library.value}."
                if name.startswith(prefix):
                    overrides[name.removeprefix(prefix)] = rng.override()
            else:
                overrides[name] = rng.override()
        trainers[library] = get_trainer(
            library, spec.task_type, metric=spec.metric, search_space=overrides
        )
    return trainers


def search_spaces(model_type: ModelType, task: TaskType) -> Mapping[str, Any]:
    """What :func:`arbor_training.domain.validate_experiment` checks overrides against
    (``class_weight`` included for classification: an override turns it on for any metric)."""
    space = dict(get_trainer(model_type, task).search_space)
    if task.is_classification:
        space.setdefault(CLASS_WEIGHT_PARAM, class_weight_spec())
    return space


def fit_settings(spec: ExperimentSpec) -> FitSettings:
    """What every trial's fit uses (the refit changes the rounds and drops early stopping)."""
    return FitSettings(
        iterations=max_iterations(spec),
        early_stopping_rounds=spec.study.early_stopping_rounds,
        seed=spec.study.seed % SEED_MODULUS,
        threads=spec.study.threads,
        device=spec.study.device,
    )


def expected_fit_rows(spec: ExperimentSpec) -> int:
    """Rows one trial trains on, from the split's recorded counts (before reading the data)."""
    train = spec.parts.get("train")
    valid = spec.parts.get("validation")
    rows = train.row_count if train else 0
    k = spec.study.cv_folds
    if k and valid is not None:
        pooled = rows + valid.row_count
        rows = pooled // 2 if spec.study.cv_rule.get("kind") == "time" else pooled * (k - 1) // k
    return max(rows, 1)


def has_categorical_features(spec: ExperimentSpec) -> bool:
    """Whether a feature column holds text categories (from the split's recorded dtypes)."""
    return any(
        spec.columns[name].startswith(("String", "Utf8", "Categorical", "Enum"))
        for name in feature_columns(spec.columns, spec.target_column, spec.preprocessing)
    )


def default_trials(spec: ExperimentSpec, trainers: Mapping[ModelType, Trainer]) -> list[dict]:
    """The fixed trials a study starts with: each library's defaults (CatBoost first for
    ``auto``), then a small portfolio (see ``arbor_ml.automl``), as flat Optuna parameters."""
    return warm_start(
        trainers,
        train_rows=expected_fit_rows(spec),
        settings=fit_settings(spec),
        auto=spec.model_type == AUTO,
        categorical=has_categorical_features(spec),
    )


def split_params(spec: ExperimentSpec, params: Mapping[str, Any]) -> tuple[ModelType, dict]:
    """(library, its own parameter names) from a trial's flat Optuna parameters."""
    if spec.model_type != AUTO:
        return ModelType(spec.model_type), dict(params)
    library = ModelType(params[MODEL_TYPE_PARAM])
    prefix = f"{library.value}."
    return library, {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}


def trial_params(spec: ExperimentSpec, trial: FrozenTrial) -> tuple[ModelType, dict]:
    """(library, the parameters it trained with): those drawn, unless the trial was resized
    to the time left (``_Reporter.resize``), which changed its learning rate."""
    library, params = split_params(spec, trial.params)
    resized = (trial.user_attrs.get(ATTR) or {}).get("resized") or {}
    return library, dict(resized.get("params") or params)


_POOLS: dict[frozenset[ModelType], Any] = {}


def thread_pools(threads: int, libraries: frozenset[ModelType] = frozenset()) -> Any:
    """The process's native thread pools (OpenMP, BLAS) as loaded now, to cap during trials;
    None for no cap (0) or without threadpoolctl. A scan of the loaded libraries costs 10 to
    50 ms, so it is kept per set of model libraries (made after they are imported)."""
    if threads <= 0:
        return None
    if libraries in _POOLS:
        return _POOLS[libraries]
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return None
    pools = _POOLS[libraries] = ThreadpoolController()
    return pools


@contextlib.contextmanager
def thread_limit(pools: Any, threads: int) -> Iterator[None]:
    """Caps ``pools`` at ``threads`` for one trial: a library call without its own thread
    setting (a predict, numpy) must not take every core while other workers share the host."""
    if pools is None or threads <= 0:
        yield
        return
    with pools.limit(limits=threads):
        yield


# --------------------------------------------------------------------------- budget


@dataclass
class _Budget:
    """This worker's view: ``spent`` once a trial found itself past ``n_trials``.

    The check happens at the start of each trial, against the storage, so the loop needs no
    read of its own; the one trial that finds the budget spent is discarded untrained.
    """

    n_trials: int
    spent: bool = False


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial uses the budget: all but discarded and stale (retried) ones."""
    attrs = trial.user_attrs.get(ATTR) or {}
    if attrs.get("discarded"):
        return False
    return trial.state is not OptunaTrialState.FAIL or "error" in attrs


def rank(trials: list[FrozenTrial], number: int) -> int:
    """How many counting trials precede trial ``number``: its place in the budget."""
    return sum(1 for t in trials if t.number < number and counts(t))


def study_trials(trial: optuna.Trial) -> list[FrozenTrial]:
    """The study's trials as this trial's sampler saw them (one storage read per trial).

    Optuna caches the read it makes for the sampler at the start of each trial (``ask`` clears
    the cache, then creates the trial, then samples); reading through that cache saves the
    runner a second full read per trial. It is Optuna's private ``Study._get_trials``, so a
    version without it falls back to the public, uncached read.
    """
    study = trial.study
    cached = getattr(study, "_get_trials", None)
    if cached is None:
        return study.get_trials(deepcopy=False)
    return cached(deepcopy=False, use_cache=True)  # type: ignore[no-any-return]


def _any_complete(trial: optuna.Trial) -> bool:
    """Whether the study had a complete trial when ``trial`` started (it then has a model)."""
    return any(t.state is OptunaTrialState.COMPLETE for t in study_trials(trial))


# --------------------------------------------------------------------------- control


class ControlWatcher:
    """Polls the experiment's state and cancel flag every ``interval`` in a thread, so the
    per-iteration callback reads a variable instead of the database."""

    def __init__(self, repo: TrainingRepository, experiment_id: str, interval: float) -> None:
        self.repo = repo
        self.experiment_id = experiment_id
        self.interval = interval
        self.control = repo.control(experiment_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arbor-control", daemon=True)

    @property
    def stop_requested(self) -> bool:
        c = self.control
        return c.cancel_requested or c.deleted or c.state is not ExperimentState.RUNNING

    def refresh(self) -> None:
        try:
            self.control = self.repo.control(self.experiment_id)
        except Exception as err:  # a database blip must not kill a trial
            log.warning("reading the cancel flag failed: %s", err)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def __enter__(self) -> ControlWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Reporter:
    """The per-iteration callback: intermediate values, pruning, cancel and time budget.

    Every ``every`` rounds it keeps the validation value (recorded with the trial) and, when
    the study prunes by rounds, reports it to Optuna and asks the pruner. Cancel and the
    time budget are read from memory each round. A trial stopped by the budget is not
    pruned: it ends where it stands and is scored (``budget_stop``).
    """

    def __init__(
        self,
        trial: optuna.Trial,
        every: int,
        watcher: ControlWatcher,
        clock: TimeBudget | None,
        prune: bool,
        offset: int = 0,
    ) -> None:
        self.trial = trial
        self.every = every
        self.watcher = watcher
        self.clock = clock
        self.prune = prune
        self.offset = offset  # steps of earlier folds, so a trial's steps never repeat
        self.reason = ""
        self.budget_stop = False
        self.intermediate: list[tuple[int, float]] = []
        #: Rounds the trial's learning rate is meant for, when it may be resized to fit the
        #: time left (``arbor_ml.automl.resized_rounds``); ``resize`` is then the new count.
        self.planned_rounds: int | None = None
        self.share = 1.0
        self.resize: int | None = None
        self.now = time.monotonic  # the clock the pace is read on (a test can drive it)
        self._fit_started = self.now()
        self._first: tuple[int, float] | None = None

    def start_fit(self, planned_rounds: int | None, share: float = 1.0) -> None:
        """A fit begins now (the pace of its rounds is timed from here); it may plan for
        ``share`` of the time left (the first fold of a cross-validation: its part)."""
        self.planned_rounds = planned_rounds
        self.share = share
        self.resize = None
        self._fit_started = self.now()
        self._first = None

    def _check_pace(self, step: int) -> bool:
        """Whether to stop now and restart with ``self.resize`` rounds (once per fit)."""
        if self.planned_rounds is None or self.clock is None:
            return False
        limit = self.clock.trial_deadline
        if limit is None:
            return False
        now = self.now()
        if self._first is None:
            self._first = (step, now)
            return False
        first_step, first_time = self._first
        if step - first_step < RESIZE_PROBE_ROUNDS:
            return False
        pace = (now - first_time) / (step - first_step)
        self.resize = resized_rounds(
            done=step + 1,
            pace_s=pace,
            setup_s=first_time - self._fit_started,
            time_left_s=(limit - now) * self.share,
            planned=self.planned_rounds,
        )
        self.planned_rounds = None  # judged once
        return self.resize is not None

    def __call__(self, step: int, value: float) -> bool:
        if self.watcher.stop_requested:
            self.reason = "stopped: the experiment was cancelled"
            return True
        if self.clock is not None and self.clock.trials_over():
            self.budget_stop = True
            return True
        if self._check_pace(step):
            return True
        if (step + 1) % self.every == 0 and math.isfinite(value):
            self.intermediate.append((self.offset + step + 1, float(value)))
            if self.prune:
                self.trial.report(float(value), step + 1)
                if self.trial.should_prune():
                    self.reason = f"pruned at iteration {step + 1}"
                    return True
        return False


@dataclass
class KeptModel:
    """The best trial this worker ran, kept in memory for the final fit (no refit needed)
    and for the decision threshold (its validation, or out-of-fold, predictions)."""

    number: int
    value: float
    library: ModelType
    result: FitResult
    prepared: PreparedData
    y_valid: np.ndarray | None = None
    output_valid: np.ndarray | None = None


# --------------------------------------------------------------------------- the runner


@dataclass
class RefitResult:
    """What finalization produced: the saved bundle and what the registry needs."""

    bundle: ModelBundle
    ref: BundleRef
    best_trial: FrozenTrial
    metrics: dict[str, float]
    params: dict[str, Any]
    model_type: ModelType
    training_rows: int
    reused: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    final_fit: str = ""  # arbor_ml.automl.FinalFit value
    final_iterations: int = 0


class _BlendMember(NamedTuple):
    """One trial's model in a blend, with what the final fit records about it."""

    trial: int
    library: ModelType
    params: dict[str, Any]
    prepared: PreparedData  # the data (and preprocessing) the model was trained on
    model: TrainedModel
    weight: float
    iterations: int = 0
    library_params: dict[str, Any] | None = None  # a refit's (a trial's own: not at hand)


def _assemble_blend(
    members: Sequence[_BlendMember], template: FitResult, started: float
) -> tuple[FitResult, PreparedData]:
    """The blend of ``members`` as the FitResult the rest of the final fit reads
    (``template``: what every member shares, metric, direction and device), with the
    prepared data whose preprocessing the blend reads."""
    shared = shared_preprocessor([m.prepared.preprocessor for m in members])
    model = EnsembleModel.blend(
        [(m.model, m.prepared.preprocessor, m.weight, m.trial) for m in members], shared
    )
    weights = {m.trial: m.weight for m in model.members if m.trial is not None}
    result = replace(
        template,
        model=model,
        params={
            "members": [
                {
                    "trial": m.trial,
                    "model_type": m.library.value,
                    "weight": weights[m.trial],
                    "params": m.params,
                }
                for m in members
            ]
        },
        library_params={
            str(m.trial): m.library_params for m in members if m.library_params is not None
        },
        score=None,
        metrics={},
        best_iteration=None,
        iterations=sum(m.iterations for m in members),
        stopped_by_callback=False,
        duration_s=time.perf_counter() - started,
        extra={},
    )
    prepared = next(m.prepared for m in members if m.prepared.preprocessor is shared)
    return result, prepared


def validation_key(experiment: Experiment, number: int) -> str:
    """Where a trial of a parallel study leaves its validation outputs (``.npy``) for the
    finalizing worker's blend; removed once the model is saved."""
    base = bundle_prefix_for(experiment.spec, experiment.id)
    return f"{base}{VALIDATION_OUTPUTS}trial-{number:05d}.npy"


def bundle_prefix_for(spec: ExperimentSpec, experiment_id: str, finalizer: str = "") -> str:
    """One prefix per experiment and finalizer (the lease holder's worker id).

    Each finalizer writes only under its own prefix, so one that stalled inside
    ``save_bundle`` past its lease can never overwrite the files another holder saved and
    registered since (the bundle is fenced like the experiment row). The same worker retrying
    (a registry outage) finds and reuses its own bundle; the registration stays idempotent on
    the experiment, so whichever bundle registered first is the model version.
    """
    base = f"models/{spec.model_name}/experiments/{experiment_id}/"
    if not finalizer:
        return base
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", finalizer).strip("-.")[:120] or "worker"
    return f"{base}{slug}/"


class StudyRunner:
    """Runs one experiment's trials in this process, then (maybe) its refit.

    Blocking: call it from a worker thread. ``worker_id`` names this process (host:pid).
    """

    def __init__(
        self,
        repo: TrainingRepository,
        database_url: str,
        store: ArtifactStore,
        worker_id: str,
        settings: StudySettings | None = None,
    ) -> None:
        self.repo = repo
        self.store = store
        self.worker_id = worker_id
        self.settings = settings or StudySettings()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = RetryHeartbeatStaleTrialCallback()
        self.storage = open_storage(database_url, self.settings, self._on_stale)
        self._data: dict[str, StudyData] = {}
        #: Per experiment: the best trial this worker ran, its model kept for the final fit.
        self._kept: dict[str, KeptModel] = {}
        #: Per experiment: seconds to keep for the final fit of the best trial so far.
        self._reserves: dict[str, float] = {}
        #: Per experiment: validation outputs of the best trials this worker ran, which the
        #: final fit's blend is chosen from (``StudyConfig.ensemble_size``).
        self._pools: dict[str, ValidationPool] = {}
        #: Per experiment: how many trials the final fit's blend was chosen from.
        self._candidates: dict[str, int] = {}
        #: Set when the worker stops: the trial loop ends at the next trial boundary.
        self.shutdown = threading.Event()

    def close(self) -> None:
        self.storage.engine.dispose()

    # ---------------------------------------------------------------- stale trials

    def _on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A dead worker's trial: run its parameters again (it no longer counts)."""
        log.warning(
            "trial %d of %s went stale (its worker stopped heartbeating); retrying it",
            trial.number,
            study.study_name,
            extra={"experiment_id": study.study_name, "trial": trial.number},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry(study, trial)

    def fail_stale(self, study: optuna.Study) -> list[FrozenTrial]:
        """Fail trials of dead workers: heartbeat-stale ones, and orphans that never beat.

        An orphan is RUNNING with no parameters yet for longer than the grace period: its
        worker died between creating it and starting the objective (a live worker gets there
        within milliseconds). Only the worker whose update wins retries it, as in Optuna.
        Returns the RUNNING and WAITING trials left (retries included), so a caller waiting
        for them needs no read of its own.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        now = time.time()
        pending_states = (OptunaTrialState.RUNNING, OptunaTrialState.WAITING)
        pending = study.get_trials(deepcopy=False, states=pending_states)
        retried = False
        for trial in pending:
            if trial.state is not OptunaTrialState.RUNNING:
                continue
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            if trial.params or now - started <= self.settings.grace_period:
                continue
            try:
                failed = study._storage.set_trial_state_values(
                    trial._trial_id, state=OptunaTrialState.FAIL
                )
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if failed:
                retried = True
                self._on_stale(study, study._storage.get_trial(trial._trial_id))
        if retried:
            pending = study.get_trials(deepcopy=False, states=pending_states)
        return pending

    # ---------------------------------------------------------------- study

    def data(self, experiment: Experiment) -> StudyData:
        if experiment.id not in self._data:
            self._data.clear()  # one experiment at a time per worker
            for kept in (self._kept, self._reserves, self._pools, self._candidates):
                for other in [k for k in kept if k != experiment.id]:
                    del kept[other]
            self._data[experiment.id] = StudyData(self.store, experiment.spec)
        return self._data[experiment.id]

    def open_study(self, experiment: Experiment, *, starter: bool) -> optuna.Study:
        """Create or load the study; the starting worker enqueues the defaults."""
        spec = experiment.spec
        report_every = self.report_every(spec)
        study = optuna.create_study(
            storage=self.storage,
            study_name=experiment.id,
            direction=study_direction(spec),
            sampler=make_sampler(spec, reseed=not starter),
            pruner=make_pruner(spec, report_every),
            load_if_exists=True,
        )
        # The starting worker enqueues the defaults. A joiner does so only for a study that
        # stayed empty past the grace period (its starter died before enqueueing), so two
        # workers starting together do not both enqueue them.
        started = experiment.start_time or utcnow()
        orphaned = (utcnow() - started).total_seconds() > self.settings.grace_period
        if starter or (orphaned and not study.get_trials(deepcopy=False)):
            budget = spec.study.n_trials or None
            defaults = default_trials(spec, trainers_for(spec))[:budget]
            # One read of the study for every skip_if_exists check, not one per default.
            with self.storage.coalescing():
                for params in defaults:
                    study.enqueue_trial(params, skip_if_exists=True)
        return study

    def report_every(self, spec: ExperimentSpec) -> int:
        return max(1, max_iterations(spec) // max(1, self.settings.report_points))

    def run_trials(
        self,
        experiment: Experiment,
        *,
        starter: bool,
        on_trial: Callable[[TrialRecord], None] | None = None,
    ) -> Outcome:
        """Run one trial at a time while the budget lasts; stop for time, cancel or shutdown."""
        spec = experiment.spec
        study = self.open_study(experiment, starter=starter)
        data = self.data(experiment)
        trainers = trainers_for(spec)
        clock = self.clock(experiment)
        with ControlWatcher(self.repo, experiment.id, self.settings.control_interval) as watcher:
            record = self._recorder(experiment, on_trial)
            self.fail_stale(study)
            budget = _Budget(spec.study.n_trials)
            objective = self._objective(experiment, data, trainers, watcher, clock, budget)
            wait = 0.0  # the poll for trials running elsewhere, once the budget is taken
            while True:
                if self.shutdown.is_set():
                    return Outcome.SHUTDOWN
                c = watcher.control  # refreshed by the watcher's thread
                if c.cancel_requested or c.deleted:
                    return Outcome.CANCELLED
                if c.state is not ExperimentState.RUNNING:
                    return Outcome.NOT_RUNNING
                if clock.trials_over():
                    return Outcome.TIMEOUT
                if not budget.spent:
                    with self.storage.coalescing():
                        study.optimize(
                            objective, n_trials=1, catch=(Exception,), callbacks=[record]
                        )
                    self._reserve_final_fit(experiment, study, data, clock)
                    continue
                # The budget is taken: wait for trials running elsewhere; run retried ones.
                pending = self.fail_stale(study)
                if any(t.state is OptunaTrialState.WAITING for t in pending):
                    budget.spent = False
                    continue
                if not pending:
                    return Outcome.BUDGET_DONE
                # Soon at first (the other worker's last trial is often about to end), then
                # backing off to the control interval.
                wait = min(self.settings.control_interval, max(0.05, wait * 2))
                time.sleep(wait)

    def clock(self, experiment: Experiment) -> TimeBudget:
        """The study's time budget, counted from the experiment's start (a resumed study
        continues the same clock)."""
        started = experiment.start_time or utcnow()
        elapsed = (utcnow() - started).total_seconds()
        clock = TimeBudget.start(experiment.spec.study.timeout_seconds, elapsed)
        known = self._reserves.get(experiment.id)
        if known is not None:
            clock.reserve(known)
        return clock

    def _reserve_final_fit(
        self, experiment: Experiment, study: optuna.Study, data: StudyData, clock: TimeBudget
    ) -> None:
        """Keep room in the budget for the final fit of the best trial so far."""
        if clock.total_s is None:
            return
        try:
            best = study.best_trial
        except ValueError:
            return
        estimate = self._final_estimate(experiment.spec, best, data)
        pool = self._pools.get(experiment.id)
        most = experiment.spec.study.ensemble_size
        if pool is not None and most > 1:
            # Room to refit a blend too, as much of it as stays within what a final fit may
            # take.
            ceiling = clock.total_s * MAX_RESERVE_FRACTION - RESERVE_MARGIN_S
            blend = ESTIMATE_OVERHEAD_S + pool.likely_cost(
                best.number, most, limit=ceiling - ESTIMATE_OVERHEAD_S
            )
            if blend <= ceiling:
                estimate = max(estimate, blend)
        self._reserves[experiment.id] = estimate
        clock.reserve(estimate)

    def _final_estimate(self, spec: ExperimentSpec, best: FrozenTrial, data: StudyData) -> float:
        """Seconds the ``all`` final fit of ``best`` would take (see arbor_ml.automl)."""
        return self._estimate(spec, best.user_attrs.get(ATTR) or {}, data)

    @staticmethod
    def _estimate(spec: ExperimentSpec, attrs: Mapping[str, Any], data: StudyData) -> float:
        """:meth:`_final_estimate` from a trial's recorded attributes."""
        folds = max(1, len(attrs.get("fold_values") or [0]))
        fit_rows = data.fit_rows()
        refit_rows = data.pooled().height
        kept = [int(b) + 1 for b in attrs.get("best_iterations") or [] if b is not None]
        rounds = refit_iterations(
            attrs.get("best_iterations") or [attrs.get("best_iteration")],
            fit_rows=fit_rows,
            refit_rows=refit_rows,
            max_iterations=max_iterations(spec),
        )
        ratio = rounds / (sum(kept) / len(kept)) if kept else 1.0
        per_fit = (attrs.get("fit_seconds") or 0.0) / folds
        return estimate_final_seconds(
            per_fit, fit_rows=fit_rows, refit_rows=refit_rows, rounds_ratio=ratio
        )

    def _objective(
        self,
        experiment: Experiment,
        data: StudyData,
        trainers: Mapping[ModelType, Trainer],
        watcher: ControlWatcher,
        clock: TimeBudget,
        budget: _Budget,
    ) -> Callable[[optuna.Trial], float]:
        spec = experiment.spec
        every = self.report_every(spec)
        prune = spec.study.pruner is not Pruner.NONE
        settings = fit_settings(spec)
        cap = self.settings.trial_threads
        if cap > 0:
            settings = replace(settings, threads=min(settings.threads or cap, cap))
        pools = thread_pools(settings.threads, frozenset(trainers))
        cv = spec.study.cv_folds > 0
        maximize = spec.direction is Direction.MAXIMIZE
        blend = spec.study.ensemble_size > 1

        def objective(trial: optuna.Trial) -> float:
            n_trials = spec.study.n_trials
            if n_trials and rank(study_trials(trial), trial.number) >= n_trials:
                # Past the budget (this worker's last look, or a race with another worker):
                # end it untrained, marked so that it neither counts nor is recorded.
                budget.spent = True
                trial.set_user_attr(ATTR, {"discarded": True})
                raise optuna.TrialPruned(f"trial {trial.number} is past the budget")
            try:
                with thread_limit(pools, settings.threads):
                    return run(trial)
            except optuna.TrialPruned:
                raise
            except Exception as exc:
                if ATTR not in trial.user_attrs:  # failed before the fit: still a failure
                    trial.set_user_attr(ATTR, {"error": f"{type(exc).__name__}: {exc}"[:2000]})
                raise

        def libraries_to_compare(trial: optuna.Trial, library: ModelType) -> int:
            """AUTO: the libraries without a complete trial yet, ``library`` included."""
            if spec.model_type != AUTO:
                return 1
            done = {
                t.params.get(MODEL_TYPE_PARAM)
                for t in study_trials(trial)
                if t.state is OptunaTrialState.COMPLETE
            }
            return len({m.value for m in trainers} - done | {library.value})

        def run(trial: optuna.Trial) -> float:
            if spec.model_type == AUTO:
                library = ModelType(
                    trial.suggest_categorical(MODEL_TYPE_PARAM, [m.value for m in trainers])
                )
                trainer = trainers[library]
                # Prefixed Optuna names: the libraries' ranges for one name differ.
                params = {
                    name: replace(p, name=f"{library.value}.{name}").suggest(trial)
                    for name, p in trainer.search_space.items()
                }
            else:
                library = ModelType(spec.model_type)
                trainer = trainers[library]
                params = trainer.suggest_params(trial)
            # The parameters, written together before the fit (other workers' samplers see
            # this running trial's point; see optuna_storage).
            self.storage.flush(trial._trial_id)
            attrs: dict[str, Any] = {"model_type": library.value, "worker": self.worker_id}
            # With cross-validation the pruner judges fold by fold; without, round by round.
            reporter = _Reporter(trial, every, watcher, clock, prune and not cv)
            fit_seconds = 0.0
            results: list[FitResult] = []
            parts = data.trial_parts(library)
            outputs: list[np.ndarray] = []
            # A trial may be resized once, in its first fit, to the time it may take: all
            # that is left, or with cross-validation the first fold's share of it.
            planned = trainer.planned_rounds(settings)
            share = 1.0
            if len(parts) > 1:
                share = fold_time_share(len(parts), libraries_to_compare(trial, library))
            fold_settings = settings
            for fold, prepared in enumerate(parts):
                reporter.offset = fold * max_iterations(spec)
                fit_started = time.perf_counter()
                try:
                    reporter.start_fit(planned if fold == 0 else None, share)
                    result = trainer.fit(prepared, params, fold_settings, on_iteration=reporter)
                    if reporter.resize is not None and planned is not None:
                        rounds = reporter.resize
                        params = trainer.params_for_rounds(
                            params, prepared.train_rows, planned, rounds
                        )
                        attrs["resized"] = {"iterations": rounds, "params": params}
                        log.info(
                            "trial %d resized to %d rounds to fit the time left (%s)",
                            trial.number,
                            rounds,
                            {k: v for k, v in params.items() if k == "learning_rate"},
                        )
                        reporter.start_fit(None)
                        reporter.intermediate.clear()  # the values of the fit given up
                        fold_settings = replace(settings, iterations=rounds)  # every fold's
                        result = trainer.fit(prepared, params, fold_settings, on_iteration=reporter)
                except Exception as exc:
                    attrs["fit_seconds"] = fit_seconds + time.perf_counter() - fit_started
                    attrs["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                    attrs["intermediate"] = reporter.intermediate
                    trial.set_user_attr(ATTR, attrs)
                    raise
                fit_seconds += time.perf_counter() - fit_started
                results.append(result)
                if prepared.x_valid is not None and (
                    blend or (cv and spec.task_type is TaskType.BINARY)
                ):
                    outputs.append(result.model.predict_output(prepared.x_valid))
                if reporter.reason or reporter.budget_stop:
                    break
                if cv and prune and result.score is not None and math.isfinite(result.score):
                    trial.report(float(result.score), fold + 1)
                    if trial.should_prune():
                        reporter.reason = f"pruned after fold {fold + 1} of {len(parts)}"
                        break
            scores = [r.score for r in results]
            attrs["fit_seconds"] = fit_seconds
            attrs["intermediate"] = reporter.intermediate
            attrs["best_iterations"] = [r.best_iteration for r in results]
            kept = [b for b in attrs["best_iterations"] if b is not None]
            attrs["best_iteration"] = round(sum(kept) / len(kept)) if kept else None
            attrs["iterations"] = max(r.iterations for r in results)
            attrs["fold_values"] = [float(v) if v is not None else math.nan for v in scores]
            attrs["fit_rows"] = sum(p.train_rows for p in parts[: len(results)]) // len(results)
            last = results[-1]
            valid = parts[len(results) - 1].x_valid
            if valid is not None:
                timed = time.perf_counter()
                attrs["predict_ms_per_1k_rows"] = predict_ms_per_1k_rows(last.model, valid)
                # Predict time too: recorded with the fit time (not platform overhead), kept
                # apart from ``fit_seconds``, which the final-fit estimate reads.
                attrs["predict_seconds"] = time.perf_counter() - timed
            attrs["metrics"] = _mean_metrics([r.metrics for r in results])
            if reporter.budget_stop:
                attrs["stopped_by_budget"] = True
                if len(results) < len(parts) and _any_complete(trial):
                    # The mean of the first folds is not the mean of all k: folds differ in
                    # difficulty more than trials do (credit_data: 0.865 on fold 1 against a
                    # 0.844 mean), so a cut trial would outrank the complete ones by its luck.
                    reporter.reason = (
                        f"stopped by the time budget after {len(results)} of {len(parts)} "
                        "folds; a partial cross-validation is not compared with complete ones"
                    )
            if reporter.reason:
                attrs["error"] = reporter.reason
                trial.set_user_attr(ATTR, attrs)
                raise optuna.TrialPruned(reporter.reason)
            trial.set_user_attr(ATTR, attrs)
            finite = [v for v in scores if v is not None and math.isfinite(v)]
            if not finite:
                raise ValueError(f"the validation {spec.metric} is not a number ({scores})")
            value = float(sum(finite) / len(finite))
            self._keep(
                experiment.id, trial.number, value, library, maximize, results, parts, outputs
            )
            if blend and len(outputs) == len(parts):
                cost = self._estimate(spec, attrs, data) - ESTIMATE_OVERHEAD_S
                output = np.concatenate(outputs)
                # one part: this very model made the outputs (a blend of such needs no refit)
                model = last.model if len(parts) == 1 else None
                self._pool(experiment, parts).add(
                    trial.number, value, output, library.value, cost, model=model
                )
                if spec.study.parallelism > 1:  # for whichever worker finalizes
                    self._share_output(experiment, trial.number, output)
            return value

        return objective

    def _keep(
        self,
        experiment_id: str,
        number: int,
        value: float,
        library: ModelType,
        maximize: bool,
        results: list[FitResult],
        parts: list[PreparedData],
        outputs: list[np.ndarray],
    ) -> None:
        """Keep this trial's model if it is the best this worker has run."""
        kept = self._kept.get(experiment_id)
        if kept is not None and (value <= kept.value if maximize else value >= kept.value):
            return
        prepared = parts[len(results) - 1]
        y_valid, output = prepared.y_valid, None
        if outputs and len(outputs) == len(results):  # out-of-fold predictions, every fold
            y_valid = np.concatenate([p.y_valid for p in parts[: len(results)]])  # type: ignore[misc]
            output = np.concatenate(outputs)
        elif prepared.x_valid is not None:
            output = results[-1].model.predict_output(prepared.x_valid)
        self._kept[experiment_id] = KeptModel(
            number, value, library, results[-1], prepared, y_valid, output
        )

    def _share_output(self, experiment: Experiment, number: int, output: np.ndarray) -> None:
        """Store a trial's validation outputs where the finalizing worker reads them."""
        buffer = io.BytesIO()
        np.save(buffer, output, allow_pickle=False)
        key = validation_key(experiment, number)
        try:
            self.store.put_bytes(key, buffer.getvalue(), "application/octet-stream")
        except Exception as exc:  # a lost blend candidate, not a failed trial
            log.warning("could not store %s: %s", key, exc)

    def _drop_shared_outputs(self, experiment: Experiment) -> None:
        prefix = bundle_prefix_for(experiment.spec, experiment.id) + VALIDATION_OUTPUTS
        try:
            self.store.delete_prefix(prefix)
        except Exception as exc:  # garbage left behind, nothing worse
            log.warning("could not remove %s: %s", prefix, exc)

    def _gather_outputs(self, experiment: Experiment, data: StudyData) -> ValidationPool:
        """This worker's pool plus the best trials other workers ran (parallel studies), read
        from the artifact store: every worker's trials can join the blend."""
        spec = experiment.spec
        pool = self._pool(experiment, data.trial_parts(spec.model_types[0]))
        study = optuna.load_study(study_name=experiment.id, storage=self.storage)
        others = [
            t
            for t in study.get_trials(deepcopy=False, states=(OptunaTrialState.COMPLETE,))
            if t.number not in pool.outputs and t.value is not None
        ]
        others.sort(key=lambda t: float(t.value), reverse=pool.maximize)  # type: ignore[arg-type]
        for trial in others[:POOL_SIZE]:
            key = validation_key(experiment, trial.number)
            try:
                if not self.store.exists(key):
                    continue
                output = np.load(io.BytesIO(self.store.get_bytes(key)), allow_pickle=False)
            except Exception as exc:
                log.warning("could not read %s: %s", key, exc)
                continue
            library = trial_params(spec, trial)[0]
            cost = self._final_estimate(spec, trial, data) - ESTIMATE_OVERHEAD_S
            pool.add(trial.number, float(trial.value), output, library.value, cost)  # type: ignore[arg-type]
        return pool

    def _pool(self, experiment: Experiment, parts: list[PreparedData]) -> ValidationPool:
        """The experiment's pool of validation outputs, on ``parts``' validation rows."""
        pool = self._pools.get(experiment.id)
        if pool is None:
            spec = experiment.spec
            weights = [p.w_valid for p in parts]
            pool = self._pools[experiment.id] = ValidationPool(
                task=spec.task_type,
                metric=spec.metric,
                maximize=spec.direction is Direction.MAXIMIZE,
                y=np.concatenate([p.y_valid for p in parts]),  # type: ignore[misc]
                weights=None if any(w is None for w in weights) else np.concatenate(weights),  # type: ignore[arg-type]
            )
        return pool

    def _recorder(
        self, experiment: Experiment, on_trial: Callable[[TrialRecord], None] | None
    ) -> Callable[[optuna.Study, FrozenTrial], None]:
        def record(study: optuna.Study, trial: FrozenTrial) -> None:
            record = trial_record(experiment.id, trial)
            if record is None:
                return
            if self.repo.record_trial(
                record, experiment.spec.direction, lambda exp: trial_event(exp, record)
            ):
                arbor_metrics.trial_recorded(
                    record.state.value,
                    model_type=record.model_type,
                    duration_s=record.duration_seconds,
                )
            if on_trial is not None:
                on_trial(record)

        return record

    def reconcile(self, experiment: Experiment) -> int:
        """Record trials Optuna finished that the service has not (a worker died between).

        Returns how many were added.
        """
        study = optuna.load_study(study_name=experiment.id, storage=self.storage)
        known = self.repo.trial_numbers(experiment.id)
        added = 0
        for trial in study.get_trials(deepcopy=False):
            if trial.number in known:
                continue
            record = trial_record(experiment.id, trial)
            if record is None:
                continue
            if self.repo.record_trial(record, experiment.spec.direction, _event_for(record)):
                added += 1
                arbor_metrics.trial_recorded(
                    record.state.value,
                    model_type=record.model_type,
                    duration_s=record.duration_seconds,
                )
        return added

    def running_trials(self, experiment_id: str) -> int:
        study = optuna.load_study(study_name=experiment_id, storage=self.storage)
        return len(self.fail_stale(study))

    # ---------------------------------------------------------------- refit

    def best_trial(self, experiment: Experiment) -> FrozenTrial | None:
        study = optuna.load_study(study_name=experiment.id, storage=self.storage)
        complete = study.get_trials(deepcopy=False, states=(OptunaTrialState.COMPLETE,))
        if not complete:
            return None
        return study.best_trial

    def refit(self, experiment: Experiment, best: FrozenTrial) -> RefitResult:
        """The best trial's final model (see ``arbor_ml.automl``: ``all``, ``train`` or the
        trial's own model), its decision threshold, evaluated and saved as a bundle.

        A bundle this worker already saved under its own prefix for the experiment (an
        earlier attempt that failed to register) is loaded and reused, so a retried
        registration points at the very same files; another finalizer never writes there.
        """
        spec = experiment.spec
        prefix = bundle_prefix_for(spec, experiment.id, self.worker_id)
        library, params = trial_params(spec, best)
        if self.store.exists(prefix + "manifest.json"):
            bundle = load_bundle(self.store, prefix)
            ref = existing_ref(self.store, prefix)
            meta = bundle.metadata
            extra = dict(meta.get("extra") or {})
            return RefitResult(
                bundle=bundle,
                ref=ref,
                best_trial=best,
                metrics=_finite_metrics(meta.get("metrics") or {})
                | _finite_metrics(extra.get("test_metrics") or {}, "test_")
                | _finite_metrics(extra.get("serving") or {}),
                params=dict(meta.get("params") or params),
                model_type=bundle.model_type,
                training_rows=int(meta.get("training_rows") or 0),
                reused=True,
                final_fit=str(extra.get("final_fit") or ""),
                final_iterations=int(meta.get("iterations") or 0),
            )
        started = time.monotonic()
        data = self.data(experiment)
        trainer = trainers_for(spec)[library]
        attrs = best.user_attrs.get(ATTR) or {}
        kept = self._kept.get(experiment.id)
        if kept is not None and kept.number != best.number:
            kept = None
        estimate = self._final_estimate(spec, best, data)
        remaining = self.clock(experiment).remaining()
        choice = choose_final_fit(
            parse_final_fit(spec.study.final_fit),
            remaining_s=remaining,
            estimate_all_s=estimate,
            have_trial_model=kept is not None,
        )
        ensemble = [best.number]  # the trials averaged into the final model
        blend = None
        if choice is FinalFit.ALL:
            blend = self._choose_blend(experiment, best, data, remaining)
        elif choice is FinalFit.TRIAL:
            blend = self._choose_blend(experiment, best, data, remaining, refit=False)
        blended: FitResult | None = None
        if blend is not None:
            if choice is FinalFit.ALL:
                blended, prepared, blend = self._fit_blend(experiment, data, blend)
            else:
                blended, prepared = self._blend_trial_models(experiment, data, blend)
            result, ensemble = blended, blend.members
        elif choice is FinalFit.TRIAL:
            assert kept is not None
            result, prepared = kept.result, kept.prepared
        else:
            prepared = (
                data.prepared_all(library) if choice is FinalFit.ALL else data.prepared(library)
            )
            rounds = self._refit_rounds(spec, best, data, prepared.train_rows)
            settings = replace(fit_settings(spec), iterations=rounds, early_stopping_rounds=None)
            members: list[tuple[dict, FitSettings]] = [(params, settings)]
            if choice is FinalFit.ALL and trainer.can_average:
                per_fit = max(estimate - ESTIMATE_OVERHEAD_S, 0.0)  # one refit, no packaging
                most = averaged_models(remaining, per_fit, overhead_s=FINAL_OVERHEAD_S)
                members, ensemble = self._ensemble(
                    experiment, best, data, prepared.train_rows, settings, most, per_fit
                )
            result = trainer.fit_ensemble(prepared, members)
        post = spec.postprocessing
        options = post.ml_options()
        y_valid: np.ndarray | None
        output: np.ndarray | None
        if blend is not None:
            pool = self._pools[experiment.id]
            y_valid, output = pool.y, pool.blended_output(blend.weights)
        else:
            y_valid, output = self._validation_predictions(kept, result, data, library, choice)
        tuning: dict[str, Any] | None = None
        if post.threshold_objective and spec.task_type is TaskType.BINARY and output is not None:
            assert y_valid is not None
            tuned = tune_threshold(y_valid, np.asarray(output)[:, 1], post.threshold_objective)
            options["threshold"] = tuned.threshold
            tuning = tuned.to_dict()
        threshold = float(options.get("threshold", 0.5))
        sample = prepared.x_valid if prepared.x_valid is not None else prepared.x_train
        remaining = self.clock(experiment).remaining()
        importance_rows = IMPORTANCE_ROWS
        if remaining is not None:
            # The global SHAP ranking gets a slice of what is left, not the whole of it (and
            # its fewest rows once the budget is spent: a trial cut at the deadline can hold
            # 30,000 trees, whose SHAP values take 13 ms a row).
            seconds = min(IMPORTANCE_SECONDS, max(0.1, remaining / 4))
            importance_rows = importance_rows_within(result.model, sample, seconds)
        bundle = build_bundle(
            prepared,
            result,
            importance_rows=importance_rows,
            # The library's own exact TreeSHAP, whose cost importance_rows_within just
            # measured: shap.TreeExplainer first re-reads the whole model (3 s for 40,000
            # trees, plus importing shap), which the time budget cannot see coming.
            importance_method="native_shap",
            postprocessing=PostprocessingOptions.from_dict(options),
            extra_metadata={
                "experiment": experiment.name,
                "best_trial_number": best.number,
                "best_trial_value": best.value,
                "split": spec.split,
                "split_content_hash": spec.split_content_hash,
                "optuna_version": optuna.__version__,
                "final_fit": choice.value,
                "averaged_models": int(result.extra.get("averaged_models", 1)),
                "ensemble_trials": ensemble,
                "blend": None if blend is None else blend.to_dict(),
                "blend_candidates": self._candidates.get(experiment.id),
                "cv_folds": spec.study.cv_folds,
                "threshold_tuning": tuning,
            },
        )
        # Validation metrics of the model as the study scored it: the best trial's (mean over
        # folds), with the tuned threshold where predictions are at hand. A model refit on
        # train + validation has no unseen validation rows left to score.
        validation = dict(attrs.get("metrics") or {})
        if spec.task_type.is_classification and y_valid is not None and output is not None:
            validation = M.evaluate(spec.task_type, y_valid, output, threshold=threshold)
        elif blend is not None and y_valid is not None and output is not None:
            transform = prepared.target.transform
            validation = M.evaluate(
                spec.task_type,
                inverse_target_transform(transform, y_valid),
                inverse_target_transform(transform, output),
            )
        if choice is FinalFit.TRAIN and not spec.study.cv_folds:
            validation = dict(bundle.metadata.get("metrics") or validation)
        bundle.metadata["metrics"] = {
            k: (v if isinstance(v, int | float) and math.isfinite(v) else None)
            for k, v in validation.items()
        }
        serving = {LATENCY_METRIC: predict_ms_per_1k_rows(result.model, sample)}
        bundle.metadata["extra"]["serving"] = serving
        test_metrics = self._test_metrics(bundle, data, prepared)
        bundle.metadata["extra"]["test_metrics"] = {
            k: (v if math.isfinite(v) else None) for k, v in test_metrics.items()
        }
        ref = save_bundle(bundle, self.store, prefix)
        if spec.study.parallelism > 1 and spec.study.ensemble_size > 1:
            self._drop_shared_outputs(experiment)
        metrics = _finite_metrics(bundle.metadata.get("metrics") or {})
        metrics |= _finite_metrics(test_metrics, "test_")
        metrics |= _finite_metrics(serving)
        log.info(
            "final fit %s of trial %d (%s): %d rounds in %.1fs",
            choice.value,
            best.number,
            repr(result.model) if blend is not None else library.value,
            result.iterations,
            time.monotonic() - started,
            extra={"experiment_id": experiment.id, "final_fit": choice.value},
        )
        return RefitResult(
            bundle=bundle,
            ref=ref,
            best_trial=best,
            metrics=metrics,
            params=dict(params) if blended is None else blended.params,
            model_type=result.model.model_type,
            training_rows=prepared.train_rows,
            final_fit=choice.value,
            final_iterations=int(bundle.metadata.get("iterations") or result.iterations),
        )

    def _choose_blend(
        self,
        experiment: Experiment,
        best: FrozenTrial,
        data: StudyData,
        remaining: float | None,
        *,
        refit: bool = True,
    ) -> Blend | None:
        """The blend of trials to register (``arbor_ml.ensemble``), or None for the best
        trial alone: blending is off, the best trial's validation outputs are not at hand (a
        worker that stopped before storing them), or no blend of trials whose refits fit in
        the time left beats it on validation. Without ``refit`` (no time for any), a blend of
        the trials' own models, which this worker holds (no cross-validation)."""
        most = experiment.spec.study.ensemble_size
        pool = self._pools.get(experiment.id)
        if refit and most > 1 and experiment.spec.study.parallelism > 1:
            pool = self._gather_outputs(experiment, data)
        self._candidates[experiment.id] = 0 if pool is None else len(pool.outputs)
        if pool is None or most < 2 or best.number not in pool.outputs:
            return None
        if refit:
            # the packaging once, as the reserve has it (the SHAP ranking is sized to what is
            # left)
            budget = math.inf if remaining is None else remaining - ESTIMATE_OVERHEAD_S

            def allowed(members: Sequence[int]) -> bool:
                return sum(pool.costs[k] for k in members) <= budget

        else:
            if best.number not in pool.models:
                return None

            def allowed(members: Sequence[int]) -> bool:
                return all(k in pool.models for k in members)

        blend = pool.select(most=most, allowed=allowed)
        return blend if len(blend.weights) > 1 else None

    def _blend_trial_models(
        self, experiment: Experiment, data: StudyData, blend: Blend
    ) -> tuple[FitResult, PreparedData]:
        """``blend`` of the trials' own models (trained on the train part), as they are: what
        a study registers when no refit fits in the time left, instead of one trial's model."""
        spec = experiment.spec
        study = optuna.load_study(study_name=experiment.id, storage=self.storage)
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        pool = self._pools[experiment.id]
        started = time.perf_counter()
        members = []
        for number, weight in blend.weights.items():
            library, params = trial_params(spec, trials[number])
            rounds = (trials[number].user_attrs.get(ATTR) or {}).get("iterations")
            members.append(
                _BlendMember(
                    number,
                    library,
                    params,
                    data.prepared(library),  # what the trial trained on
                    pool.models[number],
                    weight,
                    iterations=rounds if isinstance(rounds, int) else 0,
                )
            )
        kept = self._kept[experiment.id]  # the best trial's, a member of any blend
        return _assemble_blend(members, kept.result, started)

    def _fit_blend(
        self, experiment: Experiment, data: StudyData, blend: Blend
    ) -> tuple[FitResult, PreparedData, Blend]:
        """Refit each member of ``blend`` on train + validation and blend them; a member whose
        refit no longer fits in the time left is dropped (the returned blend says which)."""
        spec = experiment.spec
        study = optuna.load_study(study_name=experiment.id, storage=self.storage)
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        trainers = trainers_for(spec)
        settings = replace(fit_settings(spec), early_stopping_rounds=None)
        pool = self._pools[experiment.id]
        clock = self.clock(experiment)
        started = time.perf_counter()
        members: list[_BlendMember] = []
        first: FitResult | None = None
        for number, weight in blend.weights.items():
            left = clock.remaining()
            if members and left is not None and left < pool.costs[number] + ESTIMATE_OVERHEAD_S:
                log.warning("blend member trial %d dropped: no time left to refit it", number)
                continue
            library, params = trial_params(spec, trials[number])
            prepared = data.prepared_all(library)
            rounds = self._refit_rounds(spec, trials[number], data, prepared.train_rows)
            fit = trainers[library].fit(prepared, params, replace(settings, iterations=rounds))
            first = first or fit
            members.append(
                _BlendMember(
                    number,
                    library,
                    params,
                    prepared,
                    fit.model,
                    weight,
                    iterations=fit.iterations,
                    library_params=fit.library_params,
                )
            )
        assert first is not None  # the first member is always refit
        result, prepared = _assemble_blend(members, first, started)
        weights = {m.trial: m.weight for m in result.model.members if m.trial is not None}  # type: ignore[attr-defined]
        blend = Blend(weights, pool.score(pool.blended_margin(weights)), blend.single_value)
        return result, prepared, blend

    def _refit_rounds(
        self, spec: ExperimentSpec, trial: FrozenTrial, data: StudyData, refit_rows: int
    ) -> int:
        """Rounds for refitting ``trial`` on ``refit_rows`` rows (``refit_iterations``)."""
        attrs = trial.user_attrs.get(ATTR) or {}
        return refit_iterations(
            attrs.get("best_iterations") or [attrs.get("best_iteration")],
            fit_rows=int(attrs.get("fit_rows") or data.fit_rows()),
            refit_rows=refit_rows,
            max_iterations=max_iterations(spec),
        )

    def _ensemble(
        self,
        experiment: Experiment,
        best: FrozenTrial,
        data: StudyData,
        refit_rows: int,
        settings: FitSettings,
        most: int,
        per_fit: float,
    ) -> tuple[list[tuple[dict, FitSettings]], list[int]]:
        """The final fit's members (parameters, settings) and the trials they come from: the
        best trial, the next best of its library within reach of it
        (``arbor_ml.automl.ensemble_members``), then seeds of the best up to ``most``. A trial
        whose refit would take much longer than the best's (which the budget was sized on)
        is left out."""
        spec = experiment.spec
        library, params = trial_params(spec, best)
        study = optuna.load_study(study_name=experiment.id, storage=self.storage)
        same = {
            t.number: t
            for t in study.get_trials(deepcopy=False, states=(OptunaTrialState.COMPLETE,))
            if t.value is not None and trial_params(spec, t)[0] is library
        }
        same[best.number] = best
        scored = [
            (number, float(t.value))  # type: ignore[arg-type]
            for number, t in same.items()
            if number == best.number
            or self._final_estimate(spec, t, data) - ESTIMATE_OVERHEAD_S <= per_fit * 1.5
        ]
        numbers = ensemble_members(
            scored, best=best.number, maximize=spec.direction is Direction.MAXIMIZE, most=most
        )
        members: list[tuple[dict, FitSettings]] = []
        for number in numbers:
            trial = same[number]
            rounds = self._refit_rounds(spec, trial, data, refit_rows)
            members.append((trial_params(spec, trial)[1], replace(settings, iterations=rounds)))
        for extra in range(len(members), most):  # seeds of the best fill the rest
            members.append((params, replace(settings, seed=(settings.seed + extra) % 2**31)))
        return members, numbers

    @staticmethod
    def _validation_predictions(
        kept: KeptModel | None,
        result: FitResult,
        data: StudyData,
        library: ModelType,
        choice: FinalFit,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Labels and model outputs on rows the final model's trial did not train on: the kept
        trial's validation (out-of-fold with cross-validation) predictions; else the final
        model's on the validation part (optimistic after an ``all`` fit: it saw them)."""
        if kept is not None and kept.output_valid is not None:
            return kept.y_valid, kept.output_valid
        if not data.spec.task_type.is_classification:
            return None, None
        prepared = data.prepared(library)
        if prepared.x_valid is None:
            return None, None
        if choice is FinalFit.ALL:
            log.warning("tuning the threshold on validation rows the final model was fit on")
        return prepared.y_valid, result.model.predict_output(prepared.x_valid)

    def summary(self, experiment: Experiment, refit: RefitResult) -> dict[str, Any]:
        """The StudySummary of a finished study, as stored with the experiment."""
        study = optuna.load_study(study_name=experiment.id, storage=self.storage)
        records = [
            (t, r)
            for t in study.get_trials(deepcopy=False)
            if (r := trial_record(experiment.id, t)) is not None
        ]
        states = [r.state for _, r in records]
        ends = [t.datetime_complete for t, _ in records if t.datetime_complete is not None]
        now = utcnow()
        started = experiment.start_time or experiment.create_time
        trials_end = max(ends).astimezone() if ends else now
        best = refit.best_trial
        return {
            "trials_complete": states.count(TrialState.COMPLETE),
            "trials_pruned": states.count(TrialState.PRUNED),
            "trials_failed": states.count(TrialState.FAILED),
            "trials_stopped_by_budget": sum(
                1 for t, _ in records if (t.user_attrs.get(ATTR) or {}).get("stopped_by_budget")
            ),
            "best_trial_number": best.number,
            "best_value": best.value,
            "best_model_type": trial_params(experiment.spec, best)[0].value,
            "total_seconds": (now - started).total_seconds(),
            "trials_seconds": max(0.0, (trials_end - started).total_seconds()),
            "final_seconds": max(0.0, (now - trials_end).total_seconds()),
            "final_fit": refit.final_fit,
            "final_iterations": refit.final_iterations,
            "cv_folds": experiment.spec.study.cv_folds,
        }

    def _test_metrics(
        self, bundle: ModelBundle, data: StudyData, prepared: PreparedData
    ) -> dict[str, float]:
        try:
            test = data.test()
        except Exception as err:
            log.warning("reading the test part failed: %s", err)
            return {}
        if test is None or test.height == 0:
            return {}
        target = prepared.target
        test = test.filter(pl.col(target.name).is_not_null())
        try:
            prediction = bundle.predict(test)
            if prepared.task.is_classification:
                assert prediction.probabilities is not None
                y = target.encode(test.get_column(target.name))
                return M.evaluate(
                    prepared.task,
                    y,
                    prediction.probabilities,
                    threshold=bundle.postprocessor.threshold,
                )
            assert prediction.values is not None
            y_true = test.get_column(target.name).cast(pl.Float64).to_numpy()
            return M.evaluate(prepared.task, y_true, prediction.values)
        except Exception as err:  # a test part the model cannot score is reported, not fatal
            log.warning("evaluating on the test part failed: %s", err)
            return {}


def existing_ref(store: ArtifactStore, prefix: str) -> BundleRef:
    """The BundleRef of a bundle already saved under ``prefix`` (from its manifest)."""
    raw = store.get_bytes(prefix + "manifest.json")
    manifest = json.loads(raw)
    files = {
        name: ArtifactRef(
            key=prefix + name,
            uri=store.uri_for(prefix + name),
            sha256=entry["sha256"],
            size=int(entry["size"]),
        )
        for name, entry in manifest["files"].items()
    }
    digest = hashlib.sha256(raw).hexdigest()
    files["manifest.json"] = ArtifactRef(
        key=prefix + "manifest.json",
        uri=store.uri_for(prefix + "manifest.json"),
        sha256=digest,
        size=len(raw),
    )
    return BundleRef(
        prefix=prefix,
        uri=store.uri_for(prefix + "manifest.json").removesuffix("manifest.json"),
        manifest_sha256=digest,
        files=files,
    )


def _finite_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(v)
    }


def _mean_metrics(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the folds (NaN ignored; NaN when every fold has NaN)."""
    names = [k for k in per_fold[0]] if per_fold else []
    out: dict[str, float] = {}
    for name in names:
        values = [m.get(name, math.nan) for m in per_fold]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        out[name] = float(sum(finite) / len(finite)) if finite else math.nan
    return out


# --------------------------------------------------------------------------- records and events


_OPTUNA_STATES = {
    OptunaTrialState.COMPLETE: TrialState.COMPLETE,
    OptunaTrialState.PRUNED: TrialState.PRUNED,
    OptunaTrialState.FAIL: TrialState.FAILED,
}


def trial_record(experiment_id: str, trial: FrozenTrial) -> TrialRecord | None:
    """The service's record of a finished Optuna trial; None for one it does not record
    (still running, or a stale trial of a dead worker, which is retried instead)."""
    state = _OPTUNA_STATES.get(trial.state)
    if state is None:
        return None
    if not counts(trial):
        return None  # failed by the heartbeat check (retried), or discarded past the budget
    attrs = trial.user_attrs.get(ATTR) or {}
    intermediate = [(int(s), float(v)) for s, v in attrs.get("intermediate") or ()]
    if not intermediate:
        intermediate = sorted((int(k), float(v)) for k, v in trial.intermediate_values.items())
    start = trial.datetime_start.astimezone() if trial.datetime_start else None
    end = trial.datetime_complete.astimezone() if trial.datetime_complete else None
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    params = {k: v for k, v in trial.params.items()}
    return TrialRecord(
        experiment_id=experiment_id,
        number=trial.number,
        state=state,
        value=trial.value if state is TrialState.COMPLETE else None,
        params=params,
        intermediate_values=intermediate,
        start_time=start,
        end_time=end,
        duration_seconds=duration,
        error_message=str(attrs.get("error") or ""),
        model_type=str(attrs.get("model_type") or ""),
        best_iteration=attrs.get("best_iteration"),
        fit_seconds=(
            attrs["fit_seconds"] + (attrs.get("predict_seconds") or 0.0)
            if attrs.get("fit_seconds") is not None
            else None
        ),
        worker=str(attrs.get("worker") or ""),
        fold_values=[float(v) if v is not None else math.nan for v in folds]
        if len(folds := attrs.get("fold_values") or ()) > 1
        else [],
        predict_ms_per_1k_rows=attrs.get("predict_ms_per_1k_rows"),
    )


def _event_for(trial: TrialRecord) -> Callable[[Experiment], events_pb2.Event]:
    return lambda experiment: trial_event(experiment, trial)


def trial_event(experiment: Experiment, trial: TrialRecord) -> events_pb2.Event:
    return new_event(
        "experiment.trial_completed",
        experiment.name,
        EVENT_SOURCE,
        trial_completed=events_pb2.TrialCompleted(
            experiment=experiment.name,
            number=trial.number,
            state=trial.state.value,
            value=trial.value if trial.value is not None else 0.0,
            best_value=experiment.best_value if experiment.best_value is not None else 0.0,
            trials_completed=experiment.trials_completed,
        ),
    )
