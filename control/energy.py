"""Energy: projected kWh of a program against the dusk-to-dawn baseline, money and CO2,
measured kWh beside them, the CSV export, and the ``energy`` derived measurement.

Projection model (stated so a hand calculation can check it): a lamp at level L %
draws ``rated_power_w x L / 100``; the baseline is the lamp at rated power from sunset
to the next sunrise (DOMAIN.md). Over a period, per night: projected kWh = sum of
(rated W x level / 100 x hours) over the program's steps from noon to noon; baseline
= rated W x (sunrise - sunset) hours. Money = saved kWh x tariff (VND/kWh, settings);
CO2 = saved kWh x the grid factor of the night's year (tCO2/MWh = kg/kWh, settings).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from control.plan import ControlPlan, LampRef, program_on
from control.program import ProgramSpec, Site, night_start, place_night, sunrise_at, sunset_at


class EnergySettings(BaseModel):
    """Tariff and grid emission factors (DOMAIN.md; keep them in settings, not code)."""

    model_config = ConfigDict(extra="forbid")

    tariff_vnd_per_kwh: Annotated[float, Field(gt=0)] = Field(
        2226.0,
        description="public lighting < 6 kV, Decision 1279/QĐ-BCT (from 10 May 2025), before VAT",
    )
    grid_factor_t_per_mwh: dict[int, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: {
            2019: 0.8458,
            2020: 0.8041,
            2021: 0.7221,
            2022: 0.6766,
            2023: 0.6592,
        },
        min_length=1,
        description="Vietnam grid emission factor per year (tCO2/MWh); later years use "
        "the latest published",
    )

    def factor_for(self, year: int) -> float:
        """The factor of ``year``, else of the latest year before it, else the earliest."""
        known = sorted(self.grid_factor_t_per_mwh)
        earlier = [y for y in known if y <= year]
        return self.grid_factor_t_per_mwh[earlier[-1] if earlier else known[0]]


@dataclass(frozen=True, slots=True)
class Lamp:
    device_id: str
    rated_power_w: float
    groups: tuple[str, ...] = ()


def program_kwh(program: ProgramSpec, site: Site, night: date, rated_power_w: float) -> float:
    """kWh of one lamp running ``program`` from noon to noon of ``night``."""
    placed = place_night(program, site, night)
    cursor, level = night_start(site, night), placed[-1][1]  # last night's final level
    end = night_start(site, night + timedelta(days=1))
    watt_hours = 0.0
    for at, next_level in [*placed, (end, level)]:
        watt_hours += rated_power_w * level / 100 * (at - cursor).total_seconds() / 3600
        cursor, level = at, next_level
    return watt_hours / 1000


def baseline_kwh(site: Site, night: date, rated_power_w: float) -> float:
    """kWh of one lamp at rated power from sunset to the next sunrise."""
    dark = sunrise_at(site, night + timedelta(days=1)) - sunset_at(site, night)
    return rated_power_w * dark.total_seconds() / 3600 / 1000


class EnergyFigures(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kwh: float = Field(description="projected (or measured) energy")
    baseline_kwh: float = Field(description="rated power from dusk to dawn")
    saved_kwh: float
    saved_vnd: float
    saved_co2_kg: float


class GroupEnergy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str
    start: date = Field(description="first night (evening date)")
    end: date = Field(description="last night (inclusive)")
    lamps: int
    rated_power_w: float = Field(description="sum over the group's lamps")
    projected: EnergyFigures
    nights: int = Field(0, description="nights in the period")
    measured: EnergyFigures | None = Field(
        None,
        description="from telemetry, when asked: over the measured nights only (its baseline "
        "too), so it compares like with like",
    )
    measured_nights: int = Field(0, description="nights with telemetry, of `nights`")


def figures(
    kwh: float, baseline: float, by_year: dict[int, float], settings: EnergySettings
) -> EnergyFigures:
    """``by_year``: the baseline share per year (for the grid factor of each year)."""
    saved = baseline - kwh
    co2 = 0.0
    for year, share in by_year.items():
        co2 += saved * share * settings.factor_for(year)
    return EnergyFigures(
        kwh=round(kwh, 4),
        baseline_kwh=round(baseline, 4),
        saved_kwh=round(saved, 4),
        saved_vnd=round(saved * settings.tariff_vnd_per_kwh, 1),
        saved_co2_kg=round(co2, 4),
    )


def _nights(start: date, end: date) -> list[date]:
    if end < start:
        raise ValueError("end: the period ends before it starts")
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def project_group(
    group: str,
    lamps: Sequence[Lamp],
    start: date,
    end: date,
    site: Site,
    settings: EnergySettings,
    *,
    program: ProgramSpec | None = None,
    plan: ControlPlan | None = None,
) -> GroupEnergy:
    """The group's projected energy over nights ``start``..``end`` with ``program``, or
    with the program each lamp's calendar picks per night (``plan``)."""
    nights = _nights(start, end)
    kwh = baseline = 0.0
    per_year: dict[int, float] = {}
    for night in nights:
        # Both are linear in rated power: the sun and the program are placed once per
        # night (and program), not once per lamp (tens of thousands of lamps).
        dark_kwh_per_w = baseline_kwh(site, night, 1.0)
        program_kwh_per_w: dict[str, float] = {}
        for lamp in lamps:
            chosen = program
            if chosen is None and plan is not None:
                chosen = program_on(plan, LampRef(lamp.device_id, lamp.groups), night)
            lamp_baseline = dark_kwh_per_w * lamp.rated_power_w
            baseline += lamp_baseline
            per_year[night.year] = per_year.get(night.year, 0.0) + lamp_baseline
            if chosen is None:
                kwh += lamp_baseline  # no program: the lamp burns dusk to dawn
                continue
            per_w = program_kwh_per_w.get(chosen.id)
            if per_w is None:
                per_w = program_kwh_per_w[chosen.id] = program_kwh(chosen, site, night, 1.0)
            kwh += per_w * lamp.rated_power_w
    shares = {year: part / baseline for year, part in per_year.items()} if baseline else {}
    return GroupEnergy(
        group=group,
        start=start,
        end=end,
        lamps=len(lamps),
        rated_power_w=sum(lamp.rated_power_w for lamp in lamps),
        projected=figures(kwh, baseline, shares, settings),
        nights=len(nights),
    )


