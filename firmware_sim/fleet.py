"""A fleet: thousands of simulated devices in one process on one simulated clock.

``Fleet`` turns a scenario's ``DeviceSpec`` list into running devices: MQTT devices
(``MqttDevice`` in one ``MqttHub``: staggered, bounded connects, one keepalive ticker)
and Modbus TCP devices (meters and cabinets on servers of their own, on free ports,
whose host and port it reports per device id). It applies the scenario's events to
the models, keeps each cabinet's meter following the lamps on its circuits, drives
the clock (``drive_stepped_clock`` for "as fast as possible", otherwise the clock runs
by itself), reports progress counters, and stops every device cleanly (``offline``
published) on the way out.

The two phases match how devices are provisioned: entering the fleet builds every
model and starts the Modbus servers (so their ports can be registered), then
``start_mqtt(secrets)`` connects the MQTT devices with the secrets the registry gave.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from devices.wire import DeviceKind, WordOrder
from devices.wire.registers import get_register_map
from firmware_sim.modbus import (
    BuildingType,
    CabinetModel,
    CircuitSpec,
    EnergyMeterModel,
    ModbusDeviceServer,
    ModbusServerPool,
    ModbusUnit,
    building_meter,
)
from firmware_sim.model import DeviceModel
from firmware_sim.mqtt.device import MqttDevice
from firmware_sim.mqtt.hub import BrokerAddress, MqttHub
from firmware_sim.mqtt.link import WireOptions
from firmware_sim.physics.factory import build_model
from firmware_sim.physics.flood import MORNING_HIGH_HOUR, FloodGaugeModel, tide_m
from firmware_sim.physics.lamp import LampModel
from firmware_sim.scenario import (
    DeviceSpec,
    Event,
    FloodEveningEvent,
    PollutionEpisodeEvent,
    RainEvent,
    RiverTrendEvent,
)
from pharos_core.clock import Clock, HeldClock, SteppedClock

_SETTLE_ROUNDS = 5
_CALM_POLL_S = 0.2
_CABINET_FEED_S = 60.0  # (sim) how often a cabinet's meter catches up with its lamps
MODBUS_UNIT_ID = 1
CAN_THO = timezone(timedelta(hours=7))  # the tide is locked to local solar time


# --- the clock driver ---------------------------------------------------------------------


async def _settle() -> None:
    """Let every task woken by a clock step run to its next await."""
    for _ in range(_SETTLE_ROUNDS):
        await asyncio.sleep(0)


async def _calm_or_stopped(hub: MqttHub, stop: asyncio.Event | None) -> bool:
    """Wait for the hub to be calm; ``False`` if ``stop`` was set first."""
    while not hub.is_calm():
        if stop is not None and stop.is_set():
            return False
        try:
            async with asyncio.timeout(_CALM_POLL_S):
                await hub.wait_calm()
        except TimeoutError:
            continue
    return not (stop is not None and stop.is_set())


async def drive_stepped_clock(
    clock: SteppedClock, hub: MqttHub, end: datetime, stop: asyncio.Event | None = None
) -> None:
    """Run simulated time to ``end`` as fast as the broker keeps up.

    Time jumps from one sleeper's wake-up to the next, but only once the hub is calm
    (no connection attempt under way, publishes acknowledged down to its limit), so
    what devices publish never depends on how fast the machine is.
    """
    while True:
        await _settle()
        if not await _calm_or_stopped(hub, stop):
            return
        wake = clock.next_wake()
        if wake is None or wake > end:
            break
        clock.advance(max(0.0, (wake - clock.now()).total_seconds()))
    if end > clock.now():
        clock.advance((end - clock.now()).total_seconds())
    await _settle()
    await _calm_or_stopped(hub, stop)


async def run_clock_until(clock: Clock, end: datetime, stop: asyncio.Event | None) -> None:
    """Wait (simulated) until ``end`` on a clock that runs by itself, or until ``stop``."""
    remaining = (end - clock.now()).total_seconds()
    if remaining <= 0:
        return
    if stop is None:
        await clock.sleep(remaining)
        return
    async with asyncio.TaskGroup() as tasks:
        sleeper = tasks.create_task(clock.sleep(remaining))
        stopper = tasks.create_task(stop.wait())
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        sleeper.cancel()
        stopper.cancel()


# --- counters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetCounters:
    """A snapshot for the progress line (and what a run returns)."""

    sim_time: datetime
    devices: int
    mqtt_devices: int
    modbus_devices: int
    connected: int
    messages_sent: int
    readings_sent: int
    readings_dropped: int
    readings_skipped: int
    commands_acknowledged: int
    commands_ignored: int
    connect_failures: int
    links_lost: int
    faults_active: int  # devices given at least one fault

    def progress_line(self) -> str:
        local = self.sim_time.astimezone(CAN_THO).strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"{local} | {self.connected}/{self.mqtt_devices} MQTT connected, "
            f"{self.modbus_devices} Modbus | {self.messages_sent} messages sent "
            f"({self.readings_sent} readings) | {self.commands_acknowledged} commands acked | "
            f"{self.faults_active} faults active"
        )


@dataclass(frozen=True, slots=True)
class ModbusEndpoint:
    """Where a simulated Modbus device answers, and how its registers are ordered."""

    host: str
    port: int
    unit: int
    word_order: WordOrder


# --- models -------------------------------------------------------------------------------

ModelFactory = Callable[[DeviceSpec, int, datetime], DeviceModel]


def build_mqtt_model(spec: DeviceSpec, seed: int, start: datetime) -> DeviceModel:
    """The physics of one MQTT device (streetlight, smart pole, monitor, gauge)."""
    return build_model(
        spec.kind,
        spec.device_id,
        seed=seed,
        latitude=spec.latitude,
        longitude=spec.longitude,
        rated_power_w=spec.rated_power_w,
        faults=spec.faults,
        interval_s=spec.interval_s,
    )


def build_modbus_model(
    spec: DeviceSpec, seed: int, start: datetime
) -> CabinetModel | EnergyMeterModel:
    """A building's meter (its load profile from the building type) or a cabinet."""
    if spec.kind is DeviceKind.ENERGY_METER:
        building = BuildingType(spec.building.value if spec.building else "office")
        return building_meter(spec.device_id, building, seed, start)
    rng = random.Random(f"{seed}:{spec.device_id}")  # noqa: S311 - simulation, not secrets
    circuits = [CircuitSpec(c.lamps, c.rated_power_w) for c in spec.circuits]
    kwargs: dict[str, Any] = {"circuits": circuits} if circuits else {}
    # Smart lamps need their supply all night: the contactors stay closed and the
    # lamps dim themselves (the cabinet's meter follows them, see _feed_cabinets).
    return CabinetModel(spec.device_id, rng, start, closed=True, **kwargs)


