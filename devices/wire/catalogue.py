"""Device kinds and their metric catalogue: name, unit, valid range, and commands.

Metric names carry their unit (``power_w``, ``water_level_m``); pollutants are µg/m³
as Vietnam's AQI method requires. Ranges are physical plausibility limits: a value
outside them is a faulty sensor or a bad payload, never a reading to store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class DeviceKind(StrEnum):
    STREETLIGHT = "streetlight"
    SMART_POLE = "smart_pole"
    ENV_MONITOR = "env_monitor"
    FLOOD_GAUGE = "flood_gauge"
    ENERGY_METER = "energy_meter"
    LIGHTING_CABINET = "lighting_cabinet"


class Transport(StrEnum):
    MQTT = "mqtt"
    MODBUS_TCP = "modbus_tcp"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric a kind reports. ``boolean`` metrics take true/false (or 0/1)."""

    name: str
    unit: str
    minimum: float | None = None
    maximum: float | None = None
    boolean: bool = False
    description: str = ""

    def check(self, value: object) -> float | bool:
        """Return the value in its stored type, or raise ``ValueError`` saying why not."""
        if self.boolean:
            if isinstance(value, bool):
                return value
            if isinstance(value, int | float) and value in (0, 1):
                return bool(value)
            raise ValueError(f"expected true/false, got {type(value).__name__} {value!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number, got {value!r}")
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"{number} {self.unit} is below the minimum {self.minimum}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"{number} {self.unit} is above the maximum {self.maximum}")
        return number


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: DeviceKind
    transport: Transport
    metrics: tuple[MetricSpec, ...]
    commands: tuple[str, ...]
    is_lamp: bool = False
    max_circuits: int = 0
    _by_name: dict[str, MetricSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({m.name: m for m in self.metrics})

    def metric(self, name: str) -> MetricSpec | None:
        """The spec of ``name``, including numbered circuit metrics of a cabinet."""
        spec = self._by_name.get(name)
        if spec is not None:
            return spec
        match = _CIRCUIT_METRIC.fullmatch(name)
        if match and 1 <= int(match.group(1)) <= self.max_circuits:
            return MetricSpec(name, "bool", boolean=True, description="circuit contactor closed")
        return None

    def metric_names(self) -> list[str]:
        names = [m.name for m in self.metrics]
        names += [f"circuit_{n}_on" for n in range(1, self.max_circuits + 1)]
        return names


_CIRCUIT_METRIC = re.compile(r"circuit_([0-9]{1,2})_on")

_LAMP = (
    MetricSpec("power_w", "W", 0, 1000, description="active power drawn"),
    MetricSpec("energy_kwh", "kWh", 0, 10_000_000, description="cumulative active energy"),
    MetricSpec("voltage_v", "V", 0, 300, description="supply voltage"),
    MetricSpec("current_a", "A", 0, 20, description="supply current"),
    MetricSpec("power_factor", "", 0, 1, description="power factor"),
    MetricSpec("dim_level", "%", 0, 100, description="light level"),
    MetricSpec("lamp_on", "bool", boolean=True, description="lamp lit"),
    MetricSpec("operating_hours", "h", 0, 500_000, description="cumulative burning hours"),
)
_CLIMATE = (
    MetricSpec("temperature_c", "°C", -20, 70, description="air temperature"),
    MetricSpec("humidity_pct", "%", 0, 100, description="relative humidity"),
    MetricSpec("noise_dba", "dBA", 0, 150, description="equivalent sound level"),
)
_PM = (
    MetricSpec("pm25", "µg/m³", 0, 1000, description="PM2.5 concentration"),
    MetricSpec("pm10", "µg/m³", 0, 2000, description="PM10 concentration"),
)
_GASES = (
    MetricSpec("no2", "µg/m³", 0, 10_000, description="NO2 concentration"),
    MetricSpec("so2", "µg/m³", 0, 10_000, description="SO2 concentration"),
    MetricSpec("co", "µg/m³", 0, 300_000, description="CO concentration"),
    MetricSpec("o3", "µg/m³", 0, 3000, description="O3 concentration"),
)
_METER = (
    MetricSpec("voltage_v", "V", 0, 1000, description="phase voltage (L1)"),
    MetricSpec("current_a", "A", 0, 10_000, description="phase current (L1)"),
    MetricSpec("power_w", "W", -10_000_000, 10_000_000, description="total active power"),
    MetricSpec("energy_kwh", "kWh", 0, 1e12, description="total active energy"),
    MetricSpec("power_factor", "", -1, 1, description="total power factor"),
    MetricSpec("frequency_hz", "Hz", 40, 70, description="supply frequency"),
)
_LAMP_COMMANDS = ("set_dim", "switch", "override", "set_program", "self_test")

CATALOGUE: dict[DeviceKind, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(DeviceKind.STREETLIGHT, Transport.MQTT, _LAMP, _LAMP_COMMANDS, is_lamp=True),
        KindSpec(
            DeviceKind.SMART_POLE,
            Transport.MQTT,
            (
                *_LAMP,
                *_PM,
                *_CLIMATE,
                MetricSpec("camera_online", "bool", boolean=True, description="camera reachable"),
                MetricSpec("wifi_clients", "count", 0, 10_000, description="public Wi-Fi users"),
            ),
            _LAMP_COMMANDS,
            is_lamp=True,
        ),
        KindSpec(
            DeviceKind.ENV_MONITOR,
            Transport.MQTT,
            (*_PM, *_GASES, *_CLIMATE),
            ("self_test",),
        ),
        KindSpec(
            DeviceKind.FLOOD_GAUGE,
            Transport.MQTT,
            (
                MetricSpec(
                    "water_level_m", "m", -10, 20, description="level on the national datum"
                ),
                MetricSpec("rain_mm", "mm", 0, 500, description="rain since the last reading"),
                MetricSpec("battery_v", "V", 0, 30, description="battery voltage"),
            ),
            ("set_interval",),
        ),
        KindSpec(DeviceKind.ENERGY_METER, Transport.MODBUS_TCP, _METER, ()),
        KindSpec(
            DeviceKind.LIGHTING_CABINET,
            Transport.MODBUS_TCP,
            (*_METER, MetricSpec("door_open", "bool", boolean=True, description="cabinet door")),
            ("switch_circuit",),
            max_circuits=16,
        ),
    )
}


def kind_spec(kind: DeviceKind | str) -> KindSpec:
    """The catalogue entry of ``kind``; ``ValueError`` names the known kinds."""
    try:
        return CATALOGUE[DeviceKind(kind)]
    except ValueError:
        known = ", ".join(k.value for k in DeviceKind)
        raise ValueError(f"unknown device kind {kind!r}; known kinds: {known}") from None
