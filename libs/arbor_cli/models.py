"""``arbor models``: list, get, promote, gate, alias, archive, delete, resolve registered
models."""

from __future__ import annotations

from typing import Annotated

import typer

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as pb
from arbor_cli._common import (
    JsonOption,
    client,
    console,
    emit,
    fmt_map,
    kv_table,
    label,
    parse_labels,
    table,
    timestamp,
)
from arbor_client import model_version_name
from arbor_client.registry import _VERSION_RE

app = typer.Typer(help="Registered models and versions (the registry).", no_args_is_help=True)

ModelArg = Annotated[
    str, typer.Argument(help="Model name, NAME/VERSION or models/NAME/versions/V.")
]
VersionArg = Annotated[int | None, typer.Argument(help="Version number.")]


def render_version(version: pb.ModelVersion) -> None:
    signature = version.signature
    console().print(
        kv_table(
            [
                ("name", version.name),
                ("stage", label(common_pb2.ModelStage, version.stage)),
                ("aliases", ", ".join(version.aliases)),
                ("experiment", version.experiment),
                ("best trial", version.best_trial_number if version.experiment else ""),
                ("split", version.split),
                ("model type", label(common_pb2.ModelType, version.model_type)),
                ("task", label(common_pb2.TaskType, version.task_type)),
                ("metrics", fmt_map(version.metrics)),
                ("inputs", ", ".join(f"{c.name}:{c.dtype}" for c in signature.inputs)),
                ("classes", ", ".join(signature.class_labels)),
                ("artifact uri", version.artifact_uri),
                ("training rows", version.training_rows or ""),
                ("labels", fmt_map(version.labels)),
                ("created", timestamp(version.create_time)),
                ("deleted", timestamp(version.delete_time)),
                ("etag", version.etag),
            ]
        )
    )


def versions_table(versions: list[pb.ModelVersion], title: str | None = None) -> None:
    t = table(
        title, ["version", "stage", "aliases", "model type", "metrics", "experiment", "created"]
    )
    for v in versions:
        t.add_row(
            str(v.version),
            label(common_pb2.ModelStage, v.stage),
            ", ".join(v.aliases),
            label(common_pb2.ModelType, v.model_type),
            fmt_map(v.metrics),
            v.experiment,
            timestamp(v.create_time),
        )
    console().print(t)


def _is_version(name: str, version: int | None) -> bool:
    return version is not None or bool(_VERSION_RE.match(name.strip()))


