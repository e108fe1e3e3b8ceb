"""What the simulator does for control: a repeated command id is answered again but not
carried out twice; a lamp whose supply is cut is dark and draws nothing."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devices.wire import Channel
from firmware_sim.physics.lamp import LampModel
from pharos.broker_process import MosquittoProcess
from pharos_core.clock import SteppedClock
from tests.firmware_sim.test_mqtt_device import (
    Accounts,
    FakeLamp,
    acks,
    command,
    drive,
    on,
    open_accounts,
    running,
    send,
    wait_for,
)

START = datetime(2026, 3, 20, 13, 0, tzinfo=UTC)  # 20:00 in Cần Thơ: lamps lit


@pytest.fixture
def accounts(mosquitto: MosquittoProcess) -> Iterator[Accounts]:
    yield from open_accounts(mosquitto)


@pytest.mark.broker
async def test_a_repeated_command_id_is_acknowledged_again_but_done_once(
    accounts: Accounts,
) -> None:
    clock = SteppedClock(START)
    backend = accounts.backend()
    lamp = FakeLamp("sl-test-repeat")
    dim = command("set_dim", {"level": 40}, START + timedelta(minutes=5))
    async with running(accounts, [lamp], clock) as (hub, _):
        await drive(hub, clock, 1)
        await send(backend, lamp.device_id, dim.to_payload())
        await send(backend, lamp.device_id, dim.to_payload())  # the backend's retry
        assert await wait_for(
            backend, lambda: len(on(backend, lamp.device_id, Channel.CMD_ACK)) == 2
        )
    assert [a.status for a in acks(backend, lamp.device_id)] == ["ok", "ok"]
    assert lamp.handled == [("set_dim", {"level": 40})]


def test_a_lamp_without_supply_is_dark_and_draws_nothing() -> None:
    lamp = LampModel("sl-1", 100.0, 10.0452, 105.7469, random.Random(1))
    lit = lamp.sample(START)
    assert lit["lamp_on"] is True and float(lit["power_w"]) > 90
    lamp.set_supply(False, START + timedelta(minutes=1))
    dark = lamp.sample(START + timedelta(minutes=31))
    assert dark["lamp_on"] is False and dark["power_w"] == 0.0
    assert lamp.state(START + timedelta(minutes=31))["power"] == "off"
    # Energy stopped at the cut: one minute at full (about 100 W) then nothing.
    assert float(dark["energy_kwh"]) - float(lit["energy_kwh"]) < 0.002
    lamp.set_supply(True, START + timedelta(minutes=32))
    assert lamp.sample(START + timedelta(minutes=33))["lamp_on"] is True
