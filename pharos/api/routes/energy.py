"""``/api/v1/energy``: projected and measured energy per group, against the dusk-to-dawn
baseline, with money (tariff) and CO2 (grid factor per year) from settings; JSON or CSV.

Anyone with a key may read. Works from the database alone; measured figures need the
time-series store (cumulative ``energy_kwh`` of the group's lamps, last minus first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy.orm import Session

from control.energy import (
    GroupEnergy,
    Lamp,
    MeasuredKwh,
    project_group,
    to_csv,
    with_measured,
)
from control.plan import Target, TargetType
from control.store import NotFound, get_program, group_devices, lamps_of, load_plan
from devices.registry.db import transaction
from devices.registry.models import Group
from pharos.api.deps import RuntimeDep
from pharos.api.errors import invalid_at, responses
from pharos.api.routes.programs import site_of
from pharos.runtime import Runtime
from telemetry.store import TimeSeriesStore

router = APIRouter(prefix="/energy", tags=["energy"])

Groups = Annotated[list[str], Query(min_length=1, description="group ids (repeat for more)")]
Start = Annotated[date, Query(description="first night (its evening's date)")]
End = Annotated[date, Query(description="last night, inclusive")]
Format = Annotated[Literal["json", "csv"], Query(description="json or csv")]
MAX_NIGHTS = 366


def group_lamps(session: Session, group_id: str) -> list[Lamp]:
    """The group's lamps with their rated power (an unknown group is a 422 on ``group``)."""
    if session.get(Group, group_id) is None:
        raise invalid_at(("query", "group"), f"unknown group {group_id!r}", group_id)
    lamp_ids = {
        lamp.device_id: lamp for lamp in lamps_of(session, Target(TargetType.GROUP, group_id))
    }
    return [
        Lamp(d.id, d.rated_power_w or 0.0, lamp_ids[d.id].groups)
        for d in group_devices(session, group_id)
        if d.id in lamp_ids
    ]


def _check_period(start: date, end: date) -> None:
    if end < start:
        raise invalid_at(("query", "end"), "the period ends before it starts", end.isoformat())
    if (end - start).days >= MAX_NIGHTS:
        raise invalid_at(("query", "end"), f"at most {MAX_NIGHTS} nights at once", end.isoformat())


def _project(
    runtime: Runtime, groups: Sequence[str], start: date, end: date, program_id: str | None
) -> list[tuple[GroupEnergy, list[Lamp]]]:
    _check_period(start, end)
    site = site_of(runtime)
    settings = runtime.settings.control.energy
    with transaction(runtime.sessions) as session:
        program = None
        if program_id is not None:
            try:
                program = get_program(session, program_id)
            except NotFound as exc:
                raise invalid_at(("query", "program"), str(exc), program_id) from None
        plan = load_plan(session, site, datetime.combine(start, datetime.min.time(), site.tz))
        results = []
        for group in groups:
            lamps = group_lamps(session, group)
            projection = project_group(
                group, lamps, start, end, site, settings, program=program, plan=plan
            )
            results.append((projection, lamps))
    return results


def _answer(rows: list[GroupEnergy], fmt: str) -> list[GroupEnergy] | Response:
    if fmt == "csv":
        return Response(to_csv(rows), media_type="text/csv; charset=utf-8")
    return rows


@router.get("/projection", response_model=list[GroupEnergy])
def projection(
    runtime: RuntimeDep,
    group: Groups,
    start: Start,
    end: End,
    program: Annotated[
        str | None, Query(description="program to project; default: each lamp's calendar")
    ] = None,
    format: Format = "json",
) -> list[GroupEnergy] | Response:
    """Projected kWh, VND and CO2 saved against the baseline, per group."""
    return _answer([p for p, _ in _project(runtime, group, start, end, program)], format)


@router.get("/report", response_model=list[GroupEnergy], responses=responses(503))
async def report(
    runtime: RuntimeDep, group: Groups, start: Start, end: End, format: Format = "json"
) -> list[GroupEnergy] | Response:
    """Projected (by each lamp's calendar) and measured side by side, per group."""
    store = runtime.timeseries
    if store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="no time-series store")
    projections = await asyncio.to_thread(_project, runtime, group, start, end, None)

    measured = store_measured_kwh(store)
    site = site_of(runtime)
    settings = runtime.settings.control.energy
    rows = [await with_measured(p, lamps, site, settings, measured) for p, lamps in projections]
    return _answer(rows, format)


LAMP_KINDS_MEASURED = ("streetlight", "smart_pole")


def store_measured_kwh(store: TimeSeriesStore) -> MeasuredKwh:
    """Measured kWh of lamps over a period from the time-series store: per lamp, the
    highest minus the lowest cumulative ``energy_kwh``, summed (for ``EnergyReporter`` too).

    The whole fleet's spreads come from one store query per lamp kind
    (``spread_by_device``), whatever the number of lamps; the groups of one report ask
    for the same period, so the answer of the last period asked is kept and reused
    (one entry: a new period, such as the reporter's next ``now``, queries again).
    """
    last: dict[tuple[datetime, datetime], dict[str, float]] = {}

    async def spreads(begin: datetime, finish: datetime) -> dict[str, float]:
        key = (begin, finish)
        if key not in last:
            merged: dict[str, float] = {}
            for kind in LAMP_KINDS_MEASURED:
                found = await store.spread_by_device(
                    kind=kind, metric="energy_kwh", start=begin, end=finish
                )
                for device_id, spread in found.items():  # a lamp in two kinds: both count
                    merged[device_id] = merged.get(device_id, 0.0) + spread
            last.clear()
            last[key] = merged
        return last[key]

    async def measured(
        device_ids: Sequence[str], begin: datetime, finish: datetime
    ) -> float | None:
        by_device = await spreads(begin, finish)
        found = [by_device[d] for d in device_ids if d in by_device]
        return sum(found) if found else None

    return measured
