"""The gRPC API on real PostgreSQL/NATS with the real split service: validation, idempotency,
CRUD, pagination and filters, cancel, ListTrials ordering, Watch for a late client."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from training_support import (
    Stack,
    create,
    experiment,
    get,
    make_split,
    trials,
    wait_final,
    wait_for,
)

from arbor.common.v1 import common_pb2
from arbor.training.v1 import training_service_pb2 as pb
from arbor_core.status_details import error_details
from arbor_training.worker import Worker

pytestmark = pytest.mark.integration


async def rpc_error(call: Any) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return error_details(info.value)


def fields(details: dict[str, Any]) -> set[str]:
    return {v["field"] for v in details["field_violations"]}


async def test_create_validates_against_the_split(stack: Stack) -> None:
    split = await make_split(stack, "breast_cancer", 300)
    bad = experiment(split)
    bad.metric = "rmse"
    bad.study.sampler = pb.SAMPLER_CMAES
    bad.study.search_space["max_depth"].int_range.high = 4
    details = await rpc_error(
        stack.training.CreateExperiment(pb.CreateExperimentRequest(experiment=bad))
    )
    assert details["code"] == "INVALID_ARGUMENT"
    assert {"experiment.metric", "experiment.study.search_space[max_depth]"} <= fields(details)

    async def watch_missing() -> None:
        stream = stack.training.WatchExperiment(
            pb.WatchExperimentRequest(name="experiments/nope"), timeout=10
        )
        async for _ in stream:
            pass

    gone = await rpc_error(watch_missing())
    assert (gone["code"], gone["reason"]) == ("NOT_FOUND", "EXPERIMENT_NOT_FOUND")

    missing = experiment("splits/does-not-exist")
    details = await rpc_error(
        stack.training.CreateExperiment(pb.CreateExperimentRequest(experiment=missing))
    )
    assert (details["code"], details["reason"]) == ("NOT_FOUND", "SPLIT_NOT_FOUND")

    details = await rpc_error(
        stack.training.CreateExperiment(
            pb.CreateExperimentRequest(experiment=experiment("datasets/x"))
        )
    )
    assert details["code"] == "INVALID_ARGUMENT"
    assert fields(details) == {"experiment.split"}


async def test_request_id_replays_and_queued_cancel_is_immediate(stack: Stack) -> None:
    split = await make_split(stack, "breast_cancer", 300)
    first = await create(stack, experiment(split), request_id="req-replay-1")
    again = await create(stack, experiment(split), request_id="req-replay-1")
    assert again.name == first.name
    assert first.state == pb.EXPERIMENT_STATE_QUEUED
    assert first.direction == pb.OPTIMIZATION_DIRECTION_MAXIMIZE
    assert first.metric == "roc_auc"
    assert first.task_type == common_pb2.TASK_TYPE_BINARY
    assert first.target_column == "target"

    cancelled = await stack.training.CancelExperiment(
        pb.CancelExperimentRequest(name=first.name), timeout=10
    )
    assert cancelled.experiment.state == pb.EXPERIMENT_STATE_CANCELLED
    details = await rpc_error(
        stack.training.CancelExperiment(pb.CancelExperimentRequest(name=first.name))
    )
    assert (details["code"], details["reason"]) == (
        "FAILED_PRECONDITION",
        "EXPERIMENT_ALREADY_FINISHED",
    )


async def test_cv_auto_is_resolved_when_the_experiment_is_created(stack: Stack) -> None:
    """The folds a study chose from the split's size show in the experiment as stored."""
    split = await make_split(stack, "breast_cancer", 300)
    created = await create(stack, experiment(split, cv_auto=True))
    assert created.study.cv_auto and created.study.cv_folds == 5  # 300 rows x 30 features
    got = await stack.training.GetExperiment(pb.GetExperimentRequest(name=created.name), timeout=10)
    assert got.experiment.study.cv_folds == 5 and got.experiment.study.cv_auto
    await stack.training.CancelExperiment(pb.CancelExperimentRequest(name=created.name))
    details = await rpc_error(
        stack.training.CreateExperiment(
            pb.CreateExperimentRequest(experiment=experiment(split, cv_auto=True, cv_folds=3))
        )
    )
    assert details["code"] == "INVALID_ARGUMENT"
    assert fields(details) == {"experiment.study.cv_auto"}


