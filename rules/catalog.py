"""What rules know of each device from the registry: kind, district, groups, rated power.

``DeviceCatalog`` loads every device in a worker thread at start and every
``refresh_interval_s`` (an async context manager owning that task). ``get`` is a plain
dictionary lookup for the engine's hot path; ``members`` answers "the lamps of this
district / group" for actions. ``StaticCatalog`` holds a fixed mapping (the benchmark,
the backtest's and unit tests' pure runs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Protocol, Self

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.models import Device, device_groups
from pharos_core.lifecycle import ServiceTasks
from rules.derived import DeviceFacts
from telemetry.periodic import repeat_every

log = logging.getLogger(__name__)


class Catalog(Protocol):
    def get(self, device_id: str) -> DeviceFacts | None: ...
    def members(
        self, *, district: str | None = None, group: str | None = None, kinds: Iterable[str] = ()
    ) -> list[str]: ...


class StaticCatalog:
    def __init__(self, devices: Iterable[DeviceFacts] = ()) -> None:
        self._devices: dict[str, DeviceFacts] = {d.device_id: d for d in devices}

    def replace(self, devices: Mapping[str, DeviceFacts]) -> None:
        self._devices = dict(devices)

    def get(self, device_id: str) -> DeviceFacts | None:
        return self._devices.get(device_id)

    def __len__(self) -> int:
        return len(self._devices)

    def members(
        self, *, district: str | None = None, group: str | None = None, kinds: Iterable[str] = ()
    ) -> list[str]:
        wanted = set(kinds)
        return sorted(
            d.device_id
            for d in self._devices.values()
            if (district is None or d.district == district)
            and (group is None or group in d.groups)
            and (not wanted or d.kind in wanted)
        )


def load_facts(sessions: sessionmaker[Session]) -> dict[str, DeviceFacts]:
    """Every device not decommissioned, with its groups (blocking)."""
    with sessions() as session:
        groups: dict[str, set[str]] = {}
        for device_id, group_id in session.execute(
            select(device_groups.c.device_id, device_groups.c.group_id)
        ):
            groups.setdefault(device_id, set()).add(group_id)
        query = select(
            Device.id, Device.kind, Device.district, Device.rated_power_w, Device.state
        ).where(Device.state != "decommissioned")
        return {
            device_id: DeviceFacts(
                device_id, kind, district, frozenset(groups.get(device_id, ())), rated
            )
            for device_id, kind, district, rated, _state in session.execute(query)
        }


class DeviceCatalog(StaticCatalog):
    """``StaticCatalog`` filled from the registry and kept fresh."""

    def __init__(self, sessions: sessionmaker[Session], refresh_interval_s: float = 60.0) -> None:
        super().__init__()
        self._sessions = sessions
        self._interval = refresh_interval_s
        self._stopping = asyncio.Event()
        self._tasks = ServiceTasks(self._stopping)

    async def refresh(self) -> None:
        self.replace(await asyncio.to_thread(load_facts, self._sessions))

    async def __aenter__(self) -> Self:
        await self.refresh()
        await self._tasks.start(("rules-catalog-refresh", self._run()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.stop(exc_type, exc, tb)

    async def _run(self) -> None:
        # A failed refresh keeps the devices we have; the next round tries again.
        await repeat_every(
            self._interval, self._stopping, self.refresh, what="rules catalog refresh"
        )
