"""Which devices exist, and how their points are tagged: the ingest's view of the registry.

``DeviceDirectory`` maps a device id to its kind (the measurement), district and
group tag. It loads the whole registry when it starts and again every
``refresh_interval_s``, in a worker thread. A message from a device it does not know
makes it look that device up at once (``lookup``), so a device registered a moment
ago is recognised by its very first reading; the answer "not registered" is then
remembered for ``miss_retry_s`` so a stream from an unregistered id costs one query
per interval, not one per message. Both maps are bounded (``max_devices``,
``max_misses``). The group tag is the device's first group by id, as the Modbus
poller tags it (a point carries one group; the stores resolve groups exactly through
the registry).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.models import Device, device_groups
from pharos_core.lifecycle import ServiceTasks
from telemetry.periodic import repeat_every

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_QUERY_CHUNK = 500  # ids per IN (...) list: well under every database's parameter limit


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a point of this device is tagged with."""

    device_id: str
    kind: str
    district: str | None = None
    group: str | None = None

    def tags(self) -> dict[str, str]:
        """``device_id``, and ``district``/``group`` when set (empty tags are left out)."""
        tags = {"device_id": self.device_id}
        if self.district:
            tags["district"] = self.district
        if self.group:
            tags["group"] = self.group
        return tags


class DeviceDirectory:
    """Device id → ``DeviceInfo``, loaded from the registry and kept fresh.

    Use as ``async with DeviceDirectory(sessions) as directory``; ``get`` is a plain
    dictionary lookup for the hot path, ``lookup`` resolves misses.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        refresh_interval_s: float = 60.0,
        miss_retry_s: float = 5.0,
        max_devices: int = 1_000_000,
        max_misses: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._refresh_interval = refresh_interval_s
        self._miss_retry = miss_retry_s
        self._max_devices = max_devices
        self._max_misses = max_misses
        self._clock = clock
        self._devices: dict[str, DeviceInfo] = {}
        self._misses: OrderedDict[str, float] = OrderedDict()  # id → when found missing
        self._lookup_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._tasks = ServiceTasks(self._stopping)

    async def __aenter__(self) -> Self:
        await self.refresh()
        await self._tasks.start(("device-directory-refresh", self._refresh_periodically()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.stop(exc_type, exc, tb)

    def __len__(self) -> int:
        return len(self._devices)

    def get(self, device_id: str) -> DeviceInfo | None:
        return self._devices.get(device_id)

    async def lookup(self, device_ids: Iterable[str]) -> None:
        """Look up the ids not known yet (and not found missing within ``miss_retry_s``)."""
        async with self._lookup_lock:
            now = self._clock()
            wanted = sorted({i for i in device_ids if i not in self._devices and self._due(i, now)})
            if not wanted:
                return
            found = await asyncio.to_thread(self._load, wanted)
            for info in found:
                self._add(info)
            for device_id in set(wanted) - {info.device_id for info in found}:
                self._note_miss(device_id, now)
            if found:
                log.info("device directory: %d new device(s) found", len(found))

    async def refresh(self) -> None:
        """Reload every device (kind, district or groups may have changed)."""
        loaded = await asyncio.to_thread(self._load, None)
        if len(loaded) > self._max_devices:
            log.error(
                "device directory: the registry holds %d devices, more than max_devices=%d; "
                "the others are looked up when they report, each taking an older one's place",
                len(loaded),
                self._max_devices,
            )
            loaded = loaded[: self._max_devices]
        self._devices = {info.device_id: info for info in loaded}
        self._misses.clear()

    async def _refresh_periodically(self) -> None:
        # A failed refresh keeps the directory we have; the next round tries again.
        await repeat_every(
            self._refresh_interval, self._stopping, self.refresh, what="device directory refresh"
        )

    def _due(self, device_id: str, now: float) -> bool:
        missed_at = self._misses.get(device_id)
        return missed_at is None or now - missed_at >= self._miss_retry

    def _note_miss(self, device_id: str, now: float) -> None:
        self._misses[device_id] = now
        self._misses.move_to_end(device_id)
        while len(self._misses) > self._max_misses:
            self._misses.popitem(last=False)

    def _add(self, info: DeviceInfo) -> None:
        self._misses.pop(info.device_id, None)
        if info.device_id not in self._devices and len(self._devices) >= self._max_devices:
            # Full: the oldest entry makes room (it is looked up again when it reports).
            del self._devices[next(iter(self._devices))]
        self._devices[info.device_id] = info

    def _load(self, device_ids: Sequence[str] | None) -> list[DeviceInfo]:
        """Blocking: the devices named (all when ``None``), with their first group."""
        if device_ids is None:
            with self._sessions() as session:
                return _query(session, None)
        found: list[DeviceInfo] = []
        with self._sessions() as session:
            for start in range(0, len(device_ids), _QUERY_CHUNK):
                found += _query(session, device_ids[start : start + _QUERY_CHUNK])
        return found


def _query(session: Session, device_ids: Sequence[str] | None) -> list[DeviceInfo]:
    first_group = (
        select(device_groups.c.device_id, func.min(device_groups.c.group_id).label("group_id"))
        .group_by(device_groups.c.device_id)
        .subquery()
    )
    query = (
        select(Device.id, Device.kind, Device.district, first_group.c.group_id)
        .outerjoin(first_group, first_group.c.device_id == Device.id)
        .order_by(Device.id)
    )
    if device_ids is not None:
        query = query.where(Device.id.in_(device_ids))
    return [
        DeviceInfo(device_id, kind, district, group)
        for device_id, kind, district, group in session.execute(query)
    ]
