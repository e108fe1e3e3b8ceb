"""Electrical load of public buildings over the day: hospital, school, office.

A load is a pure function of time (local time Asia/Ho_Chi_Minh) plus smooth noise drawn
from a seed, so a meter polled at any moments reads the same curve, and the same seed
gives the same readings.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Ho_Chi_Minh"  # the site's zone; a building may be given another
_MASK64 = (1 << 64) - 1


class LoadProfile(Protocol):
    def power_w(self, now: datetime) -> float:
        """Active power drawn at ``now`` (W, never negative)."""
        ...


def _splitmix64(value: int) -> int:
    """A well-mixed 64-bit hash: turns (seed, knot) into an independent draw."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


class SmoothNoise:
    """Seeded value noise in [-1, 1], smooth over ``period_s``, a pure function of time.

    Knot values are hashed from the seed and the knot index rather than drawn in
    sequence, so the value at a time does not depend on which times were asked before.
    """

    def __init__(self, seed: int, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        self._seed = seed & _MASK64
        self._period_s = period_s

    def _knot(self, index: int) -> float:
        mixed = _splitmix64(self._seed ^ _splitmix64(index & _MASK64))
        return (mixed >> 11) / float(1 << 53) * 2.0 - 1.0

    def at(self, now: datetime) -> float:
        position = now.timestamp() / self._period_s
        index = math.floor(position)
        fraction = position - index
        blend = (1 - math.cos(math.pi * fraction)) / 2  # cosine: no kinks at the knots
        return self._knot(index) * (1 - blend) + self._knot(index + 1) * blend


class BuildingType(StrEnum):
    HOSPITAL = "hospital"
    SCHOOL = "school"
    OFFICE = "office"


@dataclass(frozen=True, slots=True)
class LoadShape:
    """A building's daily curve: a floor, an occupied plateau with ramps, a lunch dip."""

    base_w: float  # nights and closed days: fridges, servers, security lighting
    peak_w: float  # the occupied plateau (air conditioning dominates in Cần Thơ)
    opens: time
    closes: time
    ramp_minutes: float
    weekdays_only: bool
    lunch_start: time
    lunch_end: time
    lunch_dip: float  # share of (peak - base) switched off over the noon break
    noise: float  # relative amplitude of the smooth noise


SHAPES: dict[BuildingType, LoadShape] = {
    # Round the clock; wards, theatres and outpatients add a daytime bump.
    BuildingType.HOSPITAL: LoadShape(
        base_w=180_000,
        peak_w=260_000,
        opens=time(7, 0),
        closes=time(20, 0),
        ramp_minutes=90,
        weekdays_only=False,
        lunch_start=time(12, 0),
        lunch_end=time(13, 0),
        lunch_dip=0.0,
        noise=0.04,
    ),
    # Classes 07:00-17:00 Monday to Friday with the long Vietnamese noon break.
    BuildingType.SCHOOL: LoadShape(
        base_w=12_000,
        peak_w=110_000,
        opens=time(7, 0),
        closes=time(17, 0),
        ramp_minutes=40,
        weekdays_only=True,
        lunch_start=time(11, 30),
        lunch_end=time(13, 30),
        lunch_dip=0.35,
        noise=0.06,
    ),
    BuildingType.OFFICE: LoadShape(
        base_w=25_000,
        peak_w=160_000,
        opens=time(8, 0),
        closes=time(17, 30),
        ramp_minutes=45,
        weekdays_only=True,
        lunch_start=time(12, 0),
        lunch_end=time(13, 0),
        lunch_dip=0.25,
        noise=0.05,
    ),
}


def _hours(moment: time) -> float:
    return moment.hour + moment.minute / 60 + moment.second / 3600


def _smoothstep(edge0: float, edge1: float, x: float) -> float:
    t = min(1.0, max(0.0, (x - edge0) / (edge1 - edge0)))
    return t * t * (3 - 2 * t)


def _window(start_h: float, end_h: float, ramp_h: float, hour: float) -> float:
    """1 inside [start, end], 0 outside, with smooth ramps of ``ramp_h`` centred on the edges."""
    rising = _smoothstep(start_h - ramp_h / 2, start_h + ramp_h / 2, hour)
    falling = 1 - _smoothstep(end_h - ramp_h / 2, end_h + ramp_h / 2, hour)
    return min(rising, falling)


class BuildingLoad:
    """The load of one building of a type, scaled, with its own seeded noise."""

    def __init__(
        self,
        building: BuildingType,
        rng: random.Random,
        scale: float = 1.0,
        shape: LoadShape | None = None,
        tz: str | ZoneInfo = DEFAULT_TZ,
    ) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.building = BuildingType(building)
        self.shape = shape or SHAPES[self.building]
        self.scale = scale
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self._slow = SmoothNoise(rng.getrandbits(64), period_s=45 * 60)
        self._fast = SmoothNoise(rng.getrandbits(64), period_s=7 * 60)

    def occupancy(self, now: datetime) -> float:
        """0 (closed) to 1 (fully occupied) at ``now``, before noise."""
        local = now.astimezone(self.tz)
        if self.shape.weekdays_only and local.weekday() >= 5:
            return 0.0
        hour = _hours(local.time())
        ramp_h = self.shape.ramp_minutes / 60
        occupied = _window(_hours(self.shape.opens), _hours(self.shape.closes), ramp_h, hour)
        lunch = _window(_hours(self.shape.lunch_start), _hours(self.shape.lunch_end), 0.5, hour)
        return occupied * (1 - self.shape.lunch_dip * lunch)

    def power_w(self, now: datetime) -> float:
        shape = self.shape
        nominal = shape.base_w + (shape.peak_w - shape.base_w) * self.occupancy(now)
        wobble = 0.7 * self._slow.at(now) + 0.3 * self._fast.at(now)
        return max(0.0, nominal * (1 + shape.noise * wobble) * self.scale)
