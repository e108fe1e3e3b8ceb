"""Line protocol: exact lines, refusals with reasons, and round trips through InfluxDB 1.6.7."""

# ruff: noqa: S608  (InfluxQL built from quoted identifiers)

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from telemetry.influx.client import InfluxClient
from telemetry.influx.line_protocol import (
    LineProtocolError,
    Precision,
    encode_point,
    encode_points,
    field_types,
    join_lines,
    measurement_of,
    series_tags,
    split_lines,
    timestamp,
)
from telemetry.points import Point
from tests.fixtures.influx import InfluxDB
from tests.telemetry.influx.helpers import T0, reading

AWKWARD_TAGS = {
    "device_id": "dev 1,x=y",
    "district": "Ninh Kiều",
    "group": "Quận 1, P. Bến Nghé",
    "odd key=,": "value",
    "backslash": "x\\y",
    "backslash_comma": "x\\,y",
    "backslash_space": "a\\ b",
    "quote": 'it\'s "quoted"',
}
AWKWARD_FIELDS: dict[str, Any] = {
    "pm 2.5": 0.1,
    "count,n=": 42,
    "lamp_on": True,
    "note": 'say "hi" \\ then\na new line',
    "largest": 1.7976931348623157e308,
    "smallest": 5e-324,
    "int_min": -(2**63),
    "negative_zero": -0.0,
}


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_a_reading_becomes_one_exact_line_with_sorted_tags() -> None:
    point = Point(
        "env_monitor",
        {"district": "Ninh Kiều", "device_id": "env-0001", "group": "park"},
        {"seq": 7, "pm25": 41.2, "ts_replaced": False},
        datetime(2026, 11, 22, 18, 5, tzinfo=timezone(timedelta(hours=7))),
    )
    assert encode_point(point) == (
        "env_monitor,device_id=env-0001,district=Ninh\\ Kiều,group=park "
        "seq=7i,pm25=41.2,ts_replaced=false 1795345500000000000"
    )


def test_escaping_follows_influxdb_rules() -> None:
    string_field: dict[str, Any] = {"f ,=": 'q"\\'}  # strings: beyond FieldValue, for completeness
    point = Point("a b,c=d", {"k ,=": "v ,="}, string_field, T0)
    assert encode_point(point).startswith(
        'a\\ b\\,c=d,k\\ \\,\\==v\\ \\,\\= f\\ \\,\\=="q\\"\\\\" '
    )


def test_empty_tag_values_are_left_out() -> None:
    point = Point("m", {"device_id": "d", "group": ""}, {"v": 1.0}, T0)
    assert ",group" not in encode_point(point)


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        (Point("m", {}, {"v": math.nan}, T0), "field 'v': nan cannot be stored"),
        (Point("m", {}, {"v": math.inf}, T0), "field 'v': inf cannot be stored"),
        (Point("m", {}, {"v": 2**63}, T0), "outside the 64-bit integer range"),
        (Point("m", {}, {}, T0), "fields: a point needs at least one field"),
        (Point("", {}, {"v": 1.0}, T0), "measurement: empty"),
        (Point("#m", {}, {"v": 1.0}, T0), "a line starting with '#' is a comment"),
        (Point("m", {"k": "ends\\"}, {"v": 1.0}, T0), "trailing backslash cannot be written"),
        (Point("m", {"k": "two\nlines"}, {"v": 1.0}, T0), "line breaks cannot be written"),
        (Point("m", {"time": "x"}, {"v": 1.0}, T0), "tag key 'time': reserved"),
        (Point("m", {}, {"time": 1.0}, T0), "field key 'time': reserved"),
        (Point("m", {}, {"v": 1.0}, datetime(2026, 1, 1)), "time: naive datetime"),
    ],
)
def test_unwritable_points_are_refused_with_the_part_and_reason(point: Point, reason: str) -> None:
    with pytest.raises(LineProtocolError, match=reason.replace("(", r"\(")):
        encode_point(point)


