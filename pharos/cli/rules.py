"""``pharos rules``: check rule files and backtest a rule set over stored history.

``pharos rules check FILE…`` validates files without touching anything (every problem
as ``file:line: field: reason``, exit 1). ``pharos rules backtest --start … --end …``
runs the configured rule files (or ``--rules FILE``) over the time-series store and
lists the alerts they would have raised; nothing is written.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from pharos.cli.common import fail, opened_runtime
from rules.backtest import BacktestResult, backtest
from rules.catalog import StaticCatalog, load_facts
from rules.derived import SunTimes
from rules.spec import RuleFileError, load_rule_files
from telemetry.store import QueryError

app = typer.Typer(
    help="Check rule files; backtest rules over stored history.", no_args_is_help=True
)

FilesArgument = Annotated[list[Path], typer.Argument(help="Rule files (YAML).", show_default=False)]


@app.command("check")
def check(files: FilesArgument) -> None:
    """Validate rule files; every problem as file:line: field: reason.

    Example: pharos rules check rules/sets/can_tho.yaml my-rules.yaml
    """
    try:
        rules = load_rule_files(files)
    except RuleFileError as exc:
        for line in exc.lines():
            typer.echo(line, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {len(rules)} rule(s) in {len(files)} file(s)")


def _when(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: not an ISO 8601 time: {text!r}", 2)
    if value.tzinfo is None:
        fail(f"{option}: give a UTC offset (2026-10-22T12:00:00+07:00)", 2)
    return value


@app.command("backtest")
def backtest_command(
    ctx: typer.Context,
    start: Annotated[str, typer.Option(help="ISO 8601 with offset.", show_default=False)],
    end: Annotated[str, typer.Option(help="ISO 8601 with offset (exclusive).", show_default=False)],
    rules_files: Annotated[
        list[Path] | None,
        typer.Option(
            "--rules", help="Rule files to try (default: rules.files).", show_default=False
        ),
    ] = None,
    devices: Annotated[
        list[str] | None, typer.Option("--device", help="Only this device (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """List the alerts the rules would have raised over [start, end).

    Example: pharos rules backtest --start 2026-10-22T12:00+07:00 --end 2026-10-23T00:00+07:00
    """
    begin, finish = _when(start, "--start"), _when(end, "--end")
    if finish <= begin:
        fail("--end: must be after --start", 2)
    with opened_runtime(ctx) as runtime:
        settings = runtime.settings
        try:
            rules = load_rule_files(rules_files or settings.rules.files)
        except RuleFileError as exc:
            for line in exc.lines():
                typer.echo(line, err=True)
            raise typer.Exit(1) from None
        store = runtime.timeseries
        if store is None:
            fail("no time-series store configured")
        catalog = StaticCatalog(load_facts(runtime.sessions).values())
        site = settings.site
        try:
            result = asyncio.run(
                backtest(
                    rules,
                    store,
                    catalog,
                    settings=settings.rules,
                    sun=SunTimes(site.latitude, site.longitude, site.timezone),
                    start=begin,
                    end=finish,
                    device_ids=devices,
                )
            )
        except QueryError as exc:
            fail(f"time-series store: {exc}")
    _print(result, as_json)


def _print(result: BacktestResult, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), ensure_ascii=False))
        return
    typer.echo(
        f"{result.readings} readings of {result.devices} device(s), "
        f"{result.evaluations} evaluations: {len(result.alerts)} alert(s)"
    )
    for alert in result.alerts:
        cleared = alert.cleared_at.isoformat() if alert.cleared_at else "-"
        typer.echo(
            f"{alert.raised_at.isoformat()}  {cleared}  {alert.severity.value:<8} "
            f"{alert.rule_id:<28} {alert.device_id}  {alert.message}"
        )
