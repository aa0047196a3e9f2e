"""``arbor experiments``: create, get, list, trials, watch (live progress), cancel, delete."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from arbor.common.v1 import common_pb2
from arbor.training.v1 import training_service_pb2 as pb
from arbor_cli._common import (
    EXIT_OUTCOME,
    JsonOption,
    client,
    console,
    emit,
    err_console,
    fail,
    fmt_map,
    json_mode,
    kv_table,
    label,
    number,
    parse_labels,
    print_json,
    table,
    timestamp,
)
from arbor_client import TERMINAL_STATES, ArborClientError, TrainingClient, build_experiment

app = typer.Typer(
    help="Experiments: hyperparameter studies (the training service).", no_args_is_help=True
)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def render_experiment(exp: pb.Experiment) -> None:
    out = console()
    best = exp.best_trial if exp.HasField("best_trial") else None
    out.print(
        kv_table(
            [
                ("name", exp.name),
                ("display name", exp.display_name),
                ("state", label(pb.ExperimentState, exp.state)),
                ("split", exp.split),
                ("target", exp.target_column),
                ("model type", label(common_pb2.ModelType, exp.model_type)),
                ("task", label(common_pb2.TaskType, exp.task_type)),
                ("metric", exp.metric),
                ("direction", label(pb.OptimizationDirection, exp.direction)),
                ("trials", _trials_summary(exp)),
                (
                    "best trial",
                    f"#{best.number} value {number(best.value)}" if best is not None else "",
                ),
                ("model version", exp.model_version),
                ("metrics", fmt_map(exp.metrics)),
                ("error", exp.error_message),
                ("labels", fmt_map(exp.labels)),
                ("created", timestamp(exp.create_time)),
                ("started", timestamp(exp.start_time)),
                ("ended", timestamp(exp.end_time)),
                ("etag", exp.etag),
            ]
        )
    )


def _trials_summary(exp: pb.Experiment) -> str:
    total = exp.study.n_trials
    text = f"{exp.trials_completed}" + (f"/{total}" if total else "")
    extras = []
    if exp.trials_pruned:
        extras.append(f"{exp.trials_pruned} pruned")
    if exp.trials_failed:
        extras.append(f"{exp.trials_failed} failed")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _param(value: Any) -> str:
    """A hyperparameter for a table: integral floats as ints, others to 4 significant digits."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _best_text(exp: pb.Experiment) -> str:
    return number(exp.best_trial.value) if exp.HasField("best_trial") else "-"


def watch_with_progress(
    ctx: typer.Context, training: TrainingClient, name: str, timeout: float | None
) -> None:
    """Follow an experiment to its end: a live bar (trials, best value, elapsed) for people,
    one JSON line per update with ``--json``. Exit status 3 when it FAILED or was CANCELLED."""
    final: pb.Experiment | None = None
    if json_mode(ctx):
        for update in training.watch_experiment(name, timeout=timeout):
            print_json(update, compact=True)
            final = update.experiment
    else:
        started = time.monotonic()
        progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials  best [cyan]{task.fields[best]}"),
            TimeElapsedColumn(),
            console=err_console(),
            transient=False,
        )
        with progress:
            task = progress.add_task(name, total=None, best="-")
            for update in training.watch_experiment(name, timeout=timeout):
                exp = update.experiment
                final = exp
                progress.update(
                    task,
                    description=f"{exp.name} {label(pb.ExperimentState, exp.state)}",
                    total=exp.study.n_trials or None,
                    completed=exp.trials_completed,
                    best=_best_text(exp),
                )
                if update.HasField("trial"):
                    trial = update.trial
                    progress.console.print(
                        f"  trial {trial.number:>3} {label(pb.TrialState, trial.state):<8} "
                        f"value {number(trial.value)}"
                    )
        if final is not None:
            render_experiment(final)
            console().print(f"elapsed {_duration(time.monotonic() - started)}")
    if final is None:
        final = training.get_experiment(name)
    if final.state != pb.EXPERIMENT_STATE_SUCCEEDED and final.state in TERMINAL_STATES:
        state_name = label(pb.ExperimentState, final.state).upper()
        fail(
            f"experiment {final.name} {state_name}"
            + (f": {final.error_message}" if final.error_message else ""),
            code=state_name,
            reason=f"EXPERIMENT_{state_name}",
            exit_code=EXIT_OUTCOME,
        )


