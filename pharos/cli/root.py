"""The root ``pharos`` command: the global ``--config`` option, its groups, serve and demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pharos.cli import admin, control, devices, grafana, groups, ingest, rules, sim
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
app.add_typer(groups.app, name="groups")
app.add_typer(admin.apikeys_app, name="apikeys")
app.add_typer(admin.broker_app, name="broker")
app.add_typer(sim.app, name="sim")
app.add_typer(grafana.app, name="grafana")
app.add_typer(rules.app, name="rules")
app.add_typer(control.app, name="control")
app.command("ingest")(ingest.ingest_command)


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
def serve(
    ctx: typer.Context,
    ingest: Annotated[
        bool, typer.Option("--ingest/--no-ingest", help="Take readings from the broker here.")
    ] = True,
    modbus: Annotated[
        bool, typer.Option("--modbus/--no-modbus", help="Poll the Modbus meters here.")
    ] = True,
    control: Annotated[
        bool,
        typer.Option("--control/--no-control", help="Send commands and run lighting programs."),
    ] = True,
    rules: Annotated[
        bool, typer.Option("--rules/--no-rules", help="Evaluate rules and raise alerts.")
    ] = True,
) -> None:
    """Run the API and the services until Ctrl-C or SIGTERM.

    Migrates the database first. The API listens on api.host:api.port
    (PHAROS_API__HOST, PHAROS_API__PORT). The services: ingest and the Modbus poller
    (broker secret in PHAROS_BROKER__PASSWORD), control (PHAROS_CONTROL__BROKER_PASSWORD),
    rules (PHAROS_RULES__BROKER_PASSWORD), each with its own broker account
    (`pharos broker service-account NAME`). Run `pharos ingest` workers apart and
    --no-ingest here to scale ingest out.

    Example: PHAROS_API__PORT=8080 pharos serve --no-ingest
    """
    from pharos.cli.common import configure_logging, run_or_fail, stop_on_signals
    from pharos.composition import ServiceSet
    from pharos.services import TelemetryOptions
    from pharos.serving import serve as serve_all

    configure_logging()
    with opened_runtime(ctx, require_schema=False) as runtime:
        upgrade(runtime.engine)
        services = ServiceSet(
            telemetry=TelemetryOptions(ingest=ingest, modbus=modbus),
            control=control,
            rules=rules,
        )

        async def main() -> None:
            await serve_all(runtime, stop_on_signals(), services)

        run_or_fail(main())


@app.command("demo")
def demo(
    ctx: typer.Context,
    duration: Annotated[
        float | None,
        typer.Option(min=0, metavar="SECONDS", help="Stop after this many seconds."),
    ] = None,
    devices: Annotated[
        int,
        typer.Option(
            min=1,
            help="Simulated devices of the can-tho-demo fleet (4,791 in all): its 207 "
            "cabinets, poles, monitors, gauges and meters first, then lamps.",
        ),
    ] = 400,
    accelerate: Annotated[
        float,
        typer.Option(min=1, help="Simulated seconds per real second (60: a day in 24 minutes)."),
    ] = 60.0,
    broker_port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65535,
            help="The demo broker's port on 127.0.0.1; when it is in use, a free one "
            "(the banner prints which).",
        ),
    ] = 18830,
) -> None:
    """Start a broker, a database, a simulated Cần Thơ fleet, ingest and the API, here.

    Needs Mosquitto installed (apt-get install mosquitto). Prints where the API is and
    an admin API key, then a progress line every 10 s; stops with Ctrl-C or after
    --duration seconds. Its files live under data_dir/demo; telemetry goes to the
    embedded store (or InfluxDB when influx.url is set). It writes
    data_dir/demo/pharos.toml: run any command on the running demo with
    `pharos --config var/demo/pharos.toml …` (never the system broker's files).

    Example: pharos demo --duration 300 --devices 1000
    """
    from pharos.demo import DemoOptions, run_demo

    run_demo(
        settings_of(ctx),
        DemoOptions(
            duration_s=duration, devices=devices, accelerate=accelerate, broker_port=broker_port
        ),
    )


def main() -> None:
    """Console-script entry point (``pharos``)."""
    app(prog_name="pharos")
