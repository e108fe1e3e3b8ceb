"""The root ``pharos`` command: the global ``--config`` option, its groups, serve and demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pharos.cli import admin, devices, sim
from pharos.cli.common import CliState, opened_runtime, settings_of
from pharos.database import upgrade

app = typer.Typer(
    help="Pharos: devices, telemetry and control for the city's Intelligent Operations "
    "Centre. Settings come from PHAROS_* environment variables and an optional --config "
    "file; see README, 'Configuration'.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(admin.db_app, name="db")
app.add_typer(devices.app, name="devices")
app.add_typer(admin.apikeys_app, name="apikeys")
app.add_typer(admin.broker_app, name="broker")
app.add_typer(sim.app, name="sim")


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="PATH",
            envvar="PHAROS_CONFIG",
            help="Settings file (.yaml, .yml or .toml); PHAROS_* variables override it.",
        ),
    ] = None,
) -> None:
    """Pharos: devices, telemetry and control for the city's IOC."""
    # Settings are only read by the command that needs them, so `--help` always works.
    ctx.obj = CliState(config_file=config)


@app.command("serve")
def serve(ctx: typer.Context) -> None:
    """Run the HTTP API (migrating the database first) until Ctrl-C.

    It listens on api.host:api.port (PHAROS_API__HOST, PHAROS_API__PORT).

    Example: PHAROS_API__PORT=8080 pharos serve
    """
    import uvicorn

    from pharos.api.app import create_app

    with opened_runtime(ctx, require_schema=False) as runtime:
        upgrade(runtime.engine)
        api = runtime.settings.api
        uvicorn.run(create_app(runtime), host=api.host, port=api.port)


@app.command("demo")
def demo(
    ctx: typer.Context,
    duration: Annotated[
        float | None,
        typer.Option(min=0, metavar="SECONDS", help="Stop after this many seconds."),
    ] = None,
) -> None:
    """Start a broker, a database and the API with sample Cần Thơ devices, on this machine.

    Needs Mosquitto installed (apt-get install mosquitto). Prints where the API is and
    an admin API key; stops with Ctrl-C or after --duration seconds. Its files live
    under data_dir/demo.

    Example: pharos demo --duration 300
    """
    from pharos.demo import run_demo

    run_demo(settings_of(ctx), duration=duration)


def main() -> None:
    """Console-script entry point (``pharos``)."""
    app(prog_name="pharos")
