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
    [letter] = parsed.dead_letters  # one letter per message, all its reasons in it
    reasons = letter.reason.split("; ")
    assert reasons[0].startswith("pm10: 99999.0") and "above the maximum" in reasons[0]
    assert reasons[1].startswith("no2: expected a number")
    assert reasons[2].startswith("rpm: unknown metric")
    assert letter.device_id == "env-0007"
    assert letter.topic == telemetry()
    assert letter.payload == json.dumps(payload).encode()
    assert letter.source == "mqtt"
    assert letter.details == {"class": "metric", "reasons": "3", "metric": "pm10,no2,rpm"}


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


# -- hostile input: every payload ends as points or ONE dead letter naming the field ------


def _hostile() -> list[tuple[str, bytes, str]]:
    """(name, payload, reason prefix): the attacks of issue 12, as a field would send them."""
    deep = 30_000  # under the size bound, so the depth scan (not the size) refuses it
    return [
        ("nested arrays", b"[" * deep + b"]" * deep, "payload: nested deeper than"),
        (
            "nested in a metric",
            b'{"metrics": {"pm25": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
            "payload: nested deeper than",
        ),
        ("200 KB of nesting", b"[" * 100_000 + b"]" * 100_000, "payload: 200000 bytes"),
        (
            "5,000-digit metric",
            b'{"metrics": {"pm25": ' + b"9" * 5000 + b"}}",
            "payload: a number 5000 characters long",
        ),
        (
            "5,000-digit ts",
            b'{"ts": ' + b"9" * 5000 + b', "metrics": {"pm25": 1}}',
            "payload: a number 5000 characters long",
        ),
        (
            "5,000-digit seq",
            b'{"seq": ' + b"9" * 5000 + b', "metrics": {"pm25": 1}}',
            "payload: a number 5000 characters long",
        ),
        ("NaN", b'{"metrics": {"pm25": NaN}}', "payload: NaN is not a JSON number"),
        ("Infinity", b'{"metrics": {"pm25": -Infinity}}', "payload: -Infinity is not"),
        ("1e999", b'{"metrics": {"pm25": 1e999}}', "payload: number 1e999 is out of range"),
        ("duplicate keys", b'{"metrics": {"pm25": 1, "pm25": 900}}', "payload: duplicate key"),
        ("invalid UTF-8", b'{"metrics": {"pm25": 1}}\xc3\x28', "payload: not UTF-8"),
        ("UTF-16", '{"metrics": {"pm25": 1}}'.encode("utf-16"), "payload: not UTF-8"),
        ("huge", b'{"metrics": {"pm25": 1, "x": "' + b"a" * 300_000 + b'"}}', "payload: "),
        ("string", b'"hello"', "payload: expected a JSON object"),
        ("number", b"42", "payload: expected a JSON object"),
        ("null", b"null", "payload: expected a JSON object"),
        ("empty", b"", "payload: not valid JSON"),
        ("NUL", b"\x00\x00", "payload: not valid JSON"),
        ("metrics not an object", b'{"metrics": [1, 2]}', "metrics: "),
        ("SenML of numbers", b"[1, 2, 3]", "[0]."),
    ]


@pytest.mark.parametrize(("name", "payload", "reason"), _hostile(), ids=lambda v: str(v)[:30])
def test_hostile_payloads_are_one_dead_letter_naming_the_field(
    name: str, payload: bytes, reason: str
) -> None:
    parsed = parse(telemetry(), payload)
    assert parsed.points == [], name
    [letter] = parsed.dead_letters
    assert letter.reason.startswith(reason), (name, letter.reason[:200])
    assert len(letter.reason) <= 400


def test_20000_unknown_metric_names_are_one_letter_not_20000() -> None:
    metrics = {f"m{i}": i for i in range(20_000)}
    parsed = parse(telemetry(), {"metrics": metrics})
    [letter] = parsed.dead_letters
    assert letter.reason.startswith("payload: ") or letter.reason.startswith("metrics: ")
    assert "at most" in letter.reason


def test_many_bad_metrics_within_the_bound_are_one_letter_counting_them_all() -> None:
    metrics: dict[str, object] = {f"m{i}": i for i in range(60)}
    metrics["pm25"] = 3
    parsed = parse(telemetry(), {"metrics": metrics})
    [point] = parsed.points
    assert point.fields == {"pm25": 3.0}
    [letter] = parsed.dead_letters
    assert letter.details["reasons"] == "60"
    assert letter.reason.endswith("; and 40 more")
    assert len(letter.details["metric"].split(",")) == 20


def test_a_5000_digit_value_in_a_state_or_deep_state_is_a_state_letter() -> None:
    for payload in (
        b'{"dim_level": ' + b"1" * 5000 + b"}",
        b'{"circuits": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
        b'{"fw": "1", "fw": "2"}',
    ):
        [letter] = parse("pharos/v1/dev/sl-0001/state", payload).dead_letters
        assert letter.details["class"] == "state"
        assert letter.reason.startswith("payload: ")


def test_a_huge_status_is_a_short_status_letter() -> None:
    [letter] = parse("pharos/v1/dev/sl-0001/status", b"online" * 100_000).dead_letters
    assert letter.details["class"] == "status"
    assert len(letter.reason) < 200


def test_a_ts_less_reading_takes_the_time_it_was_first_received() -> None:
    from telemetry.ingest.parsing import FirstSeenTimes

    seen = FirstSeenTimes()
    payload = json.dumps({"seq": 7, "metrics": {"pm25": 1}}).encode()
    later = NOW + timedelta(seconds=90)

    def at(when: datetime, body: bytes = payload, dup: bool = False) -> datetime:
        parsed = parse_message(
            telemetry(), body, when, DEVICES.get, POLICY, first_seen=seen, redelivered=dup
        )
        return parsed.points[0].time

    assert at(NOW) == NOW
    assert at(later) == NOW, "a redelivery (same seq and bytes) lands on the same point"
    other = json.dumps({"seq": 7, "metrics": {"pm25": 2}}).encode()
    assert at(later, other) == later, "seq restarted with other values: its own point"
    assert at(NOW + timedelta(hours=2)) == NOW + timedelta(hours=2), "past the window: new"
    no_seq = json.dumps({"metrics": {"pm25": 5}}).encode()
    assert at(NOW, no_seq) == NOW
    assert at(later, no_seq) == later, "same bytes without seq and without DUP: a new reading"
    assert at(later + timedelta(seconds=5), no_seq, dup=True) == later, "DUP: the same one"