@app.command("create")
def create(
    ctx: typer.Context,
    split: Annotated[
        str | None, typer.Option("--split", "-s", help="splits/ID to train on.")
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(help="An Experiment as JSON (protobuf JSON); flags given override it."),
    ] = None,
    model_type: Annotated[
        str | None, typer.Option(help="catboost (default), xgboost, lightgbm or auto.")
    ] = None,
    task: Annotated[str | None, typer.Option(help="binary, multiclass or regression.")] = None,
    metric: Annotated[str, typer.Option(help="roc_auc, log_loss, accuracy, f1, rmse, ...")] = "",
    trials: Annotated[int, typer.Option("--trials", "-n", help="Number of trials.")] = 0,
    study_timeout: Annotated[
        float | None, typer.Option("--study-timeout", help="Study budget in seconds.")
    ] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, random, cmaes or qmc.")] = None,
    pruner: Annotated[str | None, typer.Option(help="median, hyperband or none.")] = None,
    seed: Annotated[int, typer.Option(help="Sampler and model seed.")] = 0,
    early_stopping_rounds: Annotated[int, typer.Option(help="0: default (50).")] = 0,
    cv_folds: Annotated[int, typer.Option(help="Cross-validation folds (0/1: off).")] = 0,
    cv_auto: Annotated[
        bool, typer.Option(help="Let the split's size choose the folds (5 on small data).")
    ] = False,
    ensemble_size: Annotated[
        int, typer.Option(help="Most trials blended into the model (0: 3 for auto, else 1).")
    ] = 0,
    threads: Annotated[int, typer.Option(help="Threads per trial (0: all cores).")] = 0,
    parallelism: Annotated[
        int, typer.Option(help="Workers sharing the study (0: 1, at most 16).")
    ] = 0,
    max_iterations: Annotated[int, typer.Option(help="Boosting rounds per trial (0: 1000).")] = 0,
    include: Annotated[list[str] | None, typer.Option(help="Only these feature columns.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Never these columns.")] = None,
    model_name: Annotated[str, typer.Option(help="Register under this model name.")] = "",
    display_name: Annotated[str, typer.Option(help="Human-friendly name.")] = "",
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    labels: Annotated[list[str] | None, typer.Option("--label", help="KEY=VALUE.")] = None,
    experiment_id: Annotated[str, typer.Option("--id", help="Experiment id.")] = "",
    request_id: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    watch: Annotated[bool, typer.Option(help="Follow it with a live progress bar.")] = False,
    watch_timeout: Annotated[
        float | None, typer.Option(help="Stop watching after this many seconds.")
    ] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Queue an experiment on a split."""
    if spec is not None:
        try:
            experiment = json_format.Parse(Path(spec).read_text(), pb.Experiment())
        except (OSError, json_format.ParseError) as err:
            raise ArborClientError.invalid_argument(f"--spec: {err}", field="spec") from None
        if split:
            experiment.split = split if split.startswith("splits/") else f"splits/{split}"
    else:
        if not split:
            raise ArborClientError.invalid_argument(
                "give --split (or a --spec file)", field="split"
            )
        experiment = build_experiment(
            split,
            model_type=model_type,
            task=task,
            metric=metric,
            n_trials=trials,
            study_timeout=study_timeout,
            sampler=sampler,
            pruner=pruner,
            seed=seed,
            early_stopping_rounds=early_stopping_rounds,
            cv_folds=cv_folds,
            cv_auto=cv_auto,
            ensemble_size=ensemble_size,
            threads=threads,
            parallelism=parallelism,
            max_iterations=max_iterations,
            include_columns=include or (),
            exclude_columns=exclude or (),
            model_name=model_name,
            display_name=display_name,
            description=description,
            labels=parse_labels(labels),
        )
    training = client(ctx).training
    created = training.create_experiment(
        experiment, experiment_id=experiment_id, request_id=request_id
    )
    if not watch:
        emit(ctx, created, lambda: render_experiment(created))
        return
    if json_mode(ctx):
        print_json({"experiment": created}, compact=True)
    else:
        console().print(f"queued {created.name}")
    watch_with_progress(ctx, training, created.name, watch_timeout)


@app.command("get")
def get(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="experiments/ID or ID.")],
    show_deleted: Annotated[bool, typer.Option(help="Also a soft-deleted one.")] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Show one experiment."""
    exp = client(ctx).training.get_experiment(name, show_deleted=show_deleted)
    emit(ctx, exp, lambda: render_experiment(exp))


@app.command("list")
def list_(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed, cancelled.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Only experiments on this split.")] = None,
    model_type: Annotated[str | None, typer.Option(help="Only this model type.")] = None,
    labels: Annotated[list[str] | None, typer.Option("--label", help="KEY=VALUE.")] = None,
    show_deleted: Annotated[bool, typer.Option(help="Include soft-deleted ones.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many (0: all).")] = 100,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """List experiments, newest first."""
    experiments = list(
        client(ctx).training.iter_experiments(
            limit=limit or None,
            state=state,
            split=split,
            model_type=model_type,
            labels=parse_labels(labels),
            show_deleted=show_deleted,
        )
    )

    def render() -> None:
        t = table(None, ["name", "state", "split", "model", "metric", "trials", "best", "created"])
        for e in experiments:
            t.add_row(
                e.name,
                label(pb.ExperimentState, e.state),
                e.split,
                label(common_pb2.ModelType, e.model_type),
                e.metric,
                _trials_summary(e),
                _best_text(e),
                timestamp(e.create_time),
            )
        console().print(t)

    emit(ctx, {"experiments": experiments}, render)


@app.command("trials")
def trials(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="experiments/ID or ID.")],
    state: Annotated[str | None, typer.Option(help="running, complete, pruned or failed.")] = None,
    order_by: Annotated[str, typer.Option(help="number (default) or value (best first).")] = "",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """List an experiment's trials, by number or (--order-by value) best first."""
    found = list(client(ctx).training.iter_trials(name, state=state, order_by=order_by))

    def render() -> None:
        with_errors = any(trial.error_message for trial in found)
        columns = ["#", "state", "value", "duration", "model", "params"]
        t = table(None, [*columns, "error"] if with_errors else columns)
        for trial in found:
            params: dict[str, Any] = json_format.MessageToDict(trial.params)
            cells = [
                str(trial.number),
                label(pb.TrialState, trial.state),
                number(trial.value) if trial.state == pb.TRIAL_STATE_COMPLETE else "",
                f"{trial.duration.ToTimedelta().total_seconds():.1f}s"
                if trial.HasField("duration")
                else "",
                label(common_pb2.ModelType, trial.model_type),
                ", ".join(f"{k}={_param(v)}" for k, v in params.items()),
            ]
            t.add_row(*cells, *([trial.error_message] if with_errors else []))
        console().print(t)

    emit(ctx, {"trials": found}, render)


@app.command("watch")
def watch(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="experiments/ID or ID.")],
    timeout: Annotated[float | None, typer.Option(help="Give up after N seconds.")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Follow an experiment until it ends (live progress; NDJSON with --json)."""
    watch_with_progress(ctx, client(ctx).training, name, timeout)


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="experiments/ID or ID.")],
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Stop an experiment at the next trial or pruning check."""
    exp = client(ctx).training.cancel_experiment(name)
    emit(
        ctx,
        exp,
        lambda: console().print(f"{exp.name}: {label(pb.ExperimentState, exp.state)}"),
    )


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="experiments/ID or ID.")],
    force: Annotated[bool, typer.Option(help="Cancel a queued/running one first.")] = False,
    etag: Annotated[str, typer.Option(help="Only if still at this etag.")] = "",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Soft-delete a finished experiment."""
    exp = client(ctx).training.delete_experiment(name, force=force, etag=etag)
    emit(ctx, exp, lambda: console().print(f"deleted {exp.name}"))
