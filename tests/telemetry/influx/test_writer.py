"""InfluxWriter: batching, back-pressure, dead letters, the spool when InfluxDB goes away.

Real InfluxDB 1.6.7 where it can answer; the local HTTP server (``FakeInflux``) for
503s and held answers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pharos.settings import load_settings
from telemetry.deadletters import DeadLetterStore
from telemetry.influx.client import InfluxClient, InfluxConfigurationError, RetryPolicy
from telemetry.influx.line_protocol import encode_points, join_lines
from telemetry.influx.writer import InfluxWriter
from telemetry.metrics import TelemetryMetrics
from telemetry.points import DeadLetterSink, Point
from telemetry.spool import DurableSpool, SpoolFull
from tests.fixtures.influx import InfluxDB, InfluxFactory
from tests.telemetry.influx.helpers import Answer, FakeInflux, LetterBox, eventually, reading

FAST_DIRECT = RetryPolicy(attempts=2, initial_delay_s=0.05, max_delay_s=0.5)
FAST_REPLAY = RetryPolicy(attempts=None, initial_delay_s=0.05, max_delay_s=0.2)


def make_writer(
    url: str,
    database: str,
    spool_dir: Path,
    letters: DeadLetterSink | None = None,
    *,
    spool_max_bytes: int = 50_000_000,
    **options: object,
) -> InfluxWriter:
    settings: dict[str, object] = {
        "batch_size": 100,
        "batch_interval_s": 0.05,
        "direct_retry": FAST_DIRECT,
        "replay_retry": FAST_REPLAY,
    } | options
    return InfluxWriter(
        InfluxClient(url, database),
        DurableSpool(spool_dir, spool_max_bytes),
        letters or LetterBox(),
        **settings,  # type: ignore[arg-type]
    )


def stored_seqs(server: InfluxDB, db: str) -> list[int]:
    return sorted(row[1] for row in server.values("SELECT seq FROM env_monitor", db))


async def submit_each(writer: InfluxWriter, points: Sequence[Point]) -> None:
    """Many concurrent single-point submits, the way ingest submits readings."""
    await asyncio.gather(*(writer.submit([p]) for p in points))


async def test_every_submitted_point_is_stored_in_batches(
    influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    metrics = TelemetryMetrics()
    async with make_writer(influxdb.url, influx_db, tmp_path, metrics=metrics) as writer:
        await submit_each(writer, [reading(n) for n in range(1000)])
        stats = writer.stats
    assert stored_seqs(influxdb, influx_db) == list(range(1000))
    assert (stats.written, stats.spooled, stats.dead_lettered) == (1000, 0, 0)
    assert 10 <= stats.batches <= 30  # 1000 submits, a few full batches
    assert stats.requests == stats.batches
    assert metrics.written == 1000


async def test_a_lone_point_waits_at_most_the_batch_interval(
    influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    async with make_writer(
        influxdb.url, influx_db, tmp_path, batch_size=1000, batch_interval_s=0.3
    ) as writer:
        started = time.monotonic()
        await writer.submit([reading(1)])
        waited = time.monotonic() - started
        assert stored_seqs(influxdb, influx_db) == [1]  # durable when submit returned
    assert 0.25 <= waited < 2.0


async def test_closing_writes_what_was_submitted(
    influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    async with make_writer(influxdb.url, influx_db, tmp_path, batch_interval_s=30) as writer:
        submitted = asyncio.ensure_future(writer.submit([reading(n) for n in range(3)]))
        await eventually(lambda: writer.stats.pending_points == 3)
    await submitted
    assert stored_seqs(influxdb, influx_db) == [0, 1, 2]


async def test_submit_waits_while_the_buffer_is_full(tmp_path: Path) -> None:
    async with FakeInflux() as fake:
        fake.hold()  # InfluxDB takes the first batch and does not answer yet
        writer = make_writer(fake.url, "pharos", tmp_path, batch_size=10, max_pending_points=20)
        async with writer:
            tasks = [
                asyncio.ensure_future(writer.submit([reading(10 * k + n) for n in range(10)]))
                for k in range(4)
            ]
            await eventually(lambda: len(fake.requests) == 1 and writer.stats.pending_points == 20)
            assert [t.done() for t in tasks] == [False] * 4  # 1 in flight, 2 buffered, 1 waits
            fake.release()
            await asyncio.gather(*tasks)
    assert sorted(line for r in fake.requests for line in r.lines) == sorted(
        line for k in range(40) for line in encode_points([reading(k)]).lines
    )


async def test_influxdb_stopped_mid_stream_loses_nothing(
    influxdb_factory: InfluxFactory, tmp_path: Path
) -> None:
    server = influxdb_factory()
    server.create_database("pharos")
    metrics = TelemetryMetrics()
    async with make_writer(server.url, "pharos", tmp_path / "spool", metrics=metrics) as writer:
        await submit_each(writer, [reading(n) for n in range(300)])
        await asyncio.to_thread(server.stop)

        # Ingest goes on: every submit completes, into the spool.
        await submit_each(writer, [reading(n) for n in range(300, 700)])
        assert writer.stats.spooled == 400
        assert writer.stats.spool_depth_points == 400
        assert metrics.spool_depth_points == 400

        await asyncio.to_thread(server.start)
        await submit_each(writer, [reading(n) for n in range(700, 1000)])
        await eventually(lambda: writer.stats.spool_depth_points == 0, what="spool drained")
        stats = writer.stats

    assert stored_seqs(server, "pharos") == list(range(1000))
    assert stats.replayed >= 400
    assert stats.written == 1000
    assert stats.last_error is not None and "unreachable" in stats.last_error


async def test_a_bad_line_is_dead_lettered_and_the_good_ones_stored(
    influxdb: InfluxDB, influx_db: str, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    letters = DeadLetterStore(sessions)
    async with make_writer(influxdb.url, influx_db, tmp_path, letters) as writer:
        await writer.submit([reading(0)])  # pm25 is a float from now on
        bad = reading(5, device_id="env-0099", pm25=True)
        await writer.submit([reading(n) for n in range(1, 5)] + [bad])
        stats = writer.stats

    assert stored_seqs(influxdb, influx_db) == [0, 1, 2, 3, 4]
    assert (stats.requests, stats.dead_lettered, stats.written) == (2, 1, 5)
    [letter], total = await letters.list(source="influx")
    assert total == 1
    assert letter.device_id == "env-0099"
    assert letter.reason == (
        'refused by InfluxDB: field type conflict: input field "pm25" on measurement '
        '"env_monitor" is type boolean, already exists as type float'
    )
    assert letter.payload_preview == encode_points([bad]).lines[0]


async def test_unwritable_points_are_dead_lettered_before_sending(
    influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    box = LetterBox()
    async with make_writer(influxdb.url, influx_db, tmp_path, box) as writer:
        await writer.submit([reading(1), reading(2, pm25=math.nan), reading(3)])
    assert stored_seqs(influxdb, influx_db) == [1, 3]
    [letter] = box.letters
    assert (
        letter.reason == "not writable to InfluxDB: field 'pm25': nan cannot be stored (not finite)"
    )
    assert b'"seq": 2' in letter.payload


async def test_a_configuration_error_stops_the_writer_without_retrying(
    influxdb: InfluxDB, tmp_path: Path
) -> None:
    async with make_writer(influxdb.url, "no_such_db", tmp_path) as writer:
        with pytest.raises(InfluxConfigurationError, match='database "no_such_db" not found'):
            await writer.submit([reading(1)])
        with pytest.raises(InfluxConfigurationError):
            await writer.submit([reading(2)])  # refused at once, nothing sent
        stats = writer.stats
        assert writer.error is not None
    assert (stats.requests, stats.spooled, stats.written) == (1, 0, 0)
    assert stats.last_error is not None and "not found" in stats.last_error


async def test_the_spool_is_replayed_in_order_once_influxdb_answers(tmp_path: Path) -> None:
    async with FakeInflux(Answer(503, b'{"error": "overloaded"}')) as fake:
        writer = make_writer(fake.url, "pharos", tmp_path, batch_size=10)
        async with writer:
            for k in range(6):
                await writer.submit([reading(10 * k + n) for n in range(10)])
            assert writer.stats.spool_depth_points == 60
            fake.answer_with(Answer())
            await eventually(lambda: writer.stats.spool_depth_points == 0)
            stats = writer.stats
    accepted = fake.requests[-6:]  # answered 204, after the 503s
    assert [request.lines for request in accepted] == [
        encode_points([reading(10 * k + n) for n in range(10)]).lines for k in range(6)
    ]
    assert (stats.spooled, stats.replayed) == (60, 60)


async def test_a_full_spool_refuses_submits_until_it_drains(tmp_path: Path) -> None:
    batch = [reading(n) for n in range(10)]
    record = len(join_lines(encode_points(batch).lines)) + 16
    async with FakeInflux(Answer(503, b'{"error": "down"}')) as fake:
        writer = make_writer(
            fake.url, "pharos", tmp_path, batch_size=10, spool_max_bytes=2 * record
        )
        async with writer:
            await writer.submit(batch)
            await writer.submit(batch)
            with pytest.raises(SpoolFull):
                await writer.submit(batch)  # ingest must not acknowledge this one
            assert writer.stats.spool_depth_points == 20
            fake.answer_with(Answer())
            await eventually(lambda: writer.stats.spool_depth_points == 0)
            await writer.submit(batch)  # accepted again
            assert writer.stats.written == 30


async def test_a_spool_left_by_a_previous_run_is_replayed_at_start(
    influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    async with DurableSpool(tmp_path, 1_000_000) as spool:
        for k in range(3):
            lines = encode_points([reading(10 * k + n) for n in range(10)]).lines
            await spool.append(join_lines(lines), len(lines))
    async with make_writer(influxdb.url, influx_db, tmp_path) as writer:
        await eventually(lambda: writer.stats.spool_depth_points == 0)
        assert writer.stats.replayed == 30
    assert stored_seqs(influxdb, influx_db) == list(range(30))


async def test_the_writer_is_built_from_the_settings_sections(
    influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    settings = load_settings(
        influx={"url": influxdb.url, "database": influx_db},
        telemetry={"batch_size": 10, "batch_interval_s": 0.05},
    )
    writer = InfluxWriter.from_settings(
        settings.influx, settings.telemetry, spool_dir=tmp_path, dead_letters=LetterBox()
    )
    async with writer:
        await writer.submit([reading(n) for n in range(25)])
        assert writer.stats.batches == 3  # 10 + 10 + 5
    assert stored_seqs(influxdb, influx_db) == list(range(25))


def test_without_an_influxdb_url_there_is_no_writer(tmp_path: Path) -> None:
    settings = load_settings()
    with pytest.raises(InfluxConfigurationError, match=r"influx\.url is not set"):
        InfluxWriter.from_settings(
            settings.influx.model_copy(update={"url": None}),
            settings.telemetry,
            spool_dir=tmp_path,
            dead_letters=LetterBox(),
        )
