"""The command service's MQTT session: publish on ``cmd``, hear ``cmd/ack`` and ``state``.

One paho-mqtt client (MQTT 5, persistent session, its own broker account such as
``pharos-commands``) runs its network loop on paho's thread; every message received
is handed to the event loop (``call_soon_threadsafe``) as a typed ``Inbound`` value,
parsed there by the caller. Publishes are QoS 1; ``unacked`` counts those the broker
has not acknowledged, so the sender can hold back instead of piling up in paho.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.wire import Channel
from devices.wire.commands import Command
from devices.wire.topics import device_topic, parse_device_topic, subscription

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LinkOptions:
    host: str
    port: int
    username: str
    password: str | None
    keepalive_s: int = 30
    session_expiry_s: int = 86_400
    connect_timeout_s: float = 10.0
    max_inflight: int = 1000


@dataclass(frozen=True, slots=True)
class Inbound:
    device_id: str
    channel: Channel  # CMD_ACK or STATE
    payload: bytes


class LinkError(Exception):
    """The broker refused the session or its subscriptions."""


class MqttCommandLink:
    """An async context manager: connected and subscribed inside, disconnected after."""

    def __init__(self, options: LinkOptions, on_inbound: Callable[[Inbound], None]) -> None:
        self.options = options
        self._on_inbound = on_inbound
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self._unacked = 0
        self._room = asyncio.Event()
        self.published = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=options.username,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.username_pw_set(options.username, options.password)
        self._client.max_inflight_messages_set(options.max_inflight)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_disconnect = self._on_disconnect

    @property
    def unacked(self) -> int:
        with self._lock:
            return self._unacked

    async def __aenter__(self) -> MqttCommandLink:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.options.session_expiry_s
        await asyncio.to_thread(
            self._client.connect,
            self.options.host,
            self.options.port,
            self.options.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()
        try:
            async with asyncio.timeout(self.options.connect_timeout_s):
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

    async def wait_below(self, limit: int) -> None:
        """Until fewer than ``limit`` publishes wait for the broker's acknowledgement."""
        while self.unacked >= limit:
            self._room.clear()
            await self._room.wait()

    def publish(self, device_id: str, command: Command) -> bool:
        """Queue ``command`` for ``device_id`` (QoS 1); False if the client refused it."""
        info = self._client.publish(
            device_topic(device_id, Channel.CMD), command.to_payload(), qos=1
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        with self._lock:
            self._unacked += 1
        self.published += 1
        return True

    # --- paho callbacks (paho's thread) ---------------------------------------------------

    def _resolve(self, error: BaseException | None) -> None:
        ready = self._ready
        if ready is None or ready.done():
            return
        if error is None:
            ready.set_result(None)
        else:
            ready.set_exception(error)

    def _from_thread(self, callback: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            self._from_thread(self._resolve, LinkError(f"broker refused the session: {reason}"))
            return
        client.subscribe([(subscription(Channel.CMD_ACK), 1), (subscription(Channel.STATE), 1)])

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Properties | None
    ) -> None:
        refused = [str(code) for code in codes if code.is_failure]
        error = LinkError(f"subscriptions refused: {refused}") if refused else None
        self._from_thread(self._resolve, error)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        topic = parse_device_topic(message.topic)
        if topic is None or topic.channel not in (Channel.CMD_ACK, Channel.STATE):
            return
        inbound = Inbound(topic.device_id, topic.channel, bytes(message.payload))
        self._from_thread(self._on_inbound, inbound)

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, _mid: int, _r: ReasonCode, _p: Properties | None
    ) -> None:
        with self._lock:
            self._unacked = max(0, self._unacked - 1)
        self._from_thread(self._room.set)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            log.warning("command link lost: %s (paho reconnects)", reason)
        self._from_thread(self._resolve, LinkError(f"disconnected: {reason}"))
