"""The reliability suite's bed and report: real broker, InfluxDB, ingest; figures to JSON.

Each test records its figures with ``reliability_report.add(case, **figures)``; at the
end of the session they are printed (``reliability report`` in the terminal summary)
and written to ``var/reliability-report.json``. ``StreamingDevice`` is a device that
keeps its session across broker restarts (persistent session, reconnects, re-sends
what the broker did not acknowledge), as the firmware does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pharos.broker_process import MosquittoProcess
from tests.telemetry.ingest.conftest import database_url, site  # noqa: F401  (fixtures)

REPORT = Path(__file__).resolve().parents[2] / "var" / "reliability-report.json"


class ReliabilityReport:
    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}

    def add(self, case: str, **figures: Any) -> None:
        self.cases[case] = figures


_REPORT = ReliabilityReport()


@pytest.fixture(scope="session")
def reliability_report() -> ReliabilityReport:
    return _REPORT


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _REPORT.cases:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(_REPORT.cases, indent=2, sort_keys=True) + "\n")
    terminalreporter.section("reliability report")
    for case, figures in _REPORT.cases.items():
        line = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{case}: {line}")
    terminalreporter.write_line(f"written to {REPORT}")


class StreamingDevice:
    """A paho-mqtt device on a persistent session; publishes ``payload(seq)`` at QoS 1."""

    def __init__(self, broker: MosquittoProcess, username: str, secret: str) -> None:
        self.username = username
        self.acked: set[int] = set()
        self._by_mid: dict[int, int] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=username, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(username, secret)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.on_publish = self._on_publish
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, 10, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError(f"{username} could not connect")

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, *_: object) -> None:
        with self._lock:  # never held across a paho call: paho calls this under its lock
            seq = self._by_mid.pop(mid, None)
            if seq is None:
                self._early.add(mid)
            else:
                self.acked.add(seq)

    def publish(self, topic: str, payloads: list[tuple[int, bytes]], pace_s: float = 0) -> None:
        for seq, payload in payloads:
            while len(self._by_mid) > 500:
                time.sleep(0.001)
            info = self.client.publish(topic, payload, qos=1)
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.acked.add(seq)
                else:
                    self._by_mid[info.mid] = seq
            if pace_s:
                time.sleep(pace_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def streaming_devices() -> Iterator[list[StreamingDevice]]:
    devices: list[StreamingDevice] = []
    yield devices
    for device in devices:
        device.close()
