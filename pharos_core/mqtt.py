"""The backend's one MQTT publishing session: QoS 1 publishes tracked to the broker's PUBACK.

Control's command service and rules (alert events) publish through ``MqttSession``:
one paho-mqtt client (MQTT 5, its own broker account, client id = username so the
broker ties the session to the account) whose network loop runs on paho's thread.
Everything paho reports is handed to the event loop (``call_soon_threadsafe``), so the
bookkeeping runs on the loop alone and needs no lock:

- ``publish_nowait`` queues a message and counts it in ``unacked`` until its PUBACK;
  ``wait_below`` holds a sender back so paho's queue stays bounded (control's pacing);
- ``await publish`` returns once the broker acknowledged the message (rules' alerts);
- ``subscriptions`` are (re)made on every connect; each message goes to ``on_message``
  on the loop, as ``(topic, payload)``;
- ``session_expiry_s`` makes the session persistent (a command sent while the service
  was briefly away is still delivered to it; its subscriptions survive).

Entering connects (and subscribes) within ``connect_timeout_s`` or raises ``MqttError``;
after that paho reconnects by itself. Ingest does not use it: it has its own asyncio
MQTT subscriber (``telemetry.ingest.mqtt``), which raises the same ``MqttError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]


class MqttError(Exception):
    """The broker refused or broke a session, or a publish failed."""


@dataclass(frozen=True, slots=True)
class MqttAccount:
    """Where the broker is and the backend account a session logs in with."""

    host: str
    port: int
    username: str
    password: str | None


@dataclass(frozen=True, slots=True)
class SessionOptions:
    keepalive_s: int = 30
    session_expiry_s: int | None = None  # None: a clean session; else kept this long
    connect_timeout_s: float = 10.0
    ack_timeout_s: float = 30.0  # the longest ``publish`` waits for the PUBACK
    max_inflight: int = 1000  # QoS 1 messages on the wire without a PUBACK
    max_queued: int = 0  # messages paho holds beyond those (0: no limit; see wait_below)


class MqttSession:
    """An async context manager: connected (and subscribed) inside, disconnected after."""

    def __init__(
        self,
        account: MqttAccount,
        options: SessionOptions | None = None,
        *,
        name: str = "mqtt",
        subscriptions: Sequence[str] = (),
        on_message: MessageHandler | None = None,
    ) -> None:
        self.account = account
        self.options = options or SessionOptions()
        self.name = name  # in log lines and errors ("command link", "rules")
        self._subscriptions = list(subscriptions)
        self._on_message_handler = on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._unacked: set[int] = set()  # mids of QoS>0 publishes without their PUBACK
        self._waiting: dict[int, asyncio.Future[None]] = {}  # of those, awaited ones
        self._room = asyncio.Event()
        self.published = 0  # messages the broker acknowledged (QoS 0: sent)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=account.username,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.username_pw_set(account.username, account.password)
        self._client.max_inflight_messages_set(self.options.max_inflight)
        self._client.max_queued_messages_set(self.options.max_queued)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_disconnect = self._on_disconnect

    @property
    def unacked(self) -> int:
        """Publishes (QoS 1) the broker has not acknowledged yet."""
        return len(self._unacked)

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        options = self.options
        connect: dict[str, Any] = {}
        if options.session_expiry_s is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = options.session_expiry_s
            connect = {"clean_start": False, "properties": properties}
        try:
            await asyncio.to_thread(
                self._client.connect,
                self.account.host,
                self.account.port,
                options.keepalive_s,
                **connect,
            )
        except OSError as exc:
            raise MqttError(
                f"{self.name}: cannot reach the broker at "
                f"{self.account.host}:{self.account.port}: {exc}"
            ) from exc
        self._client.loop_start()
        try:
            async with asyncio.timeout(options.connect_timeout_s):
                await self._ready
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(MqttError(f"{self.name}: session closed before the PUBACK"))
        self._waiting.clear()

    # --- publishing ------------------------------------------------------------------------

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Queue a message; False if the client refused it (True while disconnected:
        paho sends it after reconnecting)."""
        return self._publish(topic, payload, qos) is not None

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and return once the broker acknowledged it (``MqttError`` if refused,
        ``TimeoutError`` after ``ack_timeout_s``)."""
        assert self._loop is not None, f"use `async with` on the {self.name} session"
        mid = self._publish(topic, payload, qos)
        if mid is None:
            raise MqttError(f"{self.name}: the client refused the publish to {topic}")
        if qos == 0:
            return
        future = self._loop.create_future()
        # The PUBACK cannot have been handled yet: paho hands it to the loop, which runs
        # it only after this (synchronous) registration.
        self._waiting[mid] = future
        try:
            async with asyncio.timeout(self.options.ack_timeout_s):
                await future
        finally:
            self._waiting.pop(mid, None)

    async def wait_below(self, limit: int) -> None:
        """Until fewer than ``limit`` publishes wait for the broker's acknowledgement."""
        while self.unacked >= limit:
            self._room.clear()
            await self._room.wait()

    def _publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            reason = mqtt.error_string(info.rc)
            log.warning("%s: publish to %s refused: %s", self.name, topic, reason)
            return None
        if qos > 0:
            self._unacked.add(info.mid)
        return info.mid

    def _acked(self, mid: int) -> None:
        """On the loop: the broker acknowledged ``mid`` (or paho sent a QoS 0 one)."""
        self.published += 1
        self._unacked.discard(mid)
        self._room.set()
        future = self._waiting.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    # --- paho callbacks (paho's thread) ----------------------------------------------------

    def _from_thread(self, callback: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def _resolve(self, error: BaseException | None) -> None:
        ready = self._ready
        if ready is None or ready.done():
            return
        if error is None:
            ready.set_result(None)
        else:
            ready.set_exception(error)

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            error = MqttError(f"{self.name}: the broker refused the session: {reason}")
            self._from_thread(self._resolve, error)
            return
        if self._subscriptions:
            client.subscribe([(topic, 1) for topic in self._subscriptions])
        else:
            self._from_thread(self._resolve, None)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Properties | None
    ) -> None:
        refused = [str(code) for code in codes if code.is_failure]
        error = MqttError(f"{self.name}: subscriptions refused: {refused}") if refused else None
        self._from_thread(self._resolve, error)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_message_handler is not None:
            self._from_thread(self._on_message_handler, message.topic, bytes(message.payload))

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, _r: ReasonCode, _p: Properties | None
    ) -> None:
        self._from_thread(self._acked, mid)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            log.warning("%s: connection lost: %s (paho reconnects)", self.name, reason)
        self._from_thread(self._resolve, MqttError(f"{self.name}: disconnected: {reason}"))
