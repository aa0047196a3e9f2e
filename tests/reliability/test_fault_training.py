"""Faults 4, 8 and 9: training workers against a registry outage at the end of a study, a worker
stalled past its finalizer lease while another one took its job over, and a job that crashes
its worker every time. Real PostgreSQL, NATS JetStream, registry and worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from reliability_support import PYTHON, TcpProxy, all_versions, create_database, drop_database
from training_stack import TrainingStack
from training_support import FINAL, Stack, WorkerProcess, create, experiment, get, trials, wait_for

from arbor.training.v1 import training_service_pb2 as pb
from arbor_core.artifacts import open_store
from arbor_core.db import upgrade
from arbor_core.events import connect_nats, jobs_stream_name
from arbor_ml.bundle import load_bundle
from arbor_training.domain import ExperimentState, parse_experiment_name
from arbor_training.repository import FinalizerLeaseLost
from arbor_training.server import MIGRATIONS_DIR
from arbor_training.study import Outcome, StudyRunner, StudySettings
from arbor_training.worker import registration_request

pytestmark = [pytest.mark.fault, pytest.mark.integration]

MakeStack = Callable[..., Awaitable[TrainingStack]]
SUCCEEDED_SUBJECT = "arbor.events.experiment.succeeded"


def small(split: str, n_trials: int) -> pb.Experiment:
    """A few CatBoost trials of a fraction of a second each."""
    return experiment(split, n_trials=n_trials, max_iterations=20, pruner=pb.PRUNER_NONE)


class Snapshots:
    """Polls GetExperiment in the background: every state a client could have seen."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.stack = stack
        self.name = name
        self.seen: list[pb.Experiment] = []
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.seen.append(await get(self.stack, self.name))
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> Snapshots:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def succeeded_without_model(self) -> list[pb.Experiment]:
        return [
            e for e in self.seen if e.state == pb.EXPERIMENT_STATE_SUCCEEDED and not e.model_version
        ]


def _model_of(version_name: str) -> str:
    return version_name.split("/")[1]  # models/{model}/versions/{n}


async def _one_version_for(ts: TrainingStack, done: pb.Experiment) -> None:
    """The registry holds exactly one version of the model: the experiment's."""
    versions = await all_versions(ts.stack.registry, _model_of(done.model_version))
    assert [v.name for v in versions] == [done.model_version]
    assert versions[0].experiment == done.name


def _succeeded_events(ts: TrainingStack) -> int:
    rows = ts.query("SELECT count(*) FROM outbox WHERE subject = :s", s=SUCCEEDED_SUBJECT)
    return int(rows[0][0])


# --------------------------------------------------------------------------- fault 4


@pytest.mark.slow
async def test_registry_down_while_training_finishes_retries_registration(
    training_stack: MakeStack,
) -> None:
    ts = await training_stack()
    stack = ts.stack
    split = await ts.split()
    created = await create(stack, small(split, 3))
    ident = parse_experiment_name(created.name)

    async with Snapshots(stack, created.name) as snapshots:
        # The registry goes away before the study can end (before its worker even starts:
        # these trials take milliseconds on a fast machine, too short to stop it mid-study).
        await ts.stop_registry()
        ts.start_worker()
        running = await wait_for(
            stack, created.name, lambda e: e.state == pb.EXPERIMENT_STATE_RUNNING, timeout=30
        )
        assert not running.model_version

        # Every trial finishes; registering fails (UNAVAILABLE), so the job is nak'ed and
        # redelivered: each delivery reuses the saved bundle and tries to register again.
        def attempts() -> int:
            return int(stack.training_runner.experiments.get(ident).attempt)

        await wait_for(stack, created.name, lambda e: e.trials_completed == 3, timeout=60)
        deadline = time.monotonic() + 30
        while attempts() < 3:  # two registrations refused at least
            assert time.monotonic() < deadline, f"no retry seen: attempt {attempts()}"
            await asyncio.sleep(0.1)
        during = await get(stack, created.name)
        assert during.state == pb.EXPERIMENT_STATE_RUNNING, during
        assert not during.model_version

        await ts.start_registry()  # same port: the worker's next attempt gets through
        done = await wait_for(
            stack, created.name, lambda e: e.state != pb.EXPERIMENT_STATE_RUNNING, timeout=60
        )

    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, done.error_message
    assert done.model_version
    await _one_version_for(ts, done)
    # No trial ran twice for the retries, and no client ever saw SUCCEEDED without a model.
    assert [t.number for t in await trials(stack, created.name)] == [0, 1, 2]
    assert len(snapshots.seen) > 10  # polled all along the outage
    assert snapshots.succeeded_without_model() == []
    assert _succeeded_events(ts) == 1


# --------------------------------------------------------------------------- fault 8


def _pid(worker_id: str | None) -> int:
    return int((worker_id or ":0").rsplit(":", 1)[1])