@runtime_checkable
class _TakesPollutionEpisodes(Protocol):
    """Models with air sensors (``EnvironmentModel``; a smart pole once it has them)."""

    def start_episode(self, start: datetime, hours: float, factor: float) -> None: ...


def apply_events(events: Sequence[Event], model: object, district: str, start: datetime) -> int:
    """Give ``model`` the events of its district that it feels; how many it took.

    Flood gauges: rain is a rain event of the model; a river trend adds its rate to the
    model's trend (which runs from the start of the simulation: the shipped scenarios
    give trends spanning the whole run); a flood evening sets the river's base level so
    that the first evening high tide (18:30 local) after its start peaks at ``peak_m``,
    counting the trend, before rain run-off and noise. Flood evenings go last, so the
    trends are known.
    """
    ordered = sorted(events, key=lambda e: isinstance(e, FloodEveningEvent))
    taken = 0
    for event in ordered:
        if event.covers(district) and _apply_event(event, model, start):
            taken += 1
    return taken


def _apply_event(event: Event, model: object, start: datetime) -> bool:
    if isinstance(event, PollutionEpisodeEvent) and isinstance(model, _TakesPollutionEpisodes):
        model.start_episode(event.start, event.hours, event.factor)
        return True
    if not isinstance(model, FloodGaugeModel):
        return False
    if isinstance(event, RainEvent):
        model.add_rain_event(event.start, event.hours, event.mm_per_hour)
    elif isinstance(event, RiverTrendEvent):
        model.trend_m_per_day += event.rise_m * 24 / event.hours
    elif isinstance(event, FloodEveningEvent):
        peak_at = evening_high_tide(event.start)
        trend_m = model.trend_m_per_day * (peak_at - start).total_seconds() / 86_400
        evening_tide_m = tide_m(MORNING_HIGH_HOUR + 12, model.tide_amplitude_m)
        model.base_m = event.peak_m - evening_tide_m - trend_m
    else:
        return False
    return True


def evening_high_tide(after: datetime) -> datetime:
    """The first evening high tide (18:30 in Cần Thơ) at or after ``after``."""
    local = after.astimezone(CAN_THO)
    hour = int(MORNING_HIGH_HOUR + 12)
    minute = round((MORNING_HIGH_HOUR + 12 - hour) * 60)
    peak = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return peak if peak >= local else peak + timedelta(days=1)


# --- the fleet ----------------------------------------------------------------------------


