"""``pharos sim``: run a simulated fleet from a scenario against the configured broker."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from pharos.cli.common import fail, report_file_error, settings_of
from pharos_core.source_file import FileError

if TYPE_CHECKING:
    from firmware_sim.fleet import FleetCounters

SCENARIOS = Path(__file__).resolve().parents[2] / "firmware_sim" / "scenarios"

app = typer.Typer(
    help="Simulated devices: a city of them on the real broker.", no_args_is_help=True
)


def scenario_path(name: str) -> Path:
    """A scenario file, or the name of one shipped in firmware_sim/scenarios/."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = SCENARIOS / f"{name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
    raise typer.BadParameter(f"no scenario file {name!r}; shipped scenarios: {known}")


def parse_acceleration(value: str | None) -> float | Literal["max"] | None:
    if value is None:
        return None
    if value == "max":
        return "max"
    try:
        factor = float(value)
    except ValueError:
        raise typer.BadParameter("a factor such as 1, 60 or 3600, or 'max'") from None
    if factor <= 0:
        raise typer.BadParameter("the factor must be positive")
    return factor


@app.command("run")
def run(
    ctx: typer.Context,
    scenario: Annotated[str, typer.Argument(help="Scenario file, or a shipped name: ci-small")],
    devices: Annotated[int | None, typer.Option(min=1, help="Keep only this many devices.")] = None,
    accelerate: Annotated[
        str | None, typer.Option(help="Simulated seconds per real second, or 'max'.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: the same seed, the same data.")] = None,
    minutes: Annotated[
        float | None, typer.Option(min=0, help="Simulated minutes to run (default: the file's).")
    ] = None,
) -> None:
    """Register the scenario's devices, connect each with its own credentials and run them.

    Prints a progress line (devices connected, messages sent, commands acknowledged,
    faults active). Ctrl-C stops cleanly: every device publishes `offline` first.

    Example: pharos sim run ci-small --accelerate 60 --seed 7
    """
    from pharos.simulate import run_simulation

    settings = settings_of(ctx)
    path = scenario_path(scenario)
    acceleration = parse_acceleration(accelerate)
    duration = timedelta(minutes=minutes) if minutes is not None else None
    interactive = sys.stdout.isatty()

    def progress(counters: FleetCounters) -> None:
        line = counters.progress_line()
        typer.echo(f"\r{line}" if interactive else line, nl=not interactive)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        final = await run_simulation(
            settings, path, devices=devices, accelerate=acceleration, seed=seed,
            progress=progress, stop=stop, duration=duration,
        )  # fmt: skip
        typer.echo(("\n" if interactive else "") + "stopped: " + final.progress_line())

    from firmware_sim.scenario import ScenarioError

    try:
        asyncio.run(main())
    except FileError as exc:
        report_file_error(exc, "nothing was run")
    except ScenarioError as exc:
        fail(str(exc))
