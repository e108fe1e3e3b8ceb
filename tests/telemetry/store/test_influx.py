"""InfluxStore against a real InfluxDB 1.6.7: errors, quoting, chunked answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pharos.broker_process import free_port
from telemetry.points import Point
from telemetry.store import InfluxStore, QueryError, StoreUnavailableError
from tests.fixtures.influx import InfluxDB
from tests.telemetry.store.conftest import write_influx

T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def point(device_id: str, seq: int, *, district: str = "Ninh Kiều", **fields: float) -> Point:
    return Point(
        "env_monitor",
        {"device_id": device_id, "district": district},
        {"seq": seq, "pm25": 10.0 + seq, **fields},
        T0 + timedelta(seconds=seq),
    )


async def test_unreachable_influxdb_is_store_unavailable() -> None:
    store = InfluxStore(f"http://127.0.0.1:{free_port()}", "pharos", timeout_s=2)
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        await store.latest()


async def test_unknown_database_is_a_query_error_with_influxdb_reason(
    influxdb: InfluxDB,
) -> None:
    store = InfluxStore(influxdb.url, "no_such_database")
    with pytest.raises(QueryError, match="database not found"):
        await store.count("env_monitor")


async def test_bad_statement_is_a_query_error(influxdb: InfluxDB, influx_db: str) -> None:
    store = InfluxStore(influxdb.url, influx_db)
    with pytest.raises(QueryError, match="error parsing query"):
        await store.query("SELEC nothing")


async def test_quotes_in_ids_and_districts_are_data_not_influxql(
    influxdb: InfluxDB, influx_db: str
) -> None:
    odd_id, odd_district = "a'b\"c\\d", "Quận 1' OR 'x'='x"
    write_influx(
        influxdb,
        influx_db,
        [point(odd_id, 1, district=odd_district), point("plain", 1, district="Ninh Kiều")],
    )
    store = InfluxStore(influxdb.url, influx_db)
    by_id = await store.latest(device_ids=[odd_id], metrics=["pm25"])
    assert [(v.device_id, v.value) for v in by_id] == [(odd_id, 11.0)]
    by_district = await store.latest(district=odd_district, metrics=["pm25"])
    assert [v.device_id for v in by_district] == [odd_id]
    assert await store.count("env_monitor", device_id=odd_id) == 1


async def test_answers_longer_than_one_chunk_are_complete(
    influxdb: InfluxDB, influx_db: str
) -> None:
    write_influx(influxdb, influx_db, [point("env-big", seq) for seq in range(1, 25_001)])
    store = InfluxStore(influxdb.url, influx_db)
    assert await store.seqs("env-big") == list(range(1, 25_001))
    assert await store.count("env_monitor") == 25_000


async def test_group_filter_needs_a_resolver(influxdb: InfluxDB, influx_db: str) -> None:
    store = InfluxStore(influxdb.url, influx_db)
    with pytest.raises(QueryError, match="group resolver"):
        await store.latest(group="street-a")


async def test_the_query_store_does_not_write(influxdb: InfluxDB, influx_db: str) -> None:
    store = InfluxStore(influxdb.url, influx_db)
    with pytest.raises(NotImplementedError, match="writer"):
        await store.write([point("env-1", 1)])
    assert await store.count("env_monitor") == 0
