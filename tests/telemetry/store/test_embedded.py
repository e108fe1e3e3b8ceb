"""The embedded SQLite store on its own: its file, idempotent writes, refusals, concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from telemetry.points import Point
from telemetry.store import EmbeddedStore

T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def point(device_id: str, seq: int, **fields: float | bool) -> Point:
    return Point(
        "streetlight",
        {"device_id": device_id, "district": "Ninh Kiều"},
        {"seq": seq, "power_w": 50.0 + seq, **fields},
        T0 + timedelta(seconds=seq),
    )


async def test_store_lives_in_its_own_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "timeseries.db"
    store = EmbeddedStore(path)
    await store.write([point("sl-1", 1)])
    with sqlite3.connect(path) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert mode == "wal"
    assert {"points", "series"} <= tables


async def test_the_same_point_twice_is_one_point_and_the_later_value(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ts.db")
    await store.write([point("sl-1", 1)])
    await store.write([point("sl-1", 1, power_w=77.0)])
    assert await store.count("streetlight") == 1
    assert await store.seqs("sl-1") == [1]
    (power,) = await store.latest(metrics=["power_w"])
    assert power.value == 77.0


async def test_booleans_come_back_as_booleans(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ts.db")
    await store.write([point("sl-1", 1, lamp_on=True), point("sl-1", 2, lamp_on=False)])
    (lamp,) = await store.latest(metrics=["lamp_on"])
    assert lamp.value is False and lamp.time == T0 + timedelta(seconds=2)


async def test_a_non_finite_value_refuses_the_batch_naming_it(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ts.db")
    with pytest.raises(ValueError, match=r"sl-2\.power_w: not a finite number"):
        await store.write([point("sl-1", 1), point("sl-2", 1, power_w=float("nan"))])
    assert await store.count("streetlight") == 0


async def test_bad_history_ranges_are_refused(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ts.db")
    common = {"kind": "streetlight", "metric": "power_w", "aggregate": "mean"} | {
        "device_id": "sl-1"
    }
    with pytest.raises(ValueError, match="must be after start"):
        await store.history(start=T0, end=T0, interval=timedelta(minutes=1), **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1 s"):
        await store.history(
            start=T0,
            end=T0 + timedelta(hours=1),
            interval=timedelta(milliseconds=500),
            **common,  # type: ignore[arg-type]
        )


async def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ts.db")

    async def device(n: int) -> None:
        for batch in range(10):
            await store.write([point(f"sl-{n}", batch * 20 + i + 1) for i in range(20)])

    async with asyncio.TaskGroup() as group:
        for n in range(8):
            group.create_task(device(n))
    assert await store.count("streetlight") == 8 * 200
    assert await store.seqs("sl-3") == list(range(1, 201))


async def test_many_device_ids_in_one_query(tmp_path: Path) -> None:
    """More ids than SQLite's old 999-parameter limit: they travel as one JSON value."""
    store = EmbeddedStore(tmp_path / "ts.db")
    await store.write([point(f"sl-{n:04}", 1) for n in range(1_500)])
    wanted = [f"sl-{n:04}" for n in range(0, 1_500, 1)]
    values = await store.latest(device_ids=wanted, metrics=["seq"])
    assert [v.device_id for v in values] == sorted(wanted)


async def test_derived_points_never_replace_a_reading_and_need_no_device(
    tmp_path: Path,
) -> None:
    store = EmbeddedStore(tmp_path / "ts.db")
    at = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
    gauge = Point("flood_gauge", {"device_id": "fg-1"}, {"water_level_m": 1.9}, at)
    flood = Point("flood", {"device_id": "fg-1"}, {"water_level_m": 1.95, "alert_level": 2}, at)
    alerts = Point("alerts", {"severity": "critical", "district": "Ninh Kiều"}, {"open": 3}, at)
    await store.write([gauge, flood, alerts])
    latest = await store.latest(device_ids=["fg-1"], kind="flood_gauge")
    assert [(v.metric, v.value) for v in latest] == [("water_level_m", 1.9)]
    assert await store.derived("alerts") == [
        ({"district": "Ninh Kiều", "severity": "critical"}, "open", at, 3.0)
    ]
    await store.write([Point("alerts", alerts.tags, {"open": 4}, at)])  # same series, time
    assert [row[3] for row in await store.derived("alerts")] == [4.0]
    assert {row[1] for row in await store.derived("flood")} == {"water_level_m", "alert_level"}
