"""One message → points, dead letters, status or state: the rules of telemetry.ingest.parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from devices.wire import DeviceStatus
from telemetry.ingest.directory import DeviceInfo
from telemetry.ingest.parsing import TimestampPolicy, parse_message
from telemetry.points import SEQ_FIELD, TS_REPLACED_FIELD

NOW = datetime(2026, 11, 22, 11, 5, tzinfo=UTC)
ENV = DeviceInfo("env-0007", "env_monitor", "Ninh Kiều", "street-3-2")
LAMP = DeviceInfo("sl-0001", "streetlight", None, None)
DEVICES = {d.device_id: d for d in (ENV, LAMP)}
POLICY = TimestampPolicy(max_future_s=300, max_past_s=86_400)


def telemetry(device_id: str = "env-0007") -> str:
    return f"pharos/v1/dev/{device_id}/telemetry"


def parse(topic: str, payload: bytes | dict[str, object] | list[object]):  # type: ignore[no-untyped-def]
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(topic, raw, NOW, DEVICES.get, POLICY)


def test_a_plain_reading_is_one_point_tagged_from_the_registry() -> None:
    ts = "2026-11-22T18:05:00+07:00"
    parsed = parse(telemetry(), {"ts": ts, "seq": 1042, "metrics": {"pm25": 41.2, "pm10": 63}})
    assert parsed.dead_letters == []
    [point] = parsed.points
    assert point.measurement == "env_monitor"
    assert point.tags == {"device_id": "env-0007", "district": "Ninh Kiều", "group": "street-3-2"}
    assert point.fields == {"pm25": 41.2, "pm10": 63.0, SEQ_FIELD: 1042}
    assert isinstance(point.fields[SEQ_FIELD], int)
    assert point.time == datetime.fromisoformat(ts)


def test_empty_tags_are_left_out() -> None:
    [point] = parse(telemetry("sl-0001"), {"metrics": {"power_w": 80, "lamp_on": 1}}).points
    assert point.tags == {"device_id": "sl-0001"}
    assert point.fields == {"power_w": 80.0, "lamp_on": True}


def test_no_ts_means_the_received_time_without_a_flag() -> None:
    [point] = parse(telemetry(), {"seq": 1, "metrics": {"pm25": 1}}).points
    assert point.time == NOW
    assert TS_REPLACED_FIELD not in point.fields


@pytest.mark.parametrize(
    "offset", [timedelta(seconds=301), timedelta(days=-2), timedelta(days=365 * 50)]
)
def test_an_implausible_ts_is_replaced_and_flagged(offset: timedelta) -> None:
    ts = (NOW + offset).isoformat()
    parsed = parse(telemetry(), {"ts": ts, "metrics": {"pm25": 1}})
    [point] = parsed.points
    assert point.time == NOW
    assert point.fields[TS_REPLACED_FIELD] is True
    assert parsed.dead_letters == [], "a flag, not a dead letter"


def test_a_ts_just_inside_the_window_is_kept() -> None:
    ts = NOW + timedelta(seconds=299)
    [point] = parse(telemetry(), {"ts": ts.isoformat(), "metrics": {"pm25": 1}}).points
    assert point.time == ts
    assert TS_REPLACED_FIELD not in point.fields


def test_a_senml_pack_gives_a_point_per_time() -> None:
    bt = NOW.timestamp() - 120
    pack = [
        {"bn": "urn:dev:pharos:env-0007:", "bt": bt, "n": "pm25", "u": "ug/m3", "v": 41.2},
        {"n": "pm10", "v": 63.0},
        {"n": "pm25", "t": 60, "v": 40.0},
    ]
    points = sorted(parse(telemetry(), pack).points, key=lambda p: p.time)
    assert [(p.time, p.fields) for p in points] == [
        (NOW - timedelta(seconds=120), {"pm25": 41.2, "pm10": 63.0}),
        (NOW - timedelta(seconds=60), {"pm25": 40.0}),
    ]


def test_replaced_times_of_one_pack_keep_their_spacing() -> None:
    bt = NOW.timestamp() - 30 * 86_400  # a device whose clock reset a month back
    pack = [{"bt": bt, "n": "pm25", "v": 1.0}, {"n": "pm25", "t": 60, "v": 2.0}]
    points = sorted(parse(telemetry(), pack).points, key=lambda p: p.time)
    assert [p.time for p in points] == [NOW - timedelta(seconds=60), NOW]
    assert all(p.fields[TS_REPLACED_FIELD] is True for p in points)


def test_a_partly_bad_reading_keeps_its_good_metrics() -> None:
    payload = {"seq": 5, "metrics": {"pm25": 41.2, "pm10": 99_999, "no2": "high", "rpm": 3}}
    parsed = parse(telemetry(), payload)
    [point] = parsed.points
    assert point.fields == {"pm25": 41.2, SEQ_FIELD: 5}
    reasons = sorted(letter.reason for letter in parsed.dead_letters)
    assert reasons[0].startswith("no2: expected a number")
    assert reasons[1].startswith("pm10: 99999.0") and "above the maximum" in reasons[1]
    assert reasons[2].startswith("rpm: unknown metric")
    for letter in parsed.dead_letters:
        assert letter.device_id == "env-0007"
        assert letter.topic == telemetry()
        assert letter.payload == json.dumps(payload).encode()
        assert letter.source == "mqtt"
        assert letter.details["class"] == "metric"
        assert letter.details["metric"] == letter.reason.split(":")[0]


def test_all_metrics_bad_gives_no_point() -> None:
    parsed = parse(telemetry(), {"seq": 1, "metrics": {"pm25": -1}})
    assert parsed.points == []
    assert len(parsed.dead_letters) == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "payload: not valid JSON"),
        (b"\xff\xfe", "payload: not UTF-8"),
        (b'{"metrics": {}}', "metrics: Value error, a reading needs at least one metric"),
        (b'{"seq": "7", "metrics": {"pm25": 1}}', "seq: Value error, expected a whole number"),
        (b'{"ts": 1e20, "metrics": {"pm25": 1}}', "ts: not a usable time"),
        (b'[{"bn": "urn:dev:pharos:other:", "n": "pm25", "v": 1}]', "[0].bn: base name must be"),
    ],
)
def test_an_unreadable_payload_is_one_dead_letter_naming_the_field(
    payload: bytes, reason: str
) -> None:
    parsed = parse(telemetry(), payload)
    assert parsed.points == []
    [letter] = parsed.dead_letters
    assert letter.reason.startswith(reason), letter.reason
    assert letter.details["class"] == "payload"
    assert letter.payload == payload


def test_a_seq_beyond_64_bits_is_dead_lettered_and_the_metrics_kept() -> None:
    parsed = parse(telemetry(), {"seq": 2**64, "metrics": {"pm25": 1}})
    [point] = parsed.points
    assert SEQ_FIELD not in point.fields
    [letter] = parsed.dead_letters
    assert letter.reason.startswith("seq: ")


def test_an_unknown_device_is_dead_lettered() -> None:
    parsed = parse(telemetry("env-9999"), {"metrics": {"pm25": 1}})
    assert parsed.points == []
    [letter] = parsed.dead_letters
    assert letter.device_id == "env-9999"
    assert letter.details["class"] == "unknown_device"
    assert "not in the registry" in letter.reason


@pytest.mark.parametrize(
    "topic",
    ["pharos/v1/dev/env-0007/cmd", "pharos/v1/alerts", "other/topic", "pharos/v1/dev/BAD/state"],
)
def test_a_topic_outside_the_contract_is_dead_lettered(topic: str) -> None:
    [letter] = parse(topic, {"metrics": {"pm25": 1}}).dead_letters
    assert letter.details["class"] == "topic"
    assert letter.topic == topic


def test_status_and_last_will() -> None:
    online = parse("pharos/v1/dev/env-0007/status", b"online")
    assert online.status is not None
    assert (online.status.device_id, online.status.status, online.status.at) == (
        "env-0007",
        DeviceStatus.ONLINE,
        NOW,
    )
    offline = parse("pharos/v1/dev/env-0007/status", b"offline")
    assert offline.status is not None and offline.status.status is DeviceStatus.OFFLINE
    [letter] = parse("pharos/v1/dev/env-0007/status", b"maybe").dead_letters
    assert letter.details["class"] == "status"
    assert "online" in letter.reason


def test_state_uses_its_own_ts_when_plausible() -> None:
    ts = NOW - timedelta(minutes=5)
    parsed = parse(
        "pharos/v1/dev/sl-0001/state",
        {"ts": ts.isoformat(), "power": "on", "dim_level": 70, "fw": "1.2.0"},
    )
    assert parsed.state is not None
    assert parsed.state.state.dim_level == 70
    assert parsed.state.at == ts
    future = parse("pharos/v1/dev/sl-0001/state", {"ts": "2099-01-01T00:00:00+00:00"})
    assert future.state is not None and future.state.at == NOW


def test_a_bad_state_is_dead_lettered() -> None:
    [letter] = parse("pharos/v1/dev/sl-0001/state", {"dim_level": 170}).dead_letters
    assert letter.details["class"] == "state"
    assert letter.reason.startswith("dim_level:")


def test_clearing_a_retained_state_or_status_yields_nothing() -> None:
    for channel in ("state", "status"):
        parsed = parse(f"pharos/v1/dev/sl-0001/{channel}", b"")
        assert (parsed.points, parsed.dead_letters, parsed.status, parsed.state) == (
            [],
            [],
            None,
            None,
        )