def test_encode_points_sets_refused_points_aside_and_keeps_the_rest() -> None:
    bad = reading(2, pm25=math.nan)
    batch = encode_points([reading(1), bad, reading(3)])
    assert len(batch.lines) == 2
    assert batch.refused == [(bad, "field 'pm25': nan cannot be stored (not finite)")]


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        ("ns", 1795345500123456000),
        ("us", 1795345500123456),
        ("ms", 1795345500123),
        ("s", 1795345500),
    ],
)
def test_timestamp_in_each_precision(precision: Precision, expected: int) -> None:
    when = datetime(2026, 11, 22, 11, 5, 0, 123456, tzinfo=UTC)
    assert timestamp(when, precision) == expected


def test_the_same_device_and_time_give_the_same_line_whatever_the_offset() -> None:
    utc = reading(1, at=T0)
    local = reading(1, at=T0.astimezone(timezone(timedelta(hours=7))))
    assert encode_point(utc) == encode_point(local)


def test_lines_can_be_parsed_back_for_dead_letters_and_conflicts() -> None:
    point = Point("env monitor", AWKWARD_TAGS, AWKWARD_FIELDS, T0)
    line = encode_point(point)
    assert series_tags(line) == AWKWARD_TAGS
    assert measurement_of(line) == "env monitor"
    assert field_types(line) == {
        "pm 2.5": "float",
        "count,n=": "integer",
        "lamp_on": "boolean",
        "note": "string",
        "largest": "float",
        "smallest": "float",
        "int_min": "integer",
        "negative_zero": "float",
    }
    # A string field may hold a newline: splitting a body must not cut the line there.
    assert split_lines(join_lines([line, encode_point(reading(1))])) == [
        line,
        encode_point(reading(1)),
    ]


# --- against the real InfluxDB 1.6.7 ---------------------------------------------------


async def test_awkward_names_round_trip_through_influxdb_exactly(
    influxdb: InfluxDB, influx_db: str
) -> None:
    points = [
        Point("env monitor,v2", AWKWARD_TAGS, AWKWARD_FIELDS, T0),
        Point("a=b", {"district": "Cái Răng", "group": ""}, {"water_level_m": 1.25}, T0),
    ]
    async with InfluxClient(influxdb.url, influx_db) as client:
        result = await client.write([encode_point(p) for p in points])
    assert (result.written, result.rejected) == (2, ())

    for point in points:
        document = influxdb.query(
            f"SELECT * FROM {quote_ident(point.measurement)} GROUP BY *", influx_db
        )
        [series] = document["results"][0]["series"]
        assert series["name"] == point.measurement
        expected_tags = {k: v for k, v in point.tags.items() if v}
        stored_tags = {k: v for k, v in series["tags"].items() if v}
        assert stored_tags == expected_tags
        [row] = series["values"]
        stored = dict(zip(series["columns"], row, strict=True))
        assert stored.pop("time") == timestamp(point.time)
        assert stored == point.fields  # (InfluxDB's JSON prints -0.0 as 0)


@pytest.mark.parametrize(
    ("precision", "stored_ns"),
    [("us", 1795345500123456000), ("ms", 1795345500123000000), ("s", 1795345500000000000)],
)
async def test_each_precision_is_named_the_way_influxdb_1x_understands(
    influxdb: InfluxDB, influx_db: str, precision: Precision, stored_ns: int
) -> None:
    # 1.6.7 silently reads an unknown precision (such as "us") as nanoseconds.
    when = datetime(2026, 11, 22, 11, 5, 0, 123456, tzinfo=UTC)
    point = reading(1, at=when)
    async with InfluxClient(influxdb.url, influx_db, precision=precision) as client:
        await client.write([encode_point(point, precision)])
    [[stored_time, _seq]] = influxdb.values("SELECT seq FROM env_monitor", influx_db)
    assert stored_time == stored_ns


async def test_writing_the_same_point_twice_keeps_one_point(
    influxdb: InfluxDB, influx_db: str
) -> None:
    first = reading(5, pm25=12.5)
    again = reading(5, pm25=13.5)  # a replay after a retry: same device, same time
    async with InfluxClient(influxdb.url, influx_db) as client:
        await client.write([encode_point(first)])
        await client.write([encode_point(again)])
    rows = influxdb.values("SELECT seq, pm25 FROM env_monitor", influx_db)
    assert rows == [[timestamp(first.time), 5, 13.5]]
