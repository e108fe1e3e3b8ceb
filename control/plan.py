"""The one answer to "what level should this lamp have at time t", and when it changes.

``desired_level`` is pure: it takes a ``ControlPlan`` (programs, calendars, assignments,
overrides, the site) and a lamp (its id and groups) and says which level, from which
program or override. The scheduler, the catch-up after a restart, drift correction and
the energy projection all use it.

Precedence: an active override (the lamp's own before its groups'; of several, the
latest started) wins; else the calendar assigned to the lamp itself, else to its
first group (by id) that has one, picks the night's program (first matching rule,
else the calendar's default). A lamp with none of these has no desired level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control.program import ProgramSpec, Site, night_of, place_night

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TargetType(StrEnum):
    DEVICE = "device"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class Target:
    type: TargetType
    id: str

    def __str__(self) -> str:
        return f"{self.type.value}:{self.id}"


class CalendarRule(BaseModel):
    """A condition on the night's date choosing a program; every given condition must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    program_id: Annotated[str, Field(min_length=1, max_length=64, description="program to run")]
    start: date | None = Field(None, description="first date of a range (inclusive)")
    end: date | None = Field(None, description="last date of a range (inclusive)")
    weekdays: list[Weekday] | None = Field(None, description="evenings of these weekdays")
    dates: list[date] | None = Field(None, description="single dates, e.g. Tết (lunar: given)")

    @model_validator(mode="after")
    def _has_condition(self) -> CalendarRule:
        if self.start is None and self.end is None and not self.weekdays and not self.dates:
            raise ValueError("a rule needs start/end, weekdays or dates")
        if self.start and self.end and self.end < self.start:
            raise ValueError("end is before start")
        return self

    def matches(self, night: date) -> bool:
        if self.start is not None and night < self.start:
            return False
        if self.end is not None and night > self.end:
            return False
        if self.weekdays and WEEKDAYS[night.weekday()] not in self.weekdays:
            return False
        return not (self.dates and night not in self.dates)


class CalendarSpec(BaseModel):
    """TALQ calendar: ordered rules, the first match wins, else the default program."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    default_program_id: Annotated[str, Field(min_length=1, max_length=64)]
    rules: Annotated[list[CalendarRule], Field(max_length=200)] = Field(default_factory=list)

    def program_for(self, night: date) -> str:
        for rule in self.rules:
            if rule.matches(night):
                return rule.program_id
        return self.default_program_id


@dataclass(frozen=True, slots=True)
class ActiveOverride:
    id: int
    target: Target
    level: float
    starts_at: datetime
    until: datetime | None  # None: until cleared

    def holds_at(self, when: datetime) -> bool:
        return self.starts_at <= when and (self.until is None or when < self.until)


@dataclass(frozen=True, slots=True)
class ControlPlan:
    site: Site
    programs: Mapping[str, ProgramSpec] = field(default_factory=dict)
    calendars: Mapping[str, CalendarSpec] = field(default_factory=dict)
    assignments: Mapping[Target, str] = field(default_factory=dict)  # target -> calendar id
    overrides: Sequence[ActiveOverride] = ()


@dataclass(frozen=True, slots=True)
class LampRef:
    device_id: str
    groups: tuple[str, ...] = ()


Source = Literal["override", "program", "none"]


@dataclass(frozen=True, slots=True)
class Decision:
    level: float | None
    source: Source
    program_id: str | None = None
    override_id: int | None = None


def _overrides_for(plan: ControlPlan, lamp: LampRef) -> list[ActiveOverride]:
    mine = Target(TargetType.DEVICE, lamp.device_id)
    groups = {Target(TargetType.GROUP, g) for g in lamp.groups}
    return [o for o in plan.overrides if o.target == mine or o.target in groups]


def calendar_of(plan: ControlPlan, lamp: LampRef) -> CalendarSpec | None:
    calendar_id = plan.assignments.get(Target(TargetType.DEVICE, lamp.device_id))
    if calendar_id is None:
        for group in sorted(lamp.groups):
            calendar_id = plan.assignments.get(Target(TargetType.GROUP, group))
            if calendar_id is not None:
                break
    return plan.calendars.get(calendar_id) if calendar_id is not None else None


def program_on(plan: ControlPlan, lamp: LampRef, night: date) -> ProgramSpec | None:
    calendar = calendar_of(plan, lamp)
    if calendar is None:
        return None
    return plan.programs.get(calendar.program_for(night))


def program_level(plan: ControlPlan, lamp: LampRef, when: datetime) -> tuple[float, str] | None:
    """The level the lamp's program gives at ``when``, and the program's id."""
    night = night_of(plan.site, when)
    program = program_on(plan, lamp, night)
    if program is None:
        return None
    started = [level for at, level in place_night(program, plan.site, night) if at <= when]
    if started:
        return started[-1], program.id
    before = program_on(plan, lamp, night - timedelta(days=1))
    if before is None:  # no program last night: this night's first level is the fallback
        return 0.0, program.id
    return place_night(before, plan.site, night - timedelta(days=1))[-1][1], program.id


def desired_level(plan: ControlPlan, lamp: LampRef, when: datetime) -> Decision:
    """What level ``lamp`` should have at ``when``, and why."""
    program = program_level(plan, lamp, when)
    program_id = program[1] if program else None
    active = [o for o in _overrides_for(plan, lamp) if o.holds_at(when)]
    if active:
        own = [o for o in active if o.target.type is TargetType.DEVICE]
        chosen = max(own or active, key=lambda o: (o.starts_at, o.id))
        return Decision(chosen.level, "override", program_id, chosen.id)
    if program is None:
        return Decision(None, "none")
    return Decision(program[0], "program", program_id)


def next_change(plan: ControlPlan, lamp: LampRef, after: datetime) -> datetime | None:
    """The first instant after ``after`` where the desired level may change."""
    candidates: list[datetime] = []
    night = night_of(plan.site, after)
    for offset in range(3):
        day = night + timedelta(days=offset)
        program = program_on(plan, lamp, day)
        if program is not None:
            later = [at for at, _ in place_night(program, plan.site, day) if at > after]
            if later:
                candidates.append(min(later))
                break
    for override in _overrides_for(plan, lamp):
        for edge in (override.starts_at, override.until):
            if edge is not None and edge > after:
                candidates.append(edge)
    return min(candidates, default=None)
