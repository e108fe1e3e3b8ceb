"""The Modbus poller against the simulator's meters and cabinets over real Modbus TCP.

The meters' truth comes from a ``SteppedClock`` that stands still, so a decoded poll
must equal the model's values at that instant to float32 precision. Timing tests run
the poller on real time with short intervals; schedule tests drive it with the
stepped clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from devices.modbus_client import ModbusClientOptions, ModbusClientPool
from devices.registry.models import Device, LifecycleState
from devices.registry.schemas import DeviceCreate, GroupCreate
from devices.registry.service import registry_session
from devices.wire import (
    LIGHTING_CABINET,
    SDM120,
    SDM630,
    DeviceKind,
    RegisterMap,
    WordOrder,
    kind_spec,
)
from firmware_sim.faults import Fault, FaultConfig
from firmware_sim.modbus import (
    EnergyMeterModel,
    ModbusDeviceServer,
    ModbusServerPool,
    ModbusUnit,
)
from pharos_core.clock import SteppedClock
from telemetry.deadletters import DeadLetterStore
from telemetry.metrics import TelemetryMetrics
from telemetry.modbus_poller import (
    MeterTarget,
    ModbusPoller,
    load_meter_targets,
    meter_target,
)
from telemetry.points import DeadLetter, Point
from tests.devices.test_modbus_client import (
    SCHOOL_MORNING,
    WireRecorder,
    cabinet,
    eventually,
    float32_truth,
    school_meter,
)

FAST = ModbusClientOptions(timeout_s=0.3, connect_timeout_s=1.0, retries=0)
METER_METRICS = [metric.name for metric in kind_spec(DeviceKind.ENERGY_METER).metrics]
TOLERANCE = timedelta(seconds=0.15)  # measured: ~10 ms on an idle 2-core machine
SILENT = FaultConfig(faults=frozenset({Fault.MODBUS_TIMEOUT}))
FAILING = FaultConfig(faults=frozenset({Fault.MODBUS_EXCEPTION}), modbus_exception_code=4)


class Sinks:
    """Where the poller hands its output: points (with when they came) and dead letters."""

    def __init__(self) -> None:
        self.points: list[Point] = []
        self.arrived: list[datetime] = []
        self.letters: list[DeadLetter] = []

    async def submit(self, points: Sequence[Point]) -> None:
        for point in points:
            self.points.append(point)
            self.arrived.append(datetime.now(UTC))

    async def put(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def of(self, device_id: str) -> list[Point]:
        return [point for point in self.points if point.device_id == device_id]

    def arrivals(self, device_id: str) -> list[tuple[Point, datetime]]:
        pairs = zip(self.points, self.arrived, strict=True)
        return [(point, at) for point, at in pairs if point.device_id == device_id]


def target(
    device_id: str,
    server: ModbusDeviceServer,
    unit: int = 1,
    register_map: RegisterMap = SDM630,
    **fields: Any,
) -> MeterTarget:
    kind = DeviceKind.LIGHTING_CABINET if register_map.coil_count else DeviceKind.ENERGY_METER
    return MeterTarget(device_id, kind, server.host, server.port, unit, register_map, **fields)


def catalogue_truth(values: Mapping[str, float]) -> dict[str, float]:
    return float32_truth(values, METER_METRICS)


# -- decoding end to end ---------------------------------------------------------------


@pytest.mark.parametrize("order", list(WordOrder))
async def test_every_word_order_decodes_end_to_end(order: WordOrder) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    three_phase = school_meter("meter-630", clock)
    single_phase = school_meter("meter-120", clock, single_phase=True)
    box = cabinet("cab-1", clock)
    box.switch_circuit(2, False, clock.now())
    box.open_door()
    units = [
        ModbusUnit(three_phase, SDM630, unit_id=1, word_order=order),
        ModbusUnit(single_phase, SDM120, unit_id=2, word_order=order),
        ModbusUnit(box, LIGHTING_CABINET, unit_id=3, word_order=order),
    ]
    sinks = Sinks()
    async with ModbusDeviceServer(units, clock) as server, ModbusClientPool(FAST) as pool:
        targets = [
            target("meter-630", server, 1, SDM630, word_order=order, district="Ninh Kiều"),
            target("meter-120", server, 2, SDM120, group="school-b"),  # order by override
            target("cab-1", server, 3, LIGHTING_CABINET, word_order=order),
        ]
        poller = ModbusPoller(
            targets,
            pool,
            sinks.submit,
            sinks,
            now=clock.now,
            sleep=clock.sleep,
            stagger=False,
            word_orders={"meter-120": order},
        )
        async with poller:
            assert await eventually(lambda: len(sinks.points) == 3)
    now = clock.now()
    by_device = {point.device_id: point for point in sinks.points}
    meter = by_device["meter-630"]
    assert meter.measurement == "energy_meter" and meter.time == now
    assert meter.tags == {"device_id": "meter-630", "district": "Ninh Kiều"}
    assert meter.fields == catalogue_truth(three_phase.measurements(now))
    small = by_device["meter-120"]
    assert small.tags == {"device_id": "meter-120", "group": "school-b"}
    assert small.fields == catalogue_truth(single_phase.measurements(now))
    box_point = by_device["cab-1"]
    assert box_point.measurement == "lighting_cabinet"
    floats = {name: box_point.fields[name] for name in METER_METRICS}
    assert floats == catalogue_truth(box.measurements(now))
    assert box_point.fields["door_open"] is True
    # No lamps bound: every coil of the map is reported (4 circuits fitted, 2 open).
    circuits = {n: box_point.fields[f"circuit_{n}_on"] for n in range(1, 17)}
    assert circuits == {n: n in (1, 3, 4) for n in range(1, 17)}
    assert len(box_point.fields) == len(METER_METRICS) + 1 + 16  # no non-catalogue registers
    assert sinks.letters == []


# -- a bad meter does not delay the others ------------------------------------------------


async def test_a_silent_and_a_failing_meter_delay_no_other_meter_and_recover() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    interval = 0.5
    good = [f"good-{n}" for n in range(5)]
    models = {device_id: school_meter(device_id, clock) for device_id in [*good, "silent", "fail"]}
    servers = {
        device_id: ModbusDeviceServer([ModbusUnit(model, SDM630)], clock)
        for device_id, model in models.items()
    }
    servers["silent"].set_faults(1, SILENT)
    servers["fail"].set_faults(1, FAILING)
    # A healthy poll of the silent meter holds its host for 3 x 0.3 s + back-off.
    options = ModbusClientOptions(timeout_s=0.3, retries=2, backoff_s=0.05)
    sinks = Sinks()
    async with ModbusServerPool(list(servers.values())), ModbusClientPool(options) as pool:
        where = f"{servers['silent'].host}:{servers['silent'].port}"
        targets = [target(device_id, server) for device_id, server in servers.items()]
        start = datetime.now(UTC)  # the poller's grid starts when it is made
        poller = ModbusPoller(
            targets,
            pool,
            sinks.submit,
            sinks,
            default_interval_s=interval,
            unhealthy_after=2,
            backoff_max_s=1.0,
            stagger=False,
        )
        async with poller:

            def enough() -> bool:
                health = poller.health()
                unhealthy = not health["silent"].healthy and not health["fail"].healthy
                return unhealthy and all(len(sinks.of(d)) >= 6 for d in good)

            assert await eventually(enough, within_s=10)
            health = poller.health()
            counters = poller.counters()
            for device_id in ("silent", "fail"):
                servers[device_id].set_faults(1, FaultConfig())

            def recovered() -> bool:
                health = poller.health()
                return all(health[d].healthy and sinks.of(d) for d in ("silent", "fail"))

            assert await eventually(recovered, within_s=10)

    for device_id in good:
        for slot, (point, arrived) in enumerate(sinks.arrivals(device_id)[:6]):
            # On time and done: read, decoded and handed over soon after its slot (a
            # poller that let the silent meter hold it up would be ~1 s late).
            due = start + timedelta(seconds=slot * interval)
            assert timedelta(0) <= point.time - due < TOLERANCE, (device_id, slot)
            assert arrived - due < TOLERANCE, (device_id, slot)
        assert health[device_id].healthy and health[device_id].consecutive_failures == 0
    silent, fail = health["silent"], health["fail"]
    assert not silent.healthy and silent.consecutive_failures >= 2
    assert silent.last_error is not None and "no answer within 0.3 s" in silent.last_error
    assert f"{where} unit 1 fc 04" in silent.last_error
    assert not fail.healthy and fail.last_error is not None
    assert "exception 4 (server device failure)" in fail.last_error
    assert counters.timeouts >= 2 and counters.exceptions >= 2
    assert counters.failed == counters.timeouts + counters.exceptions
    assert counters.ok >= 30
    assert len([p for p in sinks.points if p.device_id in ("silent", "fail")]) >= 2


async def test_an_unhealthy_meter_is_polled_with_back_off_and_recovers_on_the_grid() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    t0 = clock.now()
    unit = ModbusUnit(school_meter("m", clock), SDM630, faults=SILENT)
    sinks = Sinks()
    async with ModbusDeviceServer([unit], clock) as server, ModbusClientPool(FAST) as pool:
        poller = ModbusPoller(
            [target("m", server)],
            pool,
            sinks.submit,
            sinks,
            now=clock.now,
            sleep=clock.sleep,
            default_interval_s=10,
            unhealthy_after=2,
            backoff_max_s=40,
            stagger=False,
        )

        async def polled(count: int, next_poll: datetime) -> None:
            def done() -> bool:
                health = poller.health()["m"]
                return poller.counters().polls == count and health.next_poll == next_poll

            assert await eventually(done), (poller.counters(), poller.health())
            assert clock.next_wake() == next_poll  # the host sleeps until then, not before

        async with poller:
            await polled(1, t0 + timedelta(seconds=10))
            assert poller.health()["m"].healthy  # one failure is not yet unhealthy
            clock.advance(10)
            await polled(2, t0 + timedelta(seconds=30))  # unhealthy: twice the interval
            first_unhealthy = poller.health()["m"]
            clock.advance(20)
            await polled(3, t0 + timedelta(seconds=70))  # doubling, capped at 40 s
            server.set_faults(1, FaultConfig())
            clock.advance(40)
            await polled(4, t0 + timedelta(seconds=80))  # healthy: back on its 10 s grid
            recovered = poller.health()["m"]
    assert not first_unhealthy.healthy and first_unhealthy.consecutive_failures == 2
    assert first_unhealthy.last_error_at == t0 + timedelta(seconds=10)
    assert recovered.healthy and recovered.consecutive_failures == 0
    assert recovered.last_ok == t0 + timedelta(seconds=70)
    assert recovered.last_error is not None  # kept, with its time, for the record
    assert [point.time for point in sinks.points] == [t0 + timedelta(seconds=70)]


# -- one connection per host --------------------------------------------------------------


async def test_meters_behind_one_host_share_its_connection_and_never_interleave() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    models = {unit: school_meter(f"meter-{unit}", clock) for unit in (1, 2, 3)}
    units = [ModbusUnit(model, SDM630, unit_id=unit) for unit, model in models.items()]
    sinks = Sinks()
    async with (
        ModbusDeviceServer(units, clock, latency_s=0.005) as server,
        WireRecorder(server.host, server.port) as proxy,
        ModbusClientPool(FAST) as pool,
    ):
        targets = [
            MeterTarget(f"meter-{u}", DeviceKind.ENERGY_METER, "127.0.0.1", proxy.port, u, SDM630)
            for u in models
        ]
        poller = ModbusPoller(
            targets, pool, sinks.submit, sinks, default_interval_s=0.2, stagger=False
        )
        async with poller:
            # On-demand polls (a technician's) join the scheduled ones on the same host.
            for _ in range(3):
                await poller.poll_now("meter-2")
            assert await eventually(lambda: all(len(sinks.of(f"meter-{u}")) >= 4 for u in models))
            clients = len(pool)
    for unit, model in models.items():
        truth = catalogue_truth(model.measurements(clock.now()))
        assert all(point.fields == truth for point in sinks.of(f"meter-{unit}"))
    assert proxy.connections == 1
    assert proxy.max_outstanding == 1
    assert proxy.answers == proxy.requests
    assert clients == 1


# -- writes and the next poll ---------------------------------------------------------------


async def test_write_circuit_shows_as_a_power_drop_in_the_next_poll() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    box = cabinet("cab-1", clock)
    circuit_w = box.circuit_power_w(2)
    sinks = Sinks()
    async with (
        ModbusDeviceServer([ModbusUnit(box, LIGHTING_CABINET, unit_id=9)], clock) as server,
        ModbusClientPool(FAST) as pool,
    ):
        # Lamps are bound to circuits 1 and 2 only: only those are reported.
        cab = target("cab-1", server, 9, LIGHTING_CABINET, circuits=(1, 2))
        poller = ModbusPoller([cab], pool, sinks.submit, sinks, default_interval_s=0.2)
        async with poller:
            assert await eventually(lambda: len(sinks.points) >= 1)
            # control/ writes through the same pool, so the write queues on the host's lock.
            await pool.client(server.host, server.port).write_circuit(9, 2, False)
            written = len(sinks.points)
            assert await eventually(lambda: len(sinks.points) > written)
    before, after = sinks.points[0], sinks.points[-1]
    assert (before.fields["circuit_2_on"], after.fields["circuit_2_on"]) == (True, False)
    assert after.fields["circuit_1_on"] is True
    assert {name for name in after.fields if name.startswith("circuit_")} == {
        "circuit_1_on",
        "circuit_2_on",
    }
    drop = float(before.fields["power_w"]) - float(after.fields["power_w"])
    assert drop == pytest.approx(circuit_w, rel=1e-5)
    assert not box.is_closed(2)


# -- bad values become dead letters ----------------------------------------------------------


class BrokenMeter:
    """A meter whose power register reads 1e12 W and whose voltage ADC gives NaN."""

    def __init__(self, inner: EnergyMeterModel) -> None:
        self._inner = inner
        self.device_id = inner.device_id

    def measurements(self, now: datetime) -> dict[str, float]:
        values = dict(self._inner.measurements(now))
        values["power_w"] = 1e12
        values["voltage_v"] = math.nan
        return values

    def coil_states(self, now: datetime) -> list[bool]:
        return []

    def discrete_input_states(self, now: datetime) -> list[bool]:
        return []

    def write_coil(self, address: int, on: bool, now: datetime) -> None:
        raise ValueError("no coils")


async def test_out_of_range_values_are_dead_lettered_and_the_rest_stored(
    sessions: sessionmaker[Session],
) -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    inner = school_meter("broken", clock)
    store = DeadLetterStore(sessions)
    metrics = TelemetryMetrics()
    sinks = Sinks()
    unit = ModbusUnit(BrokenMeter(inner), SDM630, unit_id=3)
    async with ModbusDeviceServer([unit], clock) as server, ModbusClientPool(FAST) as pool:
        poller = ModbusPoller(
            [target("broken", server, 3)],
            pool,
            sinks.submit,
            store,
            now=clock.now,
            sleep=clock.sleep,
            stagger=False,
            metrics=metrics,
        )
        async with poller:
            assert await eventually(lambda: poller.counters().points == 1)
            counters, health = poller.counters(), poller.health()["broken"]
        topic = f"modbus://{server.host}:{server.port}/3"
        letters, total = await store.list(source="modbus")
    truth = inner.measurements(clock.now())
    expected = float32_truth(truth, ["current_a", "energy_kwh", "power_factor", "frequency_hz"])
    assert sinks.points[0].fields == expected
    assert total == 2 and counters.dead_letters == 2
    reasons = sorted(letter.reason for letter in letters)
    assert reasons[0] == "power_w: 999999995904.0 W is above the maximum 10000000"
    assert reasons[1] == "voltage_v: expected a finite number, got nan"
    assert {letter.device_id for letter in letters} == {"broken"}
    assert {letter.topic for letter in letters} == {topic}
    assert health.healthy  # the meter answered: its values are the problem, not the link
    assert (metrics.received, metrics.invalid) == (1, 2)


# -- lifecycle ---------------------------------------------------------------------------------


async def test_meters_can_be_added_and_removed_while_running_and_it_stops_at_once() -> None:
    clock = SteppedClock(SCHOOL_MORNING)
    meters = {unit: school_meter(f"m-{unit}", clock) for unit in (1, 2)}
    units = [ModbusUnit(model, SDM630, unit_id=unit) for unit, model in meters.items()]
    sinks = Sinks()
    async with ModbusDeviceServer(units, clock) as server, ModbusClientPool(FAST) as pool:
        first, second = target("m-1", server, 1), target("m-2", server, 2)
        poller = ModbusPoller(
            [first],
            pool,
            sinks.submit,
            sinks,
            now=clock.now,
            sleep=clock.sleep,
            default_interval_s=3600,
            stagger=False,
        )
        async with poller:
            assert await eventually(lambda: len(sinks.points) == 1)
            poller.set_meters([first, second])  # the host sleeps for an hour: woken now
            assert await eventually(lambda: len(sinks.of("m-2")) == 1)
            poller.set_meters([second])
            assert [t.device_id for t in poller.meters] == ["m-2"]
            assert set(poller.health()) == {"m-2"}
            clock.advance(3600)
            assert await eventually(lambda: len(sinks.of("m-2")) == 2)
            stopping = time.monotonic()
        stopped_in = time.monotonic() - stopping
    assert len(sinks.of("m-1")) == 1  # removed before its next slot
    assert stopped_in < 1.0  # sleeping hosts are cancelled, not waited for


# -- from the registry ---------------------------------------------------------------------------


def _create(sessions: sessionmaker[Session]) -> None:
    with registry_session(sessions, "test") as registry:
        for group in ("ninh-kieu-lights", "street-a"):
            registry.create_group(GroupCreate(id=group, name=group))
        devices: list[dict[str, Any]] = [
            {"id": "cab-01", "kind": "lighting_cabinet", "modbus_host": "10.0.0.5"},
            {"id": "cab-02", "kind": "lighting_cabinet", "modbus_host": "10.0.0.6"},
            {"id": "meter-01", "kind": "energy_meter", "modbus_host": "10.0.0.5"},
            {"id": "meter-old", "kind": "energy_meter", "modbus_host": "10.0.0.9"},
        ]
        devices[0].update(district="Ninh Kiều", groups=["street-a", "ninh-kieu-lights"])
        devices[2].update(register_map="sdm120", modbus_port=1502, modbus_unit=7)
        for n, circuit in enumerate((1, 3, 3), start=1):
            devices.append(
                {
                    "id": f"sl-{n}",
                    "kind": "streetlight",
                    "rated_power_w": 90,
                    "cabinet_id": "cab-01",
                    "cabinet_circuit": circuit,
                }
            )
        for fields in devices:
            registry.create_device(DeviceCreate.model_validate({"name": fields["id"], **fields}))
        registry.transition("meter-old", LifecycleState.DECOMMISSIONED)


async def test_targets_load_from_the_registry_with_bound_circuits(
    sessions: sessionmaker[Session],
) -> None:
    _create(sessions)
    with sessions() as session:
        targets, problems = load_meter_targets(session, {"meter-01": WordOrder.CDAB})
    assert problems == {}
    by_id = {t.device_id: t for t in targets}
    assert list(by_id) == ["cab-01", "cab-02", "meter-01"]  # not the decommissioned one
    cab = by_id["cab-01"]
    assert (cab.kind, cab.host, cab.port, cab.unit) == (
        DeviceKind.LIGHTING_CABINET,
        "10.0.0.5",
        502,
        1,
    )
    assert cab.register_map is LIGHTING_CABINET and cab.circuits == (1, 3)
    assert cab.tags() == {
        "device_id": "cab-01",
        "district": "Ninh Kiều",
        "group": "ninh-kieu-lights",
    }
    assert {"circuit_1_on", "circuit_3_on"} <= cab.metric_names()
    assert "circuit_2_on" not in cab.metric_names()
    assert by_id["cab-02"].circuits is None  # no lamps bound: all 16 circuits reported
    assert len([m for m in by_id["cab-02"].metric_names() if m.startswith("circuit_")]) == 16
    meter = by_id["meter-01"]
    assert (meter.port, meter.unit, meter.register_map) == (1502, 7, SDM120)
    assert meter.word_order is WordOrder.CDAB
    assert meter.endpoint == ("10.0.0.5", 1502)


def test_a_device_that_cannot_be_polled_is_refused_naming_the_field() -> None:
    lamp = Device(id="sl-1", kind="streetlight", name="lamp")
    with pytest.raises(ValueError, match="kind: streetlight is not read over Modbus"):
        meter_target(lamp)
    hostless = Device(id="m-1", kind="energy_meter", name="meter")
    with pytest.raises(ValueError, match="modbus_host: missing"):
        meter_target(hostless)
    unmapped = Device(id="m-2", kind="energy_meter", name="m", modbus_host="h", register_map="x")
    with pytest.raises(ValueError, match="register_map: unknown register map 'x'"):
        meter_target(unmapped)
    fine = meter_target(Device(id="m-3", kind="energy_meter", name="m", modbus_host="h"))
    assert (fine.port, fine.unit, fine.register_map, fine.group) == (502, 1, SDM630, None)


async def test_a_poll_of_an_unknown_meter_is_a_key_error() -> None:
    async with ModbusClientPool(FAST) as pool:
        poller = ModbusPoller([], pool, Sinks().submit, Sinks())
        with pytest.raises(KeyError, match="no Modbus meter 'nope'"):
            await poller.poll_now("nope")
