"""The MQTT session of one simulated device: paho-mqtt driven by the asyncio loop itself.

Transport: paho clients on paho's "external event loop" (``add_reader`` calls
``loop_read``, writes go out on the loop's next turn), never a thread per device.
Measured against Mosquitto 2.0.11 here, 1,000 and 5,000 connections: 9.6–10.3 KB of RSS
per connected bare paho client against 13.2–14.3 KB for aiomqtt, which also keeps a task
per client waking every second (4× the idle CPU) and connected 5,000 clients in 8.8 s
against 4.8 s. A whole simulated device (spec, physics model, this link, its client)
stays near 15 KB (``bench/bench_sim.py``).

``DeviceLink`` is the wire contract's session: username = client id = device id, a
persistent session (a command sent while the device is briefly away still arrives),
Last Will ``offline`` on its retained ``status``, QoS 1 publishes counted until their
PUBACK (in the hub too, for its back-pressure), ``cmd`` subscribed after every connect.
It opens (``open``), leaves cleanly (``leave``: ``offline`` acknowledged, then
DISCONNECT), is cut (``cut``: no DISCONNECT, so the broker sends the Last Will) or hung
up at once (``hang_up``); a link that breaks by itself calls the device's ``on_lost``.
When to connect again is the device's business (``Backoff``, seeded).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.wire import Channel, device_topic
from firmware_sim.mqtt.encoding import OFFLINE
from firmware_sim.mqtt.hub import MqttHub

log = logging.getLogger(__name__)

MqttProtocol = Literal["3.1.1", "5"]
PayloadFormat = Literal["plain", "senml"]


@dataclass(frozen=True, slots=True)
class WireOptions:
    """How one device talks. Durations marked (sim) run on the simulated clock."""

    protocol: MqttProtocol = "3.1.1"
    payload_format: PayloadFormat = "plain"
    firmware: str = "sim-1.0.0"
    keepalive_s: int = 60
    session_expiry_s: int = 7 * 86_400  # MQTT 5; 3.1.1 sessions follow the broker's expiry
    utc_offset_h: float = 7.0  # readings carry local time with its offset (+07:00)
    stagger_readings: bool = True  # first reading at a seeded phase within one interval
    backoff_initial_s: float = 1.0  # (sim) first reconnection delay
    backoff_max_s: float = 300.0  # (sim) cap of the exponential back-off
    connect_timeout_s: float = 10.0  # (wall) TCP connect plus CONNACK
    stop_timeout_s: float = 5.0  # (wall) PUBACK of `offline`, then the socket closing
    max_queued: int = 100  # paho's outgoing queue; beyond it a message is dropped

    def __post_init__(self) -> None:
        if self.protocol not in ("3.1.1", "5"):
            raise ValueError(f"protocol must be '3.1.1' or '5', not {self.protocol!r}")
        if self.payload_format not in ("plain", "senml"):
            raise ValueError(
                f"payload_format must be 'plain' or 'senml', not {self.payload_format!r}"
            )


class LinkState(Enum):
    DOWN = "down"
    CONNECTING = "connecting"
    UP = "up"
    CLOSING = "closing"


class Backoff:
    """Exponential back-off with "equal jitter": half the delay fixed, half seeded random.

    The random stream (seeded from ``seed``) is made on the first delay: most devices
    never need one, and a ``random.Random`` weighs 2.5 KB.
    """

    __slots__ = ("_attempt", "_rng", "_seed", "initial_s", "maximum_s")

    def __init__(self, initial_s: float, maximum_s: float, seed: str) -> None:
        if initial_s <= 0 or maximum_s < initial_s:
            raise ValueError("back-off needs 0 < initial_s <= maximum_s")
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self._seed = seed
        self._rng: random.Random | None = None
        self._attempt = 0

    def next_delay(self) -> timedelta:
        if self._rng is None:
            self._rng = random.Random(self._seed)  # noqa: S311 - simulation, not secrets
        ceiling = min(self.maximum_s, self.initial_s * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 62)
        return timedelta(seconds=ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self._attempt = 0


class DeviceLink:
    """One device's broker session; see the module docstring."""

    __slots__ = (
        "_client",
        "_connack",
        "_counted_connecting",
        "_down",
        "_flush_scheduled",
        "_loop",
        "_offline_acked",
        "_offline_mid",
        "_on_command",
        "_on_lost",
        "_options",
        "_secret",
        "_topic_root",
        "_unacked",
        "_writer_added",
        "device_id",
        "hub",
        "state",
    )

    def __init__(
        self,
        device_id: str,
        secret: str,
        *,
        hub: MqttHub,
        options: WireOptions,
        on_command: Callable[[bytes], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.device_id = device_id
        self._secret = secret
        self.hub = hub
        self._options = options
        self._on_command = on_command
        self._on_lost = on_lost
        self._topic_root = device_topic(device_id, Channel.STATUS).removesuffix(
            Channel.STATUS.value
        )
        self.state = LinkState.DOWN
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[bool] | None = None
        self._down: asyncio.Future[None] | None = None
        self._offline_mid: int | None = None
        self._offline_acked: asyncio.Future[None] | None = None
        self._unacked = 0  # our QoS 1 publishes without PUBACK (paho resends them itself)
        self._writer_added = False
        self._flush_scheduled = False
        self._counted_connecting = False
        self._client = self._make_client()

    @property
    def up(self) -> bool:
        return self.state is LinkState.UP

    def topic(self, channel: Channel) -> str:
        return self._topic_root + channel.value

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def expect_connect(self) -> None:
        """Count an attempt as under way from now (the hub's clock waits for it)."""
        if not self._counted_connecting:
            self._counted_connecting = True
            self.hub.note_connecting(+1)

    def stop_expecting(self) -> None:
        """No attempt is coming after all (the fault plan wants the link down)."""
        if self._counted_connecting:
            self._counted_connecting = False
            self.hub.note_connecting(-1)

    def keep_alive(self) -> None:
        """Called by the hub's ticker: paho's PINGREQ and dead-link check."""
        if self.state is LinkState.UP:
            self._client.loop_misc()

    def drop(self) -> None:
        """Break the link as a network fault would (no DISCONNECT); the device reconnects."""
        if self.state is LinkState.UP:
            with suppress(OSError):
                _shut_down(self._client.socket())

    # --- connecting --------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        v5 = self._options.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
        )
        client.username_pw_set(self.device_id, self._secret)
        client.will_set(self.topic(Channel.STATUS), OFFLINE, qos=1, retain=True)
        client.max_queued_messages_set(self._options.max_queued)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    async def open(self) -> bool:
        """Connect and wait for the broker's answer; whether the link is up now."""
        self.state = LinkState.CONNECTING
        self.expect_connect()
        try:
            accepted = await self._open_session()
        finally:
            self._counted_connecting = False
            self.hub.note_connecting(-1)
        if accepted and self.state is LinkState.CONNECTING:
            self.state = LinkState.UP
            self.hub.note_link(self, up=True)
            return True
        self.state = LinkState.DOWN
        return False

    async def _open_session(self) -> bool:
        """TCP connect (in a worker thread: it blocks), then wait for the CONNACK."""
        loop = self._require_loop()
        self._detach()
        self._connack = loop.create_future()
        try:
            async with self.hub.connect_slot():
                await asyncio.to_thread(self._client_connect)
        except (OSError, ValueError) as exc:
            log.debug("%s: cannot reach the broker: %s", self.device_id, exc)
            return False
        sock = self._client.socket()
        if sock is None:
            return False
        self._attach(loop, sock)
        try:
            async with asyncio.timeout(self._options.connect_timeout_s):
                accepted = await self._connack
        except TimeoutError:
            log.debug("%s: no CONNACK within %s s", self.device_id, self._options.connect_timeout_s)
            self.hang_up()
            return False
        if accepted:
            self._client.subscribe(self.topic(Channel.CMD), qos=1)
        return accepted

    def _client_connect(self) -> None:
        """Runs in a worker thread; the socket callbacks are detached until it returns."""
        broker = self.hub.broker
        if self._options.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._options.session_expiry_s
            self._client.connect(
                broker.host, broker.port, self._options.keepalive_s,
                clean_start=False, properties=properties,
            )  # fmt: skip
        else:
            self._client.connect(broker.host, broker.port, self._options.keepalive_s)

    def _attach(self, loop: asyncio.AbstractEventLoop, sock: Any) -> None:
        client = self._client
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        loop.add_reader(sock, self._on_readable)
        if client.want_write():
            loop.add_writer(sock, self._on_writable)
            self._writer_added = True

    def _detach(self) -> None:
        client = self._client
        client.on_socket_close = None
        client.on_socket_register_write = None
        client.on_socket_unregister_write = None

    # --- leaving -------------------------------------------------------------------------

    async def leave(self) -> None:
        """Clean: retained ``offline`` (acknowledged), then DISCONNECT (no Last Will)."""
        if self.state is not LinkState.UP:
            return
        loop = self._require_loop()
        self.hub.note_closing(+1)  # a clock racing ahead would wait for this
        try:
            self._offline_acked = loop.create_future()
            self._offline_mid = self.publish(self.topic(Channel.STATUS), OFFLINE, retain=True)
            if self._offline_mid is not None:
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._options.stop_timeout_s):
                        await self._offline_acked
            if self.state is not LinkState.UP:
                return  # the link broke meanwhile: the Last Will said it
            await self._close(lambda: self._client.disconnect())
        finally:
            self.hub.note_closing(-1)

    async def cut(self) -> None:
        """Abrupt: the socket closes without DISCONNECT, so the broker sends the Last Will."""
        sock = self._client.socket()
        if sock is None:
            return
        self.hub.note_closing(+1)
        try:
            await self._close(lambda: _shut_down(sock))
        finally:
            self.hub.note_closing(-1)

    async def _close(self, how: Callable[[], object]) -> None:
        loop = self._require_loop()
        self.state = LinkState.CLOSING
        self.hub.note_link(self, up=False)
        self._down = loop.create_future()
        try:
            how()
            async with asyncio.timeout(self._options.stop_timeout_s):
                await self._down
        except (OSError, TimeoutError) as exc:
            log.debug("%s: closing the link: %s", self.device_id, exc)
            self.hang_up()
        self.state = LinkState.DOWN

    def hang_up(self) -> None:
        """Drop the socket at once (cancelled, or the broker does not answer)."""
        sock = self._client.socket()
        if sock is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            self._writer_added = False
            with suppress(OSError):
                sock.close()
        self.hub.note_link(self, up=False)
        self.state = LinkState.DOWN

    def forget_counts(self) -> None:
        """The device's life is over: its share of the hub's counts goes."""
        self.stop_expecting()
        if self._unacked:
            self.hub.note_unacked(-self._unacked)
            self._unacked = 0
        self.hub.note_link(self, up=False)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the device is not running")
        return self._loop

    # --- publishing ------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int | None:
        """QoS 1; the message id, or None when the client refused it (queue full)."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        self._unacked += 1
        self.hub.note_unacked(+1)
        self.hub.counters.messages_sent += 1
        return info.mid

    # --- paho callbacks (all on the event loop's thread) ------------------------------------

    def _on_readable(self) -> None:
        try:
            self._client.loop_read()
        except Exception:
            log.exception("%s: reading from the broker failed", self.device_id)
            self._link_lost()
            self.hang_up()

    def _on_writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception:
            log.exception("%s: writing to the broker failed", self.device_id)
            self._link_lost()
            self.hang_up()

    def _on_socket_close(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(sock)
            if self._writer_added:
                loop.remove_writer(sock)
        self._writer_added = False

    def _on_socket_register_write(self, _client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
        # Write on the loop's next turn instead of asking epoll first: a message nearly
        # always fits the socket buffer, so the writer is only registered when it does
        # not (two epoll_ctl calls per message saved), and a command's ack and the new
        # state leave in one flush.
        if self._loop is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._on_writable()
        sock = self._client.socket()
        if self._client.want_write() and sock is not None and not self._writer_added:
            self._require_loop().add_writer(sock, self._on_writable)
            self._writer_added = True

    def _on_socket_unregister_write(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        if self._writer_added and self._loop is not None:
            self._loop.remove_writer(sock)
        self._writer_added = False

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("%s: the broker refused the connection: %s", self.device_id, reason)
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(not reason.is_failure)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(False)
        if self.state is LinkState.UP:
            log.debug("%s: link lost: %s", self.device_id, reason)
            self._link_lost()
        if self._down is not None and not self._down.done():
            self._down.set_result(None)

    def _link_lost(self) -> None:
        if self.state is not LinkState.UP:
            return
        self.state = LinkState.DOWN
        self.hub.note_link(self, up=False)
        self.hub.counters.links_lost += 1
        self._on_lost()

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        _reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if self._unacked > 0:
            self._unacked -= 1
            self.hub.note_unacked(-1)
        acked = self._offline_acked
        if mid == self._offline_mid and acked is not None and not acked.done():
            acked.set_result(None)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.topic(Channel.CMD):
            return
        try:
            self._on_command(bytes(message.payload))
        except Exception:
            # A model bug must not take the link down with it; the log says which device.
            log.exception("%s: answering a command failed", self.device_id)


def _shut_down(sock: object) -> None:
    """FIN both ways without an MQTT DISCONNECT: to the broker, a lost link."""
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)