@app.command("list")
def list_(
    ctx: typer.Context,
    labels: Annotated[list[str] | None, typer.Option("--label", help="KEY=VALUE filter.")] = None,
    show_deleted: Annotated[bool, typer.Option(help="Include deleted models.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many (0: all).")] = 100,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """List models by name."""
    models = list(
        client(ctx).registry.iter_models(
            limit=limit or None, labels=parse_labels(labels), show_deleted=show_deleted
        )
    )

    def render() -> None:
        t = table(None, ["model", "latest", "production", "aliases", "updated"])
        for m in models:
            t.add_row(
                m.model,
                str(m.latest_version),
                str(m.production_version or "-"),
                fmt_map(m.aliases),
                timestamp(m.update_time),
            )
        console().print(t)

    emit(ctx, {"models": models}, render)


@app.command("get")
def get(
    ctx: typer.Context,
    name: ModelArg,
    version: VersionArg = None,
    show_deleted: Annotated[bool, typer.Option(help="Include deleted versions.")] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Show a model with its versions, or one version."""
    registry = client(ctx).registry
    if _is_version(name, version):
        found = registry.get_model_version(name, version, show_deleted=show_deleted)
        emit(ctx, found, lambda: render_version(found))
        return
    response = registry.get_model(name, show_deleted=show_deleted)

    def render() -> None:
        m = response.model
        console().print(
            kv_table(
                [
                    ("name", m.name),
                    ("latest version", m.latest_version),
                    ("production version", m.production_version or "-"),
                    ("aliases", fmt_map(m.aliases)),
                    ("promotion gate", describe_gate(m)),
                    ("description", m.description),
                    ("labels", fmt_map(m.labels)),
                    ("created", timestamp(m.create_time)),
                    ("deleted", timestamp(m.delete_time)),
                ]
            )
        )
        versions_table(list(response.versions), "versions")

    emit(ctx, response, render)


@app.command("promote")
def promote(
    ctx: typer.Context,
    name: ModelArg,
    version: VersionArg = None,
    stage: Annotated[str, typer.Option(help="production or staging.")] = "production",
    previous_stage: Annotated[
        str | None, typer.Option(help="Where the old PRODUCTION version goes (default archived).")
    ] = None,
    allow_archived: Annotated[bool, typer.Option(help="Allow an ARCHIVED version.")] = False,
    etag: Annotated[str, typer.Option(help="Only if still at this etag.")] = "",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Move a version to STAGING or PRODUCTION."""
    response = client(ctx).registry.promote_model(
        name,
        version,
        stage=stage,
        previous_production_stage=previous_stage,
        allow_archived=allow_archived,
        etag=etag,
    )

    def render() -> None:
        v = response.model_version
        line = f"{v.name} is now {label(common_pb2.ModelStage, v.stage)}"
        if response.HasField("previous_production") and response.previous_production.name:
            prev = response.previous_production
            line += f"; {prev.name} moved to {label(common_pb2.ModelStage, prev.stage)}"
        console().print(line)

    emit(ctx, response, render)


def describe_gate(model: pb.Model) -> str:
    """One line for a model's promotion gate ("-" when it has none)."""
    if not model.HasField("promotion_gate"):
        return "-"
    gate = model.promotion_gate
    direction = label(pb.MetricDirection, gate.direction) or "inferred"
    text = f"{gate.metric} ({direction}) better by >= {gate.min_improvement:g}"
    if gate.max_latency:
        text += f", {gate.latency_metric or 'predict_ms_per_1k_rows'} <= {gate.max_latency:g}"
    aliases = ", ".join(gate.guarded_aliases) or "champion"
    return f"{text}; guards production and {aliases}"


@app.command("gate")
def gate(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    metric: Annotated[
        str | None, typer.Option(help="Metric compared, a key of the versions' metrics.")
    ] = None,
    min_improvement: Annotated[
        float, typer.Option(help="How much the candidate must beat the current one by.")
    ] = 0.0,
    max_latency: Annotated[
        float, typer.Option(help="Highest latency metric allowed (0: unchecked).")
    ] = 0.0,
    direction: Annotated[
        str | None, typer.Option(help="maximize or minimize (default: from the metric name).")
    ] = None,
    latency_metric: Annotated[
        str, typer.Option(help="Metric key of the latency (default predict_ms_per_1k_rows).")
    ] = "",
    alias: Annotated[
        list[str] | None, typer.Option("--alias", help="Alias guarded (repeat; default champion).")
    ] = None,
    allow_different_split: Annotated[
        bool, typer.Option(help="Compare versions scored on different held-out data.")
    ] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the gate.")] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Set (or --clear) the promotion gate: the rule a version must pass to become
    PRODUCTION or take a guarded alias such as champion."""
    registry = client(ctx).registry
    if clear:
        updated = registry.clear_promotion_gate(model)
    elif not metric:
        from arbor_client import ArborClientError

        raise ArborClientError.invalid_argument(
            "give the --metric the gate compares (or --clear)", field="metric"
        )
    else:
        updated = registry.set_promotion_gate(
            model,
            metric=metric,
            min_improvement=min_improvement,
            max_latency=max_latency,
            direction=direction,
            latency_metric=latency_metric,
            allow_different_split=allow_different_split,
            guarded_aliases=alias or (),
        )
    emit(ctx, updated, lambda: console().print(f"{updated.name}: gate {describe_gate(updated)}"))


@app.command("alias")
def alias(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. champion.")],
    version: Annotated[int | None, typer.Argument(help="Version to point at.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Point an alias at a version (or remove it with --delete)."""
    registry = client(ctx).registry
    if delete:
        removed = registry.delete_alias(model, alias_name)
        emit(
            ctx,
            removed,
            lambda: console().print(
                f"removed alias {alias_name} (was version {removed.previous_version})"
            ),
        )
        return
    if version is None:
        from arbor_client import ArborClientError

        raise ArborClientError.invalid_argument(
            "give the VERSION the alias should point at (or --delete)", field="version"
        )
    response = registry.set_alias(model, alias_name, version)

    def render() -> None:
        moved = (
            f" (moved from version {response.previous_version})"
            if response.previous_version
            else ""
        )
        console().print(f"{alias_name} -> {response.model_version.name}{moved}")

    emit(ctx, response, render)


@app.command("archive")
def archive(
    ctx: typer.Context,
    name: ModelArg,
    version: VersionArg = None,
    force: Annotated[bool, typer.Option(help="Allow archiving the PRODUCTION version.")] = False,
    etag: Annotated[str, typer.Option(help="Only if still at this etag.")] = "",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Move a version to ARCHIVED."""
    archived = client(ctx).registry.archive_model(name, version, force=force, etag=etag)
    emit(ctx, archived, lambda: console().print(f"archived {archived.name}"))


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: ModelArg,
    version: VersionArg = None,
    purge: Annotated[bool, typer.Option(help="Also delete the artifacts.")] = False,
    force: Annotated[bool, typer.Option(help="Allow deleting a PRODUCTION version.")] = False,
    etag: Annotated[str, typer.Option(help="Only if still at this etag (version only).")] = "",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Soft-delete a version, or a whole model when no version is given."""
    deleted = client(ctx).registry.delete_model(name, version, purge=purge, force=force, etag=etag)

    def render() -> None:
        names = ", ".join(v.name for v in deleted) or "nothing"
        console().print(f"deleted {names}" + (" (artifacts purged)" if purge else ""))

    emit(ctx, {"deletedVersions": deleted}, render)


@app.command("resolve")
def resolve(
    ctx: typer.Context,
    selector: Annotated[
        str,
        typer.Argument(
            help="NAME (production), NAME:STAGE, NAME@ALIAS, NAME/VERSION or experiments/ID."
        ),
    ],
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Show which version a selector points at."""
    found = client(ctx).registry.resolve_model(selector)
    emit(ctx, found, lambda: render_version(found))


__all__ = ["app", "model_version_name"]
