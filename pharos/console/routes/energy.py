"""Measured against projected savings per lighting group, week by week, as a chart and
as CSV, from the same projection and measurement functions as ``/api/v1/energy``."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from control.energy import GroupEnergy, project_group, to_csv, with_measured
from control.plan import TargetType
from control.program import night_of
from control.store import list_assignments, load_plan
from devices.registry.db import transaction
from pharos.api.routes.energy import group_lamps, store_measured_kwh
from pharos.api.routes.programs import site_of
from pharos.console.charts import bar_chart
from pharos.console.web import Page, SignedIn

router = APIRouter(prefix="/energy")

MAX_WEEKS = 12
MAX_GROUPS = 20


def lighting_groups(page: Page) -> list[str]:
    """The groups that have a calendar (the lighting groups), by id."""
    with transaction(page.runtime.sessions) as session:
        return sorted(
            {
                r.target_id
                for r in list_assignments(session)
                if r.target_type == TargetType.GROUP.value
            }
        )


async def _weeks(page: Page, group: str, weeks: int) -> list[GroupEnergy]:
    """The last ``weeks`` full weeks (Monday evenings to Sunday nights) before today."""
    site = site_of(page.runtime)
    settings = page.runtime.settings.control.energy
    today = night_of(site, page.now())
    last_monday = today - timedelta(days=today.weekday() + 7)
    periods = [
        (last_monday - timedelta(weeks=n), last_monday - timedelta(weeks=n) + timedelta(days=6))
        for n in reversed(range(weeks))
    ]

    def project() -> list[tuple[GroupEnergy, list]]:  # type: ignore[type-arg]
        from datetime import datetime

        with transaction(page.runtime.sessions) as session:
            lamps = group_lamps(session, group)
            rows = []
            for start, end in periods:
                plan = load_plan(
                    session, site, datetime.combine(start, datetime.min.time(), site.tz)
                )
                rows.append(
                    (project_group(group, lamps, start, end, site, settings, plan=plan), lamps)
                )
            return rows

    projected = await asyncio.to_thread(project)
    store = page.runtime.timeseries
    if store is None:
        return [p for p, _ in projected]
    measured = store_measured_kwh(store)
    return [await with_measured(p, lamps, site, settings, measured) for p, lamps in projected]


def _params(weeks: int, group: str | None, groups: list[str]) -> tuple[int, str | None]:
    return max(1, min(MAX_WEEKS, weeks)), (
        group if group in groups else (groups[0] if groups else None)
    )


@router.get("")
async def savings(
    page: SignedIn,
    group: Annotated[str | None, Query(max_length=63)] = None,
    weeks: Annotated[int, Query(ge=1, le=MAX_WEEKS)] = 4,
) -> Response:
    groups = (await asyncio.to_thread(lighting_groups, page))[:MAX_GROUPS]
    weeks, chosen = _params(weeks, group, groups)
    rows: list[GroupEnergy] = []
    if chosen is not None:
        try:
            rows = await _weeks(page, chosen, weeks)
        except RequestValidationError:
            rows = []
    labels = [r.start.strftime("%d/%m") for r in rows]
    chart = bar_chart(
        labels,
        [
            ("baseline", page.t("Baseline"), [r.projected.baseline_kwh for r in rows]),
            ("projected", page.t("Projected"), [r.projected.kwh for r in rows]),
            (
                "measured",
                page.t("Measured"),
                [r.measured.kwh if r.measured else None for r in rows],
            ),
        ],
        lambda v: page.fmt.unit(v, "kWh", 0),
        page.t("Measured vs projected"),
    )
    return page.render(
        "energy.html", groups=groups, group=chosen, weeks=weeks, rows=rows, chart=chart
    )


@router.get(".csv")
async def savings_csv(
    page: SignedIn,
    group: Annotated[str | None, Query(max_length=63)] = None,
    weeks: Annotated[int, Query(ge=1, le=MAX_WEEKS)] = 4,
) -> Response:
    groups = await asyncio.to_thread(lighting_groups, page)
    weeks, chosen = _params(weeks, group, groups)
    rows = await _weeks(page, chosen, weeks) if chosen else []
    name = f"energy-{chosen or 'none'}-{page.now():%Y%m%d}.csv"
    return page.finish(
        Response(
            to_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    )
