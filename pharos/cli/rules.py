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
from typing import Annotated, NoReturn

import typer
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from devices.registry.db import make_engine, make_session_factory
from devices.registry.models import Device, Group
from pharos.cli.common import fail, opened_runtime, settings_of
from pharos.database import current_revision, head_revision
from pharos_core.source_file import yaml_with_lines
from rules.backtest import BacktestResult, backtest
from rules.catalog import StaticCatalog, load_facts
from rules.derived import SunTimes
from rules.names import KnownNames, unknown_names
from rules.spec import RuleFileError, load_rule_files, parse_rule_text
from telemetry.store import QueryError

app = typer.Typer(
    help="Check rule files; backtest rules over stored history.", no_args_is_help=True
)

FilesArgument = Annotated[list[Path], typer.Argument(help="Rule files (YAML).", show_default=False)]


@app.command("check")
def check(ctx: typer.Context, files: FilesArgument) -> None:
    """Validate rule files; every problem as file:line: field: reason.

    The groups, devices and districts the rules name must exist: districts are those
    of the settings (site.districts); groups and devices are looked up in the
    registry database when it is there (otherwise the check says it skipped them).

    Example: pharos rules check rules/sets/can_tho.yaml my-rules.yaml
    """
    try:
        rules = load_rule_files(files)
    except RuleFileError as exc:
        _report(exc.lines())
    known, note = _known_names(ctx)
    problems: list[str] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        _, lines = yaml_with_lines(text, str(path))
        issues = unknown_names(parse_rule_text(text, str(path)), known, lines)
        problems += [issue.text(str(path)) for issue in issues]
    if problems:
        _report(problems)
    typer.echo(f"ok: {len(rules)} rule(s) in {len(files)} file(s){note}")


def _report(lines: list[str]) -> NoReturn:
    for line in lines:
        typer.echo(line, err=True)
    raise typer.Exit(1)


def _known_names(ctx: typer.Context) -> tuple[KnownNames, str]:
    """The names that exist, and a note when the registry could not be asked (read
    only: a SQLite file that is not there is not created)."""
    settings = settings_of(ctx)
    districts = settings.site.districts
    skipped = " (groups and devices not checked: {})"
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return KnownNames(districts=districts), skipped.format(f"no database {url.database}")
    engine = make_engine(settings.database.url)
    try:
        if current_revision(engine) != head_revision():
            return KnownNames(districts=districts), skipped.format("the database is not migrated")
        with make_session_factory(engine)() as session:
            groups = set(session.scalars(select(Group.id)))
            devices = set(session.scalars(select(Device.id)))
        return KnownNames(groups, devices, districts), ""
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return KnownNames(districts=districts), skipped.format(reason)
    finally:
        engine.dispose()


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
