"""The IOC summary: one JSON document for wall screens that read figures rather than panels.

``GET /api/v1/ioc/summary`` joins what the services know now (or at ``at``):

- devices and devices online per kind, lamps lit (``telemetry.fleet_stats`` over the
  registry and the device twin; Modbus meters are online when the poller of this
  process, ``runtime.modbus_reachable``, has them healthy);
- VN_AQI per district: each monitor's hourly AQI from its stored hourly means
  (``rules.aqi``: NowCast of PM, 1-hour gases), the district's worst monitor;
- each flood gauge's latest level against its station's BĐ I / II / III
  (``rules.settings``);
- open alerts per severity (``rules``' alert table);
- today's energy and savings: control's day-so-far figures (``control.energy_report``:
  measured kWh of each lamp group against the dark hours at rated power), summed; the
  fleet's measured kWh is one store query per lamp kind (``spread_by_device``).

A part whose source is down is ``null`` and named in ``missing`` with the reason;
the rest is still answered.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control.energy_report import GroupLamps, day_point, lamp_groups
from control.program import Site
from devices.registry.models import Device
from devices.wire import DeviceKind, kind_spec
from pharos.api.clock import ClockDep
from pharos.api.deps import RuntimeDep
from pharos.api.errors import responses
from pharos.api.routes.energy import store_measured_kwh
from pharos.runtime import Runtime
from rules.alerts import LIVE_STATES
from rules.aqi import NOWCAST_HOURS, Category, hourly_aqi
from rules.models import AlertRow
from rules.settings import RulesSettings
from telemetry.fleet_stats import read_fleet
from telemetry.models import DeviceStatusRow
from telemetry.store import QueryError, TimeSeriesStore

router = APIRouter(prefix="/ioc", tags=["ioc"])

AQI_KINDS = (DeviceKind.ENV_MONITOR, DeviceKind.SMART_POLE)
LAMP_KINDS = tuple(kind for kind in DeviceKind if kind_spec(kind).is_lamp)
GASES = ("no2", "so2", "co", "o3")
AQI_CONCURRENCY = 8  # monitors whose history is read at once
FLOOD_LABELS = ("none", "BĐ I", "BĐ II", "BĐ III")


class KindCount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: int = Field(description="registered and not decommissioned")
    online: int = Field(description="whose last status is online")
    commissioned: int = Field(description="commissioned, in service or in maintenance")


class DistrictAqi(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    district: str
    vn_aqi: int = Field(description="hourly VN_AQI of the district's worst monitor")
    category: int = Field(description="1 good … 6 hazardous (Decision 1459/QĐ-TCMT)")
    label: str = Field(description="the category's name")
    colour: str = Field(description="the category's official colour, #rrggbb")
    device_id: str = Field(description="the monitor with that AQI")
    dominant: str = Field(description="the pollutant with the highest sub-index")


class GaugeLevel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str
    district: str | None
    water_level_m: float = Field(description="latest level, metres on the national datum")
    at: datetime = Field(description="time of that reading")
    bd1_m: float
    bd2_m: float
    bd3_m: float
    alert_level: int = Field(description="0 none, 1 BĐ I, 2 BĐ II, 3 BĐ III")
    alert_label: str


class EnergyToday(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kwh: float
    baseline_kwh: float
    saved_kwh: float
    saved_vnd: float
    saved_co2_kg: float


class IocSummaryPublic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime = Field(description="the moment summarised")
    devices_by_kind: dict[str, KindCount]
    devices_total: int
    devices_online: int
    lamps_on: int = Field(description="lamps whose last reading says lit")
    aqi_by_district: list[DistrictAqi] | None = Field(description="null: see missing")
    gauges: list[GaugeLevel] | None = Field(description="null: see missing")
    alerts_open_by_severity: dict[str, int] | None = Field(description="null: see missing")
    energy_today: EnergyToday | None = Field(description="null: see missing")
    missing: list[str] = Field(description="parts not answered, each with the reason")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _hour_means(
    buckets: list[tuple[datetime, float]], hour: datetime, hours: int
) -> list[float | None]:
    by_start = {start.astimezone(UTC): value for start, value in buckets}
    return [by_start.get(hour - timedelta(hours=n)) for n in range(hours)]


async def _monitor_aqi(
    store: TimeSeriesStore, kind: str, device_id: str, at: datetime
) -> tuple[int, Category, str] | None:
    # The hour ``at`` falls in; on an exact hour the one that just ended (the hour
    # starting at ``at`` has no readings yet, and an empty range is no query).
    last = at.astimezone(UTC) - timedelta(microseconds=1)
    hour = last.replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(hours=NOWCAST_HOURS - 1)

    async def means(metric: str, since: datetime) -> list[tuple[datetime, float]]:
        buckets = await store.history(
            kind=kind,
            metric=metric,
            start=since,
            end=at,
            interval=timedelta(hours=1),
            aggregate="mean",
            device_id=device_id,
        )
        return [(b.start, b.value) for b in buckets]

    pm = {p: _hour_means(await means(p, start), hour, NOWCAST_HOURS) for p in ("pm25", "pm10")}
    gases: dict[str, float] = {}
    if kind == DeviceKind.ENV_MONITOR:
        for gas in GASES:
            current = _hour_means(await means(gas, hour), hour, 1)[0]
            if current is not None:
                gases[gas] = current
    result = hourly_aqi(gases, pm)
    return None if result is None else (result.aqi, result.category, result.dominant)


def _monitors(sessions: sessionmaker[Session]) -> list[tuple[str, str, str | None]]:
    with sessions() as session:
        query = select(Device.id, Device.kind, Device.district).where(
            Device.kind.in_([k.value for k in AQI_KINDS]), Device.state != "decommissioned"
        )
        return [(i, k, d) for i, k, d in session.execute(query.order_by(Device.id))]


async def _aqi(
    sessions: sessionmaker[Session], store: TimeSeriesStore, at: datetime
) -> list[DistrictAqi]:
    monitors = [m for m in await asyncio.to_thread(_monitors, sessions) if m[2] is not None]
    limit = asyncio.Semaphore(AQI_CONCURRENCY)

    async def one(kind: str, device_id: str) -> tuple[int, Category, str] | None:
        async with limit:
            return await _monitor_aqi(store, kind, device_id, at)

    async with asyncio.TaskGroup() as tasks:
        pending = [tasks.create_task(one(kind, device_id)) for device_id, kind, _ in monitors]
    worst: dict[str, DistrictAqi] = {}
    for (device_id, _, district), task in zip(monitors, pending, strict=True):
        found = task.result()
        if found is None or district is None:
            continue
        aqi, category, dominant = found
        known = worst.get(district)
        if known is None or aqi > known.vn_aqi:  # monitors come by id: the first worst wins
            worst[district] = DistrictAqi(
                district=district,
                vn_aqi=aqi,
                category=int(category),
                label=category.label,
                colour=_hex(category.rgb),
                device_id=device_id,
                dominant=dominant,
            )
    return [worst[d] for d in sorted(worst)]


def _gauges(sessions: sessionmaker[Session], rules: RulesSettings) -> list[GaugeLevel]:
    with sessions() as session:
        rows = session.execute(
            select(Device.id, Device.district, DeviceStatusRow.last_values)
            .join(DeviceStatusRow, DeviceStatusRow.device_id == Device.id)
            .where(Device.kind == DeviceKind.FLOOD_GAUGE.value)
            .order_by(Device.id)
        ).all()
    gauges = []
    for device_id, district, values in rows:
        entry = (values or {}).get("water_level_m")
        if not isinstance(entry, dict):
            continue
        level, lines = float(entry["value"]), rules.flood_levels(device_id, district)
        alert = lines.level_of(level)
        gauges.append(
            GaugeLevel(
                device_id=device_id,
                district=district,
                water_level_m=level,
                at=datetime.fromisoformat(entry["at"]),
                bd1_m=lines.bd1_m,
                bd2_m=lines.bd2_m,
                bd3_m=lines.bd3_m,
                alert_level=alert,
                alert_label=FLOOD_LABELS[alert],
            )
        )
    return gauges


def _open_alerts(sessions: sessionmaker[Session]) -> dict[str, int]:
    query = (
        select(AlertRow.severity, func.count())
        .where(AlertRow.state.in_(LIVE_STATES))
        .group_by(AlertRow.severity)
    )
    with sessions() as session:
        return {str(severity): int(n) for severity, n in session.execute(query)}


async def _energy_today(runtime: Runtime, store: TimeSeriesStore, at: datetime) -> EnergyToday:
    """Control's day-so-far figures (``control.energy_report``) summed over every lamp group."""
    site = runtime.settings.site
    place = Site(latitude=site.latitude, longitude=site.longitude, timezone=site.timezone)

    def groups() -> list[GroupLamps]:
        with runtime.sessions() as session:
            return lamp_groups(session)

    found = await asyncio.to_thread(groups)
    measured = store_measured_kwh(store)
    midnight = datetime.combine(at.astimezone(place.tz).date(), time(0), place.tz)
    totals = dict.fromkeys(EnergyToday.model_fields, 0.0)
    for group in found:
        kwh = await measured([lamp.device_id for lamp in group.lamps], midnight, at)
        point = day_point(group, kwh or 0.0, place, runtime.settings.control.energy, at)
        for name in totals:
            totals[name] += point.fields[name]
    return EnergyToday(**totals)


