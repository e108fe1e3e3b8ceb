"""The test city for the boards: every kind in two districts, filled through real ingest.

``fill_city`` runs a simulator scenario (written here, validated by the simulator's
own loader) against a real Mosquitto, with the real telemetry services (MQTT ingest,
Modbus poller, InfluxDB writer) storing into a real InfluxDB 1.6.7, the rules engine
(``rules.service.RulesService``) observing ingest, and then writes the derived
measurements with the project's own writers:

- ``aqi``, ``flood``, ``alerts``: the rules service (its shipped rule set);
- ``energy``: control's ``EnergyReporter`` at the scenario's end, measured kWh from
  the time-series store;
- ``fleet`` and ``devices``: ``telemetry.fleet_stats``.

A measurement none of them wrote is computed here from the stored readings with the
nearest real code (``rules.aqi.hourly_aqi``, the rules' flood levels; alerts and energy
as plain arithmetic documented at ``_alerts`` and ``_energy``), and ``City.derived_from``
says which way each came. Device readings are never made up: they come from the
simulator through the broker.
"""

# ruff: noqa: S608  (InfluxQL from the test's own device ids)

from __future__ import annotations

import asyncio
import time
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from astral import LocationInfo
from astral.sun import sun
from sqlalchemy import select

from control.energy import EnergySettings
from control.energy_report import EnergyReporter
from control.program import Site
from devices.registry.models import GroupType
from devices.registry.schemas import DeviceUpdate, GroupCreate
from firmware_sim.fleet import Fleet
from firmware_sim.mqtt.hub import BrokerAddress
from firmware_sim.scenario import DeviceSpec, expand, load_scenario
from pharos.api.routes.energy import store_measured_kwh
from pharos.broker_process import MosquittoProcess, find_mosquitto
from pharos.database import upgrade
from pharos.runtime import Runtime, build_runtime
from pharos.services import TelemetryOptions, TelemetryServices
from pharos.settings import BrokerSettings, DatabaseSettings, InfluxSettings, Settings
from pharos.simulate import provision_scenario, wait_for_accounts
from pharos_core.clock import SteppedClock, SystemClock
from pharos_core.points import PointSink
from rules.alerts import AlertStore
from rules.aqi import hourly_aqi
from rules.catalog import DeviceCatalog
from rules.derived import SunTimes
from rules.service import RulesService
from rules.settings import RulesSettings
from telemetry.fleet_stats import FleetStatsWriter
from telemetry.influx.retention import backfill_hourly
from telemetry.ingest import MqttOptions
from telemetry.models import DeviceStatusRow
from telemetry.points import Point
from tests.fixtures.influx import InfluxDB

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
INGEST = "pharos-ingest"
TARIFF_VND = 2226.0  # public lighting < 6 kV (DOMAIN.md)
CO2_KG_PER_KWH = 0.6592  # 2023 grid factor (DOMAIN.md)
_SCENARIO = """\
name: ioc-boards
description: Two districts with every kind, for the Grafana boards' checks.
seed: 7007
start: "{start}"
duration: 3h
acceleration: max
intervals_s: {{streetlight: 300, smart_pole: 300, env_monitor: 300, flood_gauge: 300,
              energy_meter: 60, lighting_cabinet: 60}}
districts:
  - name: Ninh Kiều
    code: nk
    centre: [10.0340, 105.7800]
    radius_m: 1500
    streets:
      - {{name: Đại lộ Hòa Bình, road: main, start: [10.0343, 105.7878], end: [10.0290, 105.7783],
         streetlights: 5, smart_poles: 1, cabinets: 1, circuits_per_cabinet: 2}}
      - {{name: Đường Trần Hưng Đạo, road: secondary, start: [10.0368, 105.7800],
         end: [10.0262, 105.7690], streetlights: 3}}
    env_monitors: [{{name: Bến Ninh Kiều, at: [10.0338, 105.7875]}}]
    flood_gauges: [{{name: Bến Ninh Kiều, at: [10.0340, 105.7882]}}]
    energy_meters:
      - {{name: Bệnh viện Đa khoa, at: [10.0274, 105.7548], building: hospital}}
      - {{name: Trường THPT Châu Văn Liêm, at: [10.0330, 105.7830], building: school}}
  - name: Cái Răng
    code: cr
    centre: [10.0050, 105.7650]
    radius_m: 1500
    streets:
      - {{name: Đường Quang Trung, road: main, start: [10.0190, 105.7870], end: [10.0050, 105.7700],
         streetlights: 4, smart_poles: 1, cabinets: 1, circuits_per_cabinet: 2}}
    env_monitors: [{{name: Chợ Cái Răng, at: [10.0029, 105.7689]}}]
    flood_gauges: [{{name: Chợ nổi Cái Răng, at: [10.0045, 105.7730]}}]
    energy_meters:
      - {{name: UBND quận Cái Răng, at: [10.0100, 105.7600], building: office}}
faults:
  - {{fault: lamp_failure, devices: [sl-nk-00002]}}
  - {{fault: day_burning, devices: [sl-cr-00001]}}
  - {{fault: malformed, devices: [env-cr-00001], malformed_probability: 0.3}}
events:
  - {{type: flood_evening, start: "{start}", hours: 3, peak_m: 2.1, districts: [Ninh Kiều]}}
  - {{type: pollution_episode, start: "{start}", hours: 2, factor: 2.5, districts: [Cái Răng]}}
"""


