"""TrainingClient: experiments, their trials, and watching a study run."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from arbor.common.v1 import common_pb2
from arbor.training.v1 import training_service_pb2 as pb
from arbor.training.v1 import training_service_pb2_grpc as pb_grpc
from arbor_client._base import ServiceClient, resource_name
from arbor_client._enums import parse_enum
from arbor_client._transport import new_request_id
from arbor_client.errors import ArborClientError

__all__ = ["TERMINAL_STATES", "TrainingClient", "build_experiment"]

TERMINAL_STATES = frozenset(
    {
        pb.EXPERIMENT_STATE_SUCCEEDED,
        pb.EXPERIMENT_STATE_FAILED,
        pb.EXPERIMENT_STATE_CANCELLED,
    }
)


def build_experiment(
    split: str,
    *,
    model_type: str | int | None = None,
    task: str | int | None = None,
    metric: str = "",
    n_trials: int = 0,
    study_timeout: float | None = None,
    sampler: str | int | None = None,
    pruner: str | int | None = None,
    seed: int = 0,
    early_stopping_rounds: int = 0,
    cv_folds: int = 0,
    cv_auto: bool = False,
    ensemble_size: int = 0,
    threads: int = 0,
    device: str = "",
    parallelism: int = 0,
    max_iterations: int = 0,
    include_columns: Sequence[str] = (),
    exclude_columns: Sequence[str] = (),
    model_name: str = "",
    display_name: str = "",
    description: str = "",
    labels: Mapping[str, str] | None = None,
) -> pb.Experiment:
    """An Experiment from flat options; friendly enum names (``"lightgbm"``, ``"tpe"``) work."""
    experiment = pb.Experiment(
        split=resource_name("splits", split, field="split"),
        model_type=parse_enum(common_pb2.ModelType, model_type, "model_type"),  # type: ignore[arg-type]
        task_type=parse_enum(common_pb2.TaskType, task, "task_type"),  # type: ignore[arg-type]
        metric=metric,
        model_name=model_name,
        display_name=display_name,
        description=description,
        labels=dict(labels or {}),
        study=pb.StudyConfig(
            n_trials=n_trials,
            sampler=parse_enum(pb.Sampler, sampler, "study.sampler"),  # type: ignore[arg-type]
            pruner=parse_enum(pb.Pruner, pruner, "study.pruner"),  # type: ignore[arg-type]
            seed=seed,
            early_stopping_rounds=early_stopping_rounds,
            cv_folds=cv_folds,
            cv_auto=cv_auto,
            ensemble_size=ensemble_size,
            threads=threads,
            device=device,
            parallelism=parallelism,
            max_iterations=max_iterations,
        ),
        preprocessing=pb.PreprocessingOptions(
            include_columns=list(include_columns), exclude_columns=list(exclude_columns)
        ),
    )
    if study_timeout:
        experiment.study.timeout.FromNanoseconds(int(study_timeout * 1e9))
    return experiment


class TrainingClient(ServiceClient):
    """``arbor.training.v1.TrainingService``."""

    service = "training"
    grpc_service = "arbor.training.v1.TrainingService"
    stub_class = pb_grpc.TrainingServiceStub

    # create -----------------------------------------------------------------------------
    def create_experiment(
        self,
        experiment: pb.Experiment | str,
        *,
        experiment_id: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> pb.Experiment:
        """Queue an experiment: pass an Experiment message, or a split name plus the options
        of ``build_experiment``. A request id is generated, so retries are safe."""
        if isinstance(experiment, str):
            experiment = build_experiment(experiment, **options)
        elif options:
            raise ArborClientError.invalid_argument(
                f"options {sorted(options)} are only for the split-name form", field="experiment"
            )
        request = pb.CreateExperimentRequest(
            experiment=experiment,
            experiment_id=experiment_id,
            request_id=request_id or new_request_id(),
        )
        return self._call("CreateExperiment", request, timeout).experiment  # type: ignore[no-any-return]

    # read -------------------------------------------------------------------------------
    def get_experiment(
        self, name: str, *, show_deleted: bool = False, timeout: float | None = None
    ) -> pb.Experiment:
        request = pb.GetExperimentRequest(
            name=resource_name("experiments", name), show_deleted=show_deleted
        )
        return self._call("GetExperiment", request, timeout).experiment  # type: ignore[no-any-return]

    def list_experiments(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        state: str | int | None = None,
        split: str | None = None,
        labels: Mapping[str, str] | None = None,
        model_type: str | int | None = None,
        show_deleted: bool = False,
        timeout: float | None = None,
    ) -> pb.ListExperimentsResponse:
        request = pb.ListExperimentsRequest(
            page_size=page_size,
            page_token=page_token,
            state_filter=parse_enum(pb.ExperimentState, state, "state_filter"),  # type: ignore[arg-type]
            split_filter=resource_name("splits", split, "split_filter") if split else "",
            label_filter=dict(labels or {}),
            model_type_filter=parse_enum(common_pb2.ModelType, model_type, "model_type_filter"),  # type: ignore[arg-type]
            show_deleted=show_deleted,
        )
        return self._call("ListExperiments", request, timeout)  # type: ignore[no-any-return]

    def iter_experiments(
        self, *, limit: int | None = None, **filters: Any
    ) -> Iterator[pb.Experiment]:
        """Every experiment matching ``list_experiments``' filters, newest first."""
        token, seen = "", 0
        while True:
            page = self.list_experiments(page_token=token, **filters)
            for experiment in page.experiments:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield experiment
            token = page.next_page_token
            if not token:
                return

    def list_trials(
        self,
        experiment: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        state: str | int | None = None,
        order_by: str = "",
        timeout: float | None = None,
    ) -> pb.ListTrialsResponse:
        """One page of trials, by number or, with ``order_by="value"``, best first."""
        request = pb.ListTrialsRequest(
            parent=resource_name("experiments", experiment, "parent"),
            page_size=page_size,
            page_token=page_token,
            state_filter=parse_enum(pb.TrialState, state, "state_filter"),  # type: ignore[arg-type]
            order_by=order_by,
        )
        return self._call("ListTrials", request, timeout)  # type: ignore[no-any-return]

    def iter_trials(
        self,
        experiment: str,
        *,
        state: str | int | None = None,
        order_by: str = "",
        page_size: int = 0,
    ) -> Iterator[pb.Trial]:
        token = ""
        while True:
            page = self.list_trials(
                experiment, page_token=token, state=state, order_by=order_by, page_size=page_size
            )
            yield from page.trials
            token = page.next_page_token
            if not token:
                return

    # update / cancel / delete -----------------------------------------------------------
    def update_experiment(
        self,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        labels: Mapping[str, str] | None = None,
        etag: str = "",
        timeout: float | None = None,
    ) -> pb.Experiment:
        experiment = pb.Experiment(name=resource_name("experiments", name), etag=etag)
        paths: list[str] = []
        if display_name is not None:
            experiment.display_name = display_name
            paths.append("display_name")
        if description is not None:
            experiment.description = description
            paths.append("description")
        if labels is not None:
            experiment.labels.update(dict(labels))
            paths.append("labels")
        if not paths:
            raise ArborClientError.invalid_argument("nothing to update", field="update_mask")
        request = pb.UpdateExperimentRequest(
            experiment=experiment, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return self._call("UpdateExperiment", request, timeout).experiment  # type: ignore[no-any-return]

    def cancel_experiment(self, name: str, *, timeout: float | None = None) -> pb.Experiment:
        """Ask the study to stop; it is CANCELLED at once when QUEUED, else at the next check."""
        request = pb.CancelExperimentRequest(name=resource_name("experiments", name))
        # Cancelling twice is harmless, so this mutation may be retried like a read.
        return self._call("CancelExperiment", request, timeout, retryable=True).experiment  # type: ignore[no-any-return]

    def delete_experiment(
        self, name: str, *, force: bool = False, etag: str = "", timeout: float | None = None
    ) -> pb.Experiment:
        request = pb.DeleteExperimentRequest(
            name=resource_name("experiments", name), force=force, etag=etag
        )
        return self._call("DeleteExperiment", request, timeout).experiment  # type: ignore[no-any-return]

    # watch ------------------------------------------------------------------------------
    def watch(
        self, name: str, *, timeout: float | None = None
    ) -> Iterator[pb.WatchExperimentResponse]:
        """The raw WatchExperiment stream (ends when the experiment ends)."""
        request = pb.WatchExperimentRequest(name=resource_name("experiments", name))
        return self._caller.stream("WatchExperiment", request, timeout=timeout)

    def watch_experiment(
        self,
        name: str,
        *,
        timeout: float | None = None,
        reconnect: bool = True,
    ) -> Iterator[pb.WatchExperimentResponse]:
        """Updates until the experiment reaches SUCCEEDED, FAILED or CANCELLED.

        A dropped stream (server restart, UNAVAILABLE) is re-opened while time is left, and
        trials already delivered are not delivered again; ``timeout`` bounds the whole watch.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delivered: set[int] = set()
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ArborClientError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"watching {name} timed out",
                    reason="WATCH_TIMEOUT",
                    domain="arbor.client",
                )
            try:
                for update in self.watch(name, timeout=remaining):
                    if update.HasField("trial"):
                        if update.trial.number in delivered:
                            continue
                        delivered.add(update.trial.number)
                    yield update
                    if update.experiment.state in TERMINAL_STATES:
                        return
                # The server ended the stream; a final state may have been sent before.
                final = self.get_experiment(name)
                if final.state in TERMINAL_STATES:
                    yield pb.WatchExperimentResponse(experiment=final)
                    return
                if not reconnect:
                    return
                time.sleep(self.config.retry.backoff(1))
            except ArborClientError as err:
                if not reconnect or err.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                time.sleep(self.config.retry.backoff(1))

    def wait_for_experiment(self, name: str, *, timeout: float | None = None) -> pb.Experiment:
        """Block until the experiment ends; returns it in its final state."""
        last: pb.Experiment | None = None
        for update in self.watch_experiment(name, timeout=timeout):
            last = update.experiment
        return last if last is not None else self.get_experiment(name)
