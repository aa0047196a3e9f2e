"""The gRPC servicer: protobuf in, domain call (off the event loop), protobuf out.

Errors are ``ArborError``s raised by the domain; the interceptor in ``arbor_core.server`` turns
them into statuses with ``google.rpc`` details. ``WatchExperiment`` streams from the database:
events on JetStream (``EventHub``) only say "look again", so a lost event or a NATS outage
delays an update (to the 2 s fallback poll) but never loses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from arbor.common.v1 import common_pb2
from arbor.split.v1 import split_service_pb2, split_service_pb2_grpc
from arbor.training.v1 import training_service_pb2 as pb
from arbor.training.v1 import training_service_pb2_grpc as pb_grpc
from arbor_core.db import run_db
from arbor_core.errors import InvalidArgument, NotFound, Unavailable
from arbor_core.telemetry import current_traceparent
from arbor_ml.types import Direction, TaskType
from arbor_training.domain import (
    Experiment,
    ExperimentInput,
    Experiments,
    ExperimentState,
    ParamRange,
    ParamRangeInput,
    PostprocessingInput,
    PreprocessingSpec,
    SearchSpaces,
    SplitInfo,
    SplitPartInfo,
    TrialRecord,
    TrialState,
    parse_experiment_name,
    parse_split_name,
)

log = logging.getLogger("arbor.training.api")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrainingService"].full_name
SPLIT_TIMEOUT_S = 10.0
#: Without an event, Watch re-reads the experiment this often (NATS down, event lost).
WATCH_FALLBACK_S = 2.0


# --------------------------------------------------------------------------- enums


def _enum_name(enum: Any, value: int, prefix: str, field: str) -> str:
    """``MODEL_TYPE_XGBOOST`` -> ``xgboost``; UNSPECIFIED -> ``""``; unknown -> InvalidArgument."""
    try:
        name = str(enum.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        raise InvalidArgument(f"unknown enum value {value}", field=field) from None
    return "" if name == "unspecified" else name


def _enum_value(enum: Any, prefix: str, name: str) -> int:
    return int(enum.Value(prefix + name.upper())) if name else 0


_NUMERIC_IMPUTATION = {"keep_nan": "native", "median": "median", "constant": "constant"}
_NUMERIC_IMPUTATION_PB = {"native": "keep_nan", "median": "median", "constant": "constant"}


def state_from_pb(value: int, field: str) -> ExperimentState | None:
    name = _enum_name(pb.ExperimentState, value, "EXPERIMENT_STATE_", field)
    return ExperimentState(name.upper()) if name else None


def trial_state_from_pb(value: int, field: str) -> TrialState | None:
    name = _enum_name(pb.TrialState, value, "TRIAL_STATE_", field)
    return TrialState(name.upper()) if name else None


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(
        {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in values.items()
        }
    )
    return s


# --------------------------------------------------------------------------- requests


def _param_range(value: pb.ParamRange, field: str) -> ParamRangeInput:
    kind = value.WhichOneof("range")
    if kind == "float_range":
        r = value.float_range
        return ParamRangeInput("float", r.low, r.high, r.log)
    if kind == "int_range":
        i = value.int_range
        return ParamRangeInput("int", float(i.low), float(i.high), i.log)
    if kind == "choices":
        return ParamRangeInput(
            "choices",
            choices=tuple(json_format.MessageToDict(v) for v in value.choices.values),
        )
    return ParamRangeInput()


def experiment_input(e: pb.Experiment) -> ExperimentInput:
    """CreateExperiment's experiment as plain values (no validation beyond enums)."""
    s = e.study
    pre = e.preprocessing
    post = e.postprocessing
    return ExperimentInput(
        split=e.split,
        display_name=e.display_name,
        description=e.description,
        labels=dict(e.labels),
        model_type=_enum_name(
            common_pb2.ModelType, e.model_type, "MODEL_TYPE_", "experiment.model_type"
        ),
        task_type=_enum_name(
            common_pb2.TaskType, e.task_type, "TASK_TYPE_", "experiment.task_type"
        ),
        metric=e.metric,
        n_trials=s.n_trials,
        timeout_seconds=s.timeout.ToNanoseconds() / 1e9 if s.HasField("timeout") else None,
        sampler=_enum_name(pb.Sampler, s.sampler, "SAMPLER_", "experiment.study.sampler"),
        pruner=_enum_name(pb.Pruner, s.pruner, "PRUNER_", "experiment.study.pruner"),
        seed=s.seed,
        search_space={
            name: _param_range(r, f"experiment.study.search_space[{name}]")
            for name, r in s.search_space.items()
        },
        early_stopping_rounds=s.early_stopping_rounds,
        cv_folds=s.cv_folds,
        cv_auto=s.cv_auto,
        threads=s.threads,
        device=s.device,
        parallelism=s.parallelism,
        max_iterations=s.max_iterations,
        final_fit=s.final_fit,
        ensemble_size=s.ensemble_size,
        preprocessing=PreprocessingSpec(
            include_columns=tuple(pre.include_columns),
            exclude_columns=tuple(pre.exclude_columns),
            numeric_fill_value=pre.numeric_fill_value,
            keep_constant_columns=pre.keep_constant_columns,
        ),
        numeric_imputation=_NUMERIC_IMPUTATION.get(
            _enum_name(
                pb.NumericImputation,
                pre.numeric_imputation,
                "NUMERIC_IMPUTATION_",
                "experiment.preprocessing.numeric_imputation",
            ),
            "",
        ),
        postprocessing=PostprocessingInput(
            decision_threshold=post.decision_threshold,
            threshold_objective=post.threshold_objective,
            clip_min=post.clip_min if post.HasField("clip_min") else None,
            clip_max=post.clip_max if post.HasField("clip_max") else None,
            round_digits=post.round_digits if post.HasField("round_digits") else None,
            scale=post.scale,
            offset=post.offset,
            log_target=post.log_target,
        ),
        model_name=e.model_name,
    )