def _row(ts: TrainingStack, ident: str) -> tuple[str, str | None, str, int]:
    state, finalizer, worker, attempt = ts.query(
        "SELECT state, finalizer, worker, attempt FROM experiments WHERE id = :id", id=ident
    )[0]
    return str(state), finalizer, str(worker), int(attempt)


async def _until(
    check: Callable[[], bool], timeout: float, what: str, *logs: WorkerProcess
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {w.name}:\n{w.log()[-4000:]}" for w in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_stalled_finalizer_is_fenced_once_its_job_moved_on(
    training_stack: MakeStack, tcp_proxy: Callable[[str, int], TcpProxy]
) -> None:
    ts = await training_stack()
    stack = ts.stack
    split = await ts.split()
    host, port = ts.registry_address.rsplit(":", 1)
    proxies = [tcp_proxy(host, int(port)), tcp_proxy(host, int(port))]
    workers = [  # a short finalizer lease: a stall outlives it within the test
        ts.spawn_worker(
            f"worker-{i}",
            ARBOR_REGISTRY_ADDRESS=proxy.address,
            ARBOR_TRAINING_FINALIZER_LEASE_SECONDS="2",
        )
        for i, proxy in enumerate(proxies)
    ]
    await asyncio.gather(*(w.ready() for w in workers))
    created = await create(stack, small(split, 2))
    ident = parse_experiment_name(created.name)
    # Each worker's registration is held on the wire (its request carries the request id
    # experiment:<id>): the finalizer is inside RegisterModelVersion, holding its lease.
    for proxy in proxies:
        proxy.arm(f"experiment:{ident}".encode(), "pause")

    await _until(lambda: any(p.fired.is_set() for p in proxies), 60, "a registration", *workers)
    first = 0 if proxies[0].fired.is_set() else 1
    stalled, taker = workers[first], workers[1 - first]
    assert _pid(_row(ts, ident)[1]) == stalled.process.pid
    stalled.process.send_signal(signal.SIGSTOP)  # a stall: no lease renewal, no in-progress
    try:
        # Its job is redelivered to the other worker, which claims the expired lease, saves
        # a bundle under its own prefix and registers in turn (held too, so it is
        # mid-finalization).
        await _until(proxies[1 - first].fired.is_set, 30, "the takeover", taker)
        _, finalizer, worker, attempt = _row(ts, ident)
        assert _pid(finalizer) == taker.process.pid and _pid(worker) == taker.process.pid
        assert attempt == 2
    finally:
        stalled.process.send_signal(signal.SIGCONT)
    # The stalled worker wakes up: its registration completes (idempotent, request id), then
    # its final write is refused by the fence; the experiment stays the new holder's.
    proxies[first].resume()
    await _until(
        lambda: "left to the new finalizer" in stalled.log() or _row(ts, ident)[0] != "RUNNING",
        30,
        "the fence",
        stalled,
        taker,
    )
    state, finalizer, _, _ = _row(ts, ident)
    assert state == "RUNNING", "the stalled worker finished the experiment after losing its lease"
    assert _pid(finalizer) == taker.process.pid
    assert not (await get(stack, created.name)).model_version
    assert _succeeded_events(ts) == 0

    proxies[1 - first].resume()
    done = await wait_for(
        stack, created.name, lambda e: e.state != pb.EXPERIMENT_STATE_RUNNING, timeout=30
    )
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, (done.error_message, taker.log()[-3000:])
    await _one_version_for(ts, done)
    assert _succeeded_events(ts) == 1  # one writer finished it, once
    assert _pid(_row(ts, ident)[1]) == taker.process.pid
    assert stalled.process.poll() is None, "the fenced worker should keep serving the queue"
    assert await _jobs_left(ts) == (0, 0)


async def test_finalizer_fence_refuses_the_previous_holders_write(
    training_stack: MakeStack,
) -> None:
    """The fence itself, step by step on the database: the write of a holder whose lease was
    taken over is refused under the row lock (as is its lease renewal); the new holder's lands."""
    ts = await training_stack()
    created = await create(ts.stack, small(await ts.split(), 2))  # no worker: nothing races
    ident = parse_experiment_name(created.name)
    experiments = ts.stack.training_runner.experiments
    repo = experiments.store
    experiments.start(ident, worker="host:1", attempt=1)
    assert repo.claim_finalizer(ident, "host:1", 0.2)
    await asyncio.sleep(0.3)  # the holder stalls past its lease; its job goes to another
    experiments.start(ident, worker="host:2", attempt=2)
    assert repo.claim_finalizer(ident, "host:2", 30)

    with pytest.raises(FinalizerLeaseLost) as caught:
        experiments.finish(
            ident,
            ExperimentState.SUCCEEDED,
            model_version="models/m/versions/1",
            finalizer="host:1",
        )
    assert caught.value.reason == "FINALIZER_LEASE_LOST"
    assert not repo.claim_finalizer(ident, "host:1", 30)  # nor may it renew
    assert _row(ts, ident) == ("RUNNING", "host:2", "host:2", 2)
    assert _succeeded_events(ts) == 0

    done = experiments.finish(
        ident, ExperimentState.SUCCEEDED, model_version="models/m/versions/1", finalizer="host:2"
    )
    assert done.state is ExperimentState.SUCCEEDED
    assert _succeeded_events(ts) == 1


