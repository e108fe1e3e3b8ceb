"""The reported twin: status with times, last seen and values, reported state, commissioning.

On SQLite and PostgreSQL. Background flushing is checked by waiting on the stored
state with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.db import Base
from devices.registry.models import AuditEntry, Commissioning
from devices.registry.schemas import DeviceCreate
from devices.registry.service import registry_session
from devices.wire import DeviceState, DeviceStatus
from telemetry.models import DeviceStatusRow
from telemetry.points import SEQ_FIELD, TS_REPLACED_FIELD, Point
from telemetry.twin import DeviceTwinStore, MetricValue, TwinPublic, read_twin

T0 = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


@pytest.fixture
def fleet(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    with registry_session(sessions, "tech") as registry:
        for device_id in ("env-0001", "env-0002", "env-0003"):
            registry.create_device(
                DeviceCreate.model_validate(
                    {"id": device_id, "kind": "env_monitor", "name": device_id}
                )
            )
    return sessions


def reading(device_id: str, seconds: float, **fields: float | bool | int) -> Point:
    return Point(
        "env_monitor", {"device_id": device_id}, dict(fields), T0 + timedelta(seconds=seconds)
    )


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return await check()
        await asyncio.sleep(0.01)  # polling a condition with a deadline
    return True


def first_telemetry_audits(sessions: sessionmaker[Session], device_id: str) -> list[AuditEntry]:
    with sessions() as session:
        query = select(AuditEntry).where(
            AuditEntry.action == "commissioning.first_telemetry", AuditEntry.entity_id == device_id
        )
        return list(session.scalars(query))


async def test_status_online_offline_with_the_time_it_changed(
    fleet: sessionmaker[Session],
) -> None:
    twin = DeviceTwinStore(fleet)
    await twin.record_status("env-0001", DeviceStatus.ONLINE, T0)
    assert (await twin.get("env-0001")).model_dump(include={"online", "status_changed_at"}) == {
        "online": True,
        "status_changed_at": T0,
    }
    # A repeated 'online' (the retained message again) does not move 'since'.
    await twin.record_status("env-0001", DeviceStatus.ONLINE, T0 + timedelta(minutes=5))
    assert (await twin.get("env-0001")).status_changed_at == T0
    # The Last Will.
    await twin.record_status("env-0001", DeviceStatus.OFFLINE, T0 + timedelta(minutes=9))
    state = await twin.get("env-0001")
    assert (state.online, state.status_changed_at) == (False, T0 + timedelta(minutes=9))
    # A late redelivery of an older status changes nothing.
    await twin.record_status("env-0001", DeviceStatus.ONLINE, T0 + timedelta(minutes=1))
    assert (await twin.get("env-0001")).online is False


async def test_last_seen_and_the_newest_value_of_each_metric(
    fleet: sessionmaker[Session],
) -> None:
    twin = DeviceTwinStore(fleet)
    await twin.record_points(
        [
            reading("env-0001", 10, pm25=40.0, pm10=60.0, **{SEQ_FIELD: 1}),
            reading("env-0001", 30, pm25=42.5, **{SEQ_FIELD: 3, TS_REPLACED_FIELD: True}),
            reading("env-0001", 20, pm25=41.0, pm10=61.0, **{SEQ_FIELD: 2}),  # out of order
        ]
    )
    await twin.flush()
    await twin.record_points([reading("env-0001", 5, pm25=1.0, no2=12.0)])  # older, later batch
    state = await twin.get("env-0001")
    assert state.last_seen_at == T0 + timedelta(seconds=30)
    assert state.last_values == {
        "pm25": MetricValue(value=42.5, at=T0 + timedelta(seconds=30)),
        "pm10": MetricValue(value=61.0, at=T0 + timedelta(seconds=20)),
        "no2": MetricValue(value=12.0, at=T0 + timedelta(seconds=5)),
    }


async def test_reported_state_is_stored_as_reported(fleet: sessionmaker[Session]) -> None:
    twin = DeviceTwinStore(fleet)
    state = DeviceState.parse(
        b'{"ts": "2026-11-22T18:00:00+07:00", "fw": "2.4.1", "interval_s": 60}'
    )
    await twin.record_state("env-0002", state, T0)
    stored = await twin.get("env-0002")
    assert stored.reported_state == {
        "ts": "2026-11-22T18:00:00+07:00",
        "fw": "2.4.1",
        "interval_s": 60,
    }
    assert stored.reported_at == T0
    assert stored.online is None and stored.last_values == {}


async def test_a_device_that_never_reported_has_an_empty_twin(
    fleet: sessionmaker[Session],
) -> None:
    assert await read_twin(fleet, "env-0003") == TwinPublic(device_id="env-0003")


async def test_first_reading_ticks_commissioning_exactly_once(
    fleet: sessionmaker[Session],
) -> None:
    twin = DeviceTwinStore(fleet)
    await twin.record_points([reading("env-0001", 7, pm25=3.0), reading("env-0001", 4, pm25=2.0)])
    await twin.flush()
    await twin.record_points([reading("env-0001", 60, pm25=5.0)])
    await twin.flush()
    restarted = DeviceTwinStore(fleet)  # a new process knows nothing in memory
    await restarted.record_points([reading("env-0001", 90, pm25=6.0)])
    await restarted.flush()

    with fleet() as session:
        ticked = session.get(Commissioning, "env-0001")
        untouched = session.get(Commissioning, "env-0002")
        assert ticked is not None and untouched is not None
        assert ticked.first_telemetry_at == T0 + timedelta(seconds=4)
        assert untouched.first_telemetry_at is None
    audits = first_telemetry_audits(fleet, "env-0001")
    assert [a.actor for a in audits] == ["telemetry"]


async def test_a_device_removed_meanwhile_does_not_fail_the_batch(
    fleet: sessionmaker[Session],
) -> None:
    twin = DeviceTwinStore(fleet)
    await twin.record_points([reading("gone-0001", 1, pm25=1.0), reading("env-0002", 1, pm25=2.0)])
    await twin.record_status("gone-0001", DeviceStatus.ONLINE, T0)
    await twin.flush()
    assert (await read_twin(fleet, "env-0002")).last_values["pm25"].value == 2.0
    assert await read_twin(fleet, "gone-0001") == TwinPublic(device_id="gone-0001")


async def test_the_flusher_writes_in_the_background_and_on_exit(
    fleet: sessionmaker[Session],
) -> None:
    async def online() -> bool:
        return (await read_twin(fleet, "env-0001")).online is True

    async with DeviceTwinStore(fleet, flush_interval_s=0.05) as twin:
        await twin.record_status("env-0001", DeviceStatus.ONLINE, T0)
        assert await eventually(online)
        await twin.record_points([reading("env-0002", 1, pm25=9.0)])
    # Leaving the block flushed what was still pending (no wait needed).
    assert (await read_twin(fleet, "env-0002")).last_values["pm25"].value == 9.0


async def test_many_pending_updates_wake_the_flusher_early(
    fleet: sessionmaker[Session],
) -> None:
    async def both_seen() -> bool:
        twins = [await read_twin(fleet, d) for d in ("env-0001", "env-0002")]
        return all(t.last_seen_at is not None for t in twins)

    async with DeviceTwinStore(fleet, flush_interval_s=3600, flush_at=2) as twin:
        await twin.record_points([reading("env-0001", 1, pm25=1.0)])
        await twin.record_points([reading("env-0002", 1, pm25=1.0)])
        assert await eventually(both_seen)


async def test_a_failed_flush_keeps_its_updates_and_the_flusher_retries(
    fleet: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    """A database that fails for a while (here: the table is gone) loses no update."""
    table = Base.metadata.tables[DeviceStatusRow.__tablename__]
    with fleet() as session:
        engine = session.get_bind()
    table.drop(engine)

    async def flush_failed() -> bool:
        return "device twin: flush failed" in caplog.text

    async def stored() -> bool:
        return (await read_twin(fleet, "env-0001")).last_values.get("pm25") is not None

    async with DeviceTwinStore(fleet, flush_interval_s=0.02) as twin:
        await twin.record_points([reading("env-0001", 1, pm25=3.0)])
        assert await eventually(flush_failed)
        await asyncio.to_thread(table.create, engine)
        assert await eventually(stored)
    assert (await read_twin(fleet, "env-0001")).last_values["pm25"].value == 3.0
