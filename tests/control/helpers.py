"""Shared by the control tests: lamps in the registry, their simulated twins, the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from control.commands.link import LinkOptions
from control.commands.service import CommandOptions, CommandService
from devices.registry.db import transaction
from devices.registry.schemas import DeviceCreate, GroupCreate
from devices.registry.service import NotFoundError, Registry
from devices.wire import DeviceKind
from firmware_sim.physics.factory import build_model
from firmware_sim.physics.lamp import LampModel
from pharos_core.clock import Clock
from tests.firmware_sim.test_mqtt_device import Accounts

SERVICE = "pharos-commands"
WAIT_S = 15.0  # (wall) the longest a test waits for the broker and the lamps
LAT, LON = 10.0452, 105.7469


def register_lamps(
    sessions: sessionmaker[Session],
    group: str,
    ids: Sequence[str],
    rated_power_w: float = 100.0,
) -> None:
    with transaction(sessions) as session:
        registry = Registry(session, "test")
        try:
            registry.get_group(group)
        except NotFoundError:
            registry.create_group(GroupCreate(id=group, name=group, type="street"))
        for device_id in ids:
            registry.create_device(
                DeviceCreate(
                    id=device_id,
                    kind=DeviceKind.STREETLIGHT,
                    name=device_id,
                    latitude=LAT,
                    longitude=LON,
                    rated_power_w=rated_power_w,
                    groups=[group],
                )
            )


def lamp_models(ids: Sequence[str], rated_power_w: float = 100.0) -> list[LampModel]:
    models = []
    for device_id in ids:
        model = build_model(
            DeviceKind.STREETLIGHT,
            device_id,
            seed=1,
            latitude=LAT,
            longitude=LON,
            rated_power_w=rated_power_w,
            interval_s=60,
        )
        assert isinstance(model, LampModel)
        models.append(model)
    return models


@asynccontextmanager
async def command_service(
    accounts: Accounts,
    sessions: sessionmaker[Session],
    clock: Clock,
    options: CommandOptions | None = None,
    **kwargs: object,
) -> AsyncIterator[CommandService]:
    accounts.add([], services=[SERVICE])
    link = LinkOptions(
        accounts.broker.host, accounts.broker.port, SERVICE, accounts.secrets[SERVICE]
    )
    async with CommandService(sessions, clock, link, options=options, **kwargs) as service:  # type: ignore[arg-type]
        yield service


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def wait_reported(
    service: CommandService,
    predicate: Callable[[dict[str, dict[str, Any]]], bool],
) -> None:
    """Wait (with a deadline) until the reported states satisfy ``predicate``."""
    changed = asyncio.Event()

    def listener(_device_id: str, _state: dict[str, Any]) -> None:
        changed.set()

    service.add_state_listener(listener)
    try:
        async with asyncio.timeout(WAIT_S):
            while not predicate(service.reported):
                changed.clear()
                await changed.wait()
    finally:
        service.remove_state_listener(listener)