class StallingStore:
    """The real artifact store, except that the first bundle write blocks until released:
    a finalizer stalled inside ``save_bundle`` (as a paused process or a slow upload would)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.entered = threading.Event()
        self.release = threading.Event()

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> Any:
        if key.startswith("models/") and not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(60), "never released"
        return self.store.put_bytes(key, data, content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_finalizer_stalled_in_save_bundle_cannot_overwrite_the_registered_bundle(
    training_stack: MakeStack,
) -> None:
    """Fault 8 inside ``save_bundle``: holder A stalls while writing its bundle, its lease
    runs out, B takes over, saves, registers and finishes. A then wakes up and writes its
    files: under its own prefix, so the registered bundle's files stay the ones whose
    checksums the version recorded; A's registration returns B's version (idempotent) and
    its final write is refused by the fence."""
    ts = await training_stack()
    created = await create(ts.stack, small(await ts.split(), 2))  # no worker: nothing races
    ident = parse_experiment_name(created.name)
    experiments = ts.stack.training_runner.experiments
    repo = experiments.store
    store = open_store(ts.settings.artifact_uri)
    stalling = StallingStore(store)
    timings = StudySettings(heartbeat_interval=1, grace_period=3, control_interval=0.2)
    a = StudyRunner(repo, ts.database_url, stalling, "host-a:1", timings)  # type: ignore[arg-type]
    b = StudyRunner(repo, ts.database_url, store, "host-b:2", timings)
    try:
        running, _ = experiments.start(ident, worker="host-a:1", attempt=1)
        assert await asyncio.to_thread(a.run_trials, running, starter=True) is Outcome.BUDGET_DONE
        assert repo.claim_finalizer(ident, "host-a:1", 0.5)
        best = await asyncio.to_thread(a.best_trial, running)
        assert best is not None
        stalled = asyncio.create_task(asyncio.to_thread(a.refit, running, best))
        assert await asyncio.to_thread(stalling.entered.wait, 60)
        await asyncio.sleep(0.6)  # A's lease runs out while it is inside save_bundle

        taken, _ = experiments.start(ident, worker="host-b:2", attempt=2)
        assert repo.claim_finalizer(ident, "host-b:2", 30)
        refit_b = await asyncio.to_thread(b.refit, taken, best)
        registered = await ts.stack.registry.RegisterModelVersion(
            registration_request(taken, refit_b), timeout=30
        )
        experiments.finish(
            ident,
            ExperimentState.SUCCEEDED,
            model_version=registered.model_version.name,
            finalizer="host-b:2",
        )

        stalling.release.set()  # A wakes up and finishes writing its bundle
        refit_a = await stalled
        assert refit_a.ref.prefix != refit_b.ref.prefix
        again = await ts.stack.registry.RegisterModelVersion(
            registration_request(running, refit_a), timeout=30
        )
        assert again.model_version.name == registered.model_version.name
        assert again.model_version.artifact_uri == refit_b.ref.uri
        with pytest.raises(FinalizerLeaseLost):
            experiments.finish(
                ident,
                ExperimentState.SUCCEEDED,
                model_version=again.model_version.name,
                finalizer="host-a:1",
            )
    finally:
        stalling.release.set()
        a.close()
        b.close()
    # Every file of the registered version is the one whose checksum it recorded.
    version = registered.model_version
    for name, sha256 in version.artifact_checksums.items():
        store.get_bytes(refit_b.ref.prefix + name, expected_sha256=sha256)
    load_bundle(store, refit_b.ref.prefix, expected_manifest_sha256=refit_b.ref.manifest_sha256)
    assert _row(ts, ident)[0] == "SUCCEEDED"
    assert _succeeded_events(ts) == 1


async def _jobs_left(ts: TrainingStack) -> tuple[int, int]:
    """(pending, unacknowledged) jobs of the workers' consumer."""
    nc = await connect_nats(ts.settings.nats_url, name="reliability-jobs")
    try:
        js = nc.jetstream()
        info = await js.consumer_info(jobs_stream_name(ts.namespace), "training-workers")
        return int(info.num_pending), int(info.num_ack_pending)
    finally:
        await nc.close()


# --------------------------------------------------------------------------- fault 9

