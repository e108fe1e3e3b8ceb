"""Fleet statistics from the registry, the twin and the dead letters (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.db import transaction
from devices.registry.models import Device, LifecycleState
from devices.registry.schemas import DeviceCreate
from devices.registry.service import registry_session
from devices.wire import DeviceStatus
from pharos_core.clock import SteppedClock
from telemetry.deadletters import DeadLetterStore
from telemetry.derived import DERIVED
from telemetry.fleet_stats import UNREGISTERED, FleetStatsWriter, fleet_points, read_fleet
from telemetry.points import DeadLetter, Point
from telemetry.twin import DeviceTwinStore

T0 = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
NK, CR = "Ninh Kiều", "Cái Răng"


def _device(device_id: str, kind: str, district: str, position: bool = True) -> DeviceCreate:
    data: dict[str, object] = {"id": device_id, "kind": kind, "name": device_id}
    data["district"] = district
    if position:
        data |= {"latitude": 10.03, "longitude": 105.78}
    if kind == "streetlight":
        data["rated_power_w"] = 100.0
    return DeviceCreate.model_validate(data)


@pytest.fixture
async def city(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    with registry_session(sessions, "tech") as registry:
        for device in (
            _device("sl-1", "streetlight", NK),
            _device("sl-2", "streetlight", NK),
            _device("sl-3", "streetlight", CR),
            _device("env-1", "env_monitor", NK, position=False),
            _device("old-1", "streetlight", NK),
        ):
            registry.create_device(device)
    with transaction(sessions) as session:  # lifecycle checks are not under test here
        session.execute(
            update(Device).where(Device.id == "sl-1").values(state=LifecycleState.IN_SERVICE)
        )
        session.execute(
            update(Device).where(Device.id == "old-1").values(state=LifecycleState.DECOMMISSIONED)
        )
    async with DeviceTwinStore(sessions) as twin:
        for device_id in ("sl-1", "sl-2", "env-1"):
            await twin.record_status(device_id, DeviceStatus.ONLINE, T0)
        await twin.record_status("sl-2", DeviceStatus.OFFLINE, T0 + timedelta(minutes=1))
        await twin.record_points(
            [
                Point("streetlight", {"device_id": "sl-1"}, {"lamp_on": True}, T0),
                Point("streetlight", {"device_id": "sl-2"}, {"lamp_on": False}, T0),
                Point("streetlight", {"device_id": "sl-3"}, {"lamp_on": True}, T0),
                Point("env_monitor", {"device_id": "env-1"}, {"pm25": 30.0}, T0),
            ]
        )
    letters = [
        DeadLetter(T0, "mqtt", "payload: bad json", device_id="env-1"),
        DeadLetter(T0, "mqtt", "payload: bad json", device_id="env-1"),
        DeadLetter(T0, "mqtt", "unknown device", device_id="ghost-9"),
        DeadLetter(T0, "mqtt", "topic: not ours"),
    ]
    await DeadLetterStore(sessions).put(letters)
    return sessions


async def test_counts_per_kind_and_district(city: sessionmaker[Session]) -> None:
    snapshot = await read_fleet(city, T0 + timedelta(minutes=5))
    nk = snapshot.counts[("streetlight", NK)]
    assert (nk.devices, nk.online, nk.commissioned, nk.lamps_on) == (2, 1, 1, 1)
    cr = snapshot.counts[("streetlight", CR)]
    assert (cr.devices, cr.online, cr.lamps_on) == (1, 0, 1)  # lit, never said online
    env = snapshot.counts[("env_monitor", NK)]
    assert (env.devices, env.online, env.lamps_on, env.dead_letters) == (1, 1, 0, 2)
    assert snapshot.counts[(UNREGISTERED, None)].dead_letters == 2
    assert snapshot.by_kind()["streetlight"].devices == 3  # the decommissioned one is gone


async def test_points_follow_the_derived_contract(city: sessionmaker[Session]) -> None:
    at = T0 + timedelta(minutes=5)
    points = fleet_points(await read_fleet(city, at))
    assert {p.time for p in points} == {at}
    for point in points:
        contract = DERIVED[point.measurement]
        assert set(point.tags) <= set(contract.tags), point
        assert set(point.fields) <= contract.field_names(), point
    fleet = {(p.tags["kind"], p.tags.get("district")): p.fields for p in points
             if p.measurement == "fleet"}  # fmt: skip
    assert fleet[("streetlight", NK)]["lamps_on"] == 1
    assert fleet[(UNREGISTERED, None)]["dead_letters"] == 2
    devices = {p.tags["device_id"]: p.fields for p in points if p.measurement == "devices"}
    assert sorted(devices) == ["sl-1", "sl-2", "sl-3"]  # env-1 has no position
    assert devices["sl-1"]["online"] == 1 and devices["sl-2"]["online"] == 0
    assert devices["sl-1"]["last_seen_age_s"] == 300.0
    assert devices["sl-1"]["commissioned"] == 1
    assert "last_seen_age_s" in devices["sl-3"]


async def test_the_writer_submits_every_interval_and_survives_a_failing_sink(
    city: sessionmaker[Session],
) -> None:
    batches: list[Sequence[Point]] = []
    two_written = asyncio.Event()
    calls = 0

    called = asyncio.Event()

    async def submit(points: Sequence[Point]) -> None:
        nonlocal calls
        calls += 1
        called.set()
        if calls == 1:
            raise ConnectionError("sink away")  # the first round fails; later ones go on
        batches.append(points)
        if len(batches) == 2:
            two_written.set()

    clock = SteppedClock(T0)
    async with FleetStatsWriter(city, submit, interval_s=60, clock=clock):
        async with asyncio.timeout(10):
            while not two_written.is_set():  # a simulated minute once each round ran
                await called.wait()
                called.clear()
                await clock.run_until(clock.now() + timedelta(minutes=1))
    assert len(batches) >= 2
    assert batches[0][0].time == T0 + timedelta(minutes=1)  # round 0 failed, round 1 went
    assert batches[1][0].time == T0 + timedelta(minutes=2)


def test_a_non_positive_interval_is_refused(sessions: sessionmaker[Session]) -> None:
    async def submit(points: Sequence[Point]) -> None:
        return None

    with pytest.raises(ValueError, match="interval_s"):
        FleetStatsWriter(sessions, submit, interval_s=0)


async def test_reachable_devices_count_as_online(sessions: sessionmaker[Session]) -> None:
    with registry_session(sessions, "tech") as registry:
        registry.create_device(
            DeviceCreate.model_validate(
                {
                    "id": "em-1",
                    "kind": "energy_meter",
                    "name": "meter",
                    "district": NK,
                    "modbus_host": "10.0.0.5",
                    "latitude": 10.0,
                    "longitude": 105.7,
                }
            )
        )
    silent = await read_fleet(sessions, T0)
    assert silent.counts[("energy_meter", NK)].online == 0
    polled = await read_fleet(sessions, T0, reachable={"em-1"})
    assert polled.counts[("energy_meter", NK)].online == 1
    batches: list[Sequence[Point]] = []

    async def submit(points: Sequence[Point]) -> None:
        batches.append(points)

    writer = FleetStatsWriter(sessions, submit, clock=SteppedClock(T0), reachable=lambda: {"em-1"})
    await writer.write_once()
    (device,) = [p for p in batches[0] if p.measurement == "devices"]
    assert device.fields["online"] == 1