SITE = Site(latitude=10.0452, longitude=105.7469, timezone="Asia/Ho_Chi_Minh")


class _Sink:
    """The writer's submit, once the services run; remembers who wrote which measurement."""

    def __init__(self) -> None:
        self.target: PointSink | None = None
        self.seen: set[str] = set()

    async def submit(self, points: Sequence[Point]) -> None:
        assert self.target is not None
        self.seen |= {p.measurement for p in points}
        await self.target(points)

    async def submit_derived(self, points: Sequence[Point]) -> None:
        """Control's points, shaped like telemetry's (control does not import telemetry)."""
        await self.submit(
            [Point(p.measurement, dict(p.tags), dict(p.fields), p.time) for p in points]
        )


class _FixedClock:
    """Control's clock at the scenario's end (the energy report of that moment)."""

    def __init__(self, at: datetime) -> None:
        self._at = at

    def now(self) -> datetime:
        return self._at

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("a fixed clock does not sleep")


@dataclass(frozen=True, slots=True)
class City:
    """What the checks need: where the data is and which window holds it."""

    influx_url: str
    database: str
    registry_url: str  # the registry (SQLite) the run used: devices, twin, dead letters
    start: datetime  # the scenario's start
    end: datetime  # the scenario's end
    window_start: datetime  # local midnight of the scenario's day (energy points)
    window_end: datetime  # after the derived points written at wall-clock time
    specs: tuple[DeviceSpec, ...]
    derived_from: dict[str, str]  # measurement -> who wrote it

    def time_filter(self) -> str:
        return (
            f"time >= '{self.window_start.astimezone(UTC).isoformat()}' AND "
            f"time <= '{self.window_end.astimezone(UTC).isoformat()}'"
        )


def scenario_start(now: datetime) -> datetime:
    """16:30 local yesterday: dusk inside the run, within any retention."""
    local = (now.astimezone(TZ) - timedelta(days=1)).replace(
        hour=16, minute=30, second=0, microsecond=0
    )
    return local


def write_scenario(directory: Path, start: datetime) -> Path:
    path = directory / "ioc-boards.yaml"
    path.write_text(_SCENARIO.format(start=start.isoformat()), encoding="utf-8")
    return path


def group_id(spec: DeviceSpec) -> str | None:
    """Lamps by street (per district), meters by building type: the registry's groups."""
    if spec.building is not None:
        return f"building-{spec.building.value}"
    if spec.street is not None:
        plain = unicodedata.normalize("NFKD", spec.street.lower().replace("đ", "d"))
        words = "".join(c for c in plain if c.isascii() and (c.isalnum() or c == " ")).split()
        return f"{spec.device_id.split('-')[1]}-{'-'.join(words)}"[:63]
    return None


def _group_devices(runtime: Runtime, specs: list[DeviceSpec]) -> str:
    """Put each device in its group, and make the ingest's broker account; its secret."""
    with runtime.registry("test") as registry:
        for spec in specs:
            group = group_id(spec)
            if group is None:
                continue
            if not any(g.id == group for g in registry.list_groups(limit=1000)[0]):
                kind = GroupType.BUILDING if spec.building else GroupType.STREET
                district = None if spec.building else spec.district  # streets lie in one
                registry.create_group(
                    GroupCreate(id=group, name=group, type=kind, district=district)
                )
            registry.update_device(spec.device_id, DeviceUpdate(groups=[group]))
        return registry.ensure_service_account(INGEST).secret