class Fleet:
    """Every device of a scenario, as an async context manager owning their tasks."""

    def __init__(
        self,
        specs: Sequence[DeviceSpec],
        *,
        broker: BrokerAddress,
        clock: Clock,
        seed: int,
        events: Sequence[Event] = (),
        model_factory: ModelFactory = build_mqtt_model,
        wire_options: WireOptions | None = None,
        connect_concurrency: int = 64,
        max_unacked: int = 2000,
        modbus_host: str = "127.0.0.1",
        modbus_latency_s: float = 0.02,
    ) -> None:
        ids = [spec.device_id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError("device ids in a fleet must be unique")
        self.specs = list(specs)
        self.clock = clock
        self.seed = seed
        self.events = list(events)
        self._model_factory = model_factory
        self._wire_options = wire_options or WireOptions()
        self._modbus_host = modbus_host
        self._modbus_latency_s = modbus_latency_s
        self.hub = MqttHub(broker, connect_concurrency=connect_concurrency, max_unacked=max_unacked)
        self.models: dict[str, Any] = {}
        self._servers: dict[str, ModbusDeviceServer] = {}
        self._stack: AsyncExitStack | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._feed: asyncio.Task[None] | None = None
        self._started_mqtt = False
        self._devices: dict[str, MqttDevice] = {}

    @property
    def mqtt_specs(self) -> list[DeviceSpec]:
        return [spec for spec in self.specs if not spec.is_modbus]

    @property
    def modbus_endpoints(self) -> dict[str, ModbusEndpoint]:
        """Where each Modbus device listens (valid inside ``async with``)."""
        return {
            device_id: ModbusEndpoint(server.host, server.port, unit.unit_id, unit.order)
            for device_id, server in self._servers.items()
            for unit in server.units
        }

    async def __aenter__(self) -> Fleet:
        start = self.clock.now()
        self._build_models(start)
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(ModbusServerPool(list(self._servers.values())))
            await stack.enter_async_context(self.hub)
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self._stop_feed)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        # Unwinds in reverse: the cabinet feed, then the devices (offline published),
        # then the Modbus servers.
        await self._stack.__aexit__(exc_type, exc, tb)

    def _build_models(self, start: datetime) -> None:
        for spec in self.specs:
            model: object
            if spec.is_modbus:
                modbus_model = build_modbus_model(spec, self.seed, start)
                self._servers[spec.device_id] = self._server_for(spec, modbus_model)
                model = modbus_model
            else:
                model = self._model_factory(spec, self.seed, start)
            self.models[spec.device_id] = model
            apply_events(self.events, model, spec.district, start)

    def _server_for(
        self, spec: DeviceSpec, model: CabinetModel | EnergyMeterModel
    ) -> ModbusDeviceServer:
        register_map = get_register_map(
            "lighting_cabinet" if spec.kind is DeviceKind.LIGHTING_CABINET else "sdm630"
        )
        unit = ModbusUnit(
            model,
            register_map,
            unit_id=MODBUS_UNIT_ID,
            word_order=spec.word_order,
            faults=spec.faults,
        )
        return ModbusDeviceServer(
            [unit], self.clock, host=self._modbus_host, latency_s=self._modbus_latency_s
        )

    def start_mqtt(self, secrets: Mapping[str, str]) -> list[MqttDevice]:
        """Connect every MQTT device with its secret (connects are staggered by the hub)."""
        if self._tasks is None:
            raise RuntimeError("start the MQTT devices inside `async with fleet`")
        if self._started_mqtt:
            raise RuntimeError("the MQTT devices are already started")
        missing = [s.device_id for s in self.mqtt_specs if s.device_id not in secrets]
        if missing:
            raise KeyError(f"no secret for {len(missing)} devices, e.g. {missing[0]}")
        self._started_mqtt = True
        devices = [
            self.hub.start(self._device(spec, secrets[spec.device_id])) for spec in self.mqtt_specs
        ]
        self._devices = {device.device_id: device for device in devices}
        self._wire_contactors()
        if self._cabinet_circuits():
            self._feed = self._tasks.create_task(self._feed_cabinets(), name="cabinet-feed")
        return devices

    def _device(self, spec: DeviceSpec, secret: str) -> MqttDevice:
        options = replace(
            self._wire_options, protocol=spec.protocol, payload_format=spec.payload_format
        )
        return MqttDevice(
            self.models[spec.device_id],
            secret,
            hub=self.hub,
            clock=self.clock,
            faults=spec.faults,
            seed=self.seed,
            options=options,
        )

    async def run_until(
        self,
        end: datetime,
        *,
        stop: asyncio.Event | None = None,
        progress: Callable[[FleetCounters], None] | None = None,
        progress_every_s: float = 1.0,
    ) -> FleetCounters:
        """Let simulated time reach ``end`` (or ``stop`` be set); the counters then."""
        finished = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            if progress is not None:
                tasks.create_task(self._report(progress, progress_every_s, finished))
            try:
                if isinstance(self.clock, SteppedClock):
                    await drive_stepped_clock(self.clock, self.hub, end, stop)
                else:
                    await self._release_held_clock(stop)
                    await run_clock_until(self.clock, end, stop)
            finally:
                finished.set()
        counters = self.counters()
        if progress is not None:
            progress(counters)
        return counters

    async def _release_held_clock(self, stop: asyncio.Event | None) -> None:
        """Let held time run once every device made its first connection attempt.

        Simulated time then starts with the fleet connected, however long a few thousand
        connects take, and readings do not compete with the connects.
        """
        if isinstance(self.clock, HeldClock) and not self.clock.released:
            await _calm_or_stopped(self.hub, stop)
            self.clock.release()

    async def _report(
        self, progress: Callable[[FleetCounters], None], every_s: float, finished: asyncio.Event
    ) -> None:
        while not finished.is_set():
            progress(self.counters())
            try:
                async with asyncio.timeout(every_s):
                    await finished.wait()
            except TimeoutError:
                continue

    def counters(self) -> FleetCounters:
        wire = self.hub.counters
        modbus = len(self._servers)
        return FleetCounters(
            sim_time=self.clock.now(),
            devices=len(self.specs),
            mqtt_devices=len(self.specs) - modbus,
            modbus_devices=modbus,
            connected=wire.connected,
            messages_sent=wire.messages_sent,
            readings_sent=wire.readings_sent,
            readings_dropped=wire.readings_dropped,
            readings_skipped=wire.readings_skipped,
            commands_acknowledged=wire.commands_acknowledged,
            commands_ignored=wire.commands_ignored,
            connect_failures=wire.connect_failures,
            links_lost=wire.links_lost,
            faults_active=sum(1 for spec in self.specs if spec.faults.faults),
        )

    # --- cabinets follow their lamps ---------------------------------------------------

    def _cabinet_circuits(self) -> dict[str, dict[int, list[str]]]:
        """Cabinet id → circuit → the lamps of this fleet it feeds."""
        feeds: dict[str, dict[int, list[str]]] = {}
        for spec in self.specs:
            if spec.cabinet_id in self._servers and spec.cabinet_circuit is not None:
                circuits = feeds.setdefault(spec.cabinet_id, {})
                circuits.setdefault(spec.cabinet_circuit, []).append(spec.device_id)
        return feeds

    def _wire_contactors(self) -> None:
        """A contactor switched (over Modbus, on the server's thread) cuts or restores the
        supply of the lamps on its circuit, on the event loop, and they report at once."""
        loop = asyncio.get_running_loop()
        for cabinet_id, circuits in self._cabinet_circuits().items():
            cabinet = self.models[cabinet_id]
            if not isinstance(cabinet, CabinetModel):
                continue

            def switched(
                circuit: int, on: bool, now: datetime, feeds: dict[int, list[str]] = circuits
            ) -> None:
                lamp_ids = feeds.get(circuit, [])
                if lamp_ids and not loop.is_closed():
                    loop.call_soon_threadsafe(self._supply, lamp_ids, on)

            cabinet.add_switch_listener(switched)

    def _supply(self, lamp_ids: Sequence[str], on: bool) -> None:
        now = self.clock.now()
        for lamp_id in lamp_ids:
            model = self.models[lamp_id]
            if isinstance(model, LampModel):
                model.set_supply(on, now)
            device = self._devices.get(lamp_id)
            if device is not None:
                device.report_now()

    async def _feed_cabinets(self) -> None:
        """Every simulated minute, each circuit's lamp level is its lamps' mean level."""
        feeds = self._cabinet_circuits()
        while True:
            now = self.clock.now()
            for cabinet_id, circuits in feeds.items():
                cabinet = self.models[cabinet_id]
                if not isinstance(cabinet, CabinetModel):
                    continue
                for circuit, lamp_ids in circuits.items():
                    if circuit <= cabinet.circuit_count:
                        level = _mean_level([self.models[i] for i in lamp_ids], now)
                        cabinet.set_lamp_level(circuit, level, now)
            await self.clock.sleep(_CABINET_FEED_S)

    async def _stop_feed(self) -> None:
        # Our own helper task, sleeping on the clock: cancelled, then awaited by the group.
        if self._feed is not None:
            self._feed.cancel()


def _mean_level(lamps: Sequence[Any], now: datetime) -> float:
    levels = []
    for lamp in lamps:
        state = lamp.state(now)
        on = state.get("power", "on") == "on"
        levels.append(float(state.get("dim_level", 100.0)) if on else 0.0)
    return min(100.0, max(0.0, sum(levels) / len(levels))) if levels else 0.0


__all__ = [
    "Fleet",
    "FleetCounters",
    "ModbusEndpoint",
    "apply_events",
    "build_modbus_model",
    "build_mqtt_model",
    "drive_stepped_clock",
    "run_clock_until",
]