POISON_WORKER = Path(__file__).with_name("poison_worker.py")
CRASH_EXIT_CODE = 86  # poison_worker.py's
MAX_DELIVER = 3


class Supervisor:
    """Keeps one worker process running, restarting it whenever it dies (as a Deployment
    would), and records how each one ended."""

    def __init__(self, ts: TrainingStack, **env: str) -> None:
        self.ts = ts
        self.env = env
        self.exits: list[int] = []
        self.current: WorkerProcess | None = None
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.current = self.ts.spawn_worker(
                f"worker-{len(self.exits)}", command=[PYTHON, str(POISON_WORKER)], **self.env
            )
            while self.current.process.poll() is None:
                await asyncio.sleep(0.1)
            self.exits.append(int(self.current.process.returncode))

    async def __aenter__(self) -> Supervisor:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}:\n{w.log()[-2500:]}" for w in self.ts.processes)


@pytest.mark.slow
async def test_poison_job_is_given_up_after_max_deliver_and_the_queue_moves_on(
    training_stack: MakeStack,
) -> None:
    ts = await training_stack()
    stack = ts.stack
    split = await ts.split()
    poison_id = f"poison-{uuid.uuid4().hex[:6]}"
    poisoned = await create(stack, small(split, 2), experiment_id=poison_id)
    healthy = await create(stack, small(split, 2))

    async with Supervisor(
        ts,
        ARBOR_TEST_POISON_EXPERIMENT=poison_id,
        ARBOR_TRAINING_MAX_DELIVER=str(MAX_DELIVER),
        ARBOR_TRAINING_ACK_WAIT_SECONDS="2",
    ) as supervisor:
        try:
            finals = [
                await wait_for(stack, e.name, lambda x: x.state in FINAL, timeout=90)
                for e in (poisoned, healthy)
            ]
        except AssertionError as err:
            raise AssertionError(f"{err}\n{supervisor.logs()}") from None
        exits = list(supervisor.exits)
        survivor = supervisor.current

    gave_up, done = finals
    assert gave_up.state == pb.EXPERIMENT_STATE_FAILED, gave_up
    assert f"gave up after {MAX_DELIVER} attempts" in gave_up.error_message
    # Every delivery but the last crashed its worker; the last one was not run but failed.
    assert exits == [CRASH_EXIT_CODE] * (MAX_DELIVER - 1), (exits, supervisor.logs())
    assert survivor is not None and survivor.process.poll() is None
    assert _row(ts, poison_id)[3] == MAX_DELIVER - 1  # the deliveries that started it
    # The queue moved on: the next experiment ran, and no job is left pending or unacked.
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, done.error_message
    assert await _jobs_left(ts) == (0, 0)


# --------------------------------------------------------------------------- workers start together

PG_ADMIN_URL = os.environ.get(
    "ARBOR_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: Opens Optuna's storage on the database named by argv[1] (a worker's first step after migrating).
OPEN_STORAGE = (
    "import sys\n"
    "from arbor_training.study import StudySettings, open_storage\n"
    "open_storage(sys.argv[1], StudySettings()).engine.dispose()\n"
    "print('opened')\n"
)


@pytest.mark.slow
async def test_workers_starting_together_on_a_fresh_database(training_stack: MakeStack) -> None:
    """Two worker processes started at once on a database nobody migrated both come up: the
    migrations run one at a time (advisory lock) and create Optuna's tables too, so neither
    worker races the other creating them. And where Optuna's tables are still missing (a
    database migrated by an older release, or opened without migrating), processes opening the
    storage at once retry the race instead of exiting."""
    ts = await training_stack()
    names = [f"arbor_rel_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    migrated, bare = (create_database(PG_ADMIN_URL, n) for n in names)
    workers: list[WorkerProcess] = []
    try:
        workers = [
            ts.spawn_worker(
                f"fresh-{i}", ARBOR_TRAINING_DATABASE_URL=migrated, ARBOR_MIGRATE_ON_START="1"
            )
            for i in range(2)
        ]
        await asyncio.gather(*(w.ready(timeout=90) for w in workers))
        assert [w.process.poll() for w in workers] == [None, None]
        for worker in workers:
            assert "UniqueViolation" not in worker.log(), worker.log()[-3000:]

        # A database an older release migrated (0002: no Optuna tables yet), then opened by
        # three processes at once.
        await asyncio.to_thread(upgrade, bare, "training", MIGRATIONS_DIR, "0002")
        opening = [
            await asyncio.create_subprocess_exec(
                PYTHON,
                "-c",
                OPEN_STORAGE,
                bare,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for _ in range(3)
        ]
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in opening)), timeout=120
        )
        for process, (output, _) in zip(opening, outputs, strict=True):
            assert process.returncode == 0, output.decode(errors="replace")[-3000:]
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(10)
        for name in names:
            drop_database(PG_ADMIN_URL, name)
