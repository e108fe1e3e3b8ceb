"""Ingest that no input can stop, and points a redelivery cannot double (issue 12).

Real Mosquitto, real InfluxDB 1.6.7 and the embedded store. Points are COUNTED in the
store (not distinct ``seq``): a redelivered copy that became a second point would show.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from devices.wire import Channel, device_topic
from telemetry import ingest as ingest_package
from telemetry.deadletters import DeadLetterStore, RateLimit
from telemetry.ingest import counted
from telemetry.ingest import service as ingest_service
from telemetry.metrics import TelemetryMetrics
from telemetry.points import Point
from telemetry.store import EmbeddedStore
from tests.fixtures.influx import InfluxDB
from tests.telemetry.ingest.conftest import Site, eventually, running_ingest
from tests.telemetry.ingest.test_service import influx_writer, point_count

pytestmark = pytest.mark.broker

HOSTILE = [
    b"[" * 100_000 + b"]" * 100_000,
    b"[" * 30_000 + b"]" * 30_000,
    b'{"metrics": {"pm25": ' + b"9" * 5000 + b"}}",
    json.dumps({"metrics": {f"m{i}": i for i in range(20_000)}}).encode(),
    b'{"metrics": {"pm25": NaN}}',
    b'{"metrics": {"pm25": 1, "pm25": 2}}',
    b"\xff\xfe\xfd",
    b"null",
    b"x" * 300_000,
]


def ts_less(seq: int) -> bytes:
    return json.dumps({"seq": seq, "metrics": {"pm25": 10.0 + seq % 50}}).encode()


async def test_hostile_messages_are_dead_lettered_and_ingest_keeps_running(
    site: Site, tmp_path: Path
) -> None:
    site.register("env-0001", "env-0002")
    store = EmbeddedStore(tmp_path / "ts.db")
    metrics = TelemetryMetrics()
    bad = device_topic("env-0001", Channel.TELEMETRY)
    state = device_topic("env-0001", Channel.STATE)
    messages = [(bad, payload) for payload in HOSTILE]
    messages += [(state, b'{"dim_level": ' + b"1" * 5000 + b"}"), (state, b"[" * 50_000)]
    async with running_ingest(site, counted(store.write, metrics), metrics=metrics) as service:
        await asyncio.to_thread(site.device("env-0001").publish_many, messages)
        await asyncio.to_thread(site.device("env-0002").readings, "env-0002", range(100))
        assert await eventually(lambda: service.stats.acked == len(messages) + 100)
    assert await store.count("env_monitor") == 100
    letters, total = await DeadLetterStore(site.sessions).list(limit=100)
    assert total == len(messages), "one letter per message"
    assert {letter.reason_class for letter in letters} == {"payload", "state"}
    assert all(letter.reason.startswith("payload: ") for letter in letters)
    assert max(len(letter.payload_base64) for letter in letters) < 6000, "payload cut"
    assert metrics.dead_letters_by_reason == {"payload": len(HOSTILE), "state": 2}


async def test_a_message_whose_parsing_raises_is_dead_lettered_not_the_worker(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in parsing (here forced for one payload) costs that message, nothing more."""
    real = ingest_service.parse_message

    def buggy(topic: str, payload: bytes, *args: object, **kwargs: object) -> object:
        if payload == b'{"boom": 1}':
            raise RecursionError("maximum recursion depth exceeded")
        return real(topic, payload, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_service, "parse_message", buggy)
    site.register("env-0001")
    store = EmbeddedStore(tmp_path / "ts.db")
    topic = device_topic("env-0001", Channel.TELEMETRY)
    async with running_ingest(site, store.write) as service:
        device = site.device("env-0001")
        await asyncio.to_thread(device.publish, topic, b'{"boom": 1}')
        await asyncio.to_thread(device.readings, "env-0001", range(50))
        assert await eventually(lambda: service.stats.acked == 51)
        assert service.stats.internal_errors == 1
    assert await store.count("env_monitor") == 50
    [letter], _ = await DeadLetterStore(site.sessions).list()
    assert letter.reason == "internal: RecursionError"
    assert letter.device_id == "env-0001"