MeasuredKwh = Callable[[Sequence[str], datetime, datetime], Awaitable[float | None]]


async def with_measured(
    projection: GroupEnergy,
    lamps: Sequence[Lamp],
    site: Site,
    settings: EnergySettings,
    measured_kwh: MeasuredKwh,
) -> GroupEnergy:
    """Add measured kWh (from telemetry, through ``measured_kwh``), night by night (noon
    to noon): only the nights with telemetry count, against their own baseline, and
    ``measured_nights`` says how many of the period's nights that is."""
    device_ids = [lamp.device_id for lamp in lamps]
    kwh = baseline = 0.0
    per_year: dict[int, float] = {}
    measured_nights = 0
    for night in _nights(projection.start, projection.end):
        begin, finish = night_start(site, night), night_start(site, night + timedelta(days=1))
        value = await measured_kwh(device_ids, begin, finish)
        if value is None:
            continue
        measured_nights += 1
        night_baseline = sum(baseline_kwh(site, night, lamp.rated_power_w) for lamp in lamps)
        kwh += value
        baseline += night_baseline
        per_year[night.year] = per_year.get(night.year, 0.0) + night_baseline
    if not measured_nights:
        return projection
    shares = {year: part / baseline for year, part in per_year.items()} if baseline else {}
    measured = figures(kwh, baseline, shares, settings)
    return projection.model_copy(update={"measured": measured, "measured_nights": measured_nights})


CSV_COLUMNS = (
    "group",
    "start",
    "end",
    "lamps",
    "rated_power_w",
    "baseline_kwh",
    "projected_kwh",
    "projected_saved_kwh",
    "projected_saved_vnd",
    "projected_saved_co2_kg",
    "measured_kwh",
    "measured_saved_kwh",
    "measured_saved_vnd",
    "measured_saved_co2_kg",
    "nights",
    "measured_nights",
)


def to_csv(rows: Sequence[GroupEnergy]) -> str:
    """One line per group, projected and measured side by side (measured empty if none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        p, m = row.projected, row.measured
        writer.writerow(
            [
                row.group,
                row.start.isoformat(),
                row.end.isoformat(),
                row.lamps,
                row.rated_power_w,
                p.baseline_kwh,
                p.kwh,
                p.saved_kwh,
                p.saved_vnd,
                p.saved_co2_kg,
                *((m.kwh, m.saved_kwh, m.saved_vnd, m.saved_co2_kg) if m else ("", "", "", "")),
                row.nights,
                row.measured_nights,
            ]
        )
    return out.getvalue()
