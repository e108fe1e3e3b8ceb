"""``pharos ingest`` SIGKILLed at random moments, and 10,000 malformed payloads among good.

The kills: the real CLI process, a real broker and InfluxDB; points counted per device.
The malformed ones: a hypothesis property over the parser (every payload of every
family ends as exactly one dead letter of its family's class, never an exception),
then 10,000 of them from the same families through the broker and the real ingest
beside 10,000 good readings.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.wire import Channel, device_topic
from telemetry.deadletters import DeadLetterStore
from telemetry.ingest import counted
from telemetry.ingest.directory import DeviceInfo
from telemetry.ingest.parsing import parse_message
from telemetry.metrics import TelemetryMetrics
from telemetry.store import EmbeddedStore
from tests.fixtures.broker import wait_until
from tests.fixtures.influx import InfluxDB
from tests.reliability.conftest import ReliabilityReport
from tests.telemetry.ingest.conftest import Site, eventually, reading, running_ingest
from tests.telemetry.ingest.test_cli import IngestProcess
from tests.telemetry.ingest.test_cli import ingest as ingest

pytestmark = [pytest.mark.broker, pytest.mark.reliability]


def points_and_seqs(server: InfluxDB, database: str) -> tuple[int, int]:
    rows = server.query(
        'SELECT count("pm25"), count(distinct("seq")) FROM env_monitor GROUP BY device_id',
        database,
    )["results"][0].get("series", [])
    return sum(int(r["values"][0][1]) for r in rows), sum(int(r["values"][0][2]) for r in rows)


def test_pharos_ingest_sigkilled_10_times_loses_no_reading(
    site: Site,
    ingest: IngestProcess,
    influxdb: InfluxDB,
    influx_db: str,
    reliability_report: ReliabilityReport,
) -> None:
    devices = ("env-0001", "env-0002", "env-0003")
    per_device = 3000
    site.register(*devices)
    ingest.start()
    publishers = [
        threading.Thread(target=site.device(d).readings, args=(d, range(per_device)))
        for d in devices
    ]
    for thread in publishers:
        thread.start()
    rng = random.Random(12)
    total = per_device * len(devices)
    for kill in range(10):
        # A random moment: after a random share more of the stream is stored.
        target = min(total - 1, int(total * (kill + rng.random()) / 11))
        wait_until(lambda t=target: points_and_seqs(influxdb, influx_db)[1] >= t, 30)
        assert ingest.signal(signal.SIGKILL) == -signal.SIGKILL
        ingest.start()
    for thread in publishers:
        thread.join(120)
    assert wait_until(lambda: points_and_seqs(influxdb, influx_db)[1] == total, 60)
    points, seqs = points_and_seqs(influxdb, influx_db)
    reliability_report.add(
        "pharos ingest SIGKILL x10",
        readings=total,
        lost=total - seqs,
        duplicated_points=points - seqs,
    )
    assert seqs == total
    assert points == total, "readings with ts land on the same point when redelivered"
    assert ingest.signal(signal.SIGTERM) == 0


# -- malformed input --------------------------------------------------------------------

NOW = datetime(2026, 11, 22, 11, 5, tzinfo=UTC)
ENV = DeviceInfo("env-0007", "env_monitor", None, None)
GOOD = b'{"seq": 5, "metrics": {"pm25": 12.5, "pm10": 20}}'

# family → (strategy, reason class): the class is known from how the payload is made.
# No catalogue metric starts with "x_" (hypothesis found a real one otherwise).
_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=30).map(lambda n: "x_" + n)
FAMILIES: dict[str, tuple[st.SearchStrategy[bytes], str]] = {
    "truncated": (st.integers(1, len(GOOD) - 1).map(lambda n: GOOD[:n]), "payload"),
    "not utf-8": (st.binary(max_size=200).map(lambda b: b"\xff" + b), "payload"),
    "deep": (st.integers(17, 40_000).map(lambda n: b"[" * n + b"]" * n), "payload"),
    "long number": (
        st.integers(65, 10_000).map(lambda n: b'{"metrics": {"pm25": ' + b"7" * n + b"}}"),
        "payload",
    ),
    "not an object": (
        st.one_of(st.integers(), st.text(max_size=50), st.none(), st.booleans()).map(
            lambda v: json.dumps(v).encode()
        ),
        "payload",
    ),
    "constant": (
        st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
            lambda c: b'{"metrics": {"pm25": ' + c.encode() + b"}}"
        ),
        "payload",
    ),
    "duplicate key": (
        st.floats(0, 100).map(lambda v: b'{"metrics": {"pm25": 1, "pm25": %r}}' % v),
        "payload",
    ),
    "unknown metrics": (
        st.lists(_names, min_size=1, max_size=30, unique=True).map(
            lambda names: json.dumps({"metrics": dict.fromkeys(names, 1)}).encode()
        ),
        "metric",
    ),
    "out of range": (
        st.floats(2001, 1e300).map(lambda v: json.dumps({"metrics": {"pm25": v}}).encode()),
        "metric",
    ),
    "too many metrics": (
        st.integers(101, 5000).map(
            lambda n: json.dumps({"metrics": {f"m{i}": i for i in range(n)}}).encode()
        ),
        "payload",
    ),
}


def _class_of(payload: bytes) -> str:
    parsed = parse_message("pharos/v1/dev/env-0007/telemetry", payload, NOW, {"env-0007": ENV}.get)
    assert parsed.points == []
    [letter] = parsed.dead_letters
    return letter.details["class"]


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(FAMILIES)).flatmap(lambda f: st.tuples(st.just(f), FAMILIES[f][0])))
def test_every_malformed_payload_is_one_dead_letter_of_its_class(case: tuple[str, bytes]) -> None:
    family, payload = case
    assert _class_of(payload) == FAMILIES[family][1], family


def _generated(rng: random.Random, n: int) -> list[tuple[bytes, str]]:
    """n malformed payloads drawn from the families (random, seeded: quick to make)."""
    makers = {
        "truncated": lambda: GOOD[: rng.randrange(1, len(GOOD))],
        "not utf-8": lambda: b"\xff" + rng.randbytes(rng.randrange(0, 100)),
        "deep": lambda: (lambda d: b"[" * d + b"]" * d)(rng.randrange(17, 30_000)),
        "long number": lambda: b'{"metrics": {"pm25": ' + b"7" * rng.randrange(65, 6000) + b"}}",
        "not an object": lambda: json.dumps(rng.choice([1, "x", None, True, 2.5])).encode(),
        "constant": lambda: b'{"metrics": {"pm25": ' + rng.choice([b"NaN", b"Infinity"]) + b"}}",
        "duplicate key": lambda: b'{"metrics": {"pm25": 1, "pm25": 2}}',
        "unknown metrics": lambda: json.dumps({"metrics": {f"x{rng.random()}": 1}}).encode(),
        "out of range": lambda: json.dumps({"metrics": {"pm25": 5000 + rng.random()}}).encode(),
        "too many metrics": lambda: json.dumps(
            {"metrics": {f"m{i}": i for i in range(rng.randrange(101, 20_000))}}
        ).encode(),
    }
    families = sorted(makers)
    out = []
    for i in range(n):
        family = families[i % len(families)]
        out.append((makers[family](), FAMILIES[family][1]))
    return out


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pharos.db'}"


async def test_10000_malformed_among_10000_good(
    site: Site, tmp_path: Path, reliability_report: ReliabilityReport
) -> None:
    bad_devices = [f"env-bad{n}" for n in range(5)]
    good_devices = [f"env-{n:04d}" for n in range(1, 11)]
    site.register(*bad_devices, *good_devices)
    rng = random.Random(12)
    bad = _generated(rng, 10_000)
    expected = Counter(cls for _, cls in bad)
    store = EmbeddedStore(tmp_path / "ts.db")
    metrics = TelemetryMetrics()

    def send_bad(index: int, device_id: str) -> None:
        topic = device_topic(device_id, Channel.TELEMETRY)
        share = bad[index :: len(bad_devices)]
        site.device(device_id).publish_many([(topic, payload) for payload, _ in share])

    def send_good(device_id: str) -> None:
        site.device(device_id).readings(device_id, range(1000))

    async with running_ingest(site, counted(store.write, metrics), metrics=metrics) as service:
        await asyncio.gather(
            *(asyncio.to_thread(send_bad, i, d) for i, d in enumerate(bad_devices)),
            *(asyncio.to_thread(send_good, d) for d in good_devices),
        )
        assert await eventually(lambda: service.stats.acked == 20_000, 120)
        assert service.stats.internal_errors == 0
    good_stored = await store.count("env_monitor")
    letters = DeadLetterStore(site.sessions)
    items, rows = await letters.list(limit=10_000)
    summarised = sum(
        int(i.details["suppressed"])
        for i in items
        if i.details and i.reason_class == "rate_limited"
    )
    one_by_one = sum(1 for i in items if i.reason_class != "rate_limited")
    reliability_report.add(
        "10,000 malformed + 10,000 good",
        crashes=0,
        good_lost=10_000 - good_stored,
        dead_letter_rows=rows,
        dead_lettered=one_by_one + summarised,
        by_reason=dict(metrics.dead_letters_by_reason),
    )
    assert good_stored == 10_000
    assert metrics.dead_letters_by_reason == dict(expected), "each with its family's class"
    assert one_by_one + summarised == 10_000, "every bad one kept or counted"
    assert rows < 500, "dead-letter storage bounded by the per-device limit"
    _ = reading  # (the good readings' format)
