"""The wire models accept what DESIGN.md shows and name the field of what they refuse."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from devices.wire import (
    DeviceState,
    DeviceStatus,
    PayloadError,
    parse_reading,
    validate_metrics,
)

ICT = timezone(timedelta(hours=7))


def test_plain_reading_from_the_design_example() -> None:
    payload = (
        b'{"ts": "2026-11-22T18:05:00+07:00", "seq": 1042,'
        b' "metrics": {"pm25": 41.2, "pm10": 63.0, "temperature_c": 29.4}}'
    )
    [reading] = parse_reading(payload, "env-0007")
    assert reading.ts == datetime(2026, 11, 22, 18, 5, tzinfo=ICT)
    assert reading.seq == 1042
    assert reading.metrics == {"pm25": 41.2, "pm10": 63.0, "temperature_c": 29.4}


def test_epoch_seconds_and_missing_ts() -> None:
    [with_epoch] = parse_reading(b'{"ts": 1763809500, "metrics": {"pm25": 1}}', "env-0007")
    assert with_epoch.ts == datetime(2025, 11, 22, 11, 5, tzinfo=UTC)
    [without] = parse_reading(b'{"metrics": {"pm25": 1}}', "env-0007")
    assert without.ts is None and without.seq is None


def test_senml_pack_from_the_design_example() -> None:
    pack = [
        {"bn": "urn:dev:pharos:env-0007:", "bt": 1763809500, "n": "pm25", "u": "ug/m3", "v": 41.2},
        {"n": "pm10", "v": 63.0},
    ]
    [reading] = parse_reading(json.dumps(pack).encode(), "env-0007")
    assert reading.ts == datetime.fromtimestamp(1763809500, UTC)
    assert reading.metrics == {"pm25": 41.2, "pm10": 63.0}


def test_senml_pack_with_two_times_gives_two_readings() -> None:
    pack = [
        {"bn": "urn:dev:pharos:fg-1:", "bt": 1000, "n": "water_level_m", "v": 1.5},
        {"n": "water_level_m", "t": 60, "v": 1.6},
        {"n": "lamp_ok", "t": 60, "vb": True},
    ]
    readings = parse_reading(json.dumps(pack).encode(), "fg-1")
    assert [r.ts.timestamp() for r in readings if r.ts] == [1000, 1060]
    assert readings[1].metrics == {"water_level_m": 1.6, "lamp_ok": True}


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (b"{not json", "payload", "not valid JSON"),
        (b"\xff\xfe", "payload", "not UTF-8"),
        (b'"text"', "payload", "expected a JSON object"),
        (b'{"metrics": {}}', "metrics", "at least one metric"),
        (b'{"ts": "yesterday", "metrics": {"pm25": 1}}', "ts", "not an ISO 8601"),
        (b'{"ts": "2026-11-22T18:05:00", "metrics": {"pm25": 1}}', "ts", "no UTC offset"),
        (b'{"seq": "12", "metrics": {"pm25": 1}}', "seq", "whole number"),
        (b'{"seq": -1, "metrics": {"pm25": 1}}', "seq", "greater than or equal to 0"),
        (b'{"metrics": {"pm25": 1}, "extra": 1}', "extra", "Extra inputs"),
        (b"[]", "payload", "empty SenML"),
        (b'[{"bn": "urn:dev:pharos:other:", "n": "pm25", "v": 1}]', "[0].bn", "base name"),
        (b'[{"n": "pm25", "v": 1, "vb": true}]', "[0]", "exactly one of"),
    ],
)
def test_unreadable_payloads_name_the_field(payload: bytes, field: str, reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_reading(payload, "env-0007")
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_validate_metrics_keeps_the_good_and_names_the_bad() -> None:
    good, errors = validate_metrics(
        "env_monitor",
        {"pm25": 41, "pm10": "63", "no2": -1, "co": True, "flux": 1, "o3": float("nan")},
    )
    assert good == {"pm25": 41.0}
    reasons = {e.metric: e.reason for e in errors}
    assert set(reasons) == {"pm10", "no2", "co", "flux", "o3"}
    assert "expected a number" in reasons["pm10"]
    assert "below the minimum" in reasons["no2"]
    assert "unknown metric" in reasons["flux"]
    assert "finite" in reasons["o3"]


def test_booleans_and_circuit_metrics() -> None:
    good, errors = validate_metrics(
        "lighting_cabinet",
        {"circuit_1_on": 1, "circuit_16_on": False, "circuit_17_on": True, "door_open": "yes"},
    )
    assert good == {"circuit_1_on": True, "circuit_16_on": False}
    assert {e.metric for e in errors} == {"circuit_17_on", "door_open"}


def test_state_and_status() -> None:
    state = DeviceState.parse(
        b'{"ts": "2026-11-22T18:05:00+07:00", "power": "on", "dim_level": 70,'
        b' "program_id": "default", "fw": "1.2.0"}'
    )
    assert state.power == "on" and state.dim_level == 70
    with pytest.raises(PayloadError, match="dim_level"):
        DeviceState.parse(b'{"dim_level": 150}')
    with pytest.raises(PayloadError, match="power"):
        DeviceState.parse(b'{"power": "dim"}')
    assert DeviceStatus.parse(b"offline") is DeviceStatus.OFFLINE
    with pytest.raises(PayloadError, match="online"):
        DeviceStatus.parse(b"gone")
