"""The command service on a real Mosquitto with simulated lamps (real physics models).

Time is a ``SteppedClock``: answers arrive in real time, retries and expiry happen
when the test moves simulated time (``drive``), so an offline lamp's command expires
without waiting ten real minutes.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control.commands.model import CommandInvalid, CommandRequest, TargetStatus
from control.commands.records import get_command
from control.commands.service import CommandOptions, CommandService
from control.models import LampStateRow
from control.plan import TargetType
from devices.registry.db import transaction
from devices.registry.models import Commissioning
from pharos_core.clock import SteppedClock
from tests.control.helpers import command_service, lamp_models, register_lamps, wait_reported
from tests.firmware_sim.test_mqtt_device import Accounts, drive, running

pytestmark = pytest.mark.broker

START = datetime(2026, 3, 20, 13, 0, tzinfo=UTC)  # 20:00 in Cần Thơ
WAIT_S = 15.0


async def ready(service: CommandService, ids: list[str]) -> None:
    """Until every lamp has announced its state: it is subscribed to its commands."""
    await wait_reported(service, lambda states: all(i in states for i in ids))


def dim(group: str, level: float, **extra: object) -> CommandRequest:
    return CommandRequest(
        action="set_dim",
        params={"level": level},
        target_type=TargetType.GROUP,
        target_id=group,
        **extra,
    )


def command_of(sessions: sessionmaker[Session], command_id: uuid.UUID):  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        return get_command(session, str(command_id))


async def test_group_dim_reaches_every_lamp_and_each_ack_is_tracked(
    accounts: Accounts, sessions: sessionmaker[Session]
) -> None:
    ids = [f"lamp-{n:02d}" for n in range(12)]
    register_lamps(sessions, "hoa-binh", ids)
    models = lamp_models(ids)
    clock = SteppedClock(START)
    async with (
        running(accounts, models, clock),
        command_service(accounts, sessions, clock) as service,
    ):
        await ready(service, ids)
        created = await service.submit(dim("hoa-binh", 40), "operator")
        assert created.progress.total == 12
        async with asyncio.timeout(WAIT_S):
            await service.wait_settled(created.id)
        # Every lamp burns at 40 % now, as its own controller says.
        assert all(m.output_level(clock.now()) == 40 for m in models)
        assert len(service.latencies(created.id)) == 12
    stored = command_of(sessions, created.id)
    assert stored.progress.acknowledged == 12 and stored.progress.settled
    assert {t.status for t in stored.targets or []} == {TargetStatus.OK}
    assert all(t.attempts == 1 and t.answered_at is not None for t in stored.targets or [])
    with transaction(sessions) as session:
        desired = session.scalars(select(LampStateRow.desired_level)).all()
    assert desired == [40.0] * 12


async def test_offline_lamp_is_retried_then_its_command_expires(
    accounts: Accounts, sessions: sessionmaker[Session]
) -> None:
    ids = ["lamp-on", "lamp-off"]
    register_lamps(sessions, "street", ids)
    accounts.add(["lamp-off"])  # it has an account but never connects
    clock = SteppedClock(START)
    options = CommandOptions(retry_initial_s=20, retry_max_s=60)
    async with (
        running(accounts, lamp_models(["lamp-on"]), clock) as (hub, _),
        command_service(accounts, sessions, clock, options) as service,
    ):
        await ready(service, ["lamp-on"])
        created = await service.submit(dim("street", 70, ttl_s=300), "operator")
        # The lamp online answers (its ack comes before its new state) ...
        await wait_reported(service, lambda s: s["lamp-on"].get("dim_level") == 70)
        await drive(hub, clock, 400)  # past expiry: 20, 40, 60, 60 ... s between tries
        async with asyncio.timeout(WAIT_S):
            await service.wait_settled(created.id)
    targets = {t.device_id: t for t in command_of(sessions, created.id).targets or []}
    assert targets["lamp-on"].status is TargetStatus.OK
    assert targets["lamp-off"].status is TargetStatus.EXPIRED
    assert targets["lamp-off"].attempts >= 3  # retried with back-off before expiring
    assert targets["lamp-off"].detail == "no answer before expiry"


async def test_a_rejected_command_carries_the_lamps_reason(
    accounts: Accounts, sessions: sessionmaker[Session]
) -> None:
    register_lamps(sessions, "street", ["lamp-1"])
    clock = SteppedClock(START)
    # Valid JSON for the wire, but no lamp can run a step with both a time and an event.
    program = {"id": "odd", "steps": [{"at": "18:00", "event": "sunset", "level": 80}]}
    request = CommandRequest(
        action="set_program",
        params={"program": program},
        target_type=TargetType.DEVICE,
        target_id="lamp-1",
    )
    async with (
        running(accounts, lamp_models(["lamp-1"]), clock),
        command_service(accounts, sessions, clock) as service,
    ):
        await ready(service, ["lamp-1"])
        created = await service.submit(request, "operator")
        async with asyncio.timeout(WAIT_S):
            await service.wait_settled(created.id)
    (target,) = command_of(sessions, created.id).targets or []
    assert target.status is TargetStatus.REJECTED
    assert "steps.0" in target.detail and "exactly one of 'at' or 'event'" in target.detail


async def test_a_repeated_command_id_does_not_act_twice(
    accounts: Accounts, sessions: sessionmaker[Session]
) -> None:
    register_lamps(sessions, "street", ["lamp-1", "lamp-2"])
    clock = SteppedClock(START)
    request = dim("street", 30)
    async with (
        running(accounts, lamp_models(["lamp-1", "lamp-2"]), clock) as (hub, _),
        command_service(accounts, sessions, clock) as service,
    ):
        await ready(service, ["lamp-1", "lamp-2"])
        first = await service.submit(request, "operator")
        async with asyncio.timeout(WAIT_S):
            await service.wait_settled(first.id)
        acked = hub.counters.commands_acknowledged
        again = await service.submit(request, "someone-else")
        assert again.id == first.id and again.created_by == "operator"
        assert service.open_count(first.id) == 0  # nothing queued again
        await drive(hub, clock, 60)
    assert hub.counters.commands_acknowledged == acked == 2
    assert command_of(sessions, first.id).progress.acknowledged == 2


async def test_self_test_ok_ticks_the_commissioning_item(
    accounts: Accounts, sessions: sessionmaker[Session]
) -> None:
    register_lamps(sessions, "street", ["lamp-1"])
    clock = SteppedClock(START)
    request = CommandRequest(action="self_test", target_type=TargetType.DEVICE, target_id="lamp-1")
    async with (
        running(accounts, lamp_models(["lamp-1"]), clock),
        command_service(accounts, sessions, clock) as service,
    ):
        await ready(service, ["lamp-1"])
        created = await service.submit(request, "technician")
        async with asyncio.timeout(WAIT_S):
            await service.wait_settled(created.id)
    with transaction(sessions) as session:
        checklist = session.get(Commissioning, "lamp-1")
        assert checklist is not None and checklist.self_test_ok_at == START


def test_bad_parameters_and_unknown_groups_are_refused_with_the_field(
    sessions: sessionmaker[Session],
) -> None:
    from control.commands.records import create_command

    register_lamps(sessions, "street", ["lamp-1"])
    with transaction(sessions) as session:
        with pytest.raises(CommandInvalid) as bad_level:
            create_command(session, dim("street", 140), "op", START)
        assert bad_level.value.field == "params.level"
        with pytest.raises(CommandInvalid) as unknown:
            create_command(session, dim("nowhere", 40), "op", START)
        assert unknown.value.field == "target_id" and "nowhere" in unknown.value.reason
        with pytest.raises(CommandInvalid) as wrong_action:
            request = CommandRequest(
                action="set_interval",
                params={"seconds": 60},
                target_type=TargetType.GROUP,
                target_id="street",
            )
            create_command(session, request, "op", START)
        assert wrong_action.value.field == "action"
