"""``pharos sim run``: a scenario's fleet registered in the registry and run on the broker.

The simulator only knows the wire contract; this composition gives it what a factory
gives real devices. ``provision_scenario`` registers every device of the scenario
(upsert) and learns each MQTT device's secret: the registry shows a secret only once,
so an existing device's credentials are rotated, exactly like flashing a device.
Modbus devices are registered with the host and port the fleet serves them on.
``run_simulation`` migrates the database, starts the fleet's Modbus servers,
provisions, connects the MQTT devices to the configured broker, and runs until the
scenario's end or until ``stop`` is set (the CLI sets it on Ctrl-C). Every blocking
database call runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.registry.models import Group
from devices.registry.schemas import DeviceCreate, GroupCreate
from devices.registry.service import Registry
from devices.wire import DeviceKind
from firmware_sim.fleet import Fleet, FleetCounters, ModbusEndpoint
from firmware_sim.mqtt.hub import BrokerAddress
from firmware_sim.scenario import DeviceSpec, Scenario, expand, limit_devices, load_scenario
from pharos.database import upgrade
from pharos.runtime import Runtime, build_runtime
from pharos.settings import Settings
from pharos_core.clock import Clock, HeldClock, SteppedClock

log = logging.getLogger(__name__)

ACTOR = "simulator"
FIRMWARE = "sim-1.0.0"
_BROKER_READY_TIMEOUT_S = 15.0
_BROKER_READY_POLL_S = 0.1


_LIT_KINDS = (DeviceKind.STREETLIGHT, DeviceKind.SMART_POLE)


def lighting_group(district: str) -> str:
    """The group of a district's lamps and smart poles: ``lights-ninh-kieu``."""
    plain = unicodedata.normalize("NFKD", district.replace("Đ", "D").replace("đ", "d"))
    ascii_name = plain.encode("ascii", "ignore").decode().lower()
    return "lights-" + "-".join(re.findall(r"[a-z0-9]+", ascii_name))


def ensure_lighting_groups(registry: Registry, specs: Sequence[DeviceSpec]) -> None:
    """One group per district with lamps, so programs and energy reports have targets."""
    for district in sorted({s.district for s in specs if s.kind in _LIT_KINDS}):
        group_id = lighting_group(district)
        if registry.session.get(Group, group_id) is None:
            registry.create_group(
                GroupCreate(id=group_id, name=f"Chiếu sáng {district}", district=district)
            )


def _device_create(spec: DeviceSpec, endpoint: ModbusEndpoint | None) -> DeviceCreate:
    modbus: dict[str, object] = {}
    if endpoint is not None:
        modbus = {
            "modbus_host": endpoint.host,
            "modbus_port": endpoint.port,
            "modbus_unit": endpoint.unit,
            "modbus_word_order": endpoint.word_order,
            "poll_interval_s": spec.interval_s,
        }
    return DeviceCreate(
        id=spec.device_id,
        kind=spec.kind,
        name=spec.name,
        latitude=spec.latitude,
        longitude=spec.longitude,
        district=spec.district,
        street=spec.street,
        pole=spec.pole,
        cabinet_id=spec.cabinet_id,
        cabinet_circuit=spec.cabinet_circuit,
        rated_power_w=spec.rated_power_w,
        firmware=FIRMWARE,
        groups=[lighting_group(spec.district)] if spec.kind in _LIT_KINDS else [],
        **modbus,
    )


def provision_scenario(
    runtime: Runtime,
    specs: Sequence[DeviceSpec],
    *,
    modbus_endpoints: Mapping[str, ModbusEndpoint] | None = None,
) -> dict[str, str]:
    """Register ``specs`` (create or update) and return each MQTT device's secret.

    New devices get fresh credentials; existing ones are rotated (their old secret is
    gone for good). Modbus devices need their endpoint in ``modbus_endpoints``.
    Blocking: call it from a worker thread in async code.
    """
    endpoints = modbus_endpoints or {}
    missing = [s.device_id for s in specs if s.is_modbus and s.device_id not in endpoints]
    if missing:
        raise ValueError(f"no Modbus endpoint for {', '.join(missing[:5])}")
    # Cabinets first: a lamp names the cabinet that feeds it, which must exist.
    ordered = sorted(specs, key=lambda s: (s.cabinet_id is not None, not s.is_modbus))
    rows = [_device_create(s, endpoints.get(s.device_id)) for s in ordered]
    secrets: dict[str, str] = {}
    with runtime.registry(ACTOR) as registry:
        ensure_lighting_groups(registry, specs)
        outcome = registry.upsert_devices(rows)
        secrets.update({c.username: c.secret for c in outcome.credentials})
        for spec in specs:
            if not spec.is_modbus and spec.device_id not in secrets:
                secrets[spec.device_id] = registry.rotate_credentials(spec.device_id).secret
    log.info(
        "provisioned %d devices (%d created, %d updated, %d unchanged)",
        len(rows),
        len(outcome.created),
        len(outcome.updated),
        len(outcome.unchanged),
    )
    return secrets