async def test_a_device_flooding_garbage_does_not_hold_up_10000_good_readings(
    site: Site, tmp_path: Path
) -> None:
    good = [f"env-{n:04d}" for n in range(1, 11)]
    site.register("env-bad", *good)
    store = EmbeddedStore(tmp_path / "ts.db")
    metrics = TelemetryMetrics()
    flood = [(device_topic("env-bad", Channel.TELEMETRY), b"{not json")] * 5000

    async def good_device(device_id: str) -> None:
        await asyncio.to_thread(site.device(device_id).readings, device_id, range(1000))

    limit = RateLimit(burst=20, per_s=0.2)
    async with running_ingest(
        site, counted(store.write, metrics), metrics=metrics, dead_letter_limit=limit
    ) as service:
        bad = site.device("env-bad")
        await asyncio.gather(
            asyncio.to_thread(bad.publish_many, flood), *(good_device(d) for d in good)
        )
        assert await eventually(lambda: service.stats.acked == 15_000, within=60)
    assert await store.count("env_monitor") == 10_000
    letters, total = await DeadLetterStore(site.sessions).list(limit=100)
    # The burst, a token or two refilled meanwhile, and the summaries: not 5,000 rows.
    assert total < 40, total
    summaries = [x for x in letters if x.reason_class == "rate_limited"]
    assert summaries, "the count of what was not stored one by one is stored"
    assert summaries[0].details is not None
    counted_in_summaries = sum(int(x.details["suppressed"]) for x in summaries if x.details)
    assert counted_in_summaries + (total - len(summaries)) == 5000, "nothing lost silently"
    assert metrics.dead_letters_by_reason == {"payload": 5000}
    assert metrics.dead_letters_suppressed == counted_in_summaries


# -- idempotent points: redelivery across a broker restart ----------------------------


class HeldAfterWrite:
    """A sink that stores, then holds the first call until released (the ack is late)."""

    def __init__(self, write: Callable[[Sequence[Point]], Awaitable[None]]) -> None:
        self._write = write
        self.release = asyncio.Event()
        self.written = 0

    async def __call__(self, points: Sequence[Point]) -> None:
        await self._write(points)
        self.written += len(points)
        await self.release.wait()


async def _redelivered_once(site: Site, sink: HeldAfterWrite, n: int) -> int:
    """Publish n ts-less readings; restart the broker before they are acked; points stored."""
    async with running_ingest(site, sink, batch_size=n) as service:
        await asyncio.to_thread(
            site.device("env-0001").publish_many,
            [(device_topic("env-0001", Channel.TELEMETRY), ts_less(seq)) for seq in range(n)],
        )
        assert await eventually(lambda: sink.written >= n)
        assert service.stats.acked == 0
        await asyncio.to_thread(site.broker.stop)  # SIGTERM: the broker saves its sessions
        sink.release.set()
        await asyncio.to_thread(site.broker.start)
        assert await eventually(lambda: service.stats.acked >= n, within=30)
        return service.stats.points


async def test_a_redelivered_ts_less_reading_is_the_same_point_in_influxdb(
    site: Site, influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    site.register("env-0001")
    async with influx_writer(influxdb, influx_db, site, tmp_path / "spool") as writer:
        sink = HeldAfterWrite(writer.submit)
        stored = await _redelivered_once(site, sink, 200)
    assert stored == 400, "every reading stored twice (the redelivery happened)"
    assert await eventually(lambda: point_count(influxdb, influx_db) == 200)


async def test_a_redelivered_ts_less_reading_is_the_same_point_in_the_embedded_store(
    site: Site, tmp_path: Path
) -> None:
    site.register("env-0001")
    store = EmbeddedStore(tmp_path / "ts.db")
    sink = HeldAfterWrite(store.write)
    assert await _redelivered_once(site, sink, 200) == 400
    assert await store.count("env_monitor") == 200


def test_the_package_exports_the_first_seen_times() -> None:
    assert ingest_package.FirstSeenTimes is not None
