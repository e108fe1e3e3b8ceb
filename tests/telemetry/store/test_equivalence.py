"""The same queries give the same answers from InfluxDB 1.6.7 and from the embedded store.

Both are filled with the same simulated fleet (``fleet.py``); every query below runs
on both and the answers are compared: times exactly, floats within 1e-9 relative.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from telemetry.store import (
    Bucket,
    EmbeddedStore,
    InfluxStore,
    LatestValue,
    UnsupportedAggregateError,
    registry_group_members,
)
from tests.fixtures.influx import InfluxDB
from tests.telemetry.store.conftest import write_influx
from tests.telemetry.store.fleet import (
    CAI_RANG,
    DEVICES,
    NINH_KIEU,
    SPAN,
    T0,
    fleet_points,
    registry_sessions,
)

REL = 1e-9


@dataclass(frozen=True)
class Stores:
    influx: InfluxStore
    embedded: EmbeddedStore
    point_count: int


@pytest.fixture(scope="module")
def stores(influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    """Both stores with the fleet's points, plus one point written twice (second wins)."""
    root = tmp_path_factory.mktemp("equivalence")
    sessions = registry_sessions(root / "registry.db")
    members = registry_group_members(sessions)
    points = fleet_points()
    again = replace(points[10], fields={**points[10].fields, "pm25": 999.5})
    database = "equivalence"
    influxdb.create_database(database)
    write_influx(influxdb, database, points)
    write_influx(influxdb, database, [again])
    embedded = EmbeddedStore(root / "timeseries.db", group_members=members)
    asyncio.run(embedded.write(points))
    asyncio.run(embedded.write([again]))
    yield Stores(InfluxStore(influxdb.url, database, group_members=members), embedded, len(points))


def _same_value(a: float | bool, b: float | bool) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return math.isclose(a, b, rel_tol=REL)


def assert_same_latest(influx: list[LatestValue], embedded: list[LatestValue]) -> None:
    assert [(v.device_id, v.metric, v.time) for v in influx] == [
        (v.device_id, v.metric, v.time) for v in embedded
    ]
    for a, b in zip(influx, embedded, strict=True):
        assert _same_value(a.value, b.value), (a, b)


def assert_same_buckets(influx: list[Bucket], embedded: list[Bucket]) -> None:
    assert [b.start for b in influx] == [b.start for b in embedded]
    for a, b in zip(influx, embedded, strict=True):
        assert math.isclose(a.value, b.value, rel_tol=REL), (a, b)


LATEST_CASES: list[dict[str, Any]] = [
    {},
    {"kind": "env_monitor"},
    {"kind": "streetlight", "metrics": ["lamp_on", "power_w"]},
    {"district": NINH_KIEU},
    {"district": CAI_RANG, "kind": "env_monitor"},
    {"group": "street-a"},
    {"group": "park", "metrics": ["pm25", "dim_level"]},
    {"group": "park", "device_ids": ["env-003", "env-001"]},
    {"device_ids": ["sl-002", "env-001"]},
    {"device_ids": ["env-002"], "metrics": ["seq"]},
]


@pytest.mark.parametrize("query", LATEST_CASES, ids=lambda q: repr(q) if q else "all")
async def test_latest_is_the_same(stores: Stores, query: dict[str, Any]) -> None:
    influx = await stores.influx.latest(**query)
    embedded = await stores.embedded.latest(**query)
    assert influx, "the case selects data"
    assert_same_latest(influx, embedded)


@pytest.mark.parametrize("device", ["env-001", "sl-002"])
async def test_latest_values_are_those_of_the_newest_points(stores: Stores, device: str) -> None:
    expected: dict[str, tuple[float | bool, Any]] = {}
    for point in fleet_points():
        if point.device_id == device:
            for name, value in point.fields.items():
                if name not in expected or point.time >= expected[name][1]:
                    expected[name] = (value, point.time)
    for store in (stores.influx, stores.embedded):
        got = {v.metric: (v.value, v.time) for v in await store.latest(device_ids=[device])}
        assert got == expected


HISTORY_WINDOWS = [
    # (start offset, length, interval): unaligned starts, an interval that divides no hour
    (timedelta(0), SPAN, timedelta(minutes=5)),
    (timedelta(minutes=13, seconds=7), timedelta(minutes=95), timedelta(minutes=7)),
    (timedelta(hours=-1), SPAN + timedelta(hours=2), timedelta(hours=1)),
    (timedelta(minutes=30), timedelta(minutes=20), timedelta(seconds=30)),
]
HISTORY_SELECTIONS: list[dict[str, Any]] = [
    {"kind": "env_monitor", "metric": "pm25", "device_id": "env-001"},
    {"kind": "env_monitor", "metric": "pm10", "district": NINH_KIEU},
    {"kind": "env_monitor", "metric": "temperature_c", "group": "street-a"},
    {"kind": "streetlight", "metric": "power_w", "group": "park"},
    {"kind": "streetlight", "metric": "dim_level"},
    {"kind": "env_monitor", "metric": "seq", "district": CAI_RANG},
]