def wait_for_broker_accepts(
    broker: BrokerAddress, username: str, secret: str, timeout: float = _BROKER_READY_TIMEOUT_S
) -> bool:
    """Whether the broker accepts ``username`` within ``timeout`` (it reloads its files).

    The login keeps the device's persistent session (no clean start) and leaves with
    DISCONNECT, so no Last Will and no queued command is lost. Blocking.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _login_accepted(broker, username, secret):
            return True
        time.sleep(_BROKER_READY_POLL_S)  # polling the broker's reload, in a worker thread
    return False


def _login_accepted(broker: BrokerAddress, username: str, secret: str) -> bool:
    answer: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, clean_session=False)
    client.username_pw_set(username, secret)
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.append(not reason.is_failure)
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except OSError:
        return False
    deadline = time.monotonic() + 5.0
    while not answer and time.monotonic() < deadline and client.socket() is not None:
        client.loop(timeout=0.1)
    if answer and answer[0]:
        client.disconnect()
        client.loop(timeout=0.1)
    else:
        client.loop(timeout=0.01)
    return bool(answer and answer[0])


def scenario_clock(scenario: Scenario, acceleration: float | Literal["max"]) -> Clock:
    """A stepped clock for "max", else accelerated time held until the devices start."""
    if acceleration == "max":
        return SteppedClock(scenario.start)
    return HeldClock(scenario.start, factor=acceleration)


def prepared_scenario(
    scenario_path: Path | str,
    seed: int | None = None,
    duration: timedelta | None = None,
    start: datetime | None = None,
) -> Scenario:
    """A scenario file with the caller's seed, duration and start instead of its own."""
    scenario = load_scenario(scenario_path)
    changes: dict[str, object] = {}
    if seed is not None:
        changes["seed"] = seed
    if duration is not None:
        changes["duration"] = duration
    if start is not None:
        changes["start"] = start
    return scenario.model_copy(update=changes) if changes else scenario


async def run_simulation(
    settings: Settings,
    scenario_path: Path | str,
    *,
    devices: int | None = None,
    accelerate: float | Literal["max"] | None = None,
    seed: int | None = None,
    progress: Callable[[FleetCounters], None] | None = None,
    stop: asyncio.Event | None = None,
    duration: timedelta | None = None,
) -> FleetCounters:
    """Run a scenario's fleet against ``settings.broker``; the counters at the end.

    ``devices`` keeps that many devices spread over the scenario; ``accelerate`` (1 =
    real time, "max" = as fast as the broker keeps up), ``seed`` and ``duration``
    override the file's. Returns when the simulated time is over or ``stop`` is set.
    """
    scenario = prepared_scenario(scenario_path, seed, duration)
    specs = expand(scenario)
    if devices is not None:
        specs = limit_devices(specs, devices)
    acceleration = accelerate if accelerate is not None else scenario.acceleration
    clock = scenario_clock(scenario, acceleration)
    broker = BrokerAddress(settings.broker.host, settings.broker.port)
    runtime = await asyncio.to_thread(build_runtime, settings)
    try:
        await asyncio.to_thread(upgrade, runtime.engine)
        fleet = Fleet(specs, broker=broker, clock=clock, seed=scenario.seed, events=scenario.events)
        async with fleet:
            secrets = await asyncio.to_thread(
                provision_scenario, runtime, specs, modbus_endpoints=fleet.modbus_endpoints
            )
            if secrets:
                await wait_for_accounts(broker, secrets)
            fleet.start_mqtt(secrets)
            return await fleet.run_until(scenario.end, stop=stop, progress=progress)
    finally:
        await asyncio.to_thread(runtime.close)


async def wait_for_accounts(broker: BrokerAddress, secrets: Mapping[str, str]) -> None:
    """The registry told the broker to reload; connect only once it knows the devices."""
    username, secret = max(secrets.items())  # the last written is as good as any
    if not await asyncio.to_thread(wait_for_broker_accepts, broker, username, secret):
        log.warning(
            "the broker at %s:%d does not accept %s yet: devices will retry with back-off",
            broker.host,
            broker.port,
            username,
        )


__all__ = [
    "prepared_scenario",
    "provision_scenario",
    "run_simulation",
    "scenario_clock",
    "wait_for_accounts",
    "wait_for_broker_accepts",
]
