"""The fleet on a real Mosquitto: every kind's messages valid, 200 devices, a lamp's night.

Devices are the real physics models (``build_model``) and Modbus servers; the backend
is a probe with a service account. The clock is stepped by the fleet, waiting for
every PUBACK before time moves.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pymodbus.client import ModbusTcpClient

from devices.wire import (
    Channel,
    Command,
    DeviceKind,
    DeviceState,
    DeviceStatus,
    WordOrder,
    device_topic,
    parse_device_topic,
    parse_reading,
    validate_metrics,
)
from devices.wire.commands import LampProgram, ProgramStep
from devices.wire.registers import SDM630, decode_float32
from firmware_sim.faults import FaultConfig
from firmware_sim.fleet import (
    Fleet,
    FleetCounters,
    apply_events,
    evening_high_tide,
)
from firmware_sim.mqtt.link import WireOptions
from firmware_sim.physics.factory import build_model
from firmware_sim.scenario import (
    DeviceSpec,
    DistrictSpec,
    LatLon,
    Scenario,
    StreetSpec,
    expand,
    load_scenario,
)
from pharos.broker_process import MosquittoProcess
from pharos_core.clock import HeldClock, SteppedClock
from tests.firmware_sim.test_mqtt_device import (
    Accounts,
    drive,
    open_accounts,
    running,
    wait_for,
)

pytestmark = pytest.mark.broker

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
BD_I, BD_III = 1.80, 2.00


@pytest.fixture
def accounts(mosquitto: MosquittoProcess) -> Iterator[Accounts]:
    yield from open_accounts(mosquitto)


def without_faults(specs: list[DeviceSpec]) -> list[DeviceSpec]:
    return [replace(spec, faults=FaultConfig()) for spec in specs]


async def start_fleet(fleet: Fleet, accounts: Accounts) -> None:
    ids = [s.device_id for s in fleet.mqtt_specs]
    accounts.add(ids)
    fleet.start_mqtt({i: accounts.secrets[i] for i in ids})


# --- every kind on the wire -----------------------------------------------------------------


async def test_every_kind_publishes_valid_readings_state_and_status(accounts: Accounts) -> None:
    scenario = load_scenario("ci-small")
    specs = without_faults(expand(scenario))  # faults are tested on their own
    specs = [  # the meter's floats with swapped words, as some meters send them
        replace(s, word_order=WordOrder.CDAB) if s.kind is DeviceKind.ENERGY_METER else s
        for s in specs
    ]
    kinds = {s.device_id: s.kind for s in specs}
    backend = accounts.backend()
    clock = SteppedClock(scenario.start)
    fleet = Fleet(specs, broker=accounts.address, clock=clock, seed=scenario.seed, max_unacked=0)

    async with fleet:
        await start_fleet(fleet, accounts)
        counters = await fleet.run_until(scenario.start + timedelta(minutes=20))
        sent = fleet.hub.counters.messages_sent
        assert await wait_for(backend, lambda: len(backend.messages) >= sent)
        meter_power = await asyncio.to_thread(read_meter_power, fleet, "em-nk-00001")

    by_device: dict[str, dict[Channel, list[bytes]]] = defaultdict(lambda: defaultdict(list))
    for message in backend.messages:
        topic = parse_device_topic(message.topic)
        assert topic is not None
        by_device[topic.device_id][topic.channel].append(message.payload)
    mqtt_ids = {s.device_id for s in fleet.mqtt_specs}
    assert set(by_device) == mqtt_ids
    for device_id, channels in by_device.items():
        assert DeviceStatus.parse(channels[Channel.STATUS][0]) is DeviceStatus.ONLINE
        assert all(DeviceState.parse(p).ts is not None for p in channels[Channel.STATE])
        readings = [r for p in channels[Channel.TELEMETRY] for r in parse_reading(p, device_id)]
        assert len(readings) >= 20  # every minute for 20 minutes (phase within the first)
        for reading in readings:
            good, errors = validate_metrics(kinds[device_id], reading.metrics)
            assert errors == [], (device_id, errors)
            assert set(good) >= _core_metrics(kinds[device_id])
    mqtt_kinds = {DeviceKind.STREETLIGHT, DeviceKind.SMART_POLE, DeviceKind.ENV_MONITOR}
    assert {kinds[i] for i in by_device} == {*mqtt_kinds, DeviceKind.FLOOD_GAUGE}
    assert counters.connected == len(mqtt_ids) and counters.modbus_devices == 2
    assert counters.readings_sent == sum(len(c[Channel.TELEMETRY]) for c in by_device.values())
    assert meter_power > 1000  # a hospital at dusk: tens of kW, read by an independent client


def _core_metrics(kind: DeviceKind) -> set[str]:
    return {
        DeviceKind.STREETLIGHT: {"power_w", "dim_level", "lamp_on", "energy_kwh"},
        DeviceKind.SMART_POLE: {"power_w", "pm25", "temperature_c"},
        DeviceKind.ENV_MONITOR: {"pm25", "pm10", "no2", "noise_dba"},
        DeviceKind.FLOOD_GAUGE: {"water_level_m", "battery_v"},
    }[kind]


def read_meter_power(fleet: Fleet, device_id: str) -> float:
    """Total power of a simulated meter, read with pymodbus at the endpoint the fleet gives."""
    endpoint = fleet.modbus_endpoints[device_id]
    assert endpoint.word_order is WordOrder.CDAB
    field = SDM630.fields["power_w"]
    with ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=5) as client:
        answer = client.read_input_registers(field.address, count=2, device_id=endpoint.unit)
    assert not answer.isError(), answer
    return decode_float32(answer.registers, endpoint.word_order)


async def test_cabinet_meter_follows_its_lamps_from_dusk(accounts: Accounts) -> None:
    scenario = load_scenario("ci-small")
    specs = without_faults(expand(scenario))
    clock = SteppedClock(scenario.start)  # 17:30, sunset 18:07: the program lights at 17:57
    fleet = Fleet(specs, broker=accounts.address, clock=clock, seed=scenario.seed)
    cabinet_id = "cab-nk-00001"
    fed = [s for s in specs if s.cabinet_id == cabinet_id]

    async with fleet:
        await start_fleet(fleet, accounts)
        await fleet.run_until(scenario.start + timedelta(minutes=10))
        before_dusk = fleet.models[cabinet_id].measurements(clock.now())["power_w"]
        await fleet.run_until(scenario.start + timedelta(minutes=45))
        after_dusk = fleet.models[cabinet_id].measurements(clock.now())["power_w"]

    rated = sum(s.rated_power_w or 0 for s in fed)
    assert before_dusk < 0.05 * rated  # drivers on standby
    assert 0.85 * rated < after_dusk < 1.15 * rated  # every lamp at 100 %


# --- scale ----------------------------------------------------------------------------------


def city_of(lamps: int, poles: int, monitors: int, gauges: int) -> Scenario:
    street = StreetSpec(
        name="Đường Nguyễn Văn Cừ",
        start=LatLon(lat=10.0345, lon=105.7735),
        end=LatLon(lat=10.0235, lon=105.7300),
        streetlights=lamps,
        smart_poles=poles,
    )
    district = DistrictSpec(
        name="Ninh Kiều",
        code="nk",
        centre=LatLon(lat=10.034, lon=105.77),
        streets=[street],
        env_monitors=monitors,
        flood_gauges=gauges,
    )
    return Scenario(
        name="t",
        seed=5,
        start=datetime(2026, 3, 20, 12, 0, tzinfo=UTC),
        duration=timedelta(minutes=5),
        intervals_s={k: 60 for k in DeviceKind},
        districts=[district],
    )


async def test_a_fleet_of_200_connects_each_with_its_own_credentials(accounts: Accounts) -> None:
    scenario = city_of(lamps=180, poles=10, monitors=5, gauges=5)
    specs = expand(scenario)
    backend = accounts.backend(f"pharos/v1/dev/+/{Channel.TELEMETRY.value}")
    clock = SteppedClock(scenario.start)  # what `pharos sim run` uses for "max"
    fleet = Fleet(specs, broker=accounts.address, clock=clock, seed=scenario.seed)
    seen: list[FleetCounters] = []

    async with fleet:
        await start_fleet(fleet, accounts)
        assert len(set(accounts.secrets.values())) == 201  # 200 devices and the backend
        counters = await fleet.run_until(scenario.end, progress=seen.append)
        readings = counters.readings_sent
        assert await wait_for(backend, lambda: len(backend.messages) == readings)

    assert counters.devices == counters.mqtt_devices == 200
    assert counters.connected == 200 and counters.connect_failures == 0
    senders = {parse_device_topic(m.topic).device_id for m in backend.messages}  # type: ignore[union-attr]
    assert senders == {s.device_id for s in specs}
    assert 5 * 200 <= readings <= 6 * 200  # every minute for 5 minutes, phase within the first
    assert counters.readings_dropped == 0 and counters.faults_active == 0
    assert seen and seen[-1] == counters and "200/200 MQTT connected" in counters.progress_line()
    assert fleet.hub.counters.connected == 0  # every device left cleanly


async def test_a_device_without_a_secret_is_refused_to_start(accounts: Accounts) -> None:
    specs = expand(city_of(lamps=2, poles=0, monitors=0, gauges=0))
    fleet = Fleet(specs, broker=accounts.address, clock=SteppedClock(datetime.now(UTC)), seed=1)
    async with fleet:
        with pytest.raises(KeyError, match="no secret for 1 devices"):
            fleet.start_mqtt({specs[0].device_id: "x"})


# --- a lamp's night -------------------------------------------------------------------------

NIGHT_PROGRAM = LampProgram(
    id="night-test",
    steps=[
        ProgramStep(event="sunset", level=100),
        ProgramStep(at="21:00", level=80),
        ProgramStep(at="23:30", level=40),
        ProgramStep(at="03:00", level=60),
        ProgramStep(event="sunrise", level=0),
    ],
)
SUNSET = datetime(2026, 6, 21, 18, 20, tzinfo=LOCAL)  # DOMAIN.md, astral 3.2
SUNRISE = datetime(2026, 6, 22, 5, 37, tzinfo=LOCAL)


def expected_level(when: datetime) -> float | None:
    """The program's level at ``when``; None within 2 minutes of a sun event (rounding)."""
    if min(abs(when - SUNSET), abs(when - SUNRISE)) < timedelta(minutes=2):
        return None
    local = when.astimezone(LOCAL)
    steps = [
        (SUNRISE - timedelta(days=1), 0.0),
        (SUNSET, 100.0),
        (datetime(2026, 6, 21, 21, 0, tzinfo=LOCAL), 80.0),
        (datetime(2026, 6, 21, 23, 30, tzinfo=LOCAL), 40.0),
        (datetime(2026, 6, 22, 3, 0, tzinfo=LOCAL), 60.0),
        (SUNRISE, 0.0),
    ]
    return [level for at, level in steps if at <= local][-1]


