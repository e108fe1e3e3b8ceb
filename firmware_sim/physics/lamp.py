"""Streetlight and smart-pole physics: an LED lamp, its controller, and the pole's sensors.

Power follows the light level and the rated power, with the driver's fixed losses and a
power factor that falls at low levels; voltage wanders around 230 V and the current is
consistent with both. Energy and operating hours are integrated over simulated time,
step by step at every level change, so they do not depend on how often readings are taken.

Which level the lamp burns at (latest command wins):

1. ``override {level, minutes}``: holds until it expires by itself, then whatever held
   before (a manual level or the program) resumes;
2. ``set_dim {level}`` / ``switch {on}``: a manual level that holds until the program's
   next step, so a lamp told to dim at 21:00 still follows its program from 22:00;
   either clears a running override;
3. the stored program (``set_program``), run on the lamp's own clock for its position.

The controller reports the output it drives (``lamp_on``, ``dim_level``, state
``power``); the metering chip reports what is drawn. So ``lamp_failure`` shows as
``lamp_on`` true with standby power, and ``day_burning`` (a controller stuck in its
fail-safe "full on") as ``lamp_on`` true at 100 % with rated power in daylight.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, ClassVar

from devices.wire import CommandParamsError, DeviceKind, kind_spec, validate_command_params
from devices.wire.commands import (
    DEFAULT_PROGRAM,
    LampProgram,
    OverrideParams,
    SelfTestParams,
    SetDimParams,
    SetProgramParams,
    SwitchParams,
)
from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.model import Ack, MetricValue
from firmware_sim.physics import ReadingFaults, SmoothNoise, bell, local_hour, seconds_between
from firmware_sim.physics.environment import EnvironmentModel, traffic_index
from firmware_sim.program import DEFAULT_TZ, ProgramError, ProgramRunner

STANDBY_W = 0.5
STANDBY_POWER_FACTOR = 0.30  # a controller's tiny switch-mode supply: mostly reactive
NOMINAL_VOLTAGE_V = 230.0
# The driver's fixed losses as a share of rated power: why 50 % light costs ~53 % power.
DRIVER_OVERHEAD = 0.06
# Power factor against light level (fraction), linear between these points.
_POWER_FACTOR_CURVE = ((0.0, 0.55), (0.3, 0.80), (1.0, 0.95))
# Self-test: each step must draw within this share of the expected power.
_SELF_TEST_TOLERANCE = 0.25
_SELF_TEST_LEVELS = (0.0, 50.0, 100.0)


def lamp_power_w(rated_power_w: float, level: float) -> float:
    """Active power drawn at ``level`` % (standby when off)."""
    if level <= 0:
        return STANDBY_W
    fraction = min(level, 100.0) / 100.0
    return rated_power_w * (DRIVER_OVERHEAD + (1.0 - DRIVER_OVERHEAD) * fraction)


def lamp_power_factor(level: float) -> float:
    """Power factor at ``level`` % (the standby supply's when off)."""
    if level <= 0:
        return STANDBY_POWER_FACTOR
    fraction = min(level, 100.0) / 100.0
    for (x0, pf0), (x1, pf1) in pairwise(_POWER_FACTOR_CURVE):
        if fraction <= x1:
            return pf0 + (pf1 - pf0) * (fraction - x0) / (x1 - x0)
    return _POWER_FACTOR_CURVE[-1][1]


@dataclass(frozen=True, slots=True)
class _Hold:
    """A level that holds until ``until`` (exclusive)."""

    level: float
    until: datetime

    def holds_at(self, when: datetime) -> bool:
        return when < self.until


class LampModel:
    """A streetlight: LED lamp, driver, metering chip and a controller with a program."""

    _KIND: ClassVar[DeviceKind] = DeviceKind.STREETLIGHT

    def __init__(
        self,
        device_id: str,
        rated_power_w: float,
        latitude: float,
        longitude: float,
        rng: random.Random,
        faults: FaultConfig | None = None,
        interval_s: float = 60,
        program: LampProgram = DEFAULT_PROGRAM,
        fw: str = "1.4.2",
        *,
        tz: str = DEFAULT_TZ,
    ) -> None:
        if rated_power_w <= 0:
            raise ValueError("rated_power_w must be positive")
        self.kind = self._KIND
        self.device_id = device_id
        self.rated_power_w = rated_power_w
        self.fw = fw
        self._interval_s = interval_s
        self._rng = rng
        self._fault_config = faults or FaultConfig()
        self._runner = ProgramRunner(program, latitude, longitude, tz)
        self._manual: _Hold | None = None
        self._override: _Hold | None = None
        self._supplied = True  # the cabinet's contactor on this lamp's circuit is closed
        self._last_on_level = 100.0
        self.energy_kwh = 0.0
        self.operating_hours = 0.0
        self._integrated_to: datetime | None = None
        self._sampled_at: datetime | None = None
        # Lamps at the far end of a long feeder see a lower voltage than those near it.
        self._feeder_offset_v = rng.uniform(-4.0, 4.0)
        self._voltage_drift = SmoothNoise(rng, sigma=2.5, tau_s=1800)
        published = kind_spec(self.kind).metric_names()
        self._faults = ReadingFaults(self.kind, self._fault_config, rng, published)

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @property
    def program(self) -> LampProgram:
        return self._runner.program

    # --- which level the lamp burns at ---------------------------------------------

    def commanded_level(self, when: datetime) -> float:
        """The level the controller's commands and program ask for at ``when``."""
        if self._override is not None and self._override.holds_at(when):
            return self._override.level
        if self._manual is not None and self._manual.holds_at(when):
            return self._manual.level
        return self._runner.level_at(when)

    def set_supply(self, on: bool, now: datetime) -> None:
        """The feeder's contactor closed (``on``) or opened at ``now``: without supply
        the lamp is dark and draws nothing, whatever its program says."""
        self._integrate(now)
        self._supplied = on

    def output_level(self, when: datetime) -> float:
        """The level the controller actually drives (day burning forces full in daylight)."""
        if not self._supplied:
            return 0.0
        if self._fault_config.has(Fault.DAY_BURNING) and self._runner.is_daylight(when):
            return 100.0
        return self.commanded_level(when)

    def _burning(self, level: float) -> bool:
        return level > 0 and not self._fault_config.has(Fault.LAMP_FAILURE)

    def _drawn_w(self, level: float) -> float:
        """True active power for an output level (a failed lamp draws standby only)."""
        if not self._supplied:
            return 0.0
        return lamp_power_w(self.rated_power_w, level) if self._burning(level) else STANDBY_W

    def _next_boundary(self, after: datetime) -> datetime:
        """The next instant the output level may change."""
        candidates = [self._runner.next_change(after)]
        for hold in (self._override, self._manual):
            if hold is not None and hold.until > after:
                candidates.append(hold.until)
        if self._fault_config.has(Fault.DAY_BURNING):
            candidates.append(self._next_sun_event(after))
        return min(candidates)

    def _next_sun_event(self, after: datetime) -> datetime:
        day = after.astimezone(self._runner.tz).date()
        for candidate in (day, day + timedelta(days=1)):
            sun = self._runner.sun_times(candidate)
            for event in (sun.sunrise, sun.sunset):
                if event > after:
                    return event
        return after + timedelta(days=1)

    # --- physics ------------------------------------------------------------------

    def _integrate(self, now: datetime) -> None:
        """Accumulate energy and burning hours up to ``now``, segment by constant level."""
        if self._integrated_to is None:
            self._integrated_to = now
            return
        cursor = self._integrated_to
        while cursor < now:
            end = min(now, self._next_boundary(cursor))
            level = self.output_level(cursor)
            hours = (end - cursor).total_seconds() / 3600
            self.energy_kwh += self._drawn_w(level) * hours / 1000
            if self._burning(level):
                self.operating_hours += hours
            cursor = end
        self._integrated_to = max(self._integrated_to, now)
        self._drop_expired_holds(now)

    def _drop_expired_holds(self, now: datetime) -> None:
        if self._override is not None and not self._override.holds_at(now):
            self._override = None
        if self._manual is not None and not self._manual.holds_at(now):
            self._manual = None

    def sample(self, now: datetime) -> dict[str, MetricValue]:
        return self._faults.apply(self._measure(now))

    def _measure(self, now: datetime) -> dict[str, MetricValue]:
        """Advance to ``now`` and return the metering chip's and controller's values."""
        self._integrate(now)
        if self._sampled_at is not None:
            self._voltage_drift.step(seconds_between(self._sampled_at, now))
        self._sampled_at = now
        level = self.output_level(now)
        power_w, power_factor = self._metered(level)
        voltage_v = self._voltage()
        return {
            "power_w": round(power_w, 2),
            "energy_kwh": round(self.energy_kwh, 4),
            "voltage_v": round(voltage_v, 1),
            "current_a": round(power_w / (voltage_v * power_factor), 3),
            "power_factor": round(power_factor, 3),
            "dim_level": float(level),
            "lamp_on": level > 0,
            "operating_hours": round(self.operating_hours, 3),
        }

    def _metered(self, level: float) -> tuple[float, float]:
        """Measured power and power factor, with the metering chip's small noise."""
        if not self._supplied:
            return 0.0, STANDBY_POWER_FACTOR
        if not self._burning(level):
            return max(0.0, STANDBY_W + self._rng.gauss(0.0, 0.02)), STANDBY_POWER_FACTOR
        power_w = self._drawn_w(level) * (1.0 + self._rng.gauss(0.0, 0.004))
        power_factor = min(0.99, lamp_power_factor(level) + self._rng.gauss(0.0, 0.003))
        return max(0.0, power_w), power_factor

    def _voltage(self) -> float:
        measured = (
            NOMINAL_VOLTAGE_V
            + self._feeder_offset_v
            + self._voltage_drift.value
            + self._rng.gauss(0.0, 0.3)
        )
        return min(250.0, max(200.0, measured))

    # --- reported state and commands ------------------------------------------------

    def state(self, now: datetime) -> dict[str, Any]:
        self._integrate(now)
        level = self.output_level(now)
        override = self._override if self._override and self._override.holds_at(now) else None
        return {
            "power": "on" if level > 0 else "off",
            "dim_level": float(level),
            "program_id": self._runner.program.id,
            "override_until": override.until.astimezone(self._runner.tz).isoformat()
            if override
            else None,
            "fw": self.fw,
        }

    def handle(self, action: str, params: dict[str, Any], now: datetime) -> Ack:
        try:
            parsed = validate_command_params(self.kind, action, params)
        except CommandParamsError as exc:
            return Ack("rejected", str(exc))
        # Account the energy at the old level before the command changes it.
        self._integrate(now)
        if isinstance(parsed, SetDimParams):
            return self._set_manual(parsed.level, now)
        if isinstance(parsed, SwitchParams):
            return self._set_manual(self._last_on_level if parsed.on else 0.0, now)
        if isinstance(parsed, OverrideParams):
            return self._set_override(parsed.level, parsed.minutes, now)
        if isinstance(parsed, SetProgramParams):
            return self._set_program(parsed.program, now)
        if isinstance(parsed, SelfTestParams):
            return self._self_test()
        return Ack("rejected", f"action: {action!r} is not implemented by this lamp")

    def _set_manual(self, level: float, now: datetime) -> Ack:
        until = self._runner.next_change(now)
        self._manual = _Hold(level, until)
        self._override = None
        if level > 0:
            self._last_on_level = level
        local_until = until.astimezone(self._runner.tz)
        return Ack("ok", f"level {level:g} % until the next program step at {local_until:%H:%M}")

    def _set_override(self, level: float, minutes: int, now: datetime) -> Ack:
        until = now + timedelta(minutes=minutes)
        self._override = _Hold(level, until)
        local_until = until.astimezone(self._runner.tz)
        return Ack("ok", f"override {level:g} % until {local_until.isoformat()}")

    def _set_program(self, program: LampProgram, now: datetime) -> Ack:
        try:
            self._runner = self._runner.with_program(program)
        except ProgramError as exc:
            return Ack("rejected", f"params.program.{exc.field}: {exc.reason}")
        # The new program applies at once; a running override keeps its time.
        self._manual = None
        level = self._runner.level_at(now)
        return Ack("ok", f"program {program.id!r} stored; level now {level:g} %")

    def _self_test(self) -> Ack:
        """Step 0/50/100 % (instantly in simulated time) and check the power drawn."""
        readings = [(level, self._metered(level)[0]) for level in _SELF_TEST_LEVELS]
        detail = ", ".join(f"{level:g}%: {power:.1f} W" for level, power in readings)
        for level, power in readings:
            expected = lamp_power_w(self.rated_power_w, level)
            if level > 0 and abs(power - expected) > _SELF_TEST_TOLERANCE * expected:
                return Ack(
                    "failed",
                    f"lamp draws {power:.1f} W at {level:g} % "
                    f"(expected {expected:.0f} W): {detail}",
                )
        return Ack("ok", detail)


class SmartPoleModel(LampModel):
    """A smart pole: the streetlight plus air, climate and noise sensors, camera and Wi-Fi."""

    _KIND: ClassVar[DeviceKind] = DeviceKind.SMART_POLE
    _SENSORS: ClassVar[tuple[str, ...]] = (
        "pm25",
        "pm10",
        "temperature_c",
        "humidity_pct",
        "noise_dba",
    )
    # The camera drops off now and then (mean 3 days up) and comes back (mean 20 min).
    _CAMERA_MEAN_UP_S = 3 * 86_400.0
    _CAMERA_MEAN_DOWN_S = 20 * 60.0

    def __init__(
        self,
        device_id: str,
        rated_power_w: float,
        latitude: float,
        longitude: float,
        rng: random.Random,
        faults: FaultConfig | None = None,
        interval_s: float = 60,
        program: LampProgram = DEFAULT_PROGRAM,
        fw: str = "1.4.2",
        *,
        tz: str = DEFAULT_TZ,
    ) -> None:
        super().__init__(
            device_id,
            rated_power_w,
            latitude,
            longitude,
            rng,
            faults,
            interval_s,
            program,
            fw,
            tz=tz,
        )
        # The pole's sensors share its random stream (one Random per device keeps the
        # footprint small); the pole's own ReadingFaults cover them.
        self._environment = EnvironmentModel(device_id, rng, None, interval_s, tz=tz)
        self._camera_online = True
        self._wifi_noise = SmoothNoise(rng, sigma=0.3, tau_s=900)
        self._pole_sampled_at: datetime | None = None

    def _measure(self, now: datetime) -> dict[str, MetricValue]:
        metrics = super()._measure(now)
        air = self._environment.measure(now)
        metrics.update({name: air[name] for name in self._SENSORS})
        elapsed_s = 0.0
        if self._pole_sampled_at is not None:
            elapsed_s = seconds_between(self._pole_sampled_at, now)
        self._pole_sampled_at = now
        metrics["camera_online"] = self._step_camera(elapsed_s)
        metrics["wifi_clients"] = self._wifi_clients(now, elapsed_s)
        return metrics

    def _step_camera(self, elapsed_s: float) -> bool:
        mean_s = self._CAMERA_MEAN_UP_S if self._camera_online else self._CAMERA_MEAN_DOWN_S
        if elapsed_s > 0 and self._rng.random() < 1.0 - math.exp(-elapsed_s / mean_s):
            self._camera_online = not self._camera_online
        return self._camera_online

    def _wifi_clients(self, now: datetime, elapsed_s: float) -> int:
        hour = local_hour(now, self._runner.tz)
        # Evenings out (around 20:00) and the commute bring people under the pole.
        mean = 1.0 + 25.0 * bell(hour, 20.0, 2.5) + 8.0 * traffic_index(hour)
        return max(0, round(mean * math.exp(self._wifi_noise.step(elapsed_s))))
