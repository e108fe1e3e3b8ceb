"""Ingest end to end: real Mosquitto, real InfluxDB 1.6.7, the registry on SQLite.

Zero loss is checked by count and by ``seq``: each reading carries its own seq and its
own millisecond, so N readings stored once are N points with N distinct seqs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from devices.registry.models import Commissioning
from devices.wire import Channel, device_topic
from telemetry.deadletters import DeadLetterStore, RateLimit
from telemetry.influx import InfluxClient, InfluxWriter, RetryPolicy
from telemetry.ingest import counted
from telemetry.metrics import TelemetryMetrics
from telemetry.spool import DurableSpool
from telemetry.store import EmbeddedStore
from telemetry.twin import read_twin
from tests.fixtures.influx import InfluxDB, InfluxFactory
from tests.telemetry.ingest.conftest import Site, eventually, reading, running_ingest

pytestmark = pytest.mark.broker

DEVICES = ("env-0001", "env-0002", "env-0003", "env-0004")


@asynccontextmanager
async def influx_writer(
    server: InfluxDB,
    database: str,
    site: Site,
    spool: Path,
    *,
    spool_max_bytes: int = 50_000_000,
    batch_size: int = 1000,
) -> AsyncIterator[InfluxWriter]:
    writer = InfluxWriter(
        InfluxClient(server.url, database, timeout_s=2.0),
        DurableSpool(spool, spool_max_bytes),
        DeadLetterStore(site.sessions),
        batch_size=batch_size,
        batch_interval_s=0.1,
        direct_retry=RetryPolicy(attempts=2, initial_delay_s=0.1, max_delay_s=0.2),
        replay_retry=RetryPolicy(attempts=None, initial_delay_s=0.1, max_delay_s=0.3),
    )
    async with writer:
        yield writer


def stored_seqs(server: InfluxDB, database: str, device_id: str) -> list[int]:
    series = server.query("SELECT seq FROM env_monitor GROUP BY device_id", database)
    for one in series["results"][0].get("series", []):
        if one["tags"]["device_id"] == device_id:
            return sorted(int(row[1]) for row in one["values"])
    return []


def point_count(server: InfluxDB, database: str) -> int:
    rows = server.values('SELECT count("seq") FROM env_monitor', database)
    return int(rows[0][1]) if rows else 0


async def publish(site: Site, per_device: range) -> None:
    """Every device of DEVICES publishes ``per_device`` seqs, each with its own account."""

    def run(device_id: str) -> None:
        site.device(device_id).readings(device_id, per_device)

    await asyncio.gather(*(asyncio.to_thread(run, device_id) for device_id in DEVICES))


async def test_every_reading_is_stored_once(
    site: Site, influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    site.register(*DEVICES, district="Ninh Kiều", groups=("street-1",))
    async with (
        influx_writer(influxdb, influx_db, site, tmp_path / "spool") as writer,
        running_ingest(site, writer.submit) as service,
    ):
        await publish(site, range(500))
        total = 500 * len(DEVICES)
        assert await eventually(lambda: service.stats.acked == total)
        stats = service.stats
    assert point_count(influxdb, influx_db) == total
    for device_id in DEVICES:
        assert stored_seqs(influxdb, influx_db, device_id) == list(range(500))
    assert (stats.readings, stats.points, stats.dead_letters) == (total, total, 0)
    tags = influxdb.query(
        'SHOW TAG VALUES FROM env_monitor WITH KEY IN (district, "group")', influx_db
    )
    values = {tuple(v) for v in tags["results"][0]["series"][0]["values"]}
    assert values == {("district", "Ninh Kiều"), ("group", "street-1")}


async def test_malformed_payloads_are_dead_lettered_and_good_ones_stored(
    site: Site, influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    site.register("env-0001")
    topic = device_topic("env-0001", Channel.TELEMETRY)
    bad = {
        b"{not json": "payload",
        b'{"seq": 1000, "metrics": {"pm25": "high"}}': "metric",
        b'{"seq": 1001, "metrics": {"pm25": 5000}}': "metric",
        b'{"seq": 1002, "metrics": {"rpm": 3}}': "metric",
        b'{"seq": "x", "metrics": {"pm25": 1}}': "payload",
    }
    messages: list[tuple[str, bytes]] = []
    for seq in range(300):
        messages.append((topic, reading(seq)))
        if seq % 60 == 0:
            messages += [(topic, payload) for payload in bad]
    metrics = TelemetryMetrics()
    async with (
        influx_writer(influxdb, influx_db, site, tmp_path / "spool") as writer,
        # The per-device dead-letter limit is tested on its own (test_hardening).
        running_ingest(
            site, writer.submit, metrics=metrics, dead_letter_limit=RateLimit(burst=1000)
        ) as service,
    ):
        device = site.device("env-0001")
        await asyncio.to_thread(device.publish_many, messages)
        ghost = device_topic("env-ghost", Channel.TELEMETRY)  # registered nowhere
        await asyncio.to_thread(site.publisher().publish, ghost, reading(1))
        assert await eventually(lambda: service.stats.acked == len(messages) + 1)
        # Still running: more good readings go through.
        await asyncio.to_thread(device.readings, "env-0001", range(300, 310))
        assert await eventually(lambda: service.stats.acked == len(messages) + 11)
    assert stored_seqs(influxdb, influx_db, "env-0001") == list(range(310))
    letters, total = await DeadLetterStore(site.sessions).list(limit=1000)
    assert total == 5 * len(bad) + 1 == metrics.invalid
    counts = await DeadLetterStore(site.sessions).counts()
    assert counts == {"payload": 10, "metric": 15, "unknown_device": 1}
    by_payload = {letter.payload_preview: letter for letter in letters}
    assert by_payload['{"seq": 1001, "metrics": {"pm25": 5000}}'].reason.startswith("pm25: 5000")
    assert by_payload["{not json"].topic == topic
    assert by_payload["{not json"].device_id == "env-0001"


async def test_influxdb_down_and_back_loses_nothing(
    site: Site, influxdb_factory: InfluxFactory, tmp_path: Path
) -> None:
    server = influxdb_factory()
    server.create_database("pharos")
    site.register(*DEVICES)
    async with (
        influx_writer(server, "pharos", site, tmp_path / "spool") as writer,
        running_ingest(site, writer.submit) as service,
    ):
        await publish(site, range(0, 200))
        assert await eventually(lambda: service.stats.acked == 800)
        server.stop()
        await publish(site, range(200, 400))  # spooled while InfluxDB is away
        assert await eventually(lambda: service.stats.acked == 1600)
        assert writer.stats.spooled > 0
        server.start()
        await publish(site, range(400, 500))
        assert await eventually(lambda: writer.stats.spool_depth_points == 0)
        assert await eventually(lambda: service.stats.acked == 2000)
    for device_id in DEVICES:
        assert stored_seqs(server, "pharos", device_id) == list(range(500))


async def test_a_full_spool_holds_the_readings_at_the_broker(
    site: Site, influxdb_factory: InfluxFactory, tmp_path: Path
) -> None:
    server = influxdb_factory()
    server.create_database("pharos")
    server.stop()
    site.register("env-0001")
    async with (
        influx_writer(
            server, "pharos", site, tmp_path / "spool", spool_max_bytes=20_000, batch_size=50
        ) as writer,
        running_ingest(site, writer.submit, batch_size=50) as service,
    ):
        device = site.device("env-0001")
        await asyncio.to_thread(device.readings, "env-0001", range(2000))
        # The spool takes what fits, then nothing more is acknowledged.
        assert await eventually(lambda: writer.stats.spooled > 0)
        assert await eventually(lambda: service.stats.in_flight == 8)
        held = service.stats.acked
        assert held < 2000
        server.start()
        assert await eventually(lambda: service.stats.acked == 2000, within=30)
    assert stored_seqs(server, "pharos", "env-0001") == list(range(2000))


async def test_two_workers_on_a_shared_subscription_store_each_reading_once(
    site: Site, influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    site.register(*DEVICES)
    group = "ingest-7f3c9a0e"  # in production: an unguessable setting
    async with (
        influx_writer(influxdb, influx_db, site, tmp_path / "spool-1") as writer_1,
        influx_writer(influxdb, influx_db, site, tmp_path / "spool-2") as writer_2,
        running_ingest(site, writer_1.submit, account="ingest-1", share_group=group) as one,
        running_ingest(site, writer_2.submit, account="ingest-2", share_group=group) as two,
    ):
        await publish(site, range(300))
        total = 300 * len(DEVICES)
        assert await eventually(lambda: one.stats.acked + two.stats.acked == total)
        shares = (one.stats.points, two.stats.points)
    assert sum(shares) == total, "each reading stored by exactly one worker"
    assert min(shares) > 0, f"both workers took a share: {shares}"
    assert point_count(influxdb, influx_db) == total
    for device_id in DEVICES:
        assert stored_seqs(influxdb, influx_db, device_id) == list(range(300))


async def test_status_last_will_state_and_first_reading_reach_the_twin(
    site: Site, influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> None:
    site.register("sl-0001", kind="streetlight")
    status = device_topic("sl-0001", Channel.STATUS)
    async with (
        influx_writer(influxdb, influx_db, site, tmp_path / "spool") as writer,
        running_ingest(site, writer.submit) as service,
    ):
        lamp = site.device("sl-0001", will=(status, b"offline"))
        lamp.publish(status, b"online", retain=True)
        state = b'{"power": "on", "dim_level": 70, "fw": "2.1.0"}'
        lamp.publish(device_topic("sl-0001", Channel.STATE), state, retain=True)
        lamp.publish(
            device_topic("sl-0001", Channel.TELEMETRY),
            b'{"seq": 1, "metrics": {"power_w": 71.5, "lamp_on": true}}',
        )
        assert await eventually(lambda: service.stats.acked == 3)
        twin = await read_twin(site.sessions, "sl-0001")
        assert twin.online is True
        assert twin.reported_state == {"power": "on", "dim_level": 70.0, "fw": "2.1.0"}
        assert await eventually(lambda: _first_telemetry(site) is not None, within=5), (
            "the first reading ticks commissioning"
        )
        assert await eventually(_last_value(site, "power_w", 71.5), within=5)
        lamp.cut()  # the broker publishes the Last Will
        assert await eventually(lambda: service.stats.statuses == 2)
        twin = await read_twin(site.sessions, "sl-0001")
        assert twin.online is False


def _first_telemetry(site: Site) -> object:
    with site.sessions() as session:
        return session.scalar(
            select(Commissioning.first_telemetry_at).where(Commissioning.device_id == "sl-0001")
        )


def _last_value(site: Site, metric: str, value: float):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        twin = await read_twin(site.sessions, "sl-0001")
        known = twin.last_values.get(metric)
        return known is not None and known.value == value

    return check


async def test_a_device_registered_while_ingest_runs_is_known_by_its_first_reading(
    site: Site, tmp_path: Path
) -> None:
    store = EmbeddedStore(tmp_path / "ts.db")
    async with running_ingest(site, store.write) as service:
        site.register("env-0100")  # after the directory loaded
        await asyncio.to_thread(site.device("env-0100").readings, "env-0100", range(3))
        assert await eventually(lambda: service.stats.acked == 3)
        assert service.stats.dead_letters == 0
    assert await store.seqs("env-0100") == [0, 1, 2]


async def test_the_embedded_store_takes_the_same_readings(site: Site, tmp_path: Path) -> None:
    site.register(*DEVICES)
    store = EmbeddedStore(tmp_path / "ts.db")
    metrics = TelemetryMetrics()
    async with running_ingest(site, counted(store.write, metrics), metrics=metrics) as service:
        await publish(site, range(250))
        assert await eventually(lambda: service.stats.acked == 1000)
    assert metrics.written == metrics.received == 1000
    assert await store.count("env_monitor") == 1000
    for device_id in DEVICES:
        assert await store.seqs(device_id) == list(range(250))


async def test_stopping_with_messages_queued_stores_them_all_without_error(site: Site) -> None:
    """Leaving the service while its inbox still holds messages (a slow store, one unit
    in flight) stores every one of them: the batcher keeps creating store tasks during
    the graceful stop, which once failed ("coroutine '_store' was never awaited", and
    the CancelledError it caused out of the stop)."""
    site.register("env-0001")
    stored: list[int] = []
    release = asyncio.Event()

    async def slow_submit(points: object) -> None:
        await release.wait()
        stored.append(len(points))  # type: ignore[arg-type]

    async with running_ingest(site, slow_submit, batch_size=5, max_in_flight=1) as service:
        site.device("env-0001").readings("env-0001", range(40))
        assert await eventually(lambda: service.stats.messages == 40)
        assert service.stats.queued > 0  # still in the inbox when the stop begins
        # The store is released only once the stop has begun (from a task: exiting waits).
        asyncio.get_running_loop().call_later(0.2, release.set)
    assert sum(stored) == 40
    assert service.stats.acked == 40
