"""Retention setup on a real InfluxDB 1.6.7: policies, the continuous query, idempotence."""

from __future__ import annotations

# ruff: noqa: S608  (InfluxQL built from the test's own database names)
from datetime import UTC, datetime, timedelta
from statistics import mean

import pytest

from telemetry.influx.client import InfluxClient
from telemetry.influx.line_protocol import encode_points
from telemetry.influx.retention import (
    CQ_NAME,
    backfill_hourly,
    cq_select,
    setup_retention,
)
from tests.fixtures.influx import InfluxDB
from tests.telemetry.influx.helpers import reading


def policies(server: InfluxDB, db: str) -> dict[str, tuple[str, bool]]:
    rows = server.values(f'SHOW RETENTION POLICIES ON "{db}"', db)
    return {row[0]: (row[1], row[4]) for row in rows}


def continuous_queries(server: InfluxDB, db: str) -> dict[str, str]:
    for series in server.query("SHOW CONTINUOUS QUERIES")["results"][0]["series"]:
        if series["name"] == db:
            return {row[0]: row[1] for row in series.get("values", [])}
    return {}


async def test_setup_creates_both_policies_and_the_hourly_query(
    influxdb: InfluxDB, influx_db: str
) -> None:
    report = await setup_retention(influxdb.url, influx_db)

    assert report.created == [
        "retention policy raw",
        "retention policy hourly",
        f"continuous query {CQ_NAME}",
    ]
    found = policies(influxdb, influx_db)
    assert found["raw"] == ("720h0m0s", True)  # the default: the writer's points land here
    assert found["hourly"] == ("17520h0m0s", False)
    [(name, text)] = continuous_queries(influxdb, influx_db).items()
    assert name == CQ_NAME
    assert "RESAMPLE FOR 2h" in text
    # InfluxDB prints names back without the quotes it does not need.
    assert cq_select(influx_db).replace('"', "") in text.replace('"', "")


async def test_setup_is_idempotent_and_applies_changed_durations(
    influxdb: InfluxDB, influx_db: str
) -> None:
    await setup_retention(influxdb.url, influx_db)
    before = continuous_queries(influxdb, influx_db)

    again = await setup_retention(influxdb.url, influx_db)
    assert again.created == []
    assert continuous_queries(influxdb, influx_db) == before

    changed = await setup_retention(
        influxdb.url, influx_db, raw_retention="14d", hourly_retention="52w"
    )
    assert changed.created == []
    assert policies(influxdb, influx_db) == {
        "autogen": ("0s", False),
        "raw": ("336h0m0s", True),
        "hourly": ("8736h0m0s", False),
    }


async def test_the_hourly_means_are_what_the_query_computes(
    influxdb: InfluxDB, influx_db: str
) -> None:
    await setup_retention(influxdb.url, influx_db)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    points = [
        reading(n, device_id=device, at=hour + timedelta(minutes=7 * n), lamp_on=n % 2 == 0)
        for device in ("env-0001", "env-0002")
        for n in range(20)  # 0..133 min: three hours
    ]
    async with InfluxClient(influxdb.url, influx_db) as client:
        assert (await client.write(encode_points(points).lines)).written == 40

    written = await backfill_hourly(influxdb.url, influx_db, hour, hour + timedelta(hours=3))

    assert written == 6  # two devices × three hours
    document = influxdb.query(
        f'SELECT mean_pm25, mean_seq FROM "{influx_db}"."hourly"."env_monitor" GROUP BY *',
        influx_db,
    )
    for series in document["results"][0]["series"]:
        device = series["tags"]["device_id"]
        assert series["tags"]["district"] == "Ninh Kiều"
        for time_ns, mean_pm25, mean_seq in series["values"]:
            start = datetime.fromtimestamp(time_ns / 1e9, UTC)
            inside = [
                p
                for p in points
                if p.device_id == device and start <= p.time < start + timedelta(hours=1)
            ]
            assert mean_pm25 == pytest.approx(mean(float(p.fields["pm25"]) for p in inside))
            assert mean_seq == pytest.approx(mean(int(p.fields["seq"]) for p in inside))


def test_the_query_reads_raw_and_writes_hourly_per_measurement() -> None:
    assert cq_select("pharos") == (
        'SELECT mean(*) INTO "pharos"."hourly".:MEASUREMENT FROM "pharos"."raw"./.*/ '
        "GROUP BY time(1h), *"
    )


async def test_a_retention_that_is_not_a_duration_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="raw_retention: '30 days' is not an InfluxQL duration"):
        await setup_retention("http://127.0.0.1:1", "pharos", raw_retention="30 days")
