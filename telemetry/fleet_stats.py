"""The periodic writer of the ``fleet`` and ``devices`` derived measurements.

Every ``interval_s`` (a minute by default) ``FleetStatsWriter`` reads the registry,
the device twin (``device_status``) and the dead-letter counts in a worker thread,
and hands points to the same sink as readings (``submit``):

- ``fleet`` (tags ``kind``, ``district``): devices, online, commissioned, lamps on,
  dead letters, per kind and district (contract in ``telemetry.derived``); dead
  letters of devices the registry does not know go under kind ``unregistered``
  without a district;
- ``devices`` (tags ``device_id``, ``kind``, ``district``): position, online,
  seconds since the newest reading, commissioned, for each device with a position.

``read_fleet`` is the same reading as a typed ``FleetSnapshot``, for callers that want
the figures rather than points (the IOC summary). Time and the interval come from
``clock`` (the process's one clock), so tests drive it. A Modbus device never reports
a status of its own: ``reachable`` (the poller's healthy meters) counts those as online. Run it as
``async with FleetStatsWriter(sessions, submit, reachable=...):``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.models import Device, LifecycleState
from devices.wire import kind_spec
from pharos_core.clock import Clock, SystemClock, sleep_or_wake
from pharos_core.lifecycle import ServiceTasks
from pharos_core.points import PointSink
from telemetry.derived import DEVICES, FLEET
from telemetry.models import DeadLetterRow, DeviceStatusRow
from telemetry.points import Point

log = logging.getLogger(__name__)

# Device ids known reachable other than by their MQTT status: the Modbus poller's
# healthy meters (a polled device never says "online" itself).
Reachable = Callable[[], Collection[str]]
UNREGISTERED = "unregistered"
COMMISSIONED_STATES = frozenset(
    {LifecycleState.COMMISSIONED, LifecycleState.IN_SERVICE, LifecycleState.MAINTENANCE}
)


@dataclass(slots=True)
class FleetCount:
    """One kind in one district."""

    devices: int = 0
    online: int = 0
    commissioned: int = 0
    lamps_on: int = 0
    dead_letters: int = 0


@dataclass(frozen=True, slots=True)
class DeviceLiveness:
    device_id: str
    kind: str
    district: str | None
    latitude: float | None
    longitude: float | None
    online: bool
    commissioned: bool
    last_seen_at: datetime | None


@dataclass(slots=True)
class FleetSnapshot:
    """The fleet at ``at``: counts per (kind, district) and each device's liveness."""

    at: datetime
    counts: dict[tuple[str, str | None], FleetCount] = field(default_factory=dict)
    devices: list[DeviceLiveness] = field(default_factory=list)

    def by_kind(self) -> dict[str, FleetCount]:
        totals: dict[str, FleetCount] = {}
        for (kind, _), count in sorted(self.counts.items(), key=lambda item: item[0][0]):
            total = totals.setdefault(kind, FleetCount())
            total.devices += count.devices
            total.online += count.online
            total.commissioned += count.commissioned
            total.lamps_on += count.lamps_on
            total.dead_letters += count.dead_letters
        return totals


def _lamp_on(row: DeviceStatusRow | None) -> bool:
    entry = (row.last_values or {}).get("lamp_on") if row is not None else None
    return bool(entry.get("value")) if isinstance(entry, dict) else False


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _read(
    sessions: sessionmaker[Session], at: datetime, reachable: Collection[str]
) -> FleetSnapshot:
    snapshot = FleetSnapshot(at)
    with sessions() as session:
        rows = session.execute(
            select(Device, DeviceStatusRow)
            .outerjoin(DeviceStatusRow, DeviceStatusRow.device_id == Device.id)
            .where(Device.state != LifecycleState.DECOMMISSIONED)
            .order_by(Device.id)
        ).all()
        letters: dict[str | None, int] = {
            device_id: int(n)
            for device_id, n in session.execute(
                select(DeadLetterRow.device_id, func.count()).group_by(DeadLetterRow.device_id)
            )
        }
    known: dict[str, tuple[str, str | None]] = {}
    for device, status in rows:
        key = (device.kind, device.district)
        known[device.id] = key
        count = snapshot.counts.setdefault(key, FleetCount())
        online = bool(status is not None and status.online) or device.id in reachable
        commissioned = device.state in COMMISSIONED_STATES
        count.devices += 1
        count.online += online
        count.commissioned += commissioned
        count.lamps_on += kind_spec(device.kind).is_lamp and _lamp_on(status)
        snapshot.devices.append(
            DeviceLiveness(
                device.id,
                device.kind,
                device.district,
                device.latitude,
                device.longitude,
                online,
                commissioned,
                _as_utc(status.last_seen_at) if status is not None else None,
            )
        )
    unknown = Counter[str]()
    for device_id, n in letters.items():
        owner = known.get(device_id) if device_id is not None else None
        if owner is None:
            unknown[UNREGISTERED] += n
        else:
            snapshot.counts[owner].dead_letters += n
    if unknown:
        snapshot.counts[(UNREGISTERED, None)] = FleetCount(dead_letters=unknown[UNREGISTERED])
    return snapshot


