"""Dead letters stored and listed with their reasons, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from telemetry.deadletters import (
    MAX_PAYLOAD_BYTES,
    DeadLetterLimiter,
    DeadLetterStore,
    RateLimit,
    reason_class,
)
from telemetry.points import DeadLetter

T0 = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)


def letter(n: int, **overrides: object) -> DeadLetter:
    fields: dict[str, object] = {
        "received_at": T0 + timedelta(seconds=n),
        "source": "mqtt",
        "reason": "payload: not valid JSON (Expecting value at char 0)",
        "device_id": "env-0001",
        "topic": "pharos/v1/dev/env-0001/telemetry",
        "payload": b"not json",
    }
    return DeadLetter(**(fields | overrides))  # type: ignore[arg-type]


async def test_letters_are_kept_with_reason_and_listed_newest_first(
    sessions: sessionmaker[Session],
) -> None:
    store = DeadLetterStore(sessions)
    await store.put(
        [
            letter(1),
            letter(
                2, device_id="ghost-9", reason="unknown device", details={"class": "unknown_device"}
            ),
            letter(3, source="modbus", device_id="em-0001", topic=None, reason="timeout: no reply"),
        ]
    )
    await store.put([letter(4, reason="metrics.pm25: -3.0 ug/m3 is below the minimum 0.0")])
    items, total = await store.list()
    assert total == 4
    assert [i.received_at for i in items] == [T0 + timedelta(seconds=n) for n in (4, 3, 2, 1)]
    newest = items[0]
    assert newest.reason == "metrics.pm25: -3.0 ug/m3 is below the minimum 0.0"
    assert newest.reason_class == "metrics.pm25"
    assert newest.topic == "pharos/v1/dev/env-0001/telemetry"
    assert base64.b64decode(newest.payload_base64) == b"not json"
    assert newest.payload_preview == "not json" and newest.payload_size == 8
    assert items[2].details == {"class": "unknown_device"}


async def test_filters_paging_and_counts_by_reason(sessions: sessionmaker[Session]) -> None:
    store = DeadLetterStore(sessions)
    await store.put([letter(n) for n in range(5)])
    await store.put(
        [letter(10 + n, device_id="ghost-1", reason="unknown device") for n in range(3)]
    )
    await store.put([letter(20, source="influx", device_id=None, reason="partial write: bad line")])

    page, total = await store.list(offset=1, limit=2, device_id="env-0001")
    assert total == 5
    assert [i.received_at for i in page] == [T0 + timedelta(seconds=n) for n in (3, 2)]
    influx, influx_total = await store.list(source="influx")
    assert influx_total == 1 and influx[0].device_id is None
    assert await store.counts() == {"payload": 5, "unknown device": 3, "partial write": 1}
    assert await store.counts(device_id="ghost-1") == {"unknown device": 3}
    assert await store.counts(source="modbus") == {}


async def test_binary_and_oversized_payloads_are_kept_safely(
    sessions: sessionmaker[Session],
) -> None:
    store = DeadLetterStore(sessions)
    binary = bytes(range(256))
    huge = b"x" * (MAX_PAYLOAD_BYTES + 10)
    await store.put([letter(1, payload=binary), letter(2, payload=huge), letter(3, payload=b"")])
    items, _ = await store.list()
    empty, big, raw = items
    assert base64.b64decode(raw.payload_base64) == binary
    assert "\ufffd" in raw.payload_preview  # undecodable bytes (and NUL) shown, not fatal
    assert "\x00" not in raw.payload_preview
    assert big.payload_size == len(huge)
    assert len(base64.b64decode(big.payload_base64)) == MAX_PAYLOAD_BYTES
    assert big.details is not None
    assert big.details["payload_sha256"] == hashlib.sha256(huge).hexdigest()
    assert len(big.payload_preview) == 200
    assert empty.payload_size == 0 and empty.payload_preview == ""


async def test_putting_nothing_stores_nothing(sessions: sessionmaker[Session]) -> None:
    store = DeadLetterStore(sessions)
    await store.put([])
    assert await store.list() == ([], 0)


async def test_nul_in_text_fields_is_stored(sessions: sessionmaker[Session]) -> None:
    store = DeadLetterStore(sessions)
    await store.put([letter(1, reason="bad\x00reason", details={"raw": "a\x00b"})])
    (item,), _ = await store.list()
    assert item.reason == "bad\ufffdreason" and item.details == {"raw": "a\ufffdb"}


def test_reason_class_prefers_the_producers_class() -> None:
    assert reason_class(letter(1, details={"class": "bad_json"})) == "bad_json"
    assert reason_class(letter(1, reason="ts: time '2026' has no UTC offset")) == "ts"
    assert reason_class(letter(1, reason="   ")) == "unspecified"


async def test_the_table_keeps_only_the_newest_max_rows(sessions: sessionmaker[Session]) -> None:
    store = DeadLetterStore(sessions, max_rows=50)
    for start in range(0, 300, 30):
        await store.put([letter(n) for n in range(start, start + 30)])
    items, total = await store.list(limit=1000)
    assert total <= 50 + 30  # pruned in steps: never more than a step over the bound
    assert items[0].received_at == T0 + timedelta(seconds=299), "the newest kept"
    assert store.pruned == 300 - total


def test_a_flooding_device_is_counted_not_stored_one_by_one() -> None:
    limiter = DeadLetterLimiter(RateLimit(burst=5, per_s=1.0, summary_every_s=60))
    flood = [letter(0, device_id="bad-1") for _ in range(1000)]
    good_neighbour = [letter(0, device_id="env-0002")]
    kept = limiter.admit(flood + good_neighbour)
    assert [k.device_id for k in kept].count("bad-1") == 5
    assert [k.device_id for k in kept].count("env-0002") == 1, "others are not limited"
    assert limiter.suppressed == 995 and limiter.suppressed_by_device == {"bad-1": 995}
    # The burst ends (a quiet second refills a token): one summary with the count.
    [summary] = limiter.due(T0 + timedelta(seconds=2))
    assert summary.details["class"] == "rate_limited"
    assert summary.details["suppressed"] == "995"
    assert summary.details["classes"] == "payload"
    assert summary.payload == b"not json", "the last one's payload is kept"
    assert limiter.due(T0 + timedelta(seconds=3)) == []
    assert limiter.suppressing is False


def test_a_long_burst_is_summarised_every_interval_and_flushed_at_the_end() -> None:
    limiter = DeadLetterLimiter(RateLimit(burst=1, per_s=0.0, summary_every_s=10))
    kept = limiter.admit([letter(0), letter(1), letter(2)])
    assert len(kept) == 1
    kept = limiter.admit([letter(11)])
    assert [k.details["class"] for k in kept] == ["rate_limited"]
    assert kept[0].details["suppressed"] == "3"
    limiter.admit([letter(12)])
    [last] = limiter.flush()
    assert last.details["suppressed"] == "1"
    total = 1 + 3 + 1
    assert limiter.suppressed == total - 1


def test_the_buckets_are_bounded_and_an_evicted_burst_is_summarised() -> None:
    limiter = DeadLetterLimiter(RateLimit(burst=1, per_s=0.0, max_devices=3))
    for device in ("a", "b", "c"):
        limiter.admit([letter(0, device_id=device), letter(0, device_id=device)])
    kept = limiter.admit([letter(1, device_id="d")])
    assert [(k.device_id, k.details.get("class")) for k in kept] == [
        ("a", "rate_limited"),
        ("d", None),
    ]
