"""The IOC summary matches the telemetry of a known scenario.

The city of tests/grafana/scenario.py (two districts, every kind, a flood evening in
Ninh Kiều, a pollution episode in Cái Răng) runs through the real broker, ingest,
Modbus poller and InfluxDB; the summary at the scenario's end is compared with what
InfluxDB and the registry hold (AQI: recomputed here from InfluxQL hourly means with
``rules.aqi``; the rules engine's own running-hour value may differ by a point or two,
see the report).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from devices.registry.db import transaction
from pharos.api import create_app
from pharos.apikeys import Role, create_api_key
from pharos.database import upgrade
from pharos.runtime import build_runtime
from pharos.settings import DatabaseSettings, InfluxSettings, Settings
from rules.settings import RulesSettings
from tests.fixtures.influx import InfluxDB
from tests.grafana.scenario import City, hourly_aqi_points, running_city

pytestmark = pytest.mark.broker
LAMP_KINDS = ("streetlight", "smart_pole")


@pytest.fixture(scope="module")
def city(influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    yield from running_city(influxdb, tmp_path_factory)


@pytest.fixture(scope="module")
def summary(city: City, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ioc"),
        database=DatabaseSettings(url=city.registry_url),
        influx=InfluxSettings(url=city.influx_url, database=city.database),
    )
    runtime = build_runtime(settings)
    # What `pharos serve` wires from its poller: every meter of the run answered.
    runtime.modbus_reachable = lambda: {s.device_id for s in city.specs if s.is_modbus}
    try:
        upgrade(runtime.engine)
        with transaction(runtime.sessions) as session:
            key = create_api_key(session, "wall@ioc", Role.VIEWER)
        with TestClient(create_app(runtime)) as client:
            response = client.get(
                "/api/v1/ioc/summary",
                params={"at": city.end.isoformat()},
                headers={"X-API-Key": key},
            )
            assert client.get("/api/v1/ioc/summary").status_code == 401
    finally:
        runtime.close()
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def last_values(city: City, query: str) -> dict[str, Any]:
    """``{device_id: value}`` of a ``SELECT last(x) ... GROUP BY "device_id"``."""
    response = httpx.post(f"{city.influx_url}/query", data={"q": query, "db": city.database})
    series = response.json()["results"][0].get("series", [])
    return {s["tags"]["device_id"]: s["values"][0][1] for s in series}


def test_devices_by_kind_and_online(city: City, summary: dict[str, Any]) -> None:
    kinds = Counter(spec.kind.value for spec in city.specs)
    by_kind = summary["devices_by_kind"]
    assert {k: v["devices"] for k, v in by_kind.items()} == dict(kinds)
    for spec_kind, count in kinds.items():  # MQTT: status online; Modbus: polled
        assert by_kind[spec_kind]["online"] == count, spec_kind
    assert summary["devices_total"] == summary["devices_online"] == len(city.specs)


def test_lamps_on_are_the_lamps_whose_last_reading_is_lit(
    city: City, summary: dict[str, Any]
) -> None:
    lit = 0
    for kind in LAMP_KINDS:
        query = f'SELECT last("lamp_on") FROM "{kind}" GROUP BY "device_id"'  # noqa: S608
        values = last_values(city, query)
        lit += sum(1 for on in values.values() if on is True)
    assert lit > 0  # the run ends after dusk
    assert summary["lamps_on"] == lit


def test_aqi_by_district_is_the_worst_monitor_of_the_stored_hourly_means(
    city: City, summary: dict[str, Any]
) -> None:
    # Independently: InfluxQL hourly means of each monitor, then rules.aqi (NowCast).
    points = hourly_aqi_points(city.influx_url, city.database, list(city.specs), city.end)
    latest: dict[str, tuple[Any, int]] = {}
    for point in points:
        known = latest.get(point.device_id)
        if known is None or point.time > known[0]:
            latest[point.device_id] = (point.time, int(point.fields["vn_aqi"]))
    worst: dict[str, int] = {}
    for spec in city.specs:
        if spec.device_id in latest:
            aqi = latest[spec.device_id][1]
            worst[spec.district] = max(worst.get(spec.district, 0), aqi)
    answered = {entry["district"]: entry for entry in summary["aqi_by_district"]}
    assert {d: e["vn_aqi"] for d, e in answered.items()} == worst
    episode = answered["Cái Răng"]  # the pollution episode is there
    assert episode["vn_aqi"] >= answered["Ninh Kiều"]["vn_aqi"]
    colours = ["#00e400", "#ffff00", "#ff7e00", "#ff0000", "#8f3f97", "#7e0023"]
    for entry in answered.values():
        assert entry["colour"] == colours[entry["category"] - 1]


def test_gauges_against_their_alert_levels(city: City, summary: dict[str, Any]) -> None:
    stored = last_values(
        city, 'SELECT last("water_level_m") FROM "flood_gauge" GROUP BY "device_id"'
    )
    lines = RulesSettings().default_flood_levels
    gauges = {g["device_id"]: g for g in summary["gauges"]}
    assert set(gauges) == set(stored)
    for device_id, level in stored.items():
        gauge = gauges[device_id]
        assert gauge["water_level_m"] == pytest.approx(level)
        assert gauge["alert_level"] == lines.level_of(level)
        assert (gauge["bd1_m"], gauge["bd2_m"], gauge["bd3_m"]) == (1.8, 1.9, 2.0)
    assert gauges["fg-nk-00001"]["alert_level"] >= 1  # the flood evening in Ninh Kiều


def test_open_alerts_match_the_alerts_measurement_the_board_shows(
    city: City, summary: dict[str, Any]
) -> None:
    query = (
        'SELECT sum("open") FROM (SELECT last("open") AS "open" FROM "alerts" '
        'GROUP BY "severity", "district") GROUP BY "severity"'
    )
    response = httpx.post(f"{city.influx_url}/query", data={"q": query, "db": city.database})
    series = response.json()["results"][0].get("series", [])
    on_board = {s["tags"]["severity"]: int(s["values"][0][1]) for s in series}
    answered = summary["alerts_open_by_severity"]
    assert answered  # the flood evening and the failing lamp raise alerts
    assert answered == {severity: n for severity, n in on_board.items() if n}


def test_energy_today_is_controls_report(city: City, summary: dict[str, Any]) -> None:
    query = 'SELECT sum("kwh"), sum("baseline_kwh"), sum("saved_kwh") FROM "energy"'
    response = httpx.post(f"{city.influx_url}/query", data={"q": query, "db": city.database})
    _, kwh, baseline, saved = response.json()["results"][0]["series"][0]["values"][0]
    energy = summary["energy_today"]
    assert energy["kwh"] == pytest.approx(kwh, abs=1e-3)
    assert energy["baseline_kwh"] == pytest.approx(baseline, abs=1e-3)
    assert energy["saved_kwh"] == pytest.approx(saved, abs=1e-3)
    assert energy["saved_vnd"] == pytest.approx(saved * 2226.0, rel=1e-3)
    assert summary["missing"] == []


def test_at_an_exact_hour_and_earlier_lamps_on_are_the_stored_readings_then(
    city: City, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``?at=`` on an exact hour is answered (the hour that just ended), and lamps lit
    at an earlier moment come from the readings stored by then, not the twin's now."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ioc-at"),
        database=DatabaseSettings(url=city.registry_url),
        influx=InfluxSettings(url=city.influx_url, database=city.database),
    )
    runtime = build_runtime(settings)
    hour = city.end.replace(minute=0, second=0, microsecond=0)
    moments = [hour, (city.start + (city.end - city.start) / 3).replace(microsecond=0)]
    try:
        upgrade(runtime.engine)
        with transaction(runtime.sessions) as session:
            key = create_api_key(session, "wall@ioc-at", Role.VIEWER)
        with TestClient(create_app(runtime)) as client:
            answers = [
                client.get(
                    "/api/v1/ioc/summary", params={"at": at.isoformat()}, headers={"X-API-Key": key}
                )
                for at in moments
            ]
    finally:
        runtime.close()
    for at, response in zip(moments, answers, strict=True):
        assert response.status_code == 200, response.text
        ns = int(at.timestamp()) * 1_000_000_000
        lit = 0
        for kind in LAMP_KINDS:
            query = (
                f'SELECT last("lamp_on") FROM "{kind}" WHERE time <= {ns} '  # noqa: S608
                'GROUP BY "device_id"'
            )
            lit += sum(1 for on in last_values(city, query).values() if on is True)
        assert response.json()["lamps_on"] == lit, at
