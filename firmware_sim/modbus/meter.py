"""A simulated energy meter (Eastron SDM630/SDM120 style) on a building's load.

``MeterPhysics`` turns per-phase active power into everything a meter measures, with
the quantities consistent with each other (P = V·I·PF per phase, S² = P² + Q², totals
summed over phases, total PF = P/S). ``EnergyMeterModel`` feeds it from a load profile
and integrates import energy on a fixed grid of simulated time, so the kWh at a moment
does not depend on when the meter was polled before. The lighting cabinet reuses the
physics with the power of its lamps.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from devices.wire import CommandParamsError, DeviceKind, kind_spec, validate_command_params
from firmware_sim.modbus.loads import BuildingLoad, BuildingType, LoadProfile, SmoothNoise
from firmware_sim.model import Ack, MetricValue

NOMINAL_VOLTAGE_V = 220.0  # EVN low-voltage distribution: 220/380 V, 50 Hz
NOMINAL_FREQUENCY_HZ = 50.0
_PHASES = ("l1", "l2", "l3")
_WATT_SECONDS_PER_KWH = 3_600_000.0


@dataclass(frozen=True, slots=True)
class PhaseLoad:
    """Active power drawn on one phase and the power factor of what draws it."""

    power_w: float
    power_factor: float


class MeterPhysics:
    """Voltage, current, apparent and reactive power, frequency and THD around given loads.

    Supply-side quantities (voltage, frequency, THD) wander with smooth seeded noise;
    the per-phase power factor of the load wobbles slightly around what it is given.
    """

    def __init__(self, rng: random.Random, nominal_voltage_v: float = NOMINAL_VOLTAGE_V) -> None:
        self.nominal_voltage_v = nominal_voltage_v
        self._voltage = [SmoothNoise(rng.getrandbits(64), 20 * 60) for _ in _PHASES]
        self._pf = [SmoothNoise(rng.getrandbits(64), 30 * 60) for _ in _PHASES]
        self._frequency = SmoothNoise(rng.getrandbits(64), 5 * 60)
        self._thd = SmoothNoise(rng.getrandbits(64), 60 * 60)
        self._thd_base_pct = rng.uniform(1.8, 3.2)

    def measure(self, now: datetime, phases: Sequence[PhaseLoad]) -> dict[str, float]:
        """Every quantity except energy, for up to three phases (missing ones read 0)."""
        padded = [*phases, *([PhaseLoad(0.0, 1.0)] * (len(_PHASES) - len(phases)))]
        values: dict[str, float] = {}
        total_p = total_s = total_q = 0.0
        for index, load in enumerate(padded):
            energised = index < len(phases)
            voltage = self._phase_voltage(now, index) if energised else 0.0
            pf = min(0.995, max(0.3, load.power_factor + 0.01 * self._pf[index].at(now)))
            apparent = load.power_w / pf
            current = apparent / voltage if voltage > 0 else 0.0
            reactive = math.sqrt(max(0.0, apparent**2 - load.power_w**2))
            values.update(_phase_names(index, voltage, current, load.power_w))
            total_p += load.power_w
            total_s += apparent
            total_q += reactive
        values["power_w"] = total_p
        values["va_total"] = total_s
        values["var_total"] = total_q
        # With no load the power factor is undefined; SDM meters then show 1.
        values["power_factor"] = total_p / total_s if total_s > 0 else 1.0
        values["frequency_hz"] = NOMINAL_FREQUENCY_HZ + 0.05 * self._frequency.at(now)
        values["voltage_thd_pct"] = self._thd_base_pct + 0.8 * self._thd.at(now)
        return values

    def _phase_voltage(self, now: datetime, index: int) -> float:
        return self.nominal_voltage_v * (1 + 0.015 * self._voltage[index].at(now))


def _phase_names(index: int, voltage: float, current: float, power: float) -> dict[str, float]:
    """Register names of one phase; L1's voltage and current are the catalogue metrics."""
    if index == 0:
        return {"voltage_v": voltage, "current_a": current, "power_l1_w": power}
    phase = _PHASES[index]
    return {f"voltage_{phase}_v": voltage, f"current_{phase}_a": current, f"power_{phase}_w": power}


def with_energy(values: dict[str, float], import_kwh: float, export_kwh: float) -> dict[str, float]:
    """Add the energy registers: total kWh is import plus export, as SDM meters count it."""
    values["import_kwh"] = import_kwh
    values["export_kwh"] = export_kwh
    values["energy_kwh"] = import_kwh + export_kwh
    return values


