"""``pharos ingest`` as the process it runs as: killed with SIGKILL mid-stream, restarted.

The readings a killed worker had received but not yet stored were never acknowledged,
so the broker sends them again to the restarted worker; the ones it had stored may
come again too and land on the same points. Checked by distinct ``seq`` per device.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from pharos.broker_process import free_port
from tests.fixtures.broker import wait_until
from tests.fixtures.influx import InfluxDB
from tests.telemetry.ingest.conftest import INGEST, Site

pytestmark = pytest.mark.broker

DEVICES = ("env-0001", "env-0002", "env-0003")
PER_DEVICE = 1500
PHAROS = Path(sys.executable).with_name("pharos")


class IngestProcess:
    """``pharos ingest`` in a subprocess, its log in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *args: str) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(PHAROS), "ingest", "--stats-interval", "0", *args],
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        assert wait_until(lambda: self.text().count("mqtt: connected") == self.starts, 20), (
            self.text()
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout=30)

    def kill_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def ingest(
    site: Site, engine: Engine, influxdb: InfluxDB, influx_db: str, tmp_path: Path
) -> Iterator[IngestProcess]:
    env = {
        **os.environ,
        "PHAROS_DATABASE__URL": engine.url.render_as_string(hide_password=False),
        "PHAROS_DATA_DIR": str(tmp_path / "var"),
        "PHAROS_BROKER__HOST": site.broker.host,
        "PHAROS_BROKER__PORT": str(site.broker.port),
        "PHAROS_BROKER__USERNAME": INGEST,
        "PHAROS_BROKER__PASSWORD": site.service_account(INGEST),
        "PHAROS_INFLUX__URL": influxdb.url,
        "PHAROS_INFLUX__DATABASE": influx_db,
        "PHAROS_TELEMETRY__BATCH_SIZE": "500",
        "PHAROS_TELEMETRY__BATCH_INTERVAL_S": "0.1",
    }
    process = IngestProcess(env, tmp_path / "ingest.log")
    try:
        yield process
    finally:
        process.kill_if_running()


def distinct_seqs(server: InfluxDB, database: str) -> dict[str, int]:
    rows = server.query(
        'SELECT count(distinct("seq")) FROM env_monitor GROUP BY device_id', database
    )["results"][0].get("series", [])
    return {row["tags"]["device_id"]: int(row["values"][0][1]) for row in rows}


def test_sigkill_mid_stream_and_restart_lose_nothing(
    site: Site, ingest: IngestProcess, influxdb: InfluxDB, influx_db: str
) -> None:
    site.register(*DEVICES)
    ingest.start()
    publishers = [
        threading.Thread(target=site.device(d).readings, args=(d, range(PER_DEVICE)))
        for d in DEVICES
    ]
    for thread in publishers:
        thread.start()
    assert wait_until(lambda: sum(distinct_seqs(influxdb, influx_db).values()) >= 1000, 20)
    assert ingest.signal(signal.SIGKILL) == -signal.SIGKILL
    for thread in publishers:  # the rest of the stream waits at the broker meanwhile
        thread.join(60)
    late = range(PER_DEVICE, PER_DEVICE + 200)
    for device_id in DEVICES:
        site.device(device_id).readings(device_id, late)
    total = (PER_DEVICE + len(late)) * len(DEVICES)
    assert sum(distinct_seqs(influxdb, influx_db).values()) < total, "killed mid-stream"
    ingest.start()
    assert wait_until(lambda: sum(distinct_seqs(influxdb, influx_db).values()) == total, 30), (
        distinct_seqs(influxdb, influx_db)
    )
    assert distinct_seqs(influxdb, influx_db) == dict.fromkeys(DEVICES, PER_DEVICE + len(late))
    # A clean stop: exit status 0, after storing and acknowledging what it had.
    assert ingest.signal(signal.SIGTERM) == 0
    assert "ingest: stopped" in ingest.text()


def test_a_missing_secret_is_a_clear_error(ingest: IngestProcess) -> None:
    env = {k: v for k, v in ingest._env.items() if k != "PHAROS_BROKER__PASSWORD"}
    done = subprocess.run(
        [str(PHAROS), "ingest"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "broker.password is not set" in done.stderr
    assert "pharos broker service-account" in done.stderr


def _scrape(port: int) -> str:
    """The worker's /metrics text ("" while its server is not listening yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def test_a_worker_sets_up_retention_and_serves_its_metrics(
    site: Site, ingest: IngestProcess, influxdb: InfluxDB, influx_db: str
) -> None:
    site.register("env-0001")
    port = free_port()
    ingest.start("--metrics-port", str(port))
    policies = {row[0] for row in influxdb.values("SHOW RETENTION POLICIES", influx_db)}
    assert {"raw", "hourly"} <= policies
    site.device("env-0001").readings("env-0001", range(40))
    assert wait_until(lambda: "pharos_telemetry_written_total 40.0" in _scrape(port), 20), _scrape(
        port
    )
    text = _scrape(port)
    assert "pharos_telemetry_received_total 40.0" in text
    assert "pharos_modbus_meters_unhealthy 0.0" in text
    assert ingest.signal(signal.SIGTERM) == 0
