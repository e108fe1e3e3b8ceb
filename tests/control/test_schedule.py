"""The scheduler on a real Mosquitto with simulated lamps and a stepped clock: a whole
night in Cần Thơ in seconds, a restart at 23:30, a lamp that missed a command.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from astral import Observer
from astral.sun import sunrise, sunset
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from control.commands.model import CommandRequest
from control.commands.service import CommandService
from control.models import CommandRow, LampStateRow
from control.plan import CalendarSpec, Target, TargetType
from control.program import ProgramSpec, Site, default_program
from control.schedule import ScheduleOptions, StepScheduler
from control.state import list_lamp_states, upsert_lamp_state
from control.store import add_override, assign, save_calendar, save_program
from devices.registry.db import transaction
from devices.wire.commands import LampProgram, ProgramStep
from firmware_sim.mqtt.hub import MqttHub
from firmware_sim.physics.lamp import LampModel
from pharos_core.clock import SteppedClock
from tests.control.helpers import LAT, LON, command_service, register_lamps, wait_reported
from tests.firmware_sim.test_mqtt_device import Accounts, running

pytestmark = pytest.mark.broker

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
SITE = Site(latitude=LAT, longitude=LON)
IDS = ["lamp-a", "lamp-b", "lamp-c"]
ALWAYS_FULL = LampProgram(id="factory", steps=[ProgramStep(at="12:00", level=100)])
QUIET = ScheduleOptions(drift_check_s=86_400)  # drift is corrected when the test says


def lamps(program: LampProgram = ALWAYS_FULL) -> list[LampModel]:
    return [
        LampModel(i, 100.0, LAT, LON, random.Random(i), interval_s=1800, program=program)
        for i in IDS
    ]


def set_up_city(sessions: sessionmaker[Session]) -> None:
    register_lamps(sessions, "hoa-binh", IDS)
    with transaction(sessions) as session:
        save_program(session, default_program(), SITE)
        save_program(
            session,
            ProgramSpec(id="unused", name="u", steps=[ProgramStep(at="19:00", level=10)]),
            SITE,
        )
        save_calendar(session, CalendarSpec(id="city", name="City", default_program_id="default"))
        assign(session, Target(TargetType.GROUP, "hoa-binh"), "city")


async def drive(
    clock: SteppedClock,
    hub: MqttHub,
    scheduler: StepScheduler,
    service: CommandService,
    end: datetime,
) -> None:
    """Move time wake-up by wake-up, letting the scheduler send each step first."""
    while True:
        await scheduler.reached(clock.now())
        await service.flushed()
        await hub.wait_calm()
        wake = clock.next_wake()
        if wake is None or wake > end:
            break
        clock.advance(max(0.0, (wake - clock.now()).total_seconds()))
        for _ in range(20):
            await asyncio.sleep(0)
    if end > clock.now():
        clock.advance((end - clock.now()).total_seconds())
    await scheduler.reached(clock.now())


@asynccontextmanager
async def backend(
    accounts: Accounts, sessions: sessionmaker[Session], engine: Engine, clock: SteppedClock
) -> AsyncIterator[tuple[CommandService, StepScheduler]]:
    async with (
        command_service(accounts, sessions, clock) as service,
        StepScheduler(sessions, engine, clock, service, SITE, QUIET) as scheduler,
    ):
        yield service, scheduler


def schedule_dims(sessions: sessionmaker[Session]) -> list[tuple[datetime, float]]:
    with transaction(sessions) as session:
        rows = session.scalars(
            select(CommandRow)
            .where(CommandRow.source == "schedule", CommandRow.action == "set_dim")
            .order_by(CommandRow.created_at)
        )
        return [(r.created_at.astimezone(LOCAL), r.params["level"]) for r in rows]


async def test_a_whole_night_runs_the_default_program_at_astrals_times(
    accounts: Accounts, sessions: sessionmaker[Session], engine: Engine
) -> None:
    set_up_city(sessions)
    start = datetime(2026, 6, 21, 17, 0, tzinfo=LOCAL)
    clock = SteppedClock(start)
    models = lamps()
    async with (
        running(accounts, models, clock) as (hub, _),
        backend(accounts, sessions, engine, clock) as (service, scheduler),
    ):
        await drive(clock, hub, scheduler, service, start + timedelta(hours=14))
    observer = Observer(latitude=LAT, longitude=LON)
    dusk = sunset(observer, start.date(), LOCAL) - timedelta(minutes=10)
    dawn = sunrise(observer, start.date() + timedelta(days=1), LOCAL) + timedelta(minutes=10)
    midnight = datetime(2026, 6, 22, 0, 0, tzinfo=LOCAL)
    assert schedule_dims(sessions) == [
        (start, 0.0),  # the catch-up at start: daylight
        (dusk, 100.0),
        (midnight - timedelta(hours=2), 70.0),
        (midnight, 50.0),
        (midnight + timedelta(hours=4, minutes=30), 100.0),
        (dawn, 0.0),
    ]
    # The lamps were sent the program too, and run it (they report it).
    assert all(m.program.id == "default" for m in models)
    with transaction(sessions) as session:
        reported = session.scalars(select(LampStateRow.reported_program_id)).all()
    assert reported == ["default"] * 3


async def test_restarted_at_2330_every_lamp_gets_the_level_it_should_have(
    accounts: Accounts, sessions: sessionmaker[Session], engine: Engine
) -> None:
    set_up_city(sessions)
    evening = datetime(2026, 12, 21, 19, 0, tzinfo=LOCAL)
    clock = SteppedClock(evening)
    models = lamps()
    async with running(accounts, models, clock) as (hub, _):
        async with backend(accounts, sessions, engine, clock) as (service, scheduler):
            await drive(clock, hub, scheduler, service, evening + timedelta(minutes=30))
        # The backend is away from 19:30 to 23:30; meanwhile the lamps were reset to
        # their factory program (a power cut), and the 22:00 step was never sent.
        for model in models:
            model.handle("set_program", {"program": ALWAYS_FULL.model_dump()}, clock.now())
        clock.advance(4 * 3600)
        async with backend(accounts, sessions, engine, clock) as (service, scheduler):
            await scheduler.reached(clock.now())
            sent = [c for c in schedule_dims(sessions) if c[0] == clock.now()]
            assert sent == [(clock.now().astimezone(LOCAL), 70.0)]
            await wait_reported(
                service,
                lambda states: all(
                    states.get(i, {}).get("dim_level") == 70
                    and states[i].get("program_id") == "default"
                    for i in IDS
                ),
            )
    assert all(m.output_level(clock.now()) == 70 for m in models)
    assert all(m.program.id == "default" for m in models)


async def test_a_lamp_that_missed_a_command_is_brought_back(
    accounts: Accounts, sessions: sessionmaker[Session], engine: Engine
) -> None:
    register_lamps(sessions, "street", ["lamp-a"])
    start = datetime(2026, 3, 20, 20, 0, tzinfo=LOCAL)
    clock = SteppedClock(start)
    accounts.add(["lamp-a"])
    (model,) = [m for m in lamps() if m.device_id == "lamp-a"]
    async with backend(accounts, sessions, engine, clock) as (service, scheduler):
        request = CommandRequest(
            action="set_dim",
            params={"level": 40},
            target_type=TargetType.DEVICE,
            target_id="lamp-a",
            ttl_s=60,
        )
        created = await service.submit(request, "operator")  # the lamp is offline: missed
        clock.advance(120)
        async with asyncio.timeout(15):
            await service.wait_settled(created.id)
        async with running(accounts, [model], clock):
            # It comes back, at its program's level.
            await wait_reported(service, lambda s: s.get("lamp-a", {}).get("dim_level") == 100)
            await service.flushed()
            with transaction(sessions) as session:
                assert [s.drifting for s in list_lamp_states(session)] == [True]
            assert await scheduler.correct_drift() == 0  # not before the grace period
            clock.advance(QUIET.drift_grace_s + 1)
            assert await scheduler.correct_drift() == 1
            await wait_reported(service, lambda s: s.get("lamp-a", {}).get("dim_level") == 40)
            assert model.output_level(clock.now()) == 40
            await service.flushed()
            assert await scheduler.correct_drift() == 0
    with transaction(sessions) as session:
        (state,) = list_lamp_states(session)
    assert not state.drifting and state.corrections == 0


async def test_an_override_wins_then_the_program_takes_over_again(
    accounts: Accounts, sessions: sessionmaker[Session], engine: Engine
) -> None:
    set_up_city(sessions)
    start = datetime(2026, 6, 21, 19, 30, tzinfo=LOCAL)
    with transaction(sessions) as session:
        add_override(
            session,
            Target(TargetType.GROUP, "hoa-binh"),
            30,
            start + timedelta(minutes=30),
            start + timedelta(minutes=75),
            "operator",
            "a festival on the street",
        )
    clock = SteppedClock(start)
    models = lamps()
    async with (
        running(accounts, models, clock) as (hub, _),
        backend(accounts, sessions, engine, clock) as (service, scheduler),
    ):
        await drive(clock, hub, scheduler, service, start + timedelta(minutes=50))
        await wait_reported(service, lambda s: all(s[i].get("dim_level") == 30 for i in IDS))
        await drive(clock, hub, scheduler, service, start + timedelta(minutes=90))
        await wait_reported(service, lambda s: all(s[i].get("dim_level") == 100 for i in IDS))
    assert schedule_dims(sessions) == [
        (start, 100.0),  # catch-up: the program's level
        (start + timedelta(minutes=30), 30.0),  # the override wins
        (start + timedelta(minutes=75), 100.0),  # and ends: back to the program
    ]


async def test_a_program_edited_under_its_id_reaches_the_lamps_running_it(
    accounts: Accounts, sessions: sessionmaker[Session], engine: Engine
) -> None:
    set_up_city(sessions)
    start = datetime(2026, 6, 21, 20, 0, tzinfo=LOCAL)
    clock = SteppedClock(start)
    models = lamps()
    edited = ProgramSpec(
        id="default",
        name="Default, dimmer",
        steps=[ProgramStep(event="sunset", offset_minutes=-10, level=60),
               ProgramStep(event="sunrise", offset_minutes=10, level=0)],
    )  # fmt: skip
    async with (
        running(accounts, models, clock) as (hub, _),
        backend(accounts, sessions, engine, clock) as (service, scheduler),
    ):
        await drive(clock, hub, scheduler, service, start)
        assert all(m.program.steps[0].level == 100 for m in models)
        with transaction(sessions) as session:
            save_program(session, edited, SITE)
        scheduler.plan_changed()
        await scheduler.reached(clock.now())
        await service.flushed()
        await hub.wait_calm()
        await drive(clock, hub, scheduler, service, start + timedelta(minutes=1))
    assert all(m.program == edited.lamp_program() for m in models)
    with transaction(sessions) as session:
        actions = session.scalars(
            select(CommandRow.action).where(CommandRow.source == "schedule")
        ).all()
    assert actions.count("set_program") == 2  # at start, and after the edit


class _Recorded:
    """The commands a scheduler submits (only what it asks is checked here)."""

    def __init__(self) -> None:
        self.requests: list[CommandRequest] = []

    async def submit(self, request: CommandRequest, actor: str, *, source: str = "api") -> Any:
        self.requests.append(request)
        return None


async def test_drift_repair_by_day_asks_the_program_and_never_lights_a_lamp(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    """The last level commanded was 100 (last night); at 07:00 the program has the lamps
    off, so a lamp still lit is brought to 0, and one that is off is not drifting."""
    set_up_city(sessions)
    morning = datetime(2026, 3, 21, 7, 0, tzinfo=LOCAL)
    night = morning - timedelta(hours=9)
    with transaction(sessions) as session:
        upsert_lamp_state(
            session,
            {
                "lamp-a": {"desired_level": 100.0, "reported_level": 100.0, "reported_power": "on"},
                "lamp-b": {"desired_level": 100.0, "reported_level": 0.0, "reported_power": "off"},
                "lamp-c": {"desired_level": 100.0, "reported_level": 0.0, "reported_power": "off"},
            },
        )
        for row in session.scalars(select(LampStateRow)):
            row.drift_since = night  # drifting (by the stale level) since the night
    recorded = _Recorded()
    clock = SteppedClock(morning)
    scheduler = StepScheduler(sessions, engine, clock, recorded, SITE, QUIET)
    assert await scheduler.correct_drift() == 1
    (request,) = recorded.requests
    assert (request.target_id, request.params) == ("lamp-a", {"level": 0.0})
    with transaction(sessions) as session:
        states = {s.device_id: s for s in list_lamp_states(session)}
    assert states["lamp-a"].desired_level == 0.0
    assert not states["lamp-b"].drifting and states["lamp-b"].corrections == 0