def split_info(split: split_service_pb2.Split) -> SplitInfo:
    """What an experiment needs from the split service's answer."""
    task = _enum_name(common_pb2.TaskType, split.task_type, "TASK_TYPE_", "split.task_type")
    return SplitInfo(
        name=split.name,
        ready=split.state == split_service_pb2.SPLIT_STATE_READY,
        target_column=split.target_column,
        task_type=TaskType(task) if task else None,
        columns={c.name: c.dtype for c in split.schema},
        parts={
            p.part: SplitPartInfo(
                part=p.part,
                key=p.artifact.key,
                uri=p.artifact.uri,
                sha256=p.artifact.sha256,
                size_bytes=p.artifact.size_bytes,
                row_count=p.row_count,
                class_balance=dict(p.class_balance),
            )
            for p in split.parts
        },
        content_hash=split.content_hash,
        row_count=split.row_count,
        **_strategy(split),
    )


def _strategy(split: split_service_pb2.Split) -> dict[str, Any]:
    """The split's strategy, which cross-validation folds follow."""
    strategy = split.strategy
    match strategy.WhichOneof("strategy") if split.HasField("strategy") else None:
        case "time":
            return {"strategy": "time", "time_column": strategy.time.time_column}
        case "entity":
            return {"strategy": "entity", "entity_column": strategy.entity.entity_column}
        case "random":
            return {"strategy": "random", "stratified": strategy.random.stratify}
    return {"strategy": "random"}


# --------------------------------------------------------------------------- responses


def _param_range_pb(r: ParamRange) -> pb.ParamRange:
    if r.kind == "choices":
        values = [json_format.ParseDict(v, struct_pb2.Value()) for v in r.choices]
        return pb.ParamRange(choices=pb.Choices(values=values))
    if r.kind == "int":
        return pb.ParamRange(int_range=pb.IntRange(low=int(r.low), high=int(r.high), log=r.log))
    return pb.ParamRange(float_range=pb.FloatRange(low=r.low, high=r.high, log=r.log))


def trial_to_pb(t: TrialRecord) -> pb.Trial:
    return pb.Trial(
        name=t.name,
        number=t.number,
        state=pb.TrialState.Value("TRIAL_STATE_" + t.state.value),
        value=t.value if t.value is not None else 0.0,
        params=_struct(t.params),
        intermediate_values=[
            pb.IntermediateValue(step=step, value=value) for step, value in t.intermediate_values
        ],
        start_time=_timestamp(t.start_time),
        end_time=_timestamp(t.end_time),
        duration=_duration(t.duration_seconds),
        model_type=_enum_value(common_pb2.ModelType, "MODEL_TYPE_", t.model_type),  # type: ignore[arg-type]
        error_message=t.error_message,
        best_iteration=t.best_iteration or 0,
        fold_values=[v for v in t.fold_values if math.isfinite(v)],
        fit_seconds=t.fit_seconds or 0.0,
        predict_ms_per_1k_rows=t.predict_ms_per_1k_rows or 0.0,
    )