class GridEnergy:
    """Energy of a power curve integrated on a fixed grid of simulated time.

    Each whole step adds the power at its start times its length; the partial step up
    to ``now`` is added the same way. The result is a function of ``now`` only, never
    runs backwards, and costs one power evaluation per step passed.
    """

    def __init__(
        self,
        power_w: Callable[[datetime], float],
        start: datetime,
        initial_kwh: float,
        step_s: float = 60.0,
    ) -> None:
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        self._power_w = power_w
        self._step = timedelta(seconds=step_s)
        self._grid_time = start
        self._grid_kwh = initial_kwh

    def kwh_at(self, now: datetime) -> float:
        while self._grid_time + self._step <= now:
            self._grid_kwh += self._kwh(self._grid_time, self._step)
            self._grid_time += self._step
        if now <= self._grid_time:
            return self._grid_kwh
        return self._grid_kwh + self._kwh(self._grid_time, now - self._grid_time)

    def _kwh(self, at: datetime, span: timedelta) -> float:
        return self._power_w(at) * span.total_seconds() / _WATT_SECONDS_PER_KWH


class EnergyMeterModel:
    """A building's meter: three-phase (SDM630) or single-phase (SDM120), no commands."""

    kind = DeviceKind.ENERGY_METER

    def __init__(
        self,
        device_id: str,
        load: LoadProfile,
        rng: random.Random,
        start: datetime,
        *,
        phases: Literal[1, 3] = 3,
        nominal_voltage_v: float = NOMINAL_VOLTAGE_V,
        initial_import_kwh: float | None = None,
        interval_s: float = 60.0,
        firmware: str = "sim-sdm-1.0",
    ) -> None:
        if phases not in (1, 3):
            raise ValueError("phases must be 1 or 3")
        self.device_id = device_id
        self.load = load
        self.phases = phases
        self.firmware = firmware
        self._interval_s = interval_s
        self._physics = MeterPhysics(rng, nominal_voltage_v)
        self._base_pf = rng.uniform(0.88, 0.96)
        self._shares = _phase_shares(rng, phases)
        # Drawn even when given, so the draws after it do not depend on the argument.
        drawn_kwh = rng.uniform(20_000, 400_000)  # a meter in service for years
        opening_kwh = drawn_kwh if initial_import_kwh is None else initial_import_kwh
        self._import = GridEnergy(load.power_w, start, opening_kwh)
        # The poller thread of the Modbus server and the simulator both read the meter.
        self._lock = threading.Lock()

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def measurements(self, now: datetime) -> dict[str, float]:
        """Every register quantity at ``now`` (names of ``devices.wire.registers``)."""
        total_w = self.load.power_w(now)
        phases = [PhaseLoad(total_w * share, self._base_pf) for share in self._shares]
        with self._lock:
            import_kwh = self._import.kwh_at(now)
        return with_energy(self._physics.measure(now, phases), import_kwh, 0.0)

    def sample(self, now: datetime) -> dict[str, MetricValue]:
        values = self.measurements(now)
        return {name: values[name] for name in kind_spec(self.kind).metric_names()}

    def state(self, now: datetime) -> dict[str, Any]:
        return {"fw": self.firmware, "interval_s": max(1, round(self._interval_s))}

    def handle(self, action: str, params: dict[str, Any], now: datetime) -> Ack:
        try:
            validate_command_params(self.kind, action, params)
        except CommandParamsError as exc:
            return Ack("rejected", str(exc))
        return Ack("failed", f"{action} is not implemented by this meter")

    # A meter has no outputs and no inputs: the Modbus server asks anyway.
    def coil_states(self, now: datetime) -> list[bool]:
        return []

    def discrete_input_states(self, now: datetime) -> list[bool]:
        return []

    def write_coil(self, address: int, on: bool, now: datetime) -> None:
        raise ValueError(f"{self.device_id} has no coil {address}")


def _phase_shares(rng: random.Random, phases: int) -> tuple[float, ...]:
    """How a building's load splits over its phases: never perfectly balanced."""
    if phases == 1:
        return (1.0,)
    weights = [1 + rng.uniform(-0.08, 0.08) for _ in range(phases)]
    total = sum(weights)
    return tuple(weight / total for weight in weights)


def building_meter(
    device_id: str,
    building: BuildingType,
    seed: int | str,
    start: datetime,
    *,
    scale: float = 1.0,
    phases: Literal[1, 3] = 3,
) -> EnergyMeterModel:
    """The meter of one building, all randomness from ``Random(f"{seed}:{device_id}")``."""
    rng = random.Random(f"{seed}:{device_id}")  # noqa: S311 - simulation, not secrets
    load = BuildingLoad(building, rng, scale=scale)
    return EnergyMeterModel(device_id, load, rng, start, phases=phases)