@pytest.mark.parametrize("aggregate", ["mean", "min", "max", "sum", "count"])
@pytest.mark.parametrize("window", HISTORY_WINDOWS, ids=lambda w: f"{w[2]}")
@pytest.mark.parametrize(
    "selection", HISTORY_SELECTIONS, ids=lambda s: "-".join(map(str, s.values()))
)
async def test_history_is_the_same(
    stores: Stores,
    selection: dict[str, Any],
    window: tuple[timedelta, timedelta, timedelta],
    aggregate: str,
) -> None:
    offset, length, interval = window
    query = {
        **selection,
        "start": T0 + offset,
        "end": T0 + offset + length,
        "interval": interval,
        "aggregate": aggregate,
    }
    influx = await stores.influx.history(**query)
    embedded = await stores.embedded.history(**query)
    assert influx, "the case selects data"
    assert_same_buckets(influx, embedded)
    step = interval.total_seconds()
    assert all(b.start.timestamp() % step == 0 for b in embedded), "epoch-aligned buckets"


@pytest.mark.parametrize("aggregate", ["min", "max", "count"])
async def test_boolean_metric_aggregates_the_same(stores: Stores, aggregate: str) -> None:
    query: dict[str, Any] = {
        "kind": "streetlight",
        "metric": "lamp_on",
        "start": T0,
        "end": T0 + SPAN,
        "interval": timedelta(minutes=10),
        "aggregate": aggregate,
    }
    influx = await stores.influx.history(**query)
    assert influx
    assert_same_buckets(influx, await stores.embedded.history(**query))


@pytest.mark.parametrize("aggregate", ["mean", "sum"])
async def test_mean_or_sum_of_a_boolean_is_refused_by_both(stores: Stores, aggregate: str) -> None:
    query: dict[str, Any] = {
        "kind": "streetlight",
        "metric": "lamp_on",
        "start": T0,
        "end": T0 + SPAN,
        "interval": timedelta(minutes=10),
        "aggregate": aggregate,
    }
    for store in (stores.influx, stores.embedded):
        with pytest.raises(UnsupportedAggregateError, match=r"lamp_on.*boolean"):
            await store.history(**query)


async def test_empty_range_and_empty_group_give_nothing_in_both(stores: Stores) -> None:
    query: dict[str, Any] = {
        "kind": "env_monitor",
        "metric": "pm25",
        "start": T0 - timedelta(days=3),
        "end": T0 - timedelta(days=2),
        "interval": timedelta(hours=1),
        "aggregate": "mean",
    }
    assert await stores.influx.history(**query) == []
    assert await stores.embedded.history(**query) == []
    for store in (stores.influx, stores.embedded):
        assert await store.latest(group="no-such-group") == []
        assert await store.latest(district="Ô Môn") == []
        assert await store.latest(kind="flood_gauge") == []


COUNT_CASES: list[dict[str, Any]] = [
    {"kind": "env_monitor"},
    {"kind": "streetlight"},
    {"kind": "env_monitor", "device_id": "env-003"},
    {"kind": "env_monitor", "metric": "pm10"},
    {"kind": "streetlight", "device_id": "sl-001", "metric": "lamp_on"},
    {"kind": "env_monitor", "start": T0 + timedelta(minutes=20), "end": T0 + timedelta(hours=1)},
    {"kind": "flood_gauge"},
]


@pytest.mark.parametrize("query", COUNT_CASES, ids=repr)
async def test_count_is_the_same(stores: Stores, query: dict[str, Any]) -> None:
    assert await stores.influx.count(**query) == await stores.embedded.count(**query)


async def test_count_is_the_number_of_points_written(stores: Stores) -> None:
    """The point written twice is one point in both stores."""
    total = 0
    for kind in ("env_monitor", "streetlight"):
        influx = await stores.influx.count(kind)
        assert influx == await stores.embedded.count(kind)
        total += influx
    assert total == stores.point_count


@pytest.mark.parametrize("device", [d.id for d in DEVICES])
async def test_seqs_are_the_same_and_complete(stores: Stores, device: str) -> None:
    influx = await stores.influx.seqs(device)
    assert influx == await stores.embedded.seqs(device)
    assert influx == list(range(1, len(influx) + 1))
    assert len(influx) > 200


async def test_the_second_write_of_a_point_wins_in_both(stores: Stores) -> None:
    twice = fleet_points()[10]
    for store in (stores.influx, stores.embedded):
        (bucket,) = await store.history(
            kind=twice.measurement,
            device_id=twice.device_id,
            metric="pm25",
            start=twice.time,
            end=twice.time + timedelta(microseconds=1),
            interval=timedelta(seconds=1),
            aggregate="max",
        )
        assert bucket.value == 999.5


SPREAD_RANGES = [
    (T0, T0 + SPAN),
    (T0 + timedelta(minutes=20), T0 + timedelta(hours=1, minutes=7)),
    (T0 - timedelta(days=2), T0 - timedelta(days=1)),  # nothing there
]


@pytest.mark.parametrize(("start", "end"), SPREAD_RANGES, ids=repr)
async def test_spread_by_device_is_the_same_and_each_lamps_increase(
    stores: Stores, start: Any, end: Any
) -> None:
    query: dict[str, Any] = {"kind": "streetlight", "metric": "energy_kwh", "start": start}
    influx = await stores.influx.spread_by_device(**query, end=end)
    embedded = await stores.embedded.spread_by_device(**query, end=end)
    assert influx.keys() == embedded.keys()
    assert all(math.isclose(influx[d], embedded[d], rel_tol=REL) for d in influx)
    expected: dict[str, list[float]] = {}
    for point in fleet_points():
        if point.measurement == "streetlight" and start <= point.time < end:
            expected.setdefault(point.device_id, []).append(float(point.fields["energy_kwh"]))
    assert influx.keys() == expected.keys()
    for device, values in expected.items():
        assert math.isclose(influx[device], max(values) - min(values), rel_tol=REL)
