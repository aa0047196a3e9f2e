"""What every command shares: the client, ``--json``, output helpers and the error line.

Output rules: results go to stdout (rich tables for people; with ``--json``, protobuf
``MessageToDict`` JSON for scripts); progress and errors go to stderr. A failure is one line on
stderr, ``error: CODE: message [REASON]`` (with ``--json``: ``{"error": {...}}``), and a
non-zero exit status; never a traceback (``ARBOR_DEBUG=1`` shows one).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from arbor_client import ArborClient, ArborClientError, ClientConfig
from arbor_client._enums import enum_label

JSON_META_KEY = "arbor.json"

# Exit statuses: 1 for a failed call (any gRPC code), 2 for bad usage (click's own), 3 for a
# finished-but-unsuccessful outcome (an experiment that FAILED or was CANCELLED; problems
# found by a maintenance check).
EXIT_ERROR = 1
EXIT_OUTCOME = 3


@dataclass
class CliState:
    """Root options, resolved once per invocation; ``client`` opens channels lazily."""

    timeout: float | None = None
    token: str | None = None
    _client: ArborClient | None = field(default=None, repr=False)

    @property
    def client(self) -> ArborClient:
        if self._client is None:
            config = ClientConfig.from_env(timeout=self.timeout, token=self.token)
            self._client = ArborClient(config)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
        root.call_on_close(root.obj.close)
    return root.obj


def client(ctx: typer.Context) -> ArborClient:
    return state(ctx).client


# --- --json ----------------------------------------------------------------------------------


def current_context() -> Any:
    """The active command context (Typer vendors click; this finds whichever is in use)."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - Typer releases that use click itself
        from click import get_current_context  # type: ignore[no-redef]
    return get_current_context(silent=True)


def _set_json(ctx: typer.Context, _param: typer.CallbackParam, value: bool) -> bool:
    if value:
        ctx.meta[JSON_META_KEY] = True
    return value


JsonOption = typer.Option(
    "--json",
    help="Machine-readable output (protobuf JSON) on stdout; errors as JSON on stderr.",
    callback=_set_json,
    is_eager=True,
)


def json_mode(ctx: Any = None) -> bool:
    ctx = ctx or current_context()
    return bool(ctx is not None and ctx.meta.get(JSON_META_KEY))


# --- output ------------------------------------------------------------------------------------


def console() -> Console:
    """A console on the current stdout (tests swap sys.stdout, so never cache one)."""
    return Console(file=sys.stdout, soft_wrap=False)


def err_console() -> Console:
    return Console(file=sys.stderr, soft_wrap=False)


def to_dict(message: Message) -> dict[str, Any]:
    """Canonical proto3 JSON (camelCase names, enums by name), as grpcurl prints it."""
    return json_format.MessageToDict(message)


def print_json(value: Any, *, compact: bool = False) -> None:
    """JSON on stdout; protobuf messages (also inside lists and dicts) become MessageToDict."""

    def convert(item: Any) -> Any:
        if isinstance(item, Message):
            return to_dict(item)
        if isinstance(item, Mapping):
            return {str(k): convert(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [convert(v) for v in item]
        return item

    text = json.dumps(convert(value), indent=None if compact else 2, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def emit(ctx: typer.Context, value: Any, render: Callable[[], None]) -> None:
    """``--json`` prints ``value`` as JSON; otherwise ``render()`` draws it for a person."""
    if json_mode(ctx):
        print_json(value)
    else:
        render()


def table(title: str | None, columns: Sequence[str]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        t.add_column(column, overflow="fold")
    return t


def kv_table(rows: Iterable[tuple[str, Any]], title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    for key, value in rows:
        if value not in (None, "", [], {}):
            t.add_row(key, str(value))
    return t


def label(enum: Any, value: int) -> str:
    return enum_label(enum, value) or "-"


def timestamp(ts: Any) -> str:
    """A Timestamp as ``YYYY-MM-DD HH:MM:SS`` UTC, ``""`` when unset."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return ""
    return str(ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))


def number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def fmt_map(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={number(v) if isinstance(v, float) else v}" for k, v in values.items())


def parse_labels(values: Sequence[str] | None, option: str = "--label") -> dict[str, str] | None:
    """``["team=risk", "env=dev"]`` -> dict; None when the option was not given."""
    if not values:
        return None
    out: dict[str, str] = {}
    for item in values:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise ArborClientError.invalid_argument(
                f"{option} expects KEY=VALUE, got {item!r}", field=option.lstrip("-")
            )
        out[key.strip()] = val.strip()
    return out


# --- errors ------------------------------------------------------------------------------------


def fail(
    message: str,
    *,
    code: str = "FAILED",
    reason: str = "",
    exit_code: int = EXIT_ERROR,
    details: Mapping[str, Any] | None = None,
) -> NoReturn:
    """Print the one-line error and exit; for outcomes that are not gRPC errors."""
    if json_mode():
        payload: dict[str, Any] = {"code": code, "message": message}
        if reason:
            payload["reason"] = reason
        if details:
            payload.update(details)
        sys.stderr.write(json.dumps({"error": payload}, default=str) + "\n")
    else:
        line = f"{code}: {message}" + (f" [{reason}]" if reason else "")
        sys.stderr.write("error: " + " ".join(line.split()) + "\n")
    sys.stderr.flush()
    raise typer.Exit(exit_code)


def report_error(error: BaseException, ctx: Any) -> int:
    """Write ``error`` as one line on stderr and return the exit status to use."""
    if isinstance(error, ArborClientError):
        client_error = error
    elif _is_arbor_error(error):
        client_error = ArborClientError(
            error.code,  # type: ignore[attr-defined]
            error.message,  # type: ignore[attr-defined]
            reason=error.reason,  # type: ignore[attr-defined]
            metadata=error.metadata,  # type: ignore[attr-defined]
        )
        for violation in getattr(error, "violations", []):
            if hasattr(violation, "field"):
                from arbor_client.errors import FieldViolation

                client_error.field_violations.append(
                    FieldViolation(violation.field, violation.description)
                )
    elif isinstance(error, grpc.RpcError):
        from arbor_client.errors import from_rpc_error

        client_error = from_rpc_error(error)
    elif isinstance(error, OSError):
        client_error = ArborClientError(
            grpc.StatusCode.UNAVAILABLE
            if isinstance(error, ConnectionError)
            else grpc.StatusCode.FAILED_PRECONDITION,
            f"{type(error).__name__}: {error}",
            reason="LOCAL_IO_ERROR",
        )
    else:
        client_error = ArborClientError(
            grpc.StatusCode.INTERNAL,
            f"{type(error).__name__}: {error}",
            reason="CLI_INTERNAL_ERROR",
        )
    if json_mode(ctx):
        sys.stderr.write(json.dumps({"error": client_error.to_dict()}, default=str) + "\n")
    else:
        sys.stderr.write(f"error: {client_error.one_line()}\n")
    sys.stderr.flush()
    return EXIT_ERROR


def _is_arbor_error(error: BaseException) -> bool:
    try:
        from arbor_core.errors import ArborError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(error, ArborError)


def debug_enabled() -> bool:
    return os.environ.get("ARBOR_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