def summary_to_pb(summary: Mapping[str, Any]) -> pb.StudySummary:
    """The experiment's StudySummary from its stored JSON (``study.study_summary``)."""
    best_type = str(summary.get("best_model_type") or "")
    return pb.StudySummary(
        trials_complete=int(summary.get("trials_complete") or 0),
        trials_pruned=int(summary.get("trials_pruned") or 0),
        trials_failed=int(summary.get("trials_failed") or 0),
        best_trial_number=int(summary.get("best_trial_number") or 0),
        best_value=float(summary.get("best_value") or 0.0),
        best_model_type=_enum_value(common_pb2.ModelType, "MODEL_TYPE_", best_type)  # type: ignore[arg-type]
        if best_type
        else 0,
        total_time=_duration(summary.get("total_seconds")),
        trials_time=_duration(summary.get("trials_seconds")),
        final_time=_duration(summary.get("final_seconds")),
        final_fit=str(summary.get("final_fit") or ""),
        final_iterations=int(summary.get("final_iterations") or 0),
        trials_stopped_by_budget=int(summary.get("trials_stopped_by_budget") or 0),
        cv_folds=int(summary.get("cv_folds") or 0),
    )


def experiment_to_pb(e: Experiment, best: TrialRecord | None = None) -> pb.Experiment:
    spec = e.spec
    study = spec.study
    post = spec.postprocessing
    message = pb.Experiment(
        name=e.name,
        experiment_id=e.id,
        display_name=e.display_name,
        description=e.description,
        labels=e.labels,
        split=spec.split,
        model_type=_enum_value(common_pb2.ModelType, "MODEL_TYPE_", spec.model_type),  # type: ignore[arg-type]
        task_type=_enum_value(common_pb2.TaskType, "TASK_TYPE_", spec.task_type.value),  # type: ignore[arg-type]
        metric=spec.metric,
        direction=(
            pb.OPTIMIZATION_DIRECTION_MAXIMIZE
            if spec.direction is Direction.MAXIMIZE
            else pb.OPTIMIZATION_DIRECTION_MINIMIZE
        ),
        study=pb.StudyConfig(
            n_trials=study.n_trials,
            timeout=_duration(study.timeout_seconds),
            sampler=_enum_value(pb.Sampler, "SAMPLER_", study.sampler.value),  # type: ignore[arg-type]
            pruner=_enum_value(pb.Pruner, "PRUNER_", study.pruner.value),  # type: ignore[arg-type]
            seed=study.seed,
            search_space={k: _param_range_pb(v) for k, v in study.search_space.items()},
            early_stopping_rounds=study.early_stopping_rounds,
            threads=study.threads,
            device=study.device,
            parallelism=study.parallelism,
            max_iterations=study.max_iterations,
            cv_folds=study.cv_folds,
            cv_auto=study.cv_auto,
            final_fit=study.final_fit,
            ensemble_size=study.ensemble_size,
        ),
        preprocessing=pb.PreprocessingOptions(
            include_columns=list(spec.preprocessing.include_columns),
            exclude_columns=list(spec.preprocessing.exclude_columns),
            numeric_imputation=_enum_value(  # type: ignore[arg-type]
                pb.NumericImputation,
                "NUMERIC_IMPUTATION_",
                _NUMERIC_IMPUTATION_PB[spec.preprocessing.numeric_imputation],
            ),
            numeric_fill_value=spec.preprocessing.numeric_fill_value,
            keep_constant_columns=spec.preprocessing.keep_constant_columns,
        ),
        postprocessing=pb.PostprocessingOptions(
            decision_threshold=post.decision_threshold or 0.0,
            threshold_objective=post.threshold_objective,
            clip_min=post.clip_min,
            clip_max=post.clip_max,
            round_digits=post.round_digits,
            scale=post.scale,
            offset=post.offset,
            log_target=post.log_target,
        ),
        model_name=spec.model_name,
        state=pb.ExperimentState.Value("EXPERIMENT_STATE_" + e.state.value),
        trials_completed=e.trials_completed,
        trials_pruned=e.trials_pruned,
        trials_failed=e.trials_failed,
        model_version=e.model_version,
        metrics={k: v for k, v in e.metrics.items() if math.isfinite(v)},
        error_message=e.error_message,
        create_time=_timestamp(e.create_time),
        update_time=_timestamp(e.update_time),
        start_time=_timestamp(e.start_time),
        end_time=_timestamp(e.end_time),
        delete_time=_timestamp(e.delete_time),
        etag=e.etag,
        target_column=spec.target_column,
    )
    if best is not None:
        message.best_trial.CopyFrom(trial_to_pb(best))
    if e.summary:
        message.summary.CopyFrom(summary_to_pb(e.summary))
    return message


