"""``pharos control``: lighting files, commands from the shell, drift, energy.

Examples:

    pharos control load lighting.yaml
    pharos control send set_dim --group hoa-binh --param level=40
    pharos control drift
    pharos control energy --group hoa-binh --start 2026-06-01 --end 2026-06-30 --csv
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from control.commands.link import LinkOptions
from control.commands.model import CommandInvalid, CommandPublic, CommandRequest
from control.commands.records import get_command
from control.commands.service import CommandOptions, CommandService
from control.energy import Lamp, project_group, to_csv
from control.files import LightingFileError, load_lighting_file
from control.plan import Target, TargetType
from control.program import Site, night_start
from control.state import list_lamp_states
from control.store import NotFound, get_program, group_devices, lamps_of, load_plan
from devices.registry.db import transaction
from devices.registry.models import Group
from pharos.cli.common import (
    ActorOption,
    actor_name,
    fail,
    opened_runtime,
    render_table,
    report_file_error,
)
from pharos.runtime import Runtime
from pharos_core.clock import SystemClock

app = typer.Typer(help="Lighting programs, commands, drift and energy.", no_args_is_help=True)


def _site(runtime: Runtime) -> Site:
    site = runtime.settings.site
    return Site(latitude=site.latitude, longitude=site.longitude, timezone=site.timezone)


@app.command("load")
def load(ctx: typer.Context, path: Path) -> None:
    """Store the programs, calendars and assignments of a YAML file, all or nothing.

    Every problem is printed as FILE:LINE: FIELD: REASON, all of them in one run
    (an impossible date, a step out of order, a program, calendar or group not known).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text (byte {exc.start})")
    with opened_runtime(ctx) as runtime:
        try:
            with transaction(runtime.sessions) as session:
                lighting = load_lighting_file(session, text, str(path), _site(runtime))
        except LightingFileError as exc:
            report_file_error(exc, "nothing was stored")
    typer.echo(
        f"{len(lighting.programs)} programs, {len(lighting.calendars)} calendars, "
        f"{len(lighting.assignments)} assignments stored"
    )


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f'--param {pair!r}: write KEY=VALUE (VALUE as JSON: 40, true, "text")')
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


@app.command("send")
def send(
    ctx: typer.Context,
    action: str,
    group: Annotated[str | None, typer.Option(help="Send to every device of this group.")] = None,
    device: Annotated[str | None, typer.Option(help="Send to this device.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    ttl: Annotated[int, typer.Option(min=10, help="Seconds before it expires.")] = 600,
    actor: ActorOption = None,
) -> None:
    """Send a command with the command service's own broker account and wait for every
    answer (or expiry); prints the progress. Needs PHAROS_CONTROL__BROKER_PASSWORD."""
    if (group is None) == (device is None):
        fail("give exactly one of --group or --device")
    target_type = TargetType.GROUP if group else TargetType.DEVICE
    try:
        request = CommandRequest(
            action=action,
            params=_params(param or []),
            target_type=target_type,
            target_id=group or device or "",
            ttl_s=ttl,
        )
    except ValueError as exc:
        fail(str(exc))
    with opened_runtime(ctx) as runtime:
        settings = runtime.settings
        password = settings.control.broker_password
        link = LinkOptions(
            settings.broker.host,
            settings.broker.port,
            settings.control.broker_username,
            password.get_secret_value() if password else None,
        )
        options = CommandOptions(rate_per_s=settings.control.rate_per_s)

        async def main() -> CommandPublic:
            async with CommandService(
                runtime.sessions, SystemClock(), link, options=options
            ) as service:
                created = await service.submit(request, actor_name(actor), source="cli")
                await service.wait_settled(created.id)
            with transaction(runtime.sessions) as session:
                return get_command(session, str(created.id))

        try:
            result = asyncio.run(main())
        except CommandInvalid as exc:
            fail(str(exc))
    p = result.progress
    typer.echo(
        f"command {result.id}: {p.acknowledged} ok, {p.rejected} rejected, {p.failed} failed, "
        f"{p.expired} expired of {p.total}"
    )
    for target in result.targets or []:
        if target.status.value != "ok":
            typer.echo(f"  {target.device_id}: {target.status.value} {target.detail}")


@app.command("drift")
def drift(ctx: typer.Context) -> None:
    """Lamps whose reported state differs from the desired one."""
    with opened_runtime(ctx) as runtime, transaction(runtime.sessions) as session:
        states = list_lamp_states(session, drifting_only=True)
    rows = [
        [s.device_id, f"{s.desired_level}", f"{s.reported_level}", f"{s.reported_program_id}",
         f"{s.drift_since or ''}", str(s.corrections)]
        for s in states
    ]  # fmt: skip
    typer.echo(render_table(["device", "desired", "reported", "program", "since", "fixes"], rows))


@app.command("energy")
def energy(
    ctx: typer.Context,
    group: Annotated[list[str], typer.Option(help="Group id, repeatable.")],
    start: Annotated[str, typer.Option(help="First night, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last night, YYYY-MM-DD.")],
    program: Annotated[str | None, typer.Option(help="Program (default: calendars).")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table.")] = False,
) -> None:
    """Projected kWh, VND and CO2 saved against the dusk-to-dawn baseline."""
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        fail(f"--start/--end: {exc}")
    with opened_runtime(ctx) as runtime, transaction(runtime.sessions) as session:
        site = _site(runtime)
        chosen = None
        if program is not None:
            try:
                chosen = get_program(session, program)
            except NotFound as exc:
                fail(f"--program: {exc}")
        unknown = [g for g in dict.fromkeys(group) if session.get(Group, g) is None]
        if unknown:
            names = ", ".join(repr(g) for g in unknown)
            fail(f"--group: unknown group{'s' if len(unknown) > 1 else ''} {names} "
                 "(`pharos groups list` shows them)")  # fmt: skip
        plan = load_plan(session, site, night_start(site, first))
        rows = []
        for group_id in group:
            refs = {r.device_id: r for r in lamps_of(session, Target(TargetType.GROUP, group_id))}
            lamps = [
                Lamp(d.id, d.rated_power_w or 0.0, refs[d.id].groups)
                for d in group_devices(session, group_id)
                if d.id in refs
            ]
            try:
                rows.append(
                    project_group(
                        group_id,
                        lamps,
                        first,
                        last,
                        site,
                        runtime.settings.control.energy,
                        program=chosen,
                        plan=plan,
                    )
                )
            except ValueError as exc:
                fail(str(exc))
    if csv:
        typer.echo(to_csv(rows), nl=False)
        return
    table = [
        [r.group, str(r.lamps), f"{r.projected.kwh:.1f}", f"{r.projected.baseline_kwh:.1f}",
         f"{r.projected.saved_kwh:.1f}", f"{r.projected.saved_vnd:,.0f}",
         f"{r.projected.saved_co2_kg:.1f}"]
        for r in rows
    ]  # fmt: skip
    headers = ["group", "lamps", "kWh", "baseline kWh", "saved kWh", "saved VND", "CO2 kg"]
    typer.echo(render_table(headers, table))
