"""A cabinet circuit switched over Modbus (a real Modbus TCP server of the simulator)
cuts the supply of the MQTT lamps on that circuit: their power drops, ``lamp_on`` false.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control.commands.model import CommandRequest, TargetStatus
from control.commands.records import get_command
from control.plan import TargetType
from devices.modbus_client import ModbusClientPool
from devices.registry.db import transaction
from devices.registry.service import Registry
from firmware_sim.faults import FaultConfig
from firmware_sim.fleet import Fleet
from firmware_sim.modbus import CabinetModel
from firmware_sim.physics.lamp import LampModel
from firmware_sim.scenario import expand, load_scenario
from pharos.simulate import _device_create, ensure_lighting_groups
from pharos_core.clock import SteppedClock
from tests.control.helpers import WAIT_S, command_service, wait_reported
from tests.firmware_sim.test_mqtt_device import Accounts

pytestmark = pytest.mark.broker

CABINET = "cab-nk-00001"


async def test_switching_a_circuit_off_turns_its_lamps_off(
    accounts: Accounts, sessions: sessionmaker[Session]
) -> None:
    scenario = load_scenario("ci-small")
    specs = [
        replace(s, faults=FaultConfig())
        for s in expand(scenario)
        if s.device_id == CABINET or s.cabinet_id == CABINET
    ]
    lamps_1 = [s.device_id for s in specs if s.cabinet_circuit == 1]
    lamps_2 = [s.device_id for s in specs if s.cabinet_circuit == 2]
    clock = SteppedClock(scenario.start + timedelta(hours=1))  # 18:30: lamps lit
    fleet = Fleet(specs, broker=accounts.address, clock=clock, seed=scenario.seed)
    async with fleet, ModbusClientPool() as pool:
        endpoints = fleet.modbus_endpoints
        ordered = sorted(specs, key=lambda s: s.cabinet_id is not None)
        with transaction(sessions) as session:
            ensure_lighting_groups(Registry(session, "test"), specs)
            Registry(session, "test").upsert_devices(
                [_device_create(s, endpoints.get(s.device_id)) for s in ordered]
            )
        mqtt_ids = [s.device_id for s in fleet.mqtt_specs]
        accounts.add(mqtt_ids)
        fleet.start_mqtt({i: accounts.secrets[i] for i in mqtt_ids})
        async with command_service(accounts, sessions, clock, modbus=pool) as service:
            await wait_reported(
                service, lambda s: all(s.get(i, {}).get("power") == "on" for i in mqtt_ids)
            )
            request = CommandRequest(
                action="switch_circuit",
                params={"circuit": 1, "on": False},
                target_type=TargetType.DEVICE,
                target_id=CABINET,
            )
            created = await service.submit(request, "operator")
            async with asyncio.timeout(WAIT_S):
                await service.wait_settled(created.id)
            # The lamps on circuit 1 report themselves dark at once.
            await wait_reported(service, lambda s: all(s[i].get("power") == "off" for i in lamps_1))
            now = clock.now()
            for lamp_id in lamps_1:
                reading = fleet.models[lamp_id].sample(now)
                assert reading["power_w"] == 0.0 and reading["lamp_on"] is False
            for lamp_id in lamps_2:
                reading = fleet.models[lamp_id].sample(now)
                assert reading["power_w"] > 100 and reading["lamp_on"] is True
            cabinet = fleet.models[CABINET]
            assert isinstance(cabinet, CabinetModel)
            assert not cabinet.is_closed(1) and cabinet.circuit_power_w(1) == 0.0
            assert all(isinstance(fleet.models[i], LampModel) for i in lamps_1)
    with transaction(sessions) as session:
        stored = get_command(session, str(created.id))
    (target,) = stored.targets or []
    assert (target.device_id, target.status) == (CABINET, TargetStatus.OK)
    assert target.detail == "circuit 1 off"
