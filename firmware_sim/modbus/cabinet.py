"""A simulated lighting cabinet: contactors feeding circuits of lamps, a meter, a door.

Each circuit feeds a number of lamps of a rated power on one phase; its contactor is a
coil of the cabinet controller. The cabinet's meter measures what the lamps on closed
circuits draw at their dim level (set per circuit with ``set_lamp_level``, so dimming
shows at cabinet level). Energy accumulates exactly: power only changes when a
contactor, a level or the time does, and every change first books the energy so far.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devices.wire import CommandParamsError, DeviceKind, kind_spec, validate_command_params
from devices.wire.commands import SwitchCircuitParams
from firmware_sim.modbus.meter import NOMINAL_VOLTAGE_V, MeterPhysics, PhaseLoad, with_energy
from firmware_sim.model import Ack, MetricValue

# Called as ``listener(circuit, on, now)`` after a contactor changes (any thread).
SwitchListener = Callable[[int, bool, datetime], None]

LAMP_STANDBY_W = 0.5  # an LED driver powered but dimmed to 0 still draws a little
_WATT_SECONDS_PER_KWH = 3_600_000.0


@dataclass(frozen=True, slots=True)
class CircuitSpec:
    """What one circuit feeds: ``lamps`` lamps of ``lamp_power_w`` on ``phase`` (0..2)."""

    lamps: int
    lamp_power_w: float
    phase: int | None = None  # None: circuits take phases L1, L2, L3, L1, ... in turn


DEFAULT_CIRCUITS = (
    CircuitSpec(20, 90.0),  # secondary road
    CircuitSpec(16, 120.0),  # main road
    CircuitSpec(24, 60.0),
    CircuitSpec(30, 40.0),  # residential lane
)


def lamp_power_w(rated_w: float, level: float) -> float:
    """What one LED lamp draws at ``level`` percent: a driver floor plus a linear part."""
    if level <= 0:
        return LAMP_STANDBY_W
    return rated_w * (0.05 + 0.95 * level / 100)


def lamp_power_factor(level: float) -> float:
    """LED drivers lose power factor when dimmed: about 0.96 at full, 0.84 at 30 %."""
    return 0.70 + 0.26 * math.sqrt(max(0.0, min(level, 100.0)) / 100)


@dataclass(slots=True)
class _Circuit:
    spec: CircuitSpec
    phase: int
    closed: bool
    level: float = 100.0

    def power_w(self) -> float:
        if not self.closed:
            return 0.0
        return self.spec.lamps * lamp_power_w(self.spec.lamp_power_w, self.level)

    def apparent_va(self) -> float:
        return self.power_w() / lamp_power_factor(self.level)


class CabinetModel:
    """A cabinet of ``circuits`` (default 4) with a three-phase meter and a door switch."""

    kind = DeviceKind.LIGHTING_CABINET

    def __init__(
        self,
        device_id: str,
        rng: random.Random,
        start: datetime,
        circuits: Sequence[CircuitSpec] = DEFAULT_CIRCUITS,
        *,
        closed: bool = False,
        nominal_voltage_v: float = NOMINAL_VOLTAGE_V,
        initial_import_kwh: float | None = None,
        interval_s: float = 60.0,
        firmware: str = "sim-cabinet-1.0",
    ) -> None:
        max_circuits = kind_spec(self.kind).max_circuits
        if not 1 <= len(circuits) <= max_circuits:
            raise ValueError(f"a cabinet has 1..{max_circuits} circuits, got {len(circuits)}")
        self.device_id = device_id
        self.firmware = firmware
        self._interval_s = interval_s
        self._circuits = [
            _Circuit(spec, index % 3 if spec.phase is None else spec.phase, closed)
            for index, spec in enumerate(circuits)
        ]
        self._physics = MeterPhysics(rng, nominal_voltage_v)
        drawn_kwh = rng.uniform(5_000, 80_000)  # drawn even when given: stable draws
        self._import_kwh = drawn_kwh if initial_import_kwh is None else initial_import_kwh
        self._booked_until = start
        self._door_open = False
        # The Modbus server thread and the simulator (or a test) both act on the cabinet.
        self._lock = threading.RLock()
        self._switch_listeners: list[SwitchListener] = []

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @property
    def circuit_count(self) -> int:
        return len(self._circuits)

    @property
    def door_open(self) -> bool:
        return self._door_open

    def is_closed(self, circuit: int) -> bool:
        return self._circuit(circuit).closed

    def circuit_power_w(self, circuit: int) -> float:
        """What ``circuit`` draws now (0 with its contactor open)."""
        with self._lock:
            return self._circuit(circuit).power_w()

    def switch_circuit(self, circuit: int, on: bool, now: datetime) -> None:
        """Close (``on``) or open the contactor of ``circuit`` (1-based) at ``now``."""
        with self._lock:
            target = self._circuit(circuit)
            self._book_energy(now)
            changed = target.closed != on
            target.closed = on
            listeners = list(self._switch_listeners)
        if changed:
            for listener in listeners:
                listener(circuit, on, now)

    def add_switch_listener(self, listener: SwitchListener) -> None:
        """Tell ``listener`` about every contactor change (the lamps on the circuit)."""
        with self._lock:
            self._switch_listeners.append(listener)

    def set_lamp_level(self, circuit: int, level: float, now: datetime) -> None:
        """The dim level (0-100 %) of the lamps on ``circuit`` from ``now`` on."""
        if not 0 <= level <= 100:
            raise ValueError(f"level {level} is not within 0..100")
        with self._lock:
            target = self._circuit(circuit)
            self._book_energy(now)
            target.level = level

    def open_door(self) -> None:
        self._door_open = True

    def close_door(self) -> None:
        self._door_open = False

    def measurements(self, now: datetime) -> dict[str, float]:
        """Every register quantity of the cabinet's meter at ``now``."""
        with self._lock:
            self._book_energy(now)
            phases = [self._phase_load(phase) for phase in range(3)]
            import_kwh = self._import_kwh
        return with_energy(self._physics.measure(now, phases), import_kwh, 0.0)

    def sample(self, now: datetime) -> dict[str, MetricValue]:
        metrics: dict[str, MetricValue] = {}
        values = self.measurements(now)
        for name in kind_spec(DeviceKind.ENERGY_METER).metric_names():
            metrics[name] = values[name]
        metrics["door_open"] = self._door_open
        for number, closed in enumerate(self.coil_states(now), start=1):
            metrics[f"circuit_{number}_on"] = closed
        return metrics

    def state(self, now: datetime) -> dict[str, Any]:
        return {
            "circuits": {str(n): c.closed for n, c in enumerate(self._circuits, start=1)},
            "door_open": self._door_open,
            "fw": self.firmware,
            "interval_s": max(1, round(self._interval_s)),
        }

    def handle(self, action: str, params: dict[str, Any], now: datetime) -> Ack:
        try:
            command = validate_command_params(self.kind, action, params)
        except CommandParamsError as exc:
            return Ack("rejected", str(exc))
        if not isinstance(command, SwitchCircuitParams):
            return Ack("failed", f"{action} is not implemented by this cabinet")
        if command.circuit > self.circuit_count:
            reason = f"this cabinet has {self.circuit_count} circuits"
            return Ack("rejected", f"params.circuit: {reason}")
        self.switch_circuit(command.circuit, command.on, now)
        return Ack("ok", f"circuit {command.circuit} {'on' if command.on else 'off'}")

    # Modbus side: coil n-1 is the contactor of circuit n, discrete input 0 the door.
    def coil_states(self, now: datetime) -> list[bool]:
        with self._lock:
            return [circuit.closed for circuit in self._circuits]

    def discrete_input_states(self, now: datetime) -> list[bool]:
        return [self._door_open]

    def write_coil(self, address: int, on: bool, now: datetime) -> None:
        self.switch_circuit(address + 1, on, now)

    def _circuit(self, circuit: int) -> _Circuit:
        if not 1 <= circuit <= len(self._circuits):
            raise ValueError(f"circuit {circuit} not in 1..{len(self._circuits)}")
        return self._circuits[circuit - 1]

    def _phase_load(self, phase: int) -> PhaseLoad:
        on_phase = [c for c in self._circuits if c.phase == phase]
        power = sum(c.power_w() for c in on_phase)
        apparent = sum(c.apparent_va() for c in on_phase)
        return PhaseLoad(power, power / apparent if apparent > 0 else 1.0)

    def _book_energy(self, now: datetime) -> None:
        """Add the energy drawn at the present power since the last booking."""
        if now <= self._booked_until:
            return
        seconds = (now - self._booked_until).total_seconds()
        power = sum(circuit.power_w() for circuit in self._circuits)
        self._import_kwh += power * seconds / _WATT_SECONDS_PER_KWH
        self._booked_until = now
