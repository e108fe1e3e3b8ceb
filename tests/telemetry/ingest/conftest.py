"""Ingest test bed: a real Mosquitto with registry accounts, devices publishing, ingest running.

``Site`` registers devices in the registry (SQLite), which writes the broker's password
and ACL files; the tests then wait for the broker's reload. ``DevicePublisher`` is a
plain paho-mqtt client logged in with a device's own credentials, as a device in the
street would be. ``running_ingest`` runs an ``IngestService`` in the test's event loop.
The registry side of ingest (twin, dead letters) is tested on both databases in its own
modules; these tests run on SQLite to keep the suite quick.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy.orm import Session, sessionmaker

from devices.broker import BrokerAccessWriter
from devices.registry.models import Group
from devices.registry.schemas import DeviceCreate, GroupCreate
from devices.registry.service import registry_session
from devices.wire import Channel, device_topic
from pharos.broker_process import MosquittoProcess
from pharos_core.points import PointSink
from telemetry.deadletters import DeadLetterStore
from telemetry.ingest import DeviceDirectory, IngestOptions, IngestService, MqttOptions
from telemetry.metrics import TelemetryMetrics
from telemetry.twin import DeviceTwinStore

INGEST = "pharos-ingest"
PUBLISHER = "pharos-publisher"  # a backend account: may publish on any device's topics
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only here (see the module docstring)."""
    return f"sqlite:///{tmp_path / 'pharos.db'}"


def reading(seq: int, *, device_offset_ms: int = 0, **metrics: Any) -> bytes:
    """A plain reading; each seq its own millisecond, so each is its own point."""
    ts = T0 + timedelta(milliseconds=seq + device_offset_ms)
    return json.dumps(
        {"ts": ts.isoformat(), "seq": seq, "metrics": metrics or {"pm25": 10.0 + seq % 50}}
    ).encode()


class DevicePublisher:
    """One MQTT session (paho-mqtt, its own network thread) publishing as one account."""

    def __init__(
        self,
        broker: MosquittoProcess,
        username: str,
        secret: str,
        *,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.username = username
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=username,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        self._client.username_pw_set(username, secret)
        self._client.max_inflight_messages_set(100)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        self._connected = threading.Event()
        self._client.on_connect = lambda *_: self._connected.set()
        self._client.connect(broker.host, broker.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError(f"{username} could not connect")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the broker's PUBACK (QoS 1), so the broker has it."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def publish_many(self, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
        infos = [self._client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30)

    def readings(self, device_id: str, seqs: range, qos: int = 1) -> None:
        topic = device_topic(device_id, Channel.TELEMETRY)
        self.publish_many([(topic, reading(seq)) for seq in seqs], qos)

    def cut(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the Will."""
        sock = self._client.socket()
        if sock is not None:
            sock.shutdown(2)
        self._client.loop_stop()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class Site:
    """The registry, the broker's accounts from it, and the secrets the tests log in with."""

    broker: MosquittoProcess
    sessions: sessionmaker[Session]
    secrets: dict[str, str] = field(default_factory=dict)
    publishers: list[DevicePublisher] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._writer = BrokerAccessWriter(
            self.broker.password_file, self.broker.acl_file, self.broker.pid_file
        )

    def _registry(self) -> Any:
        return registry_session(self.sessions, "test", broker_sync=self._writer.sync)

    def register(
        self,
        *device_ids: str,
        kind: str = "env_monitor",
        district: str | None = None,
        groups: tuple[str, ...] = (),
    ) -> None:
        before = self.broker.reloads_seen()
        with self._registry() as registry:
            for group in groups:
                if registry.session.get(Group, group) is None:
                    registry.create_group(GroupCreate(id=group, name=group))
            for device_id in device_ids:
                extra = {"rated_power_w": 100.0} if kind in ("streetlight", "smart_pole") else {}
                data = {"id": device_id, "kind": kind, "name": device_id, **extra}
                data |= {"district": district, "groups": list(groups)}
                _, credentials = registry.create_device(DeviceCreate.model_validate(data))
                assert credentials is not None
                self.secrets[device_id] = credentials.secret
        self.broker.wait_for_reload(before)

    def service_account(self, name: str) -> str:
        before = self.broker.reloads_seen()
        with self._registry() as registry:
            self.secrets[name] = registry.ensure_service_account(name).secret
        self.broker.wait_for_reload(before)
        return self.secrets[name]

    def mqtt_options(self, name: str = INGEST) -> MqttOptions:
        secret = self.secrets.get(name) or self.service_account(name)
        return MqttOptions(self.broker.host, self.broker.port, name, secret, keepalive_s=10)

    def device(self, username: str, *, will: tuple[str, bytes] | None = None) -> DevicePublisher:
        publisher = DevicePublisher(self.broker, username, self.secrets[username], will=will)
        self.publishers.append(publisher)
        return publisher

    def publisher(self) -> DevicePublisher:
        """A backend account's session: publishes as any device (and as none)."""
        if PUBLISHER not in self.secrets:
            self.service_account(PUBLISHER)
        return self.device(PUBLISHER)


@pytest.fixture
def site(mosquitto: MosquittoProcess, sessions: sessionmaker[Session]) -> Iterator[Site]:
    bed = Site(mosquitto, sessions)
    try:
        yield bed
    finally:
        for publisher in bed.publishers:
            publisher.close()


@asynccontextmanager
async def running_ingest(
    site: Site,
    submit: PointSink,
    *,
    account: str = INGEST,
    metrics: TelemetryMetrics | None = None,
    **options: Any,
) -> AsyncIterator[IngestService]:
    """An ``IngestService`` with its twin, directory and dead-letter store, connected."""
    settings = IngestOptions(stats_interval_s=None, **options)
    letters = DeadLetterStore(site.sessions)
    async with (
        DeviceTwinStore(site.sessions, flush_interval_s=0.2) as twin,
        DeviceDirectory(site.sessions) as directory,
        IngestService(
            site.mqtt_options(account),
            submit=submit,
            dead_letters=letters,
            twin=twin,
            directory=directory,
            metrics=metrics,
            options=settings,
        ) as service,
    ):
        async with asyncio.timeout(10):
            await service.wait_connected()
        yield service


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 15.0) -> bool:
    """Poll ``check`` (50 ms) until it holds or ``within`` seconds pass; its last value."""

    async def value() -> bool:
        result = check()
        return bool(await result) if isinstance(result, Awaitable) else bool(result)

    deadline = time.monotonic() + within
    while not await value():
        if time.monotonic() > deadline:
            return await value()
        await asyncio.sleep(0.05)  # polling a condition with a deadline
    return True
