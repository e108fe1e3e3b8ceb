"""Lighting programs for the energy office: programs, calendars (Tết and the holidays)
and which groups run them; a program's steps edited with the night's level chart and
the projected kWh, VND and CO2 against the baseline and the saved program, recomputed
from the unsaved form (htmx posts it to ``/preview``) before anything is stored.

Saving goes through ``pharos.api.routes.programs.store_program``, the API's own path,
so the scheduler re-plans and the lamps running the program get its new steps.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from control.commands.model import CommandPublic
from control.commands.records import list_commands
from control.energy import EnergySettings, GroupEnergy, Lamp, project_group
from control.plan import CalendarSpec, TargetType
from control.program import (
    ProgramError,
    ProgramSpec,
    Site,
    check_program,
    night_of,
    place_night,
    sunrise_at,
    sunset_at,
)
from control.store import NotFound, get_program, list_assignments, list_calendars, list_programs
from devices.registry.db import transaction
from devices.wire.commands import ProgramStep
from pharos.api.routes.energy import group_lamps
from pharos.api.routes.programs import site_of, store_program
from pharos.console.charts import Marker, level_chart
from pharos.console.web import CheckedForm, Page, SignedIn, field_text

router = APIRouter(prefix="/programs")

PREVIEW_NIGHTS_MAX = 31


@dataclass(frozen=True, slots=True)
class Overview:
    programs: list[ProgramSpec]
    calendars: list[CalendarSpec]
    assignments: list[tuple[str, str, str]]  # target type, target id, calendar id
    runs_on: dict[str, list[str]]  # program id -> groups whose calendar may pick it


def _overview(page: Page) -> Overview:
    with transaction(page.runtime.sessions) as session:
        programs = list_programs(session)
        calendars = list_calendars(session)
        assignments = [
            (r.target_type, r.target_id, r.calendar_id) for r in list_assignments(session)
        ]
    by_calendar = {
        c.id: {c.default_program_id, *(r.program_id for r in c.rules)} for c in calendars
    }
    runs_on: dict[str, list[str]] = {p.id: [] for p in programs}
    for target_type, target_id, calendar_id in assignments:
        if target_type == TargetType.GROUP.value:
            for program_id in by_calendar.get(calendar_id, ()):
                runs_on.setdefault(program_id, []).append(target_id)
    return Overview(programs, calendars, assignments, runs_on)


@router.get("")
async def overview(page: SignedIn) -> Response:
    data = await asyncio.to_thread(_overview, page)
    return page.render("programs/list.html", data=data)


def steps_from_form(form: FormData) -> list[dict[str, Any]]:
    """The step rows of the editor (parallel lists), as ``ProgramStep`` fields."""
    kinds = form.getlist("step_kind")
    ats = form.getlist("step_at")
    offsets = form.getlist("step_offset")
    levels = form.getlist("step_level")
    steps: list[dict[str, Any]] = []
    for index in range(min(len(kinds), 24 + 1)):
        kind = str(kinds[index])
        level = str(levels[index]) if index < len(levels) else ""
        step: dict[str, Any] = {"level": level.replace(",", ".")}
        if kind == "at":
            step["at"] = str(ats[index]) if index < len(ats) else ""
        else:
            step["event"] = kind
            offset = str(offsets[index]) if index < len(offsets) else "0"
            step["offset_minutes"] = offset.strip() or "0"
        steps.append(step)
    return steps


def program_from_form(program_id: str, form: FormData, site: Site) -> ProgramSpec:
    """The edited program, checked like a saved one; ``ProgramError`` names the field."""
    try:
        spec = ProgramSpec(
            id=program_id,
            name=field_text(form, "name", 200) or program_id,
            steps=steps_from_form(form),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ProgramError(
            ".".join(str(p) for p in first["loc"]) or "steps", first["msg"]
        ) from None
    check_program(spec, site)
    return spec


def project_program(
    group: str,
    lamps: list[Lamp],
    start: date,
    end: date,
    site: Site,
    settings: EnergySettings,
    program: ProgramSpec,
) -> GroupEnergy:
    """``project_group`` with one program for every lamp, in time proportional to the
    nights alone: energy is linear in rated power, so the group projects as one lamp of
    its summed power (a district has thousands of lamps; the form posts as you type)."""
    whole = [Lamp(group, sum(lamp.rated_power_w for lamp in lamps))] if lamps else []
    projection = project_group(group, whole, start, end, site, settings, program=program)
    return projection.model_copy(update={"lamps": len(lamps)})


@dataclass(frozen=True, slots=True)
class Preview:
    group: str | None
    start: date
    nights: int
    edited: GroupEnergy | None
    current: GroupEnergy | None


def _project(
    page: Page,
    edited: ProgramSpec,
    current: ProgramSpec | None,
    group: str | None,
    start: date,
    nights: int,
) -> Preview:
    if group is None:
        return Preview(None, start, nights, None, None)
    site = site_of(page.runtime)
    settings = page.runtime.settings.control.energy
    end = start + timedelta(days=nights - 1)
    with transaction(page.runtime.sessions) as session:
        try:
            lamps = group_lamps(session, group)
        except RequestValidationError:  # an unknown group: nothing to project
            return Preview(group, start, nights, None, None)
    mine = project_program(group, lamps, start, end, site, settings, edited)
    theirs = project_program(group, lamps, start, end, site, settings, current) if current else None
    return Preview(group, start, nights, mine, theirs)


def _chart(
    page: Page, site: Site, night: date, edited: ProgramSpec | None, current: ProgramSpec | None
) -> Any:
    dusk, dawn = sunset_at(site, night), sunrise_at(site, night + timedelta(days=1))
    start = dusk.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    end = dawn.replace(minute=0, second=0, microsecond=0) + timedelta(hours=3)
    series = []
    for css, spec in (("current", current), ("edited", edited)):
        if spec is None:
            continue
        placed = place_night(spec, site, night)
        before = [level for at, level in placed if at <= start]
        initial = before[-1] if before else placed[-1][1]
        series.append((css, [(start, initial), *[(a, v) for a, v in placed if start < a < end]]))
    ticks = [
        start + timedelta(hours=h)
        for h in range(0, int((end - start).total_seconds() // 3600) + 1, 2)
    ]
    markers = [
        Marker(dusk, f"{page.t('sunset')} {page.fmt.time(dusk)}"),
        Marker(dawn, f"{page.t('sunrise')} {page.fmt.time(dawn)}"),
    ]
    return level_chart(
        series, start, end, ticks, page.fmt.time, markers, page.t("Level through the night")
    )


def _saved(page: Page, program_id: str) -> ProgramSpec | None:
    with transaction(page.runtime.sessions) as session:
        try:
            return get_program(session, program_id)
        except NotFound:
            return None


def _program_commands(page: Page, groups: list[str]) -> list[tuple[str, CommandPublic | None]]:
    """The newest ``set_program`` to each group (what the lamps were last sent)."""
    found: list[tuple[str, CommandPublic | None]] = []
    with transaction(page.runtime.sessions) as session:
        for group in groups[:20]:
            commands, _ = list_commands(session, limit=50, target_id=group)
            latest = next((c for c in commands if c.action == "set_program"), None)
            found.append((group, latest))
    return found


def _night(page: Page, value: str | None) -> date:
    if value:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    return night_of(site_of(page.runtime), page.now())


async def _editor(
    page: Page,
    program_id: str,
    spec: ProgramSpec | None,
    error: str | None,
    night: date,
    group: str | None,
    nights: int,
    status_code: int = 200,
) -> Response:
    overview_data = await asyncio.to_thread(_overview, page)
    saved = await asyncio.to_thread(_saved, page, program_id)
    groups = overview_data.runs_on.get(program_id, [])
    all_groups = sorted(
        {t for kind, t, _ in overview_data.assignments if kind == TargetType.GROUP.value}
    )
    chosen = (
        group
        if group in all_groups
        else (groups[0] if groups else (all_groups[0] if all_groups else None))
    )
    edited = spec or saved
    preview = (
        await asyncio.to_thread(_project, page, edited, saved, chosen, night, nights)
        if edited is not None
        else None
    )
    commands = await asyncio.to_thread(_program_commands, page, groups)
    return page.render(
        "programs/edit.html",
        status_code=status_code,
        program_id=program_id,
        spec=edited,
        saved=saved,
        error=error,
        night=night,
        nights=nights,
        group=chosen,
        groups=all_groups,
        runs_on=groups,
        chart=_chart(page, site_of(page.runtime), night, edited, saved),
        preview=preview,
        commands=commands,
    )


@router.get("/{program_id}")
async def edit(
    program_id: str,
    page: SignedIn,
    night: Annotated[str | None, Query(max_length=10)] = None,
    group: Annotated[str | None, Query(max_length=63)] = None,
    nights: Annotated[int, Query(ge=1, le=PREVIEW_NIGHTS_MAX)] = 7,
) -> Response:
    saved = await asyncio.to_thread(_saved, page, program_id)
    if saved is None:
        return page.render("error.html", status_code=404, reason=page.t("Not found"))
    return await _editor(page, program_id, None, None, _night(page, night), group, nights)


def _form_context(page: Page, form: FormData) -> tuple[date, str | None, int]:
    try:
        nights = max(1, min(PREVIEW_NIGHTS_MAX, int(field_text(form, "nights", 3) or "7")))
    except ValueError:
        nights = 7
    return (
        _night(page, field_text(form, "night", 10)),
        field_text(form, "group", 63) or None,
        nights,
    )


@router.post("/{program_id}/preview")
async def preview(program_id: str, page: SignedIn, form: CheckedForm) -> Response:
    """The chart and the projection of the unsaved form (read-only: any role)."""
    night, group, nights = _form_context(page, form)
    site = site_of(page.runtime)
    saved = await asyncio.to_thread(_saved, page, program_id)
    try:
        spec = program_from_form(program_id, form, site)
    except ProgramError as exc:
        return page.render(
            "programs/preview.html",
            error=str(exc),
            chart=_chart(page, site, night, None, saved),
            preview=None,
        )
    result = await asyncio.to_thread(_project, page, spec, saved, group, night, nights)
    return page.render(
        "programs/preview.html",
        error=None,
        chart=_chart(page, site, night, spec, saved),
        preview=result,
    )


@router.post("/{program_id}")
async def save(program_id: str, page: SignedIn, form: CheckedForm) -> Response:
    """Store the edited program through the API's path; the lamps get it from control."""
    page.require("program.save")
    night, group, nights = _form_context(page, form)
    site = site_of(page.runtime)
    try:
        spec = program_from_form(program_id, form, site)
        await asyncio.to_thread(store_program, page.runtime, spec)
    except ProgramError as exc:
        page.flash("error", f"{page.t('Refused')}: {exc}")
        return await _editor(page, program_id, None, str(exc), night, group, nights, 422)
    page.flash("ok", page.t("Program saved"))
    return await _editor(page, program_id, None, None, night, group, nights)


def step_rows(spec: ProgramSpec | None) -> list[ProgramStep]:
    return list(spec.steps) if spec is not None else []


__all__ = ["router", "step_rows"]
