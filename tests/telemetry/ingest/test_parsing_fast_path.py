"""The plain-reading speed path gives exactly the general path's point, or steps aside."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from telemetry.ingest.directory import DeviceInfo
from telemetry.ingest.parsing import (
    ParsedTelemetry,
    TimestampPolicy,
    _Letters,
    _telemetry_checked,
    plain_reading_point,
)
from telemetry.points import SEQ_FIELD

NOW = datetime(2026, 11, 22, 11, 5, tzinfo=UTC)
ENV = DeviceInfo("env-0007", "env_monitor", "Ninh Kiều", "street-3-2")
LAMP = DeviceInfo("sl-0001", "streetlight", None, None)
POLICY = TimestampPolicy(max_future_s=300, max_past_s=86_400)
EPOCH_NOW = NOW.timestamp()


def general(device: DeviceInfo, payload: bytes) -> ParsedTelemetry:
    """The general path alone (what parse_message did before the speed path)."""
    letters = _Letters("t", payload, NOW, device.device_id)
    return _telemetry_checked(device, payload, NOW, POLICY, letters, None, False)


@pytest.mark.parametrize(
    ("device", "document"),
    [
        (ENV, {"ts": EPOCH_NOW - 1.25, "seq": 7, "metrics": {"pm25": 41.2, "pm10": 63}}),
        (ENV, {"ts": int(EPOCH_NOW), "metrics": {"pm25": 1}}),
        (LAMP, {"ts": EPOCH_NOW, "metrics": {"power_w": 80, "lamp_on": 1}}),
    ],
)
def test_a_good_plain_reading_is_the_same_point_on_both_paths(
    device: DeviceInfo, document: dict[str, object]
) -> None:
    payload = json.dumps(document).encode()
    fast = plain_reading_point(device, payload, NOW, POLICY)
    assert fast is not None
    [expected] = general(device, payload).points
    assert fast == expected
    assert type(fast.fields.get(SEQ_FIELD, 0)) is int
    assert {k: type(v) for k, v in fast.fields.items()} == {
        k: type(v) for k, v in expected.fields.items()
    }


@pytest.mark.parametrize(
    "payload",
    [
        b'{"ts": "2026-11-22T18:05:00+07:00", "metrics": {"pm25": 1}}',  # ISO time
        # No ts: the time is the first receipt's, which only the general path remembers.
        b'{"seq": 0, "metrics": {"humidity_pct": 80.0}}',
        b'{"metrics": {"lamp_on": true, "dim_level": 55.5}}',
        b'{"metrics": {"pm25": 5000}}',  # out of range: a dead letter
        b'{"metrics": {"nope": 1}}',  # unknown metric
        b'{"metrics": {}}',
        b'{"seq": -1, "metrics": {"pm25": 1}}',
        b'{"seq": true, "metrics": {"pm25": 1}}',
        b'{"seq": 1.5, "metrics": {"pm25": 1}}',
        b'{"seq": 18446744073709551616, "metrics": {"pm25": 1}}',  # orjson: a float
        b'{"seq": 9223372036854775808, "metrics": {"pm25": 1}}',  # past int64
        b'{"ts": %d, "metrics": {"pm25": 1}}' % int(EPOCH_NOW + 3600),  # stray ts
        b'{"ts": 1e300, "metrics": {"pm25": 1}}',
        b'{"ts": true, "metrics": {"pm25": 1}}',
        b'{"extra": 1, "metrics": {"pm25": 1}}',
        b'{"metrics": {"pm25": NaN}}',
        b'[{"n": "pm25", "v": 1}]',  # SenML
        b"not json",
        b"\xff\xfe",
        b'{"metrics": {"pm25": {"deep": [1]}}}',
    ],
)
def test_anything_but_a_good_plain_reading_takes_the_general_path(payload: bytes) -> None:
    assert plain_reading_point(ENV, payload, NOW, POLICY) is None
