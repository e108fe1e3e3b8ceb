"""Actions of an alert: commands and overrides to devices, publishing, webhooks, maintenance.

``ControlPort`` is what rules needs of ``control/`` (commands with acknowledgement,
overrides, the lamp's expected level); ``MqttControl`` is the plain implementation that
publishes ``devices.wire.Command`` on each device's ``cmd`` topic through rules' own
broker session (``MqttPublisher``), for when control is not composed in. Webhooks are
HTTP POSTs (httpx) retried with doubling waits; one that keeps failing becomes a dead
letter (source ``webhook``) with the reason. ``MaintenancePort`` puts a failed lamp
into ``maintenance`` and opens a work item for the technicians.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session, sessionmaker

from devices.registry.models import LifecycleState
from devices.registry.service import ConflictError, NotFoundError, registry_session
from devices.wire import Channel, Command, device_topic
from pharos_core.clock import Clock
from telemetry.points import DeadLetter, DeadLetterSink

log = logging.getLogger(__name__)
WEBHOOK_SOURCE = "webhook"


class ControlPort(Protocol):
    """What rules needs of ``control/`` (or of ``MqttControl`` without it)."""

    async def send_command(
        self, device_ids: Sequence[str], action: str, params: dict[str, Any], *, reason: str
    ) -> int:
        """Send ``action`` to each device; how many commands went out."""
        ...


class MqttError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class MqttAccount:
    host: str
    port: int
    username: str
    password: str


class MqttPublisher:
    """A QoS 1 publishing session of rules' own (paho-mqtt's network thread).

    ``publish`` returns once the broker's PUBACK arrived (a future resolved from
    paho's thread). An async context manager: connects on enter, disconnects on exit.
    """

    def __init__(self, account: MqttAccount, *, client_id: str | None = None) -> None:
        self._account = account
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or account.username,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.username_pw_set(account.username, account.password)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(10_000)
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[None] | None = None
        self.published = 0

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        await asyncio.to_thread(self._client.connect, self._account.host, self._account.port, 30)
        self._client.loop_start()
        try:
            async with asyncio.timeout(10):
                await self._connected
        except BaseException:
            await asyncio.to_thread(self._client.loop_stop)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def _on_connect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        loop, future = self._loop, self._connected
        if loop is None or future is None:
            return

        def settle() -> None:
            if future.done():
                return
            if reason.is_failure:
                future.set_exception(MqttError(f"broker refused rules' session: {reason}"))
            else:
                future.set_result(None)

        loop.call_soon_threadsafe(settle)

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, _reason: ReasonCode, _p: Properties | None
    ) -> None:
        with self._lock:
            future = self._waiting.pop(mid, None)
            if future is None:
                self._early.add(mid)
                return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, future)

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        assert self._loop is not None, "use `async with MqttPublisher(...)`"
        future: asyncio.Future[None] = self._loop.create_future()
        # Never call paho while holding our lock: its network thread holds its own locks
        # when it calls ``_on_publish``, which takes ours (lock order: paho, then ours).
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            raise MqttError(f"publish to {topic}: {mqtt.error_string(info.rc)}")
        with self._lock:
            if qos == 0 or info.mid in self._early:
                self._early.discard(info.mid)
                future.set_result(None)
            else:
                self._waiting[info.mid] = future
        async with asyncio.timeout(30):
            await future
        self.published += 1


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Publisher(Protocol):
    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None: ...


class MqttControl:
    """``ControlPort`` by plain MQTT commands (no acknowledgement tracking)."""

    def __init__(self, publisher: Publisher, clock: Clock, expires_s: float = 600.0) -> None:
        self._publisher = publisher
        self._clock = clock
        self._expires = timedelta(seconds=expires_s)
        self.sent = 0

    async def send_command(
        self, device_ids: Sequence[str], action: str, params: dict[str, Any], *, reason: str
    ) -> int:
        expires_at = self._clock.now() + self._expires
        sends = []
        for device_id in device_ids:
            command = Command(id=uuid.uuid4(), action=action, params=params, expires_at=expires_at)
            topic = device_topic(device_id, Channel.CMD)
            sends.append(self._publisher.publish(topic, command.to_payload()))
        await asyncio.gather(*sends)
        self.sent += len(sends)
        log.info("rules: %s %s to %d device(s) (%s)", action, params, len(sends), reason)
        return len(sends)


class WebhookSender:
    """POSTs JSON with retries; a hook that keeps failing is dead-lettered with the reason."""

    def __init__(
        self,
        dead_letters: DeadLetterSink,
        clock: Clock,
        *,
        attempts: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
    ) -> None:
        self._dead_letters = dead_letters
        self._clock = clock
        self._attempts = attempts
        self._backoff = backoff_s
        self._timeout = timeout_s
        self.delivered = 0
        self.dead_lettered = 0

    async def post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> bool:
        payload = json.dumps(body, ensure_ascii=False).encode()
        reason = "not tried"
        delay = self._backoff
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            for attempt in range(1, self._attempts + 1):
                try:
                    response = await client.post(
                        url,
                        content=payload,
                        headers={"content-type": "application/json", **headers},
                    )
                    if response.is_success:
                        self.delivered += 1
                        return True
                    reason = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                if attempt < self._attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
        letter = DeadLetter(
            received_at=self._clock.now(),
            source=WEBHOOK_SOURCE,
            reason=f"webhook: {url} failed {self._attempts} times; last: {reason}",
            device_id=_device_of(body),
            topic=url,
            payload=payload,
            details={"class": "webhook", "url": url},
        )
        await self._dead_letters.put([letter])
        self.dead_lettered += 1
        return False


def _device_of(body: dict[str, Any]) -> str | None:
    alert = body.get("alert")
    if isinstance(alert, dict):
        device = alert.get("device_id")
        return device if isinstance(device, str) else None
    return None


class MaintenancePort(Protocol):
    async def to_maintenance(self, device_id: str, note: str) -> bool: ...


class RegistryMaintenance:
    """Moves an ``in_service`` device to ``maintenance`` in the registry (audited)."""

    def __init__(self, sessions: sessionmaker[Session], actor: str = "rules") -> None:
        self._sessions = sessions
        self._actor = actor

    async def to_maintenance(self, device_id: str, note: str) -> bool:
        return await asyncio.to_thread(self._transition, device_id, note)

    def _transition(self, device_id: str, note: str) -> bool:
        try:
            with registry_session(self._sessions, self._actor) as registry:
                device = registry.get_device(device_id)
                if device.state != LifecycleState.IN_SERVICE.value:
                    return False
                registry.transition(device_id, LifecycleState.MAINTENANCE, note)
                return True
        except (NotFoundError, ConflictError) as exc:
            log.warning("rules: %s not put into maintenance: %s", device_id, exc)
            return False
