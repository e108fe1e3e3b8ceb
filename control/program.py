"""Lighting programs (TALQ "control programs") and where their steps fall on a night.

A program describes one night, noon to noon: steps at a fixed local time ("HH:MM";
times before noon belong to the next morning) or at sunset / sunrise ± minutes
(sunset of the evening, sunrise of the next morning, computed by ``astral`` for the
site). Each step sets a light level that holds until the next step; the last step of
a night holds until the first step of the next. Steps must be listed in time order
and must keep that order on every day of the year: a sunset step that would pass a
fixed-time step in June is refused with the step named.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sunrise, sunset
from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.wire.commands import DEFAULT_PROGRAM, LampProgram, ProgramStep

NOON = time(12, 0)
# The year whose days every program is checked against (sun times barely move by year).
_REFERENCE_YEAR = 2026


class Site(BaseModel):
    """Where the lamps stand: position for sunrise/sunset, and the local time zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latitude: Annotated[float, Field(ge=-90, le=90, description="degrees north")]
    longitude: Annotated[float, Field(ge=-180, le=180, description="degrees east")]
    timezone: str = Field("Asia/Ho_Chi_Minh", description="IANA time zone")

    @property
    def tz(self) -> ZoneInfo:
        return _zone(self.timezone)


class ProgramError(ValueError):
    """A program, calendar or assignment that cannot be used; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ProgramSpec(BaseModel):
    """A lighting program: an id, a name and its steps (levels 0-100 %)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[
        str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="id")
    ]
    name: Annotated[str, Field(min_length=1, max_length=200, description="shown to people")]
    steps: Annotated[
        list[ProgramStep],
        Field(min_length=1, max_length=24, description="steps in time order, noon to noon"),
    ]

    @model_validator(mode="after")
    def _one_time_per_step(self) -> ProgramSpec:
        for index, step in enumerate(self.steps):
            if (step.at is None) == (step.event is None):
                raise ValueError(f"steps.{index}: a step needs exactly one of 'at' or 'event'")
        return self

    def lamp_program(self) -> LampProgram:
        """What ``set_program`` sends to a lamp."""
        return LampProgram(id=self.id, steps=list(self.steps))


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=8192)
def _sun(latitude: float, longitude: float, tz: str, day: date) -> tuple[datetime, datetime]:
    observer = Observer(latitude=latitude, longitude=longitude)
    zone = _zone(tz)
    try:
        return sunrise(observer, day, zone), sunset(observer, day, zone)
    except ValueError:  # polar day or night: fixed civil times, as a controller would
        return datetime.combine(day, time(6, 0), zone), datetime.combine(day, time(18, 0), zone)


def sunrise_at(site: Site, day: date) -> datetime:
    return _sun(site.latitude, site.longitude, site.timezone, day)[0]


def sunset_at(site: Site, day: date) -> datetime:
    return _sun(site.latitude, site.longitude, site.timezone, day)[1]


def night_of(site: Site, when: datetime) -> date:
    """The night ``when`` belongs to: the date of its evening (noon to noon)."""
    local = when.astimezone(site.tz)
    return (local - timedelta(hours=12)).date()


def night_start(site: Site, night: date) -> datetime:
    return datetime.combine(night, NOON, site.tz)


def step_time(step: ProgramStep, site: Site, night: date) -> datetime:
    """Where ``step`` falls on ``night`` (evening steps on that date, morning ones after)."""
    if step.at is not None:
        hours, minutes = (int(part) for part in step.at.split(":"))
        at = time(hours, minutes)
        day = night if at >= NOON else night + timedelta(days=1)
        return datetime.combine(day, at, site.tz)
    if step.event == "sunset":
        base = sunset_at(site, night)
    else:
        base = sunrise_at(site, night + timedelta(days=1))
    return base + timedelta(minutes=step.offset_minutes)


def place_night(program: ProgramSpec, site: Site, night: date) -> list[tuple[datetime, float]]:
    """The program's steps on ``night``: (start, level), in the listed (time) order."""
    return [(step_time(step, site, night), step.level) for step in program.steps]


def check_program(program: ProgramSpec, site: Site) -> None:
    """``ProgramError`` unless the steps stay in strict time order, noon to noon, all year."""
    day = date(_REFERENCE_YEAR, 1, 1)
    while day.year == _REFERENCE_YEAR:
        placed = place_night(program, site, day)
        start, end = night_start(site, day), night_start(site, day + timedelta(days=1))
        for index, (at, _level) in enumerate(placed):
            if not start <= at < end:
                raise ProgramError(
                    f"steps.{index}",
                    f"falls at {at:%Y-%m-%d %H:%M}, outside its night (noon to noon) on {day}",
                )
            if index and at <= placed[index - 1][0]:
                raise ProgramError(
                    f"steps.{index}",
                    f"at {at:%H:%M} on {day} it does not come after steps.{index - 1} "
                    f"({placed[index - 1][0]:%H:%M}): steps overlap or are out of order",
                )
        day += timedelta(days=1)


def default_program() -> ProgramSpec:
    """DOMAIN.md's default (``devices.wire.commands.DEFAULT_PROGRAM``) as a program."""
    return ProgramSpec(
        id=DEFAULT_PROGRAM.id,
        name="Default dimming (DOMAIN.md)",
        steps=[step.model_copy() for step in DEFAULT_PROGRAM.steps],
    )