# --------------------------------------------------------------------------- watch wake-ups


class EventHub:
    """One JetStream subscription to experiment events, fanned out to Watch calls.

    An event only wakes the watchers of its experiment; they re-read the database.
    ``close()`` (when shutdown begins) wakes every watcher to end its stream.
    """

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.connected = False
        self.closing = False
        self.wakeups = 0  # watchers woken by an event (tests check Watch is event-driven)

    def watch(self, experiment_name: str) -> asyncio.Event:
        wake = asyncio.Event()
        self._watchers.setdefault(experiment_name, set()).add(wake)
        return wake

    def unwatch(self, experiment_name: str, wake: asyncio.Event) -> None:
        watchers = self._watchers.get(experiment_name)
        if watchers is not None:
            watchers.discard(wake)
            if not watchers:
                del self._watchers[experiment_name]

    async def handle(self, event: Any) -> None:
        for wake in self._watchers.get(event.subject, ()):
            self.wakeups += 1
            wake.set()

    async def close(self) -> None:
        """Shutdown began: end every open Watch (UNAVAILABLE, so its client watches again,
        elsewhere or after the restart) instead of letting it hold the drain for the grace."""
        self.closing = True
        for watchers in self._watchers.values():
            for wake in watchers:
                wake.set()


# --------------------------------------------------------------------------- servicer


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    """Thin adapter over ``domain.Experiments``; database calls run in threads (run_db)."""

    def __init__(
        self,
        experiments: Experiments,
        split_stub: split_service_pb2_grpc.SplitServiceStub,
        spaces: SearchSpaces,
        hub: EventHub,
    ) -> None:
        self.experiments = experiments
        self.split_stub = split_stub
        self.spaces = spaces
        self.hub = hub

    async def _split(self, name: str) -> SplitInfo:
        parse_split_name(name)
        try:
            response = await self.split_stub.GetSplit(
                split_service_pb2.GetSplitRequest(name=name), timeout=SPLIT_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound("split", name, reason="SPLIT_NOT_FOUND") from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(
                    f"the split service refused {name!r}: {err.details()}",
                    field="experiment.split",
                    reason="INVALID_SPLIT_NAME",
                ) from None
            raise Unavailable(
                f"the split service did not answer ({code.name}): {err.details()}",
                reason="SPLIT_SERVICE_UNAVAILABLE",
            ) from None
        return split_info(response.split)

    async def _to_pb(self, experiment: Experiment) -> pb.Experiment:
        best = await run_db(self.experiments.best_trials, [experiment])
        return experiment_to_pb(experiment, best.get(experiment.id))

    async def CreateExperiment(
        self, request: pb.CreateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateExperimentResponse:
        replayed = await run_db(self.experiments.replay, request.request_id)
        if replayed is None:
            data = experiment_input(request.experiment)
            split = await self._split(data.split)
            experiment, _ = await run_db(
                lambda: self.experiments.create(
                    data,
                    split,
                    self.spaces,
                    experiment_id=request.experiment_id,
                    request_id=request.request_id,
                    trace_parent=current_traceparent(),
                )
            )
        else:
            experiment = replayed
        return pb.CreateExperimentResponse(experiment=await self._to_pb(experiment))

    async def GetExperiment(
        self, request: pb.GetExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetExperimentResponse:
        ident = parse_experiment_name(request.name)
        experiment = await run_db(
            lambda: self.experiments.get(ident, show_deleted=request.show_deleted)
        )
        return pb.GetExperimentResponse(experiment=await self._to_pb(experiment))

    async def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExperimentsResponse:
        state = state_from_pb(request.state_filter, "state_filter")
        if request.split_filter:
            parse_split_name(request.split_filter, "split_filter")
        model_type = _enum_name(
            common_pb2.ModelType, request.model_type_filter, "MODEL_TYPE_", "model_type_filter"
        )
        page = await run_db(
            lambda: self.experiments.list_experiments(
                page_size=request.page_size,
                page_token=request.page_token,
                state=state,
                split=request.split_filter,
                model_type=model_type,
                labels=dict(request.label_filter),
                show_deleted=request.show_deleted,
            )
        )
        best = await run_db(self.experiments.best_trials, page.items)
        return pb.ListExperimentsResponse(
            experiments=[experiment_to_pb(e, best.get(e.id)) for e in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateExperiment(
        self, request: pb.UpdateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateExperimentResponse:
        e = request.experiment
        ident = parse_experiment_name(e.name, "experiment.name")
        experiment = await run_db(
            lambda: self.experiments.update(
                ident,
                display_name=e.display_name,
                description=e.description,
                labels=dict(e.labels),
                mask=list(request.update_mask.paths),
                etag=e.etag,
            )
        )
        return pb.UpdateExperimentResponse(experiment=await self._to_pb(experiment))

    async def DeleteExperiment(
        self, request: pb.DeleteExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteExperimentResponse:
        ident = parse_experiment_name(request.name)
        experiment = await run_db(
            lambda: self.experiments.delete(ident, force=request.force, etag=request.etag)
        )
        return pb.DeleteExperimentResponse(experiment=await self._to_pb(experiment))

    async def CancelExperiment(
        self, request: pb.CancelExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelExperimentResponse:
        ident = parse_experiment_name(request.name)
        experiment = await run_db(self.experiments.cancel, ident)
        return pb.CancelExperimentResponse(experiment=await self._to_pb(experiment))

    async def ListTrials(
        self, request: pb.ListTrialsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTrialsResponse:
        ident = parse_experiment_name(request.parent, "parent")
        state = trial_state_from_pb(request.state_filter, "state_filter")
        page = await run_db(
            lambda: self.experiments.list_trials(
                ident,
                page_size=request.page_size,
                page_token=request.page_token,
                state=state,
                order_by=request.order_by,
            )
        )
        return pb.ListTrialsResponse(
            trials=[trial_to_pb(t) for t in page.items], next_page_token=page.next_page_token
        )

    async def WatchExperiment(
        self, request: pb.WatchExperimentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchExperimentResponse]:
        """The current state, every trial so far, then each change until a final state."""
        ident = parse_experiment_name(request.name)
        name = f"experiments/{ident}"
        wake = self.hub.watch(name)  # before the first read: no change can slip between
        try:
            experiment = await run_db(lambda: self.experiments.get(ident, show_deleted=True))
            sent: set[int] = set()
            last_version = experiment.version
            yield pb.WatchExperimentResponse(experiment=await self._to_pb(experiment))
            while True:
                trials: list[TrialRecord] = []
                if experiment.trials_completed > len(sent):
                    trials = [
                        t
                        for t in await run_db(self.experiments.all_trials, ident)
                        if t.number not in sent
                    ]
                current = await self._to_pb(experiment)
                for trial in trials:
                    sent.add(trial.number)
                    yield pb.WatchExperimentResponse(experiment=current, trial=trial_to_pb(trial))
                if not trials and experiment.version != last_version:
                    yield pb.WatchExperimentResponse(experiment=current)
                last_version = experiment.version
                if experiment.is_final and experiment.trials_completed <= len(sent):
                    return
                if not self.hub.closing:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), WATCH_FALLBACK_S)
                if self.hub.closing:
                    raise Unavailable(
                        "the training service is shutting down; watch again",
                        reason="SHUTTING_DOWN",
                        metadata={"resource_name": name},
                    )
                wake.clear()
                experiment = await run_db(lambda: self.experiments.get(ident, show_deleted=True))
        finally:
            self.hub.unwatch(name, wake)


def register(servicer: TrainingServicer) -> Callable[[grpc.aio.Server], list[str]]:
    """The ``register`` callable ServiceRunner wants: adds the servicer, returns its name."""

    def add(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_TrainingServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    return add
