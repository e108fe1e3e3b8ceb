"""The backtest gives the same alerts from InfluxDB (1.6.7, real) as from the embedded store."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rules.backtest import backtest
from rules.catalog import StaticCatalog
from rules.derived import DeviceFacts
from rules.settings import SHIPPED_RULES, RulesSettings
from rules.spec import load_rule_file
from telemetry.points import Point
from telemetry.store import EmbeddedStore, InfluxStore, TimeSeriesStore
from tests.fixtures.influx import InfluxDB
from tests.rules.conftest import SITE_SUN
from tests.telemetry.store.conftest import write_influx

T0 = datetime(2026, 10, 22, 9, 0, tzinfo=UTC)  # 16:00 in Cần Thơ
DEVICES = [
    DeviceFacts("fg-1", "flood_gauge", "Ninh Kiều"),
    DeviceFacts("env-1", "env_monitor", "Ninh Kiều"),
    DeviceFacts("sl-1", "streetlight", "Ninh Kiều", rated_power_w=100.0),
]


def history() -> list[Point]:
    rng = random.Random(3)
    points = []
    for minute in range(0, 6 * 60, 5):
        when = T0 + timedelta(minutes=minute)
        tide = 1.6 + 0.5 * (1 - abs(minute - 180) / 180)  # up to 2.1 m at 19:00
        points.append(Point("flood_gauge", {"device_id": "fg-1"}, {"water_level_m": tide}, when))
        pm = 30 + 60 * (1 - abs(minute - 120) / 120) if minute < 240 else 30.0
        fields = {"pm25": pm + rng.uniform(-2, 2), "pm10": pm * 1.5}
        points.append(Point("env_monitor", {"device_id": "env-1"}, fields, when))
        lit = when >= datetime(2026, 10, 22, 10, 31, tzinfo=UTC)  # sunset − 10 min
        lamp = {"power_w": 0.5, "dim_level": 100.0 if lit else 0.0, "lamp_on": lit}
        points.append(Point("streetlight", {"device_id": "sl-1"}, lamp, when))
    return points


async def alerts_from(store: TimeSeriesStore) -> list[tuple[str, str, datetime, datetime | None]]:
    result = await backtest(
        load_rule_file(SHIPPED_RULES).rules,
        store,
        StaticCatalog(DEVICES),
        settings=RulesSettings(),
        sun=SITE_SUN,
        start=T0,
        end=T0 + timedelta(hours=6),
    )
    assert result.readings == 3 * 72
    return sorted((a.rule_id, a.device_id, a.raised_at, a.cleared_at) for a in result.alerts)


async def test_backtest_answers_alike_on_influxdb_and_the_embedded_store(
    influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    influx = InfluxStore(influxdb.url, influx_db)
    embedded = EmbeddedStore(tmp_path / "ts.db")
    points = history()
    write_influx(influxdb, influx_db, points)  # the writer's line protocol, to /write
    await embedded.write(points)
    from_influx = await alerts_from(influx)
    assert from_influx == await alerts_from(embedded)
    rules = {(rule, device) for rule, device, _, _ in from_influx}
    assert {("flood-bd1", "fg-1"), ("flood-bd2", "fg-1"), ("flood-bd3", "fg-1")} <= rules
    assert ("lamp-failure", "sl-1") in rules
    assert ("aqi-poor", "env-1") in rules
    # A dark lamp is also "too low" (info); never day burning, never too high.
    assert {rule for rule, device in rules if device == "sl-1"} == {
        "lamp-failure",
        "lamp-power-low",
    }