async def test_update_list_and_delete(stack: Stack) -> None:
    split = await make_split(stack, "breast_cancer", 300)
    made = [
        await create(stack, experiment(split, model_type=m))
        for m in (
            common_pb2.MODEL_TYPE_XGBOOST,
            common_pb2.MODEL_TYPE_LIGHTGBM,
            common_pb2.MODEL_TYPE_XGBOOST,
        )
    ]
    try:
        target = made[0]
        update = pb.UpdateExperimentRequest(
            experiment=pb.Experiment(
                name=target.name,
                display_name="renamed",
                labels={"team": "risk"},
                etag=target.etag,
                metric="ignored-not-in-mask",
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "labels"]),
        )
        updated = (await stack.training.UpdateExperiment(update, timeout=10)).experiment
        assert (updated.display_name, dict(updated.labels)) == ("renamed", {"team": "risk"})
        assert updated.metric == "roc_auc"
        assert updated.etag != target.etag
        stale = await rpc_error(stack.training.UpdateExperiment(update))  # old etag
        assert (stale["code"], stale["reason"]) == ("ABORTED", "ETAG_MISMATCH")
        update.update_mask.paths[:] = ["state"]
        update.experiment.etag = ""
        assert "update_mask" in fields(await rpc_error(stack.training.UpdateExperiment(update)))

        # Filters and pages: newest first, tokens bound to the filter.
        listed = await stack.training.ListExperiments(
            pb.ListExperimentsRequest(
                split_filter=split,
                model_type_filter=common_pb2.MODEL_TYPE_XGBOOST,
                state_filter=pb.EXPERIMENT_STATE_QUEUED,
                page_size=1,
            ),
            timeout=10,
        )
        assert [e.name for e in listed.experiments] == [made[2].name]
        token = listed.next_page_token
        nxt = await stack.training.ListExperiments(
            pb.ListExperimentsRequest(
                split_filter=split,
                model_type_filter=common_pb2.MODEL_TYPE_XGBOOST,
                state_filter=pb.EXPERIMENT_STATE_QUEUED,
                page_size=1,
                page_token=token,
            ),
            timeout=10,
        )
        assert [e.name for e in nxt.experiments] == [made[0].name]
        assert nxt.next_page_token == ""
        mismatch = await rpc_error(
            stack.training.ListExperiments(
                pb.ListExperimentsRequest(split_filter=split, page_size=1, page_token=token)
            )
        )
        assert mismatch["reason"] == "PAGE_TOKEN_FILTER_MISMATCH"
        labelled = await stack.training.ListExperiments(
            pb.ListExperimentsRequest(label_filter={"team": "risk"}), timeout=10
        )
        assert [e.name for e in labelled.experiments] == [target.name]

        # Deleting a queued experiment needs force (which cancels it).
        refused = await rpc_error(
            stack.training.DeleteExperiment(pb.DeleteExperimentRequest(name=target.name))
        )
        assert (refused["code"], refused["reason"]) == ("FAILED_PRECONDITION", "EXPERIMENT_ACTIVE")
        deleted = await stack.training.DeleteExperiment(
            pb.DeleteExperimentRequest(name=target.name, force=True), timeout=10
        )
        assert deleted.experiment.state == pb.EXPERIMENT_STATE_CANCELLED
        assert deleted.experiment.HasField("delete_time")
        gone = await rpc_error(
            stack.training.GetExperiment(pb.GetExperimentRequest(name=target.name))
        )
        assert (gone["code"], gone["reason"]) == ("NOT_FOUND", "EXPERIMENT_NOT_FOUND")
        shown = await stack.training.GetExperiment(
            pb.GetExperimentRequest(name=target.name, show_deleted=True), timeout=10
        )
        assert shown.experiment.name == target.name
    finally:
        for e in made[1:]:  # leave nothing queued for the next test's worker
            await stack.training.CancelExperiment(pb.CancelExperimentRequest(name=e.name))