async def _lamps_on_at(store: TimeSeriesStore, at: datetime) -> int:
    """Lamps whose newest ``lamp_on`` reading at or before ``at`` says lit."""
    lit = 0
    for kind in LAMP_KINDS:
        values = await store.latest(kind=kind.value, metrics=["lamp_on"], until=at)
        lit += sum(1 for value in values if value.value is True)
    return lit


@router.get("/summary", responses=responses(503, meanings={503: "the registry database is down"}))
async def ioc_summary(
    runtime: RuntimeDep,
    clock: ClockDep,
    at: Annotated[
        AwareDatetime | None, Query(description="summarise this moment (default: now)")
    ] = None,
) -> IocSummaryPublic:
    """Devices online by kind, lamps lit, AQI by district, gauges against their alert
    levels, open alerts by severity and today's energy, for IOC screens."""
    moment = at or clock.now()
    sessions = runtime.sessions
    missing: list[str] = []
    reachable = runtime.modbus_reachable() if runtime.modbus_reachable is not None else ()
    fleet = await read_fleet(sessions, moment, reachable)
    by_kind = fleet.by_kind()
    store: TimeSeriesStore | None = getattr(runtime, "timeseries", None)
    aqi: list[DistrictAqi] | None = None
    energy: EnergyToday | None = None
    if store is None:
        missing.append("aqi_by_district: no time-series store configured")
        missing.append("energy_today: no time-series store configured")
    else:
        try:
            aqi = await _aqi(sessions, store, moment)
        except QueryError as exc:
            missing.append(f"aqi_by_district: the time-series store failed ({exc})")
        try:
            energy = await _energy_today(runtime, store, moment)
        except QueryError as exc:
            missing.append(f"energy_today: the time-series store failed ({exc})")
    lamps_on = sum(c.lamps_on for c in by_kind.values())
    if at is not None and store is not None:
        try:  # the stored readings at that moment, not the twin's now
            lamps_on = await _lamps_on_at(store, at)
        except QueryError as exc:
            missing.append(f"lamps_on: the time-series store failed ({exc}); the twin's now")
    gauges = await asyncio.to_thread(_gauges, sessions, runtime.settings.rules)
    alerts = await asyncio.to_thread(_open_alerts, sessions)
    return IocSummaryPublic(
        at=moment,
        devices_by_kind={
            kind: KindCount(devices=c.devices, online=c.online, commissioned=c.commissioned)
            for kind, c in sorted(by_kind.items())
            if c.devices
        },
        devices_total=sum(c.devices for c in by_kind.values()),
        devices_online=sum(c.online for c in by_kind.values()),
        lamps_on=lamps_on,
        aqi_by_district=aqi,
        gauges=gauges,
        alerts_open_by_severity=alerts,
        energy_today=energy,
        missing=missing,
    )
