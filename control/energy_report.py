"""The ``energy`` derived measurement (contract of issues 5, 6, 7): every 15 minutes, per
group, the day so far: measured ``kwh``, ``baseline_kwh`` (rated power over the dark
hours of the day so far), ``saved_kwh``, ``saved_vnd``, ``saved_co2_kg``; tags ``group``
and ``district``; time = the day's local midnight (one point per group per day,
overwritten as the day goes on). Points go to an injected ``PointSink`` (the
composition root hands it the time-series writer); the point and its sink are the
core's (``pharos_core.points``), so control does not import telemetry.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from types import TracebackType

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control.energy import EnergySettings, Lamp, MeasuredKwh
from control.program import Site, sunrise_at, sunset_at
from control.store import LAMP_KINDS
from devices.registry.db import transaction
from devices.registry.models import Device, Group, device_groups
from pharos_core.clock import Clock, sleep_until
from pharos_core.points import Point, PointSink

log = logging.getLogger(__name__)
MEASUREMENT = "energy"
INTERVAL = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class GroupLamps:
    group: str
    district: str
    lamps: list[Lamp] = field(default_factory=list)


def dark_hours_so_far(site: Site, now: datetime) -> float:
    """Hours of darkness (before sunrise, after sunset) between local midnight and ``now``."""
    local = now.astimezone(site.tz)
    day = local.date()
    midnight = datetime.combine(day, time(0), site.tz)
    dark = [
        (midnight, sunrise_at(site, day)),
        (sunset_at(site, day), midnight + timedelta(days=1)),
    ]
    seconds = sum(
        max(0.0, (min(end, now) - start).total_seconds()) for start, end in dark if start < now
    )
    return seconds / 3600


def day_point(
    group: GroupLamps, measured_kwh: float, site: Site, settings: EnergySettings, now: datetime
) -> Point:
    """The group's point for the day so far."""
    local = now.astimezone(site.tz)
    midnight = datetime.combine(local.date(), time(0), site.tz)
    baseline = sum(lamp.rated_power_w for lamp in group.lamps) / 1000 * dark_hours_so_far(site, now)
    saved = baseline - measured_kwh
    return Point(
        MEASUREMENT,
        {"group": group.group, "district": group.district},
        {
            "kwh": round(measured_kwh, 4),
            "baseline_kwh": round(baseline, 4),
            "saved_kwh": round(saved, 4),
            "saved_vnd": round(saved * settings.tariff_vnd_per_kwh, 1),
            "saved_co2_kg": round(saved * settings.factor_for(local.year), 4),
        },
        midnight,
    )


def lamp_groups(session: Session) -> list[GroupLamps]:
    """Every group that has lamps, with their rated power."""
    rows = session.execute(
        select(Group.id, Group.district, Device.id, Device.rated_power_w)
        .join(device_groups, device_groups.c.group_id == Group.id)
        .join(Device, Device.id == device_groups.c.device_id)
        .where(Device.kind.in_(LAMP_KINDS), Device.state != "decommissioned")
        .order_by(Group.id, Device.id)
    )
    groups: dict[str, GroupLamps] = {}
    for group_id, district, device_id, rated in rows:
        entry = groups.setdefault(group_id, GroupLamps(group_id, district or ""))
        entry.lamps.append(Lamp(device_id, rated or 0.0))
    return list(groups.values())


class EnergyReporter:
    """An async context manager writing the ``energy`` points every 15 minutes."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        site: Site,
        settings: EnergySettings,
        measured_kwh: MeasuredKwh,
        submit: PointSink,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._site = site
        self._settings = settings
        self._measured = measured_kwh
        self._submit = submit
        self._task: asyncio.Task[None] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._reported = asyncio.Event()
        self.reports = 0

    async def __aenter__(self) -> EnergyReporter:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._task = self._tasks.create_task(self._run(), name="energy-report")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tasks is not None and self._task is not None
        self._task.cancel()
        await self._tasks.__aexit__(exc_type, exc, tb)

    async def wait_reports(self, count: int) -> None:
        """Until ``count`` periodic reports have run (tests driving a stepped clock)."""
        while self.reports < count:
            self._reported.clear()
            await self._reported.wait()

    async def report_once(self) -> list[Point]:
        now = self._clock.now()
        midnight = datetime.combine(now.astimezone(self._site.tz).date(), time(0), self._site.tz)
        groups = await asyncio.to_thread(self._groups)
        points = []
        for group in groups:
            kwh = await self._measured([lamp.device_id for lamp in group.lamps], midnight, now)
            points.append(day_point(group, kwh or 0.0, self._site, self._settings, now))
        if points:
            await self._submit(points)
        return points

    def _groups(self) -> list[GroupLamps]:
        with transaction(self._sessions) as session:
            return lamp_groups(session)

    async def _run(self) -> None:
        while True:
            try:
                await self.report_once()
            except Exception:  # a store outage must not stop the reports; logged, retried
                log.exception("energy report failed; next try in 15 minutes")
            self.reports += 1
            self._reported.set()
            await sleep_until(self._clock, self._clock.now() + INTERVAL)
