"""Builds the physics model of an MQTT device kind, seeded per device.

Each device gets its own ``random.Random(f"{seed}:{device_id}")``, so the same scenario
seed gives the same readings whatever the order devices are built in. Modbus kinds
(energy meter, lighting cabinet) are built by ``firmware_sim.modbus``, not here.
"""

from __future__ import annotations

import random
from typing import Any

from devices.wire import DeviceKind, Transport, kind_spec
from firmware_sim.faults import FaultConfig
from firmware_sim.model import DeviceModel
from firmware_sim.physics.environment import EnvironmentModel
from firmware_sim.physics.flood import FloodGaugeModel
from firmware_sim.physics.lamp import LampModel, SmartPoleModel

# Rated power when a scenario gives none: a secondary-road LED fitting, and a smart
# pole's brighter main-road head (DOMAIN.md: 60–90 W and 100–150 W).
DEFAULT_RATED_POWER_W = {DeviceKind.STREETLIGHT: 90.0, DeviceKind.SMART_POLE: 120.0}
DEFAULT_INTERVAL_S = {
    DeviceKind.STREETLIGHT: 60.0,
    DeviceKind.SMART_POLE: 60.0,
    DeviceKind.ENV_MONITOR: 60.0,
    DeviceKind.FLOOD_GAUGE: 300.0,
}
KIND_OPTIONS = {
    DeviceKind.STREETLIGHT: frozenset({"program", "fw", "tz"}),
    DeviceKind.SMART_POLE: frozenset({"program", "fw", "tz"}),
    DeviceKind.ENV_MONITOR: frozenset({"fw", "tz"}),
    DeviceKind.FLOOD_GAUGE: frozenset(
        {"base_m", "tide_amplitude_m", "trend_m_per_day", "fw", "tz"}
    ),
}


def device_rng(seed: int | str, device_id: str) -> random.Random:
    """The device's own random stream: same seed and id, same readings."""
    return random.Random(f"{seed}:{device_id}")  # noqa: S311 (simulation, not security)


def build_model(
    kind: DeviceKind | str,
    device_id: str,
    *,
    seed: int | str,
    latitude: float,
    longitude: float,
    rated_power_w: float | None = None,
    faults: FaultConfig | None = None,
    interval_s: float | None = None,
    **kind_options: Any,
) -> DeviceModel:
    """The model of one MQTT device; ``ValueError`` for Modbus kinds or unknown options."""
    device_kind = DeviceKind(kind_spec(kind).kind)
    if kind_spec(device_kind).transport is Transport.MODBUS_TCP:
        raise ValueError(
            f"{device_kind} is a Modbus TCP device: it is built by firmware_sim.modbus"
        )
    _check_options(device_kind, rated_power_w, kind_options)
    rng = device_rng(seed, device_id)
    fault_config = faults or FaultConfig()
    interval = interval_s if interval_s is not None else DEFAULT_INTERVAL_S[device_kind]
    if device_kind in (DeviceKind.STREETLIGHT, DeviceKind.SMART_POLE):
        lamp_class = SmartPoleModel if device_kind is DeviceKind.SMART_POLE else LampModel
        power = rated_power_w if rated_power_w is not None else DEFAULT_RATED_POWER_W[device_kind]
        return lamp_class(
            device_id,
            power,
            latitude,
            longitude,
            rng,
            fault_config,
            interval,
            **kind_options,
        )
    if device_kind is DeviceKind.ENV_MONITOR:
        return EnvironmentModel(device_id, rng, fault_config, interval, **kind_options)
    return FloodGaugeModel(device_id, rng, fault_config, interval, **kind_options)


def _check_options(
    kind: DeviceKind, rated_power_w: float | None, kind_options: dict[str, Any]
) -> None:
    if rated_power_w is not None and not kind_spec(kind).is_lamp:
        raise ValueError(f"rated_power_w applies to lamps only, not to {kind}")
    unknown = sorted(set(kind_options) - KIND_OPTIONS[kind])
    if unknown:
        allowed = ", ".join(sorted(KIND_OPTIONS[kind]))
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {kind}; allowed: {allowed}")