OBSERVER = "sim-test-observer"


class QueuedObserver:
    """A backend session kept by the broker while away (clean session off): it reads later."""

    def __init__(self, port: int, secret: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Condition()
        self._port = port
        self._secret = secret
        self._client: mqtt.Client | None = None

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))
            self._lock.notify_all()

    def connect(self, topic: str | None = None) -> None:
        """A new connection to the same session (the broker kept what came meanwhile)."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=OBSERVER,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=False,
        )
        client.username_pw_set(OBSERVER, self._secret)
        client.on_message = self._on_message
        connected, subscribed = threading.Event(), threading.Event()
        client.on_connect = lambda *_: connected.set()
        client.on_subscribe = lambda *_: subscribed.set()
        client.connect("127.0.0.1", self._port)
        client.loop_start()
        self._client = client
        assert connected.wait(10)
        if topic is not None:
            client.subscribe(topic, qos=1)
            assert subscribed.wait(10)

    def leave(self) -> None:
        assert self._client is not None
        self._client.disconnect()
        self._client.loop_stop()

    def wait_for(self, count: int, timeout: float = 20) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: len(self.messages) >= count, timeout)


async def test_lamp_follows_its_program_through_the_night_with_no_backend(
    accounts: Accounts,
) -> None:
    start = datetime(2026, 6, 21, 17, 0, tzinfo=LOCAL)
    clock = SteppedClock(start)
    lamp = build_model(
        DeviceKind.STREETLIGHT, "sl-test-night", seed=3, latitude=10.0452, longitude=105.7469,
        rated_power_w=120, interval_s=300,
    )  # fmt: skip
    telemetry = device_topic(lamp.device_id, Channel.TELEMETRY)
    options = WireOptions(stagger_readings=False)

    accounts.add([], services=[OBSERVER])
    observer = QueuedObserver(accounts.broker.port, accounts.secrets[OBSERVER])
    await asyncio.to_thread(observer.connect, telemetry)
    await asyncio.to_thread(observer.leave)  # the broker keeps its session and queue
    async with running(accounts, [lamp], clock, options=options) as (hub, _):
        await drive(hub, clock, 0)  # connected: its session exists to receive the command
        commander = accounts.backend(device_topic(lamp.device_id, Channel.CMD_ACK))
        program = Command(
            id=uuid.uuid4(),
            action="set_program",
            params={"program": json.loads(NIGHT_PROGRAM.model_dump_json(exclude_none=True))},
            expires_at=start + timedelta(minutes=5),
        )
        await asyncio.to_thread(
            commander.publish, device_topic(lamp.device_id, Channel.CMD), program.to_payload()
        )
        assert await wait_for(commander, lambda: bool(commander.messages))
        await asyncio.to_thread(commander.close)  # no backend from here on
        await drive(hub, clock, 14 * 3600)  # to 07:00
        sent = hub.counters.readings_sent

    await asyncio.to_thread(observer.connect)  # back in the morning: the night is queued
    assert await asyncio.to_thread(observer.wait_for, sent), (len(observer.messages), sent)
    observer.leave()
    readings = [parse_reading(p, lamp.device_id)[0] for t, p in observer.messages if t == telemetry]
    assert len(readings) == 14 * 12 + 1
    checked = 0
    power_at: dict[float, list[float]] = defaultdict(list)
    for reading in readings:
        assert reading.ts is not None
        level = expected_level(reading.ts)
        if level is None:
            continue
        checked += 1
        assert reading.metrics["dim_level"] == level, reading
        assert reading.metrics["lamp_on"] is (level > 0)
        power_at[level].append(reading.metrics["power_w"])
    assert checked > 150
    mean = {level: sum(p) / len(p) for level, p in power_at.items()}
    assert mean[0] < mean[40] < mean[60] < mean[80] < mean[100] <= 120 * 1.1


# --- clocks and events (no broker needed) -----------------------------------------------------


@pytest.mark.parametrize("clock_class", [SteppedClock, SteppedClock])
async def test_heap_clock_wakes_sleepers_like_the_stepped_clock(
    clock_class: type[SteppedClock],
) -> None:
    start = datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
    clock = clock_class(start)
    woken: list[tuple[str, float]] = []

    async def sleeper(name: str, *delays: float) -> None:
        for delay in delays:
            await clock.sleep(delay)
            woken.append((name, (clock.now() - start).total_seconds()))

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(sleeper("a", 5, 5, 5))
        tasks.create_task(sleeper("b", 10, 0.5))
        tasks.create_task(sleeper("c", 5, 10))
        cancelled = tasks.create_task(sleeper("d", 7))
        await asyncio.sleep(0)
        cancelled.cancel()
        await clock.run_until(start + timedelta(seconds=12))
        assert clock.next_wake() == start + timedelta(seconds=15)
        await clock.run_until(start + timedelta(seconds=20))

    # Time order, then the earlier sleep first (b slept at 0, a at 5; c at 5, a at 10); the
    # cancelled sleeper never wakes.
    assert woken == [("a", 5), ("c", 5), ("b", 10), ("a", 10), ("b", 10.5), ("c", 15), ("a", 15)]
    assert clock.now() == start + timedelta(seconds=20) and clock.next_wake() is None


async def test_held_clock_stands_still_until_released() -> None:
    start = datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
    clock = HeldClock(start, factor=3600)
    assert clock.now() == start and not clock.released
    clock.release()
    await clock.sleep(1800)  # half an hour simulated: half a second
    assert timedelta(minutes=30) <= clock.now() - start < timedelta(minutes=50)


def test_flood_evening_carries_the_gauges_over_the_alert_levels_in_the_evening() -> None:
    scenario = load_scenario("flood-evening")
    gauges = [s for s in expand(scenario) if s.kind is DeviceKind.FLOOD_GAUGE]
    assert gauges
    for spec in gauges:
        model = build_model(
            spec.kind, spec.device_id, seed=scenario.seed, latitude=spec.latitude,
            longitude=spec.longitude, interval_s=60,
        )  # fmt: skip
        assert apply_events(scenario.events, model, spec.district, scenario.start) >= 2
        levels = {}
        when = scenario.start
        while when <= scenario.end:
            levels[when] = float(model.sample(when)["water_level_m"])
            when += timedelta(minutes=5)
        peak_at = max(levels, key=lambda t: levels[t])
        assert levels[scenario.start] < BD_I  # noon: low water
        assert levels[peak_at] >= BD_III  # crossed BĐ I, II and III
        assert 17 <= peak_at.astimezone(LOCAL).hour < 20  # in the evening tide
    assert evening_high_tide(scenario.start).astimezone(LOCAL).strftime("%H:%M") == "18:30"


def test_pollution_episode_raises_pm_in_its_districts_only() -> None:
    scenario = load_scenario("pollution-episode")
    specs = {s.device_id: s for s in expand(scenario) if s.kind is DeviceKind.ENV_MONITOR}
    during = datetime(2026, 2, 10, 9, 0, tzinfo=LOCAL)

    def pm25(device_id: str, with_events: bool) -> float:
        spec = specs[device_id]
        model = build_model(spec.kind, spec.device_id, seed=1, latitude=0, longitude=0)
        if with_events:
            apply_events(scenario.events, model, spec.district, scenario.start)
        return float(model.sample(during)["pm25"])

    assert pm25("env-nk-00001", True) > 3 * pm25("env-nk-00001", False)  # factor 3.5
    assert pm25("env-bt-00001", True) > 1.5 * pm25("env-bt-00001", False)  # its own, 2.0
    assert pm25("env-cr-00001", True) > 3 * pm25("env-cr-00001", False)
