"""The lamp's own program runner: the light level a stored ``LampProgram`` gives at a time.

A lamp keeps dimming while the backend is away, so it computes its steps itself: each
step falls at a fixed local time ("HH:MM") or at sunset/sunrise ± ``offset_minutes``
for the lamp's own position (``astral``). The active level is that of the latest step
at or before the time, looking back across midnight: a step at sunset yesterday still
holds at 01:00 today when no later step came.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sunrise, sunset

from devices.wire.commands import LampProgram, ProgramStep

DEFAULT_TZ = "Asia/Ho_Chi_Minh"

# Enough for "yesterday, today, tomorrow" plus a little slack; bounded so thousands of
# lamps running for simulated months keep a small footprint.
_CACHED_DAYS = 4


_Cached = TypeVar("_Cached")


class ProgramError(ValueError):
    """A program a lamp cannot run; ``field`` names the step, as a command error would."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_program(program: LampProgram) -> None:
    """Raise ``ProgramError`` unless every step has exactly one of ``at`` or ``event``."""
    for index, step in enumerate(program.steps):
        if (step.at is None) == (step.event is None):
            raise ProgramError(f"steps.{index}", "a step needs exactly one of 'at' or 'event'")


@dataclass(frozen=True, slots=True)
class SunTimes:
    """Sunrise and sunset of one local date, aware, in the runner's time zone."""

    sunrise: datetime
    sunset: datetime


@dataclass(frozen=True, slots=True)
class ScheduledStep:
    """A step placed on a date: from ``at`` on, the level is ``level``."""

    at: datetime
    level: float


class ProgramRunner:
    """Levels of one program for one position, with sun times and step times cached per date."""

    def __init__(
        self,
        program: LampProgram,
        latitude: float,
        longitude: float,
        tz: str | ZoneInfo = DEFAULT_TZ,
    ) -> None:
        check_program(program)
        self.program = program
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self._observer = Observer(latitude=latitude, longitude=longitude)
        self._sun: dict[date, SunTimes] = {}
        self._steps: dict[date, list[ScheduledStep]] = {}

    def with_program(self, program: LampProgram) -> ProgramRunner:
        """A runner for another program at the same place, reusing the sun-time cache."""
        runner = ProgramRunner(program, self._observer.latitude, self._observer.longitude, self.tz)
        runner._sun = self._sun
        return runner

    def sun_times(self, day: date) -> SunTimes:
        """Sunrise and sunset of the local date ``day`` at this position."""
        cached = self._sun.get(day)
        if cached is None:
            cached = self._compute_sun_times(day)
            _remember(self._sun, day, cached)
        return cached

    def _compute_sun_times(self, day: date) -> SunTimes:
        try:
            return SunTimes(
                sunrise=sunrise(self._observer, day, self.tz),
                sunset=sunset(self._observer, day, self.tz),
            )
        except ValueError:
            # Polar day or night (astral cannot place the event): a lamp controller
            # falls back to fixed civil times rather than stopping its program.
            return SunTimes(
                sunrise=datetime.combine(day, time(6, 0), self.tz),
                sunset=datetime.combine(day, time(18, 0), self.tz),
            )

    def steps_on(self, day: date) -> list[ScheduledStep]:
        """The program's steps placed on the local date ``day``, in time order."""
        cached = self._steps.get(day)
        if cached is None:
            placed = [
                ScheduledStep(self._step_time(step, day), step.level) for step in self.program.steps
            ]
            # Stable sort: of two steps at the same instant the later-listed one wins.
            cached = sorted(placed, key=lambda s: s.at)
            _remember(self._steps, day, cached)
        return cached

    def _step_time(self, step: ProgramStep, day: date) -> datetime:
        if step.at is not None:
            hours, minutes = (int(part) for part in step.at.split(":"))
            return datetime.combine(day, time(hours, minutes), self.tz)
        sun = self.sun_times(day)
        base = sun.sunset if step.event == "sunset" else sun.sunrise
        return base + timedelta(minutes=step.offset_minutes)

    def active_step(self, when: datetime) -> ScheduledStep:
        """The latest step at or before ``when``, looking back to yesterday."""
        day = when.astimezone(self.tz).date()
        for candidate_day in (day, day - timedelta(days=1), day - timedelta(days=2)):
            started = [s for s in self.steps_on(candidate_day) if s.at <= when]
            if started:
                return started[-1]
        # Unreachable for valid programs (every date has at least one step, and all of
        # the day before yesterday's steps are in the past); kept total for the type.
        return self.steps_on(day - timedelta(days=2))[-1]

    def level_at(self, when: datetime) -> float:
        """The level (0–100) the program asks for at ``when``."""
        return self.active_step(when).level

    def next_change(self, after: datetime) -> datetime:
        """The first step boundary strictly after ``after``.

        Two consecutive steps of the same level give a boundary without a visible change;
        schedulers (and a manual ``set_dim`` that holds until the next step) want the
        boundary itself.
        """
        day = after.astimezone(self.tz).date()
        for candidate_day in (day, day + timedelta(days=1), day + timedelta(days=2)):
            for step in self.steps_on(candidate_day):
                if step.at > after:
                    return step.at
        raise AssertionError("a program with steps always has one within two days")

    def is_daylight(self, when: datetime) -> bool:
        """Whether the sun is up at ``when`` at this position."""
        sun = self.sun_times(when.astimezone(self.tz).date())
        return sun.sunrise <= when < sun.sunset


def _remember(cache: dict[date, _Cached], key: date, value: _Cached) -> None:
    """Store ``value``, dropping the oldest entries beyond ``_CACHED_DAYS``."""
    cache[key] = value
    while len(cache) > _CACHED_DAYS:
        del cache[next(iter(cache))]
