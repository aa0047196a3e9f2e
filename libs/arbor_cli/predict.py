"""``arbor predict`` and ``arbor explain``: rows from a file or stdin, answers as a table,
JSON or CSV."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2 as pb
from arbor_cli._common import JsonOption, client, console, emit, label, number, print_json, table
from arbor_client import ArborClientError
from arbor_client.rows import (
    FORMATS,
    detect_format,
    frame_to_inline,
    parse_table,
    predictions_to_rows,
    rows_to_inline,
)

if TYPE_CHECKING:
    import polars as pl

SelectorOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="NAME (production), NAME:STAGE, NAME@ALIAS, NAME/VERSION or experiments/ID.",
    ),
]
InputArg = Annotated[
    str | None,
    typer.Argument(help="CSV, Parquet, JSON or NDJSON file; '-' or nothing reads stdin."),
]
FormatOption = Annotated[
    str | None,
    typer.Option("--format", "-f", help=f"Input format: {', '.join(FORMATS)} (default: guess)."),
]
WireOption = Annotated[
    str, typer.Option(help="Request shape: arrow (typed, fast) or json (JSON rows).")
]


def read_input(path: str | None, fmt: str | None) -> pl.DataFrame:
    """The rows to send, from a file or stdin, as a Polars frame."""
    if fmt is not None and fmt not in FORMATS:
        raise ArborClientError.invalid_argument(
            f"--format must be one of {', '.join(FORMATS)}", field="format"
        )
    if path is None or path == "-":
        stream = typer.get_binary_stream("stdin")
        if path is None and stream.isatty():
            raise ArborClientError.invalid_argument(
                "no input: give a file or pipe rows on stdin", field="input"
            )
        data = stream.read()
        if not data.strip():
            raise ArborClientError.invalid_argument("stdin is empty", field="input")
        return parse_table(data, fmt or detect_format(None, data))
    file = Path(path)
    if not file.is_file():
        raise ArborClientError.invalid_argument(f"no such file: {file}", field="input")
    data = file.read_bytes()
    return parse_table(data, fmt or detect_format(file, data))


def _inline(frame: pl.DataFrame, wire: str) -> common_pb2.InlineData:
    if wire == "arrow":
        return frame_to_inline(frame)
    if wire == "json":
        return rows_to_inline(frame.to_dicts())
    raise ArborClientError.invalid_argument("--wire must be arrow or json", field="wire")


def _served(served: pb.ServedModel) -> str:
    return f"{served.model_version} ({label(common_pb2.ModelStage, served.stage)})"


def predict(
    ctx: typer.Context,
    model: SelectorOption,
    input_path: InputArg = None,
    input_format: FormatOption = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="table, json (rows) or csv.")
    ] = "table",
    probabilities: Annotated[
        bool, typer.Option("--probabilities", "-p", help="Also class probabilities.")
    ] = False,
    with_input: Annotated[bool, typer.Option(help="Echo the input columns too.")] = False,
    reject_extra_columns: Annotated[
        bool, typer.Option(help="Fail on columns the model does not know.")
    ] = False,
    wire: WireOption = "arrow",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Predict rows with a registered model."""
    if output not in {"table", "json", "csv"}:
        raise ArborClientError.invalid_argument(
            "--output must be table, json or csv", field="output"
        )
    frame = read_input(input_path, input_format)
    response = client(ctx).inference.predict(
        model,
        _inline(frame, wire),
        include_probabilities=probabilities,
        extra_columns="reject" if reject_extra_columns else None,
    )
    if as_json:
        print_json(response)
        return
    rows = predictions_to_rows(response)
    if with_input:
        inputs = frame.to_dicts()
        rows = [{**inputs[i], **row} for i, row in enumerate(rows)] if inputs else rows
    if output == "json":
        print_json(rows)
    elif output == "csv":
        import polars as pl

        sys.stdout.write(pl.from_dicts(rows, infer_schema_length=None).write_csv())
        sys.stdout.flush()
    else:
        columns = list(rows[0]) if rows else ["label"]
        t = table(None, ["#", *columns])
        for i, row in enumerate(rows):
            t.add_row(str(i), *(_cell(row.get(c)) for c in columns))
        out = console()
        out.print(
            f"{response.row_count} predictions by {_served(response.served_model)}",
            highlight=False,
        )
        out.print(t)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return number(value)
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def explain(
    ctx: typer.Context,
    model: SelectorOption,
    input_path: Annotated[
        str | None,
        typer.Argument(help="Rows to explain (file or '-'); none: the stored background sample."),
    ] = None,
    input_format: FormatOption = None,
    per_row: Annotated[
        bool, typer.Option(help="Per-row contributions for the given rows.")
    ] = False,
    top_k: Annotated[int, typer.Option(help="Only the top K features (0: all).")] = 0,
    method: Annotated[str | None, typer.Option(help="shap or native.")] = None,
    wire: WireOption = "arrow",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Explain a model: global SHAP ranking and, with --per-row, each row's contributions."""
    data = _inline(read_input(input_path, input_format), wire) if input_path else None
    response = client(ctx).inference.explain(
        model, data, per_row=per_row and data is not None, top_k=top_k, method=method
    )

    def render() -> None:
        out = console()
        out.print(
            f"feature importance ({label(pb.ExplainMethod, response.method)}) "
            f"of {_served(response.served_model)}",
            highlight=False,
        )
        t = table(None, ["#", "feature", "importance"])
        for i, item in enumerate(response.global_importance, start=1):
            t.add_row(str(i), item.feature, number(item.importance))
        out.print(t)
        if response.fallback_reason:
            out.print(f"[yellow]fell back:[/yellow] {response.fallback_reason}")
        if response.rows:
            rows = table("per-row contributions (largest first)", ["row", "class", "base", "top"])
            for row in response.rows:
                pairs = sorted(
                    zip(response.features, row.contributions, strict=False),
                    key=lambda p: -abs(p[1]),
                )[: top_k or 5]
                rows.add_row(
                    str(row.row_index),
                    row.class_label,
                    number(row.base_value),
                    ", ".join(f"{f}={v:+.3g}" for f, v in pairs),
                )
            out.print(rows)

    emit(ctx, response, render)