@pytest.mark.slow
async def test_cancel_mid_run_keeps_finished_trials(stack: Stack, worker: Worker) -> None:
    split = await make_split(stack, "breast_cancer", 300)
    message = experiment(split, n_trials=30, max_iterations=200, pruner=pb.PRUNER_NONE)
    message.study.early_stopping_rounds = 200
    created = await create(stack, message)
    await wait_for(stack, created.name, lambda e: e.trials_completed >= 1, timeout=60)
    response = await stack.training.CancelExperiment(
        pb.CancelExperimentRequest(name=created.name), timeout=10
    )
    assert response.experiment.state == pb.EXPERIMENT_STATE_RUNNING
    loop = asyncio.get_running_loop()
    asked = loop.time()
    done = await wait_final(stack, created.name, timeout=30)
    assert done.state == pb.EXPERIMENT_STATE_CANCELLED
    assert loop.time() - asked < 5.0
    kept = await trials(stack, created.name)
    assert 1 <= len(kept) < 30
    assert len(kept) == done.trials_completed
    details = await rpc_error(
        stack.training.CancelExperiment(pb.CancelExperimentRequest(name=created.name))
    )
    assert details["code"] == "FAILED_PRECONDITION"


@pytest.mark.slow
async def test_trials_by_value_and_watch_after_the_end(stack: Stack, worker: Worker) -> None:
    split = await make_split(stack, "hpc_data", 400)
    created = await create(
        stack, experiment(split, model_type=common_pb2.MODEL_TYPE_LIGHTGBM, n_trials=5)
    )
    done = await wait_final(stack, created.name)
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, done.error_message
    assert done.task_type == common_pb2.TASK_TYPE_MULTICLASS
    assert done.metric == "log_loss"
    assert done.direction == pb.OPTIMIZATION_DIRECTION_MINIMIZE

    by_value = await trials(stack, created.name, order_by="value")
    values = [t.value for t in by_value if t.state == pb.TRIAL_STATE_COMPLETE]
    assert values == sorted(values)  # log_loss: smallest first
    assert by_value[0].number == done.best_trial.number
    assert by_value[0].duration.ToNanoseconds() > 0
    first_trial = next(t for t in by_value if t.number == 0)
    assert dict(first_trial.params)  # the enqueued defaults
    page = await stack.training.ListTrials(
        pb.ListTrialsRequest(parent=created.name, page_size=2), timeout=10
    )
    assert [t.number for t in page.trials] == [0, 1] and page.next_page_token

    # A client that connects after the end still sees the state and every trial, then EOF.
    updates = [
        u
        async for u in stack.training.WatchExperiment(
            pb.WatchExperimentRequest(name=created.name), timeout=30
        )
    ]
    assert updates[0].experiment.state == pb.EXPERIMENT_STATE_SUCCEEDED
    assert sorted(u.trial.number for u in updates if u.HasField("trial")) == [0, 1, 2, 3, 4]


@pytest.mark.slow
async def test_every_trial_failing_fails_the_experiment(stack: Stack, worker: Worker) -> None:
    split = await make_split(stack, "breast_cancer", 300)
    message = experiment(split, n_trials=2)
    message.study.search_space["depth"].choices.values.add().number_value = 17  # > CatBoost's 16
    created = await create(stack, message)
    done = await wait_final(stack, created.name)
    assert done.state == pb.EXPERIMENT_STATE_FAILED
    assert done.error_message.startswith("all 2 trials failed; first error: ")
    recorded = await trials(stack, created.name)
    assert [t.state for t in recorded] == [pb.TRIAL_STATE_FAILED] * 2
    assert all(t.error_message for t in recorded)
    assert (await get(stack, created.name)).model_version == ""


@pytest.mark.slow
async def test_a_time_budget_alone_bounds_the_study(stack: Stack, worker: Worker) -> None:
    split = await make_split(stack, "breast_cancer", 300)
    message = experiment(
        split, model_type=common_pb2.MODEL_TYPE_LIGHTGBM, n_trials=0, timeout_seconds=5
    )
    created = await create(stack, message)
    assert created.study.n_trials == 0 and created.study.timeout.seconds == 5
    done = await wait_final(stack, created.name, timeout=60)
    assert done.state == pb.EXPERIMENT_STATE_SUCCEEDED, done.error_message
    # More than one trial (the budget, not a trial count, ended it), and it ended close to
    # the budget (a few seconds of slack for the final fit on a busy machine).
    assert done.trials_completed >= 2
    took = done.end_time.ToDatetime() - done.start_time.ToDatetime()
    assert took.total_seconds() < 20