async def read_fleet(
    sessions: sessionmaker[Session], at: datetime, reachable: Collection[str] = frozenset()
) -> FleetSnapshot:
    """The fleet's figures at ``at`` (a worker thread reads the database); devices in
    ``reachable`` count as online whatever their MQTT status."""
    return await asyncio.to_thread(_read, sessions, at, frozenset(reachable))


def fleet_points(snapshot: FleetSnapshot) -> list[Point]:
    """The snapshot as ``fleet`` and ``devices`` points, all at ``snapshot.at``."""
    points = []
    for (kind, district), count in sorted(snapshot.counts.items(), key=lambda i: str(i[0])):
        tags = {"kind": kind} | ({"district": district} if district else {})
        fields: dict[str, float | bool | int] = {
            "devices": count.devices,
            "online": count.online,
            "commissioned": count.commissioned,
            "lamps_on": count.lamps_on,
            "dead_letters": count.dead_letters,
        }
        points.append(Point(FLEET.name, tags, fields, snapshot.at))
    for device in snapshot.devices:
        if device.latitude is None or device.longitude is None:
            continue  # nothing to draw; liveness is in ``fleet``
        tags = {"device_id": device.device_id, "kind": device.kind}
        if device.district:
            tags["district"] = device.district
        fields = {
            "latitude": device.latitude,
            "longitude": device.longitude,
            "online": int(device.online),
            "commissioned": int(device.commissioned),
        }
        if device.last_seen_at is not None:
            age = (snapshot.at - device.last_seen_at).total_seconds()
            fields["last_seen_age_s"] = max(age, 0.0)
        points.append(Point(DEVICES.name, tags, fields, snapshot.at))
    return points


class FleetStatsWriter:
    """Writes ``fleet`` and ``devices`` points every ``interval_s``; an async context manager."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        submit: PointSink,
        *,
        interval_s: float = 60.0,
        clock: Clock | None = None,
        reachable: Reachable | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._sessions = sessions
        self._submit = submit
        self._interval = interval_s
        self._clock = clock or SystemClock()
        self._reachable = reachable
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()  # cut a sleep short (sleep_or_wake clears it)
        self._tasks = ServiceTasks(self._stopping, self._wake)
        self.written = 0  # rounds written (for tests and logs)

    async def __aenter__(self) -> Self:
        await self._tasks.start(("fleet-stats", self._run()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.stop(exc_type, exc, tb)

    async def write_once(self) -> FleetSnapshot:
        """Read the fleet now and submit its points (the task calls it every interval)."""
        reachable = self._reachable() if self._reachable is not None else frozenset()
        snapshot = await read_fleet(self._sessions, self._clock.now(), reachable)
        await self._submit(fleet_points(snapshot))
        self.written += 1
        return snapshot

    async def _run(self) -> None:
        """A round at once, then every ``interval_s`` of the clock (simulated minutes in
        the demo and the tests); a failed round is logged and the next one tries again."""
        clock = self._clock
        while not self._stopping.is_set():
            due = clock.now() + timedelta(seconds=self._interval)
            try:
                await self.write_once()
            except Exception:  # the database or the sink away for a moment
                log.exception("fleet stats failed; trying again in %.0f s", self._interval)
            await sleep_or_wake(clock, due, self._wake)
