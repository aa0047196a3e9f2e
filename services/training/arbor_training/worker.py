"""Training workers: pull jobs from the JetStream work queue and run their studies.

``python -m arbor_training.worker`` (console script ``arbor-training-worker``) runs one worker
process; start as many as the machines allow. Each one:

1. pulls one ``TrainingJob`` at a time from the durable pull consumer ``training-workers`` on
   ``arbor.jobs.training`` (namespace-prefixed);
2. moves the experiment QUEUED -> RUNNING (or joins/resumes it when it is RUNNING already),
   runs trials of the shared Optuna study (see ``study.py``) while a task sends
   ``msg.in_progress()`` every third of ``ack_wait``, so a long study is never redelivered;
3. when the budget is spent: one worker (a lease in the experiment row) records any trial
   the service missed, refits the best trial, saves the bundle and registers it over gRPC;
4. acks the job only once the experiment is final (SUCCEEDED, FAILED or CANCELLED). A worker
   killed at any point leaves its job unacked: JetStream redelivers it after ``ack_wait`` and
   the next worker resumes the same study with every finished trial kept.

**Sharing a study.** ``StudyConfig.parallelism = N`` makes CreateExperiment enqueue N jobs for
the experiment; each worker that takes one joins the same study (the trial budget is counted
in the shared Optuna storage, see ``study.py``), one of them finalizes, and every job is acked
when the experiment ends.

Transient failures (database or registry unavailable) nak the job with a delay (retry later);
bad data or a refused registration fails the experiment with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import nats.errors
import optuna

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as registry_pb
from arbor.registry.v1 import registry_service_pb2_grpc as registry_grpc
from arbor.training.v1 import training_service_pb2
from arbor_core import eventloop
from arbor_core.artifacts import open_store
from arbor_core.clients import service_channel
from arbor_core.config import Settings, env_flag, env_float, load_settings
from arbor_core.db import make_engine, run_db, session_factory
from arbor_core.errors import ArborError, NotFound, Unavailable
from arbor_core.events import connect_nats, ensure_streams, jobs_pull_subscription
from arbor_core.logging import configure_logging, request_id_scope
from arbor_core.metrics import start_process_telemetry
from arbor_core.outbox import OutboxRelay
from arbor_core.telemetry import continue_trace
from arbor_ml.preload import LibraryPreload
from arbor_training.domain import (
    JOB_QUEUE,
    Experiment,
    Experiments,
    ExperimentState,
    TrialState,
    parse_experiment_name,
)
from arbor_training.repository import FinalizerLeaseLost, TrainingRepository
from arbor_training.server import migrate
from arbor_training.study import Outcome, RefitResult, StudyRunner, StudySettings
from arbor_training.tables import outbox

log = logging.getLogger("arbor.training.worker")

REGISTER_TIMEOUT_S = 30.0
#: Import LightGBM, XGBoost and CatBoost when the worker starts (0: on first use).
PRELOAD_ENV = "ARBOR_TRAINING_PRELOAD_LIBRARIES"
#: Errors that will not go away by retrying: the experiment fails with the reason.
PERMANENT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
             grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.DATA_LOSS)  # fmt: skip


@dataclass(frozen=True)
class WorkerConfig:
    """Queue and timing knobs (``ARBOR_TRAINING_*``); tests shorten them."""

    durable: str = "training-workers"
    ack_wait: float = 60.0  # seconds JetStream waits for an ack (or in-progress) before redelivery
    max_deliver: int = 20  # deliveries of one job before JetStream gives up on it
    fetch_timeout: float = 2.0
    retry_delay: float = 5.0  # nak delay after a transient failure
    study: StudySettings = field(default_factory=StudySettings)

    @classmethod
    def from_env(cls) -> WorkerConfig:
        return cls(
            durable=os.environ.get("ARBOR_TRAINING_DURABLE", "") or "training-workers",
            ack_wait=env_float("ARBOR_TRAINING_ACK_WAIT_SECONDS", 60.0),
            max_deliver=int(env_float("ARBOR_TRAINING_MAX_DELIVER", 20)),
            retry_delay=env_float("ARBOR_TRAINING_RETRY_DELAY_SECONDS", 5.0),
            study=StudySettings(
                heartbeat_interval=int(env_float("ARBOR_TRAINING_HEARTBEAT_SECONDS", 10)),
                grace_period=int(env_float("ARBOR_TRAINING_GRACE_SECONDS", 30)),
                control_interval=env_float("ARBOR_TRAINING_CONTROL_INTERVAL_SECONDS", 0.5),
                finalizer_lease=env_float("ARBOR_TRAINING_FINALIZER_LEASE_SECONDS", 120.0),
                trial_threads=trial_threads(),
            ),
        )


def trial_threads() -> int:
    """Threads per trial: ``ARBOR_TRAINING_TRIAL_THREADS``, else cores / the number of
    workers on this host (``ARBOR_TRAINING_WORKERS_PER_HOST``; a worker alone: no cap)."""
    explicit = int(env_float("ARBOR_TRAINING_TRIAL_THREADS", 0))
    if explicit > 0:
        return explicit
    workers = int(env_float("ARBOR_TRAINING_WORKERS_PER_HOST", 1))
    if workers <= 1:
        return 0
    return max(1, (os.cpu_count() or 1) // workers)


class Transient(Exception):
    """Try the job again later (nak with a delay); the experiment stays as it is."""


class Worker:
    """One worker process's loop over the job queue (one job at a time)."""

    def __init__(self, settings: Settings, config: WorkerConfig | None = None) -> None:
        self.settings = settings
        self.config = config or WorkerConfig.from_env()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.engine = make_engine(settings)
        self.repo = TrainingRepository(session_factory(self.engine))
        self.experiments = Experiments(self.repo)
        self.store = open_store(settings.artifact_uri)
        self.runner = StudyRunner(
            self.repo, settings.database_url, self.store, self.worker_id, self.config.study
        )
        self.relay = OutboxRelay(
            self.repo.session_factory,
            outbox,
            settings.nats_url,
            settings.nats_namespace,
            name="training-worker-outbox",
        )
        self._registry_channel: grpc.aio.Channel | None = None
        self.jobs_done = 0
        self.current: str | None = None

    # ---------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Pull and run jobs until ``stop`` is set (the current job finishes its trial first)."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        await self.relay.start()
        self._registry_channel = service_channel("registry", self.settings)
        nc = await connect_nats(self.settings.nats_url, name=f"training-worker-{os.getpid()}")
        try:
            js = nc.jetstream()
            await ensure_streams(js, self.settings.nats_namespace)
            subscription = await jobs_pull_subscription(
                js,
                JOB_QUEUE,
                self.config.durable,
                namespace=self.settings.nats_namespace,
                ack_wait=self.config.ack_wait,
                max_deliver=self.config.max_deliver,
            )
            log.info("worker ready", extra={"worker": self.worker_id})
            watcher = asyncio.create_task(self._shutdown_when(stop))
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(1, timeout=self.config.fetch_timeout)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except nats.errors.Error as err:
                    log.warning("fetching a job failed: %s", err)
                    await asyncio.sleep(1.0)
                    continue
                for message in messages:
                    await self.handle(message, stop)
            watcher.cancel()
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
            await self.close()

    async def _shutdown_when(self, stop: asyncio.Event) -> None:
        """On stop, the running study ends after its current trial (the job is nak'ed)."""
        await stop.wait()
        self.runner.shutdown.set()

    async def close(self) -> None:
        await self.relay.stop()
        if self._registry_channel is not None:
            await self._registry_channel.close()
        self.runner.close()
        self.engine.dispose()

    async def handle(self, message: Any, stop: asyncio.Event) -> None:
        """One job: ack when the experiment is final, nak (delayed) on a transient failure."""
        try:
            job = training_service_pb2.TrainingJob.FromString(message.data)
            ident = parse_experiment_name(job.experiment, "experiment")
        except Exception as err:
            log.error("dropping an unreadable training job: %s", err)
            await message.term()
            return
        attempt = int(message.metadata.num_delivered)
        keepalive = asyncio.create_task(self._keep_alive(message))
        self.current = ident
        final: bool | None  # None: the job is no longer this worker's (neither ack nor nak)
        try:
            # The job carries the trace of the CreateExperiment call: continue it, so the
            # registration below (RegisterModelVersion) joins that trace.
            with (
                continue_trace(
                    "process arbor.jobs.training",
                    job.trace_parent,
                    attributes={"arbor.experiment": job.experiment, "arbor.job.attempt": attempt},
                ),
                request_id_scope(f"job:{ident}:{attempt}"),
            ):
                final = await self.process(ident, attempt)
        except Transient as err:
            log.warning("job for %s will be retried: %s", ident, err)
            final = False
        except FinalizerLeaseLost as err:
            # This worker stalled past its lease and another one finalizes now: its late
            # write was refused, and the job (redelivered to the new holder) is not ours.
            log.warning("job for %s left to the new finalizer: %s", ident, err.message)
            final = None
        except Exception:
            log.exception("job for %s failed unexpectedly; it will be retried", ident)
            final = False
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            self.current = None
        with contextlib.suppress(nats.errors.Error):
            if final:
                await message.ack()
                self.jobs_done += 1
            elif final is not None:
                await message.nak(delay=self.config.retry_delay)

    async def _keep_alive(self, message: Any) -> None:
        """``in_progress`` every third of ack_wait: the job stays ours while we work."""
        interval = max(0.2, self.config.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await message.in_progress()
            except Exception as err:  # NATS away: if it stays away, the job is redelivered
                log.warning("in-progress ack failed: %s", err)

    # ---------------------------------------------------------------- one job

    async def process(self, ident: str, attempt: int) -> bool:
        """Run (or join, or resume) the experiment; True once it is final."""
        try:
            experiment = await run_db(self.experiments.get, ident, show_deleted=True)
        except NotFound:
            log.warning("job for unknown experiment %s dropped", ident)
            return True
        if experiment.is_final:
            return True
        if attempt > self.config.max_deliver - 1:
            await run_db(
                lambda: self.experiments.finish(
                    ident,
                    ExperimentState.FAILED,
                    error_message=f"gave up after {attempt} attempts (see worker logs)",
                )
            )
            return True
        experiment, starter = await run_db(
            lambda: self.experiments.start(ident, worker=self.worker_id, attempt=attempt)
        )
        if experiment.is_final:
            return True
        log.info(
            "running study %s (%s)",
            ident,
            "start" if starter else "join/resume",
            extra={"experiment_id": ident, "attempt": attempt},
        )
        try:
            outcome = await asyncio.to_thread(self.runner.run_trials, experiment, starter=starter)
        except ArborError as err:
            return await self._fail_or_retry(ident, err)
        if outcome is Outcome.SHUTDOWN:
            raise Transient("the worker is shutting down")
        return await self.conclude(ident, outcome)

    async def _fail_or_retry(
        self, ident: str, err: ArborError, finalizer: str | None = None
    ) -> bool:
        if isinstance(err, Unavailable):
            raise Transient(str(err)) from err
        await run_db(
            lambda: self.experiments.finish(
                ident,
                ExperimentState.FAILED,
                error_message=f"{err.reason}: {err.message}",
                finalizer=finalizer,
            )
        )
        return True

    async def conclude(self, ident: str, outcome: Outcome) -> bool:
        """After this worker's trials: cancel, fail, or (one worker) refit and register."""
        interval = self.config.study.control_interval
        while True:
            experiment = await run_db(self.experiments.get, ident, show_deleted=True)
            if experiment.is_final:
                return True
            if experiment.cancel_requested or experiment.delete_time is not None:
                await asyncio.to_thread(self.runner.reconcile, experiment)
                await run_db(self.experiments.finish, ident, ExperimentState.CANCELLED)
                return True
            if outcome is Outcome.BUDGET_DONE:
                running = await asyncio.to_thread(self.runner.running_trials, ident)
                if running:  # a trial is still running elsewhere (or goes stale): wait for it
                    outcome = await asyncio.to_thread(
                        self.runner.run_trials, experiment, starter=False
                    )
                    continue
            claimed = await run_db(
                self.repo.claim_finalizer, ident, self.worker_id, self.config.study.finalizer_lease
            )
            if not claimed:
                await asyncio.sleep(interval)  # another worker finalizes; ack when it is done
                continue
            return await self.finalize(experiment)

    async def finalize(self, experiment: Experiment) -> bool:
        """Refit, register, finish: the final write is fenced by this worker's lease."""
        ident = experiment.id
        me = self.worker_id
        renew = asyncio.create_task(self._renew_lease(ident))
        try:
            await asyncio.to_thread(self.runner.reconcile, experiment)
            best = await asyncio.to_thread(self.runner.best_trial, experiment)
            if best is None:
                reason = await run_db(self._no_trial_reason, ident)
                await run_db(
                    lambda: self.experiments.finish(
                        ident, ExperimentState.FAILED, error_message=reason, finalizer=me
                    )
                )
                return True
            try:
                refit = await asyncio.to_thread(self.runner.refit, experiment, best)
            except ArborError as err:
                return await self._fail_or_retry(ident, err, me)
            try:
                model_version = await self.register(experiment, refit)
            except ArborError as err:
                return await self._fail_or_retry(ident, err, me)
            summary = await asyncio.to_thread(self.runner.summary, experiment, refit)
            await run_db(
                lambda: self.experiments.finish(
                    ident,
                    ExperimentState.SUCCEEDED,
                    model_version=model_version,
                    metrics=refit.metrics,
                    summary=summary,
                    finalizer=me,
                )
            )
            log.info(
                "experiment %s succeeded: %s",
                ident,
                model_version,
                extra={"experiment_id": ident, "model_version": model_version},
            )
            return True
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew

    async def _renew_lease(self, ident: str) -> None:
        lease = self.config.study.finalizer_lease
        while True:
            await asyncio.sleep(max(0.5, lease / 3))
            with contextlib.suppress(Exception):
                await run_db(self.repo.claim_finalizer, ident, self.worker_id, lease)

    def _no_trial_reason(self, ident: str) -> str:
        trials = self.experiments.all_trials(ident)
        if not trials:
            return "no trial finished"
        failed = [t for t in trials if t.state is TrialState.FAILED]
        pruned = [t for t in trials if t.state is TrialState.PRUNED]
        if len(failed) == len(trials):
            return f"all {len(trials)} trials failed; first error: {failed[0].error_message}"
        text = f"no trial completed ({len(pruned)} pruned, {len(failed)} failed)"
        if failed:
            text += f"; first error: {failed[0].error_message}"
        return text

    # ---------------------------------------------------------------- registry

    async def register(self, experiment: Experiment, refit: RefitResult) -> str:
        """RegisterModelVersion; idempotent on the request id derived from the experiment."""
        assert self._registry_channel is not None
        stub = registry_grpc.RegistryServiceStub(self._registry_channel)
        request = registration_request(experiment, refit)
        try:
            response = await stub.RegisterModelVersion(request, timeout=REGISTER_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            if err.code() in PERMANENT:
                raise _Refused(f"{err.code().name}: {err.details()}") from err
            raise Transient(f"registry: {err.code().name}: {err.details()}") from err
        return str(response.model_version.name)


class _Refused(ArborError):
    """The registry refused the model: the experiment fails with its reason."""

    default_reason = "REGISTRATION_REFUSED"


def registration_request(
    experiment: Experiment, refit: RefitResult
) -> registry_pb.RegisterModelVersionRequest:
    """The registry call for an experiment's refit best model, with its full lineage."""
    spec = experiment.spec
    bundle = refit.bundle
    signature = bundle.signature
    categorical = set(signature.categorical_features)
    meta = bundle.metadata
    versions = {k: str(v) for k, v in (meta.get("library_versions") or {}).items() if v}
    versions["optuna"] = optuna.__version__
    params = dict(refit.params)
    if meta.get("iterations") is not None:
        params["iterations"] = meta["iterations"]
    version = registry_pb.ModelVersion(
        experiment=experiment.name,
        best_trial_number=refit.best_trial.number,
        split=spec.split,
        split_content_hash=spec.split_content_hash,
        model_type=common_pb2.ModelType.Value("MODEL_TYPE_" + refit.model_type.value.upper()),
        task_type=common_pb2.TaskType.Value("TASK_TYPE_" + spec.task_type.value.upper()),
        metrics=refit.metrics,
        signature=registry_pb.ModelSignature(
            inputs=[
                registry_pb.InputColumn(
                    name=c.name, dtype=c.dtype, nullable=True, categorical=c.name in categorical
                )
                for c in signature.inputs
            ],
            class_labels=[str(c) for c in signature.classes],
            label_dtype=signature.label_dtype or "",
        ),
        artifact_uri=refit.ref.uri,
        artifact_checksums={name: ref.sha256 for name, ref in refit.ref.files.items()},
        library_versions=versions,
        labels=dict(experiment.labels),
        description=experiment.description or experiment.display_name,
        training_rows=refit.training_rows,
    )
    version.params.update({k: v for k, v in params.items() if v is not None})
    return registry_pb.RegisterModelVersionRequest(
        model=spec.model_name, model_version=version, request_id=f"experiment:{experiment.id}"
    )


# --------------------------------------------------------------------------- entry point


async def run_until_signal(settings: Settings, config: WorkerConfig | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    worker = Worker(settings, config)
    await worker.run(stop)


def main() -> None:
    """``arbor-training-worker``: migrate (unless ARBOR_MIGRATE_ON_START=0), then work."""
    settings = load_settings("training")
    configure_logging(settings.service, settings.log_level)
    metrics_endpoint = start_process_telemetry("training-worker", settings.host)
    if env_flag("ARBOR_MIGRATE_ON_START", True):
        migrate(settings)
    if env_flag(PRELOAD_ENV, True):
        # The first job's trials (and its time budget) should not pay the libraries' import.
        LibraryPreload().start()
    started = time.monotonic()
    try:
        eventloop.run(run_until_signal(settings))
    finally:
        if metrics_endpoint is not None:
            metrics_endpoint.stop()
    log.info("worker stopped after %.0fs", time.monotonic() - started)


if __name__ == "__main__":
    main()
