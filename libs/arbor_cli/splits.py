"""``arbor splits``: create, get, list, update, delete dataset splits."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from arbor.common.v1 import common_pb2
from arbor.split.v1 import split_service_pb2 as pb
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
from arbor_client import ArborClientError

app = typer.Typer(help="Dataset splits (the split service).", no_args_is_help=True)


def _parse_time(value: str | None, option: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ArborClientError.invalid_argument(
            f"{option} expects an ISO 8601 time, got {value!r}", field=option.lstrip("-")
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _source(split: pb.Split) -> str:
    kind = split.source.WhichOneof("source")
    if kind == "uri":
        return split.source.uri
    return "inline" if kind else ""


def _strategy(split: pb.Split) -> str:
    kind = split.strategy.WhichOneof("strategy")
    if kind == "random":
        return "random (stratified)" if split.strategy.random.stratify else "random"
    if kind == "time":
        return f"time on {split.strategy.time.time_column}"
    if kind == "entity":
        return f"entity on {split.strategy.entity.entity_column}"
    return "random"


def render_split(split: pb.Split) -> None:
    """A split as a person wants to see it: summary, parts, leakage warnings."""
    out = console()
    fractions = split.fractions
    out.print(
        kv_table(
            [
                ("name", split.name),
                ("display name", split.display_name),
                ("state", label(pb.SplitState, split.state)),
                ("source", _source(split)),
                ("target", split.target_column),
                ("task", label(common_pb2.TaskType, split.task_type)),
                ("strategy", _strategy(split)),
                (
                    "fractions",
                    f"{fractions.train:g} / {fractions.validation:g} / {fractions.test:g}"
                    if split.HasField("fractions")
                    else "",
                ),
                ("seed", split.seed),
                ("rows", split.row_count),
                ("columns", len(split.schema)),
                ("labels", fmt_map(split.labels)),
                ("content hash", split.content_hash),
                ("created", timestamp(split.create_time)),
                ("deleted", timestamp(split.delete_time)),
                ("etag", split.etag),
            ]
        )
    )
    if split.parts:
        parts = table("parts", ["part", "rows", "class balance", "artifact"])
        for part in split.parts:
            parts.add_row(
                part.part, str(part.row_count), fmt_map(part.class_balance), part.artifact.key
            )
        out.print(parts)
    report = split.leakage_report
    for warning in report.warnings:
        out.print(f"[yellow]leakage warning:[/yellow] {warning}")


@app.command("create")
def create(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="CSV / Parquet / NDJSON file, or gs:// URI.")],
    target: Annotated[str, typer.Option("--target", "-t", help="The column to predict.")],
    strategy: Annotated[str, typer.Option(help="random, stratified, time or entity.")] = "random",
    stratify: Annotated[bool, typer.Option(help="Keep class ratios (random/entity).")] = False,
    time_column: Annotated[str | None, typer.Option(help="Temporal column (time).")] = None,
    time_boundaries: Annotated[
        str, typer.Option(help="row_fraction or time_range (time, without cut-offs).")
    ] = "row_fraction",
    validation_start: Annotated[
        str | None, typer.Option(help="ISO time: first instant of validation (time).")
    ] = None,
    test_start: Annotated[
        str | None, typer.Option(help="ISO time: first instant of test (time).")
    ] = None,
    entity_column: Annotated[str | None, typer.Option(help="Entity column (entity).")] = None,
    train: Annotated[float | None, typer.Option(help="Train fraction (default 0.8).")] = None,
    validation: Annotated[
        float | None, typer.Option(help="Validation fraction (default 0.2).")
    ] = None,
    test: Annotated[float | None, typer.Option(help="Test fraction (default 0).")] = None,
    seed: Annotated[int, typer.Option(help="Seed: same request, same parts.")] = 0,
    split_id: Annotated[str, typer.Option("--id", help="Split id; generated if empty.")] = "",
    display_name: Annotated[str, typer.Option(help="Human-friendly name.")] = "",
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    labels: Annotated[
        list[str] | None, typer.Option("--label", help="KEY=VALUE, repeatable.")
    ] = None,
    upload: Annotated[
        str, typer.Option(help="auto (inline up to 32 MiB), inline, or uri (server reads path).")
    ] = "auto",
    data_format: Annotated[
        str | None, typer.Option("--format", help="parquet, csv or ndjson (default: suffix).")
    ] = None,
    fail_on_leakage: Annotated[bool, typer.Option(help="Refuse when leakage is found.")] = False,
    request_id: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Split a file into train / validation / test parts."""
    if upload not in {"auto", "inline", "uri"}:
        raise ArborClientError.invalid_argument(
            "--upload must be auto, inline or uri", field="upload"
        )
    fractions = None
    if train is not None or validation is not None or test is not None:
        if train is None or validation is None:
            raise ArborClientError.invalid_argument(
                "give both --train and --validation (and optionally --test)", field="fractions"
            )
        fractions = (train, validation, test or 0.0)
    split = client(ctx).split.create_split_from_file(
        Path(source) if "://" not in source else source,
        target,
        strategy=strategy,
        stratify=stratify,
        time_column=time_column,
        entity_column=entity_column,
        fractions=fractions,
        seed=seed,
        split_id=split_id,
        display_name=display_name,
        description=description,
        labels=parse_labels(labels),
        upload=upload,  # type: ignore[arg-type]
        data_format=data_format,
        fail_on_leakage=fail_on_leakage,
        request_id=request_id,
        time_boundaries=time_boundaries,
        validation_start=_parse_time(validation_start, "--validation-start"),
        test_start=_parse_time(test_start, "--test-start"),
    )
    emit(ctx, split, lambda: render_split(split))


