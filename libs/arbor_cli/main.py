"""``arbor``: the command-line tool for Arbor's services.

Command groups mirror the services (``splits``, ``experiments``, ``models``, ``predict``,
``explain``) plus ``events``, ``db``, ``maintenance`` and ``status``. Every command takes
``--json``; every failure is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from arbor_cli import db, events, experiments, maintenance, models, predict, splits
from arbor_cli._common import (
    EXIT_OUTCOME,
    JsonOption,
    client,
    console,
    debug_enabled,
    emit,
    fail,
    report_error,
    state,
    table,
)


class ArborGroup(TyperGroup):
    """The root group: turns any exception from a command into the one-line error."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # exits and usage errors: Typer prints and exits as usual
        except KeyboardInterrupt:
            sys.stderr.write("error: CANCELLED: interrupted\n")
            raise typer.Exit(130) from None
        except Exception as err:
            if debug_enabled():
                traceback.print_exc(file=sys.stderr)
            raise typer.Exit(report_error(err, ctx)) from None


app = typer.Typer(
    name="arbor",
    cls=ArborGroup,
    help="Arbor: split tables, train gradient-boosted models, register and serve them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    timeout: Annotated[
        float | None,
        typer.Option(help="Default deadline per call in seconds ($ARBOR_CLIENT_TIMEOUT, 30)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token ($ARBOR_CLIENT_TOKEN).", show_default=False),
    ] = None,
) -> None:
    """Addresses come from ARBOR_SPLIT_ADDRESS, ARBOR_TRAINING_ADDRESS, ARBOR_REGISTRY_ADDRESS
    and ARBOR_INFERENCE_ADDRESS (defaults 127.0.0.1:50051..50054)."""
    cli = state(ctx)
    cli.timeout = timeout
    cli.token = token


app.add_typer(splits.app, name="splits")
app.add_typer(experiments.app, name="experiments")
app.add_typer(models.app, name="models")
app.command("predict")(predict.predict)
app.command("explain")(predict.explain)
app.add_typer(events.app, name="events")
app.add_typer(db.app, name="db")
app.add_typer(maintenance.app, name="maintenance")


@app.command("status")
def status(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds per health check.")] = 2.0,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Each service's address and gRPC health (exit 3 unless all are SERVING)."""
    arbor = client(ctx)
    health = arbor.health(timeout=timeout)
    addresses = {name: arbor.config.address(name) for name in health}

    def render() -> None:
        t = table(None, ["service", "address", "health"])
        for name, status_name in health.items():
            style = "green" if status_name == "SERVING" else "red"
            t.add_row(name, addresses[name], f"[{style}]{status_name}[/{style}]")
        console().print(t)

    emit(
        ctx,
        {
            "services": [
                {"service": n, "address": addresses[n], "health": h} for n, h in health.items()
            ]
        },
        render,
    )
    down = [name for name, h in health.items() if h != "SERVING"]
    if down:
        fail(
            f"not serving: {', '.join(down)}",
            code="UNAVAILABLE",
            reason="SERVICES_NOT_SERVING",
            exit_code=EXIT_OUTCOME,
        )


if __name__ == "__main__":  # pragma: no cover
    app()