def settings_for(broker: MosquittoProcess, influx_url: str, database: str, root: Path) -> Settings:
    return Settings(
        data_dir=root,
        database=DatabaseSettings(url=f"sqlite:///{root / 'pharos.db'}"),
        broker=BrokerSettings(
            host=broker.host,
            port=broker.port,
            password_file=broker.password_file,
            acl_file=broker.acl_file,
            pid_file=broker.pid_file,
        ),
        influx=InfluxSettings(url=influx_url, database=database),
    )


def _query(influx_url: str, database: str, q: str) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{influx_url}/query", data={"q": q, "db": database, "epoch": "s"}, timeout=30
    )
    response.raise_for_status()
    result = response.json()["results"][0]
    if "error" in result:
        raise AssertionError(f"{q}: {result['error']}")
    series: list[dict[str, Any]] = result.get("series", [])
    return series


async def _eventually(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.1)  # polling a condition with a deadline


def _tags(spec: DeviceSpec) -> dict[str, str]:
    tags = {"device_id": spec.device_id, "district": spec.district}
    group = group_id(spec)
    if group:
        tags["group"] = group
    return tags


def hourly_aqi_points(
    city_url: str, db: str, specs: list[DeviceSpec], end: datetime
) -> list[Point]:
    """Hourly VN_AQI per monitor from the stored hourly PM means (rules.aqi)."""
    points = []
    for spec in specs:
        if spec.kind.value not in ("env_monitor", "smart_pole"):
            continue
        series = _query(
            city_url,
            db,
            f'SELECT mean("pm25"), mean("pm10") FROM "{spec.kind.value}" WHERE '
            f"\"device_id\" = '{spec.device_id}' AND time <= '{end.astimezone(UTC).isoformat()}' "
            f"AND time >= '{(end - timedelta(hours=12)).astimezone(UTC).isoformat()}' "
            "GROUP BY time(1h)",
        )
        rows = series[0]["values"] if series else []
        for n in range(len(rows)):
            newest_first = list(reversed(rows[: n + 1]))
            result = hourly_aqi(
                {},
                {
                    "pm25": [r[1] for r in newest_first],
                    "pm10": [r[2] for r in newest_first],
                },
            )
            if result is None:
                continue
            fields: dict[str, float | bool | int] = {
                "vn_aqi": result.aqi,
                "category": int(result.category),
            }
            if result.pm25_nowcast is not None:
                fields["pm25_nowcast"] = result.pm25_nowcast
            if result.pm10_nowcast is not None:
                fields["pm10_nowcast"] = result.pm10_nowcast
            at = datetime.fromtimestamp(rows[n][0], UTC)
            points.append(Point("aqi", _tags(spec), fields, at))
    return points


def _flood(city_url: str, db: str, specs: list[DeviceSpec]) -> tuple[list[Point], dict[str, int]]:
    """Each gauge reading with its station's lines and level (rules' FloodLevels)."""
    rules = RulesSettings()
    points, worst = [], {}
    for spec in specs:
        if spec.kind.value != "flood_gauge":
            continue
        lines = rules.flood_levels(spec.device_id, spec.district)
        series = _query(
            city_url,
            db,
            f'SELECT "water_level_m" FROM "flood_gauge" WHERE "device_id" = \'{spec.device_id}\'',
        )
        for at, level in series[0]["values"] if series else []:
            alert = lines.level_of(level)
            worst[spec.district] = max(worst.get(spec.district, 0), alert)
            fields: dict[str, float | bool | int] = {
                "water_level_m": level,
                "alert_level": alert,
                "bd1_m": lines.bd1_m,
                "bd2_m": lines.bd2_m,
                "bd3_m": lines.bd3_m,
            }
            points.append(Point("flood", _tags(spec), fields, datetime.fromtimestamp(at, UTC)))
    return points, worst