@app.command("get")
def get(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="splits/ID or ID.")],
    show_deleted: Annotated[bool, typer.Option(help="Also find a soft-deleted split.")] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Show one split."""
    split = client(ctx).split.get_split(name, show_deleted=show_deleted)
    emit(ctx, split, lambda: render_split(split))


@app.command("list")
def list_(
    ctx: typer.Context,
    labels: Annotated[list[str] | None, typer.Option("--label", help="KEY=VALUE filter.")] = None,
    show_deleted: Annotated[bool, typer.Option(help="Include soft-deleted splits.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many (0: all).")] = 100,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """List splits, newest first."""
    splits = list(
        client(ctx).split.iter_splits(
            labels=parse_labels(labels), show_deleted=show_deleted, limit=limit or None
        )
    )

    def render() -> None:
        t = table(None, ["name", "display name", "state", "target", "task", "rows", "created"])
        for s in splits:
            t.add_row(
                s.name,
                s.display_name,
                label(pb.SplitState, s.state),
                s.target_column,
                label(common_pb2.TaskType, s.task_type),
                str(s.row_count),
                timestamp(s.create_time),
            )
        console().print(t)

    emit(ctx, {"splits": splits}, render)


@app.command("update")
def update(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="splits/ID or ID.")],
    display_name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    labels: Annotated[
        list[str] | None, typer.Option("--label", help="KEY=VALUE; replaces all labels.")
    ] = None,
    clear_labels: Annotated[bool, typer.Option(help="Remove every label.")] = False,
    etag: Annotated[str, typer.Option(help="Only if the split is still at this etag.")] = "",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Change a split's display name, description or labels."""
    new_labels = {} if clear_labels else parse_labels(labels)
    split = client(ctx).split.update_split(
        name, display_name=display_name, description=description, labels=new_labels, etag=etag
    )
    emit(ctx, split, lambda: render_split(split))


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="splits/ID or ID.")],
    purge: Annotated[bool, typer.Option(help="Also delete the Parquet parts.")] = False,
    etag: Annotated[str, typer.Option(help="Only if the split is still at this etag.")] = "",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Soft-delete a split (--purge also removes its data)."""
    split = client(ctx).split.delete_split(name, purge=purge, etag=etag)
    emit(
        ctx,
        split,
        lambda: console().print(f"deleted {split.name}" + (" (data purged)" if purge else "")),
    )
