"""Flood gauge physics: the Hậu river at Cần Thơ — tide, river trend, rain — and the battery.

The water level on the national datum is ``base_m`` + the accumulated river trend
(``trend_m_per_day``) + a semi-diurnal tide + the run-off of recent rain + a little
noise. The tide is two cosines locked to the solar day: a 12-hour wave with its highs at
06:30 and 18:30 local time, and a small 24-hour wave that makes the morning high a bit
higher than the evening one (the diurnal inequality), so the two daily highs fall in
the 05:00–08:00 and 17:00–20:00 windows DOMAIN.md gives. (A real tide drifts ~50 min a
day with the moon; locked to the clock, scenarios can place a flood evening exactly.)
With the defaults (base 1.1 m, amplitude 0.6 m) the morning high is 1.70 m, below
BĐ I (1.80 m); raising
``base_m`` or ``trend_m_per_day`` carries them across BĐ I, II and III.

The gauge runs on a solar-charged battery: 3.5–4.2 V, draining at night, charging by day.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from devices.wire import CommandParamsError, DeviceKind, kind_spec, validate_command_params
from devices.wire.commands import SetIntervalParams
from firmware_sim.faults import FaultConfig
from firmware_sim.model import Ack, MetricValue
from firmware_sim.physics import ReadingFaults, SmoothNoise, local_hour, seconds_between
from firmware_sim.program import DEFAULT_TZ

MORNING_HIGH_HOUR = 6.5
DIURNAL_INEQUALITY = 0.06  # evening high = (1 − 2k)/(1 + k) ≈ 0.89 of the morning one
BATTERY_EMPTY_V = 3.5
BATTERY_FULL_V = 4.2
# Run-off: each mm of rain lifts the level by this much, then drains with this time constant.
_RUNOFF_M_PER_MM = 0.003
_RUNOFF_TAU_H = 6.0
_BATTERY_DRAIN_PER_H = 0.007  # share of capacity: sensor, logger and modem
_SOLAR_PEAK_CHARGE_PER_H = 0.022
_RAINY_SOLAR_SHARE = 0.3
_PHYSICS_STEP = timedelta(minutes=5)


def tide_m(hour: float, amplitude_m: float) -> float:
    """Tide height against the mean at a local hour; the morning high is ``amplitude_m``."""
    since_high = hour - MORNING_HIGH_HOUR
    semi_diurnal = math.cos(2 * math.pi * since_high / 12.0)
    diurnal = DIURNAL_INEQUALITY * math.cos(2 * math.pi * since_high / 24.0)
    return amplitude_m * (semi_diurnal + diurnal) / (1.0 + DIURNAL_INEQUALITY)


@dataclass(frozen=True, slots=True)
class RainEvent:
    start: datetime
    end: datetime
    mm_per_hour: float

    def mm_between(self, start: datetime, end: datetime) -> float:
        """Rain of this event that fell in ``[start, end)``."""
        overlap_s = (min(end, self.end) - max(start, self.start)).total_seconds()
        return max(0.0, overlap_s) / 3600 * self.mm_per_hour


class FloodGaugeModel:
    """A radar water-level gauge with a rain gauge, on a solar-charged battery."""

    def __init__(
        self,
        device_id: str,
        rng: random.Random,
        faults: FaultConfig | None = None,
        interval_s: float = 300,
        *,
        base_m: float = 1.1,
        tide_amplitude_m: float = 0.6,
        trend_m_per_day: float = 0.0,
        tz: str = DEFAULT_TZ,
        fw: str = "3.0.1",
    ) -> None:
        self.kind = DeviceKind.FLOOD_GAUGE
        self.device_id = device_id
        self.fw = fw
        self.base_m = base_m
        self.tide_amplitude_m = tide_amplitude_m
        self.trend_m_per_day = trend_m_per_day
        self._interval_s = interval_s
        self._tz = ZoneInfo(tz)
        self._rng = rng
        self._rain_events: list[RainEvent] = []
        self._trend_offset_m = 0.0
        self._runoff_m = 0.0
        self._rain_total_mm = 0.0
        self._charge = rng.uniform(0.55, 0.9)
        self._level_noise = SmoothNoise(rng, sigma=0.01, tau_s=600)
        self._advanced_to: datetime | None = None
        published = [m.name for m in kind_spec(self.kind).metrics]
        self._faults = ReadingFaults(self.kind, faults or FaultConfig(), rng, published)

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def add_rain_event(self, start: datetime, hours: float, mm_per_hour: float) -> None:
        """Rain of ``mm_per_hour`` from ``start`` for ``hours``."""
        if hours <= 0 or mm_per_hour < 0:
            raise ValueError("a rain event needs positive hours and non-negative mm_per_hour")
        self._rain_events.append(RainEvent(start, start + timedelta(hours=hours), mm_per_hour))

    def rain_between(self, start: datetime, end: datetime) -> float:
        """Millimetres of rain that fell in ``[start, end)``."""
        return sum((event.mm_between(start, end) for event in self._rain_events), 0.0)

    def sample(self, now: datetime) -> dict[str, MetricValue]:
        previous = self._advanced_to
        rain_mm = self._tip_bucket(
            self.rain_between(previous, now) if previous is not None else 0.0
        )
        self._advance(now)
        if previous is not None:
            self._level_noise.step(seconds_between(previous, now))
        level_m = (
            self.base_m
            + self._trend_offset_m
            + tide_m(local_hour(now, self._tz), self.tide_amplitude_m)
            + self._runoff_m
            + self._level_noise.value
        )
        battery_v = BATTERY_EMPTY_V + (BATTERY_FULL_V - BATTERY_EMPTY_V) * self._charge
        battery_v = min(BATTERY_FULL_V, max(BATTERY_EMPTY_V, battery_v + self._rng.gauss(0, 0.005)))
        self._rain_events = [e for e in self._rain_events if e.end > now]
        return self._faults.apply(
            {
                "water_level_m": round(level_m, 3),
                "rain_mm": rain_mm,
                "battery_v": round(battery_v, 3),
            }
        )

    def _tip_bucket(self, fallen_mm: float) -> float:
        """Rain reported in 0.1 mm tips; the part of a tip not yet full carries over."""
        reported_before = round(self._rain_total_mm, 1)
        self._rain_total_mm += fallen_mm
        return round(round(self._rain_total_mm, 1) - reported_before, 1)

    def _advance(self, now: datetime) -> None:
        """Step the trend, run-off and battery to ``now`` in short physics steps."""
        if self._advanced_to is None:
            self._advanced_to = now
            return
        cursor = self._advanced_to
        while cursor < now:
            end = min(now, cursor + _PHYSICS_STEP)
            self._step(cursor, end)
            cursor = end
        self._advanced_to = max(self._advanced_to, now)

    def _step(self, start: datetime, end: datetime) -> None:
        hours = (end - start).total_seconds() / 3600
        self._trend_offset_m += self.trend_m_per_day * hours / 24
        rain_mm = self.rain_between(start, end)
        # Exact solution of d(runoff)/dt = gain·rain_rate − runoff/τ over the step.
        keep = math.exp(-hours / _RUNOFF_TAU_H)
        rate_mm_per_h = rain_mm / hours
        inflow = _RUNOFF_M_PER_MM * rate_mm_per_h * _RUNOFF_TAU_H * (1 - keep)
        self._runoff_m = self._runoff_m * keep + inflow
        sun = max(0.0, math.sin(math.pi * (local_hour(start, self._tz) - 6.0) / 12.0))
        solar = _SOLAR_PEAK_CHARGE_PER_H * sun * (_RAINY_SOLAR_SHARE if rain_mm > 0 else 1.0)
        self._charge = min(1.0, max(0.0, self._charge + (solar - _BATTERY_DRAIN_PER_H) * hours))

    def state(self, now: datetime) -> dict[str, Any]:
        return {"fw": self.fw, "interval_s": round(self._interval_s)}

    def handle(self, action: str, params: dict[str, Any], now: datetime) -> Ack:
        try:
            parsed = validate_command_params(self.kind, action, params)
        except CommandParamsError as exc:
            return Ack("rejected", str(exc))
        if isinstance(parsed, SetIntervalParams):
            self._interval_s = parsed.seconds
            return Ack("ok", f"reporting every {parsed.seconds} s")
        return Ack("rejected", f"action: {action!r} is not implemented by this gauge")