def _alerts(worst_flood: dict[str, int], districts: set[str], at: datetime) -> list[Point]:
    """Open alerts per severity: a district at BĐ III is one critical, BĐ I/II one warning."""
    points = []
    for district in sorted(districts):
        level = worst_flood.get(district, 0)
        for severity, count in (("critical", int(level == 3)), ("warning", int(0 < level < 3))):
            points.append(
                Point("alerts", {"severity": severity, "district": district}, {"open": count}, at)
            )
    return points


def _energy(city_url: str, db: str, specs: list[DeviceSpec], end: datetime) -> list[Point]:
    """Today's lamp kWh per group (spread of each lamp's register), baseline = rated power
    from sunset to the run's end; savings at the tariff and grid factor of DOMAIN.md."""
    day = end.astimezone(TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    place = LocationInfo("Cần Thơ", "Vietnam", "Asia/Ho_Chi_Minh", 10.0452, 105.7469)
    sunset = sun(place.observer, date=day.date(), tzinfo=TZ)["sunset"]
    lit_hours = max((end - sunset).total_seconds() / 3600, 0.0)
    groups: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for spec in specs:
        if spec.kind.value not in ("streetlight", "smart_pole") or group_id(spec) is None:
            continue
        series = _query(
            city_url,
            db,
            f'SELECT spread("energy_kwh") FROM "{spec.kind.value}" WHERE '
            f"\"device_id\" = '{spec.device_id}'",
        )
        kwh = float(series[0]["values"][0][1]) if series else 0.0
        totals = groups[(str(group_id(spec)), spec.district)]
        totals[0] += kwh
        totals[1] += (spec.rated_power_w or 0.0) * lit_hours / 1000
    points = []
    for (group, district), (kwh, baseline) in sorted(groups.items()):
        saved = baseline - kwh
        fields: dict[str, float | bool | int] = {
            "kwh": kwh,
            "baseline_kwh": baseline,
            "saved_kwh": saved,
            "saved_vnd": saved * TARIFF_VND,
            "saved_co2_kg": saved * CO2_KG_PER_KWH,
        }
        points.append(
            Point("energy", {"group": group, "district": district}, fields, day.astimezone(UTC))
        )
    return points


async def fill_city(broker: MosquittoProcess, influx_url: str, database: str, root: Path) -> City:
    now = datetime.now(UTC)
    scenario = load_scenario(write_scenario(root, scenario_start(now)))
    specs = expand(scenario)
    settings = settings_for(broker, influx_url, database, root)
    runtime = await asyncio.to_thread(build_runtime, settings)
    try:
        await asyncio.to_thread(upgrade, runtime.engine)
        address = BrokerAddress(broker.host, broker.port)
        clock = SteppedClock(scenario.start)
        fleet = Fleet(
            specs, broker=address, clock=clock, seed=scenario.seed, events=scenario.events
        )
        async with fleet:
            secrets = await asyncio.to_thread(
                provision_scenario, runtime, specs, modbus_endpoints=fleet.modbus_endpoints
            )
            ingest_secret = await asyncio.to_thread(_group_devices, runtime, specs)
            await wait_for_accounts(address, {INGEST: ingest_secret})
            options = TelemetryOptions(
                meters_refresh_s=0.2, stats_interval_s=None, setup_retention=True
            )
            mqtt = MqttOptions(broker.host, broker.port, INGEST, ingest_secret, keepalive_s=10)
            sink = _Sink()
            async with (
                DeviceCatalog(runtime.sessions) as catalog,
                RulesService(
                    settings=RulesSettings(),
                    catalog=catalog,
                    alerts=AlertStore(runtime.sessions),
                    clock=SystemClock(),
                    sun=SunTimes(SITE.latitude, SITE.longitude, SITE.timezone),
                    submit=sink.submit,
                ) as rules,
                TelemetryServices(runtime, options, mqtt=mqtt, observers=[rules]) as services,
            ):
                sink.target = services.submit
                await _run_fleet(fleet, services, scenario.end, runtime, specs, secrets)
                await rules.wait_idle()
                await rules.tick(write_counts=True)  # the minute's `alerts` points, now
                poller = services.poller
                assert poller is not None
                await FleetStatsWriter(
                    runtime.sessions,
                    sink.submit,
                    reachable=lambda: {i for i, h in poller.health().items() if h.healthy},
                ).write_once()
                assert runtime.timeseries is not None
                await EnergyReporter(
                    runtime.sessions,
                    _FixedClock(scenario.end),
                    SITE,
                    EnergySettings(),
                    store_measured_kwh(runtime.timeseries),
                    sink.submit_derived,
                ).report_once()
                derived = await _write_derived(sink, influx_url, database, specs, scenario.end)
            await _eventually(
                lambda: bool(_query(influx_url, database, 'SELECT count("open") FROM "alerts"')),
                30,
                "derived points in InfluxDB",
            )
        # The hourly rollup of everything written, as the continuous query makes it
        # hour by hour (the lighting board reads it).
        await backfill_hourly(
            influx_url, database, scenario.start - timedelta(hours=1), datetime.now(UTC)
        )
    finally:
        await asyncio.to_thread(runtime.close)
    window_start = scenario.start.astimezone(TZ).replace(hour=0, minute=0)
    return City(
        influx_url,
        database,
        settings.database.url,
        scenario.start,
        scenario.end,
        window_start,
        datetime.now(UTC) + timedelta(minutes=1),
        tuple(specs),
        derived,
    )


async def _run_fleet(
    fleet: Fleet,
    services: TelemetryServices,
    end: datetime,
    runtime: Runtime,
    specs: list[DeviceSpec],
    secrets: dict[str, str],
) -> None:
    assert services.ingest is not None and services.poller is not None
    fleet.start_mqtt(secrets)
    counters = await fleet.run_until(end)
    ingest = services.ingest

    def all_in() -> bool:
        stats = ingest.stats
        return stats.readings >= counters.readings_sent and stats.in_flight == 0

    await _eventually(all_in, 60, f"ingest of {counters.readings_sent} readings")
    mqtt_ids = {s.device_id for s in specs if not s.is_modbus}

    def twin_has_all() -> bool:
        with runtime.sessions() as session:
            seen = set(
                session.scalars(
                    select(DeviceStatusRow.device_id).where(
                        DeviceStatusRow.last_seen_at.is_not(None)
                    )
                )
            )
        return mqtt_ids <= seen

    await _eventually(twin_has_all, 30, "every MQTT device in the twin")
    meters = [s.device_id for s in specs if s.is_modbus]

    poller = services.poller

    def meters_known() -> bool:
        return set(meters) <= set(poller.health())

    await _eventually(meters_known, 30, "the poller to know every Modbus device")
    for _ in range(2):  # two readings each (no waiting out the 60 s schedule): a rise
        for meter in meters:
            assert (await poller.poll_now(meter)).healthy, meter


async def _write_derived(
    sink: _Sink, url: str, db: str, specs: list[DeviceSpec], end: datetime
) -> dict[str, str]:
    """What rules and control did not write (yet), computed here; who wrote what."""
    written = {
        name: "rules.service.RulesService"
        for name in ("aqi", "flood", "alerts")
        if name in sink.seen
    }
    if "energy" in sink.seen:
        written["energy"] = "control.energy_report.EnergyReporter"
    computed = "computed in tests/grafana/scenario.py"
    worst: dict[str, int] = {}
    if "aqi" not in written:
        await sink.submit(await asyncio.to_thread(hourly_aqi_points, url, db, specs, end))
        written["aqi"] = computed
    if "flood" not in written or "alerts" not in written:
        flood, worst = await asyncio.to_thread(_flood, url, db, specs)
        if "flood" not in written:
            await sink.submit(flood)
            written["flood"] = computed
    if "alerts" not in written:
        await sink.submit(_alerts(worst, {s.district for s in specs}, datetime.now(UTC)))
        written["alerts"] = computed
    if "energy" not in written:
        await sink.submit(await asyncio.to_thread(_energy, url, db, specs, end))
        written["energy"] = computed
    written["fleet"] = written["devices"] = "telemetry.fleet_stats.FleetStatsWriter"
    return written


def running_city(influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    """The body of a ``city`` fixture: a broker of its own, a database, the filled city."""
    try:
        find_mosquitto()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    root = tmp_path_factory.mktemp("city")
    broker = MosquittoProcess(root / "mosquitto")
    broker.start()
    database = f"city_{uuid.uuid4().hex[:10]}"
    influxdb.create_database(database)
    try:
        yield asyncio.run(fill_city(broker, influxdb.url, database, root))
    finally:
        broker.stop()
