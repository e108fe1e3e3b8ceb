"""The MQTT transport of ingest: one persistent MQTT 5 session, subscribed, acked by hand.

``MqttSubscriber`` connects with a persistent session (clean start off, a session
expiry interval), subscribes at QoS 1, hands every received message to a callback,
and sends a QoS 1 message's PUBACK only when told to (``ack``), which ingest does
once the reading is durable: a crash in between leaves the message with the broker,
which sends it again on the next connection. It reconnects with back-off and
jitter; acknowledgements for messages of an earlier connection are dropped (the
broker redelivers those).

Flow control has two halves. QoS 1: the CONNECT's Receive Maximum bounds the
messages the broker sends before their PUBACK; Mosquitto queues the rest (up to
``max_queued_messages``), so it must be large (default 65535, the most MQTT allows)
or throughput collapses to one window per batch round trip (MQTT 3.1.1 would get
``max_inflight_messages``, 100 in our broker configuration). It is not a memory
bound: Mosquitto 2.0.11 refills the window more generously than MQTT 5 says (one
PUBACK let a whole new window through, measured). Everything (QoS 0 too):
``pause_reading`` stops reading the socket, so TCP pushes back on the broker; that is
what bounds the memory of ingest.

Why a client of our own, on ``asyncio.Protocol``, rather than paho-mqtt or aiomqtt:
measured here (2 cores, Mosquitto 2.0.11, 80,000 queued QoS 1 readings of ~190
bytes, acks sent per 5,000): paho-mqtt 2.2 with ``manual_ack`` costs 47 µs of CPU per
message driven by asyncio's ``add_reader`` and 56 µs on its own network thread
(it reads each packet with three ``recv`` calls and builds an ``MQTTMessage`` with its
properties); aiomqtt 2.5 costs 123 µs (it cannot defer acknowledgements without
reaching into its private paho client, and its queue is unbounded or drops
messages). This module, decoding whole TCP reads at once, costs 3.2 µs. On a
machine that also runs the broker, InfluxDB and the devices, with parsing and
encoding at about 40 µs a reading, paho's share alone would keep one process
under 20,000 readings/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pharos_core.mqtt import MqttError  # the connection failed or broke; it reconnects
from telemetry.ingest.mqtt_codec import (
    DISCONNECT_NORMAL,
    PINGREQ,
    ConnAck,
    ControlPacket,
    Decoder,
    Disconnect,
    InboundMessage,
    PingResp,
    Property,
    ProtocolError,
    SubAck,
    encode_connect,
    encode_pubacks,
    encode_subscribe,
    reason_text,
)

log = logging.getLogger(__name__)

MessageHandler = Callable[[list[InboundMessage]], None]

# CONNACK reasons that no retry can fix: the account or the configuration is wrong.
_PERMANENT_REFUSALS = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
_SUBSCRIBE_PACKET_ID = 1
_SESSION_TAKEN_OVER = 0x8E


class MqttConfigurationError(MqttError):
    """The broker refused this account or its subscriptions: retrying cannot help."""


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """Where and how to connect. ``client_id`` defaults to the username (Pharos' broker
    replaces the client id by the username anyway, so each session needs its own account).
    """

    host: str
    port: int
    username: str
    password: str | None
    client_id: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86_400
    receive_maximum: int = 65_535
    maximum_packet_size: int = 2 * 1024 * 1024
    connect_timeout_s: float = 10.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0


class _Connection(asyncio.Protocol):
    """One TCP connection: decodes what arrives, tracks CONNACK/SUBACK and liveness."""

    def __init__(self, number: int, on_messages: MessageHandler, max_packet_size: int) -> None:
        loop = asyncio.get_running_loop()
        self.number = number
        self.connack: asyncio.Future[ConnAck] = loop.create_future()
        self.suback: asyncio.Future[SubAck] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.disconnect: Disconnect | None = None
        self.paused = False
        self.last_heard = time.monotonic()
        self._on_messages = on_messages
        self._decoder = Decoder(max_packet_size)
        self._last_us = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        # Strictly increasing microseconds per message (see Decoder.feed).
        stamp = max(time.time_ns() // 1_000, self._last_us + 1)
        try:
            messages, controls = self._decoder.feed(data, stamp, self.number)
        except ProtocolError as exc:
            self.abort(exc)
            return
        self._last_us = stamp + len(messages)
        if messages:
            self._on_messages(messages)
        for packet in controls:
            self._control(packet)

    def _control(self, packet: ControlPacket) -> None:
        if isinstance(packet, ConnAck):
            if not self.connack.done():
                self.connack.set_result(packet)
        elif isinstance(packet, SubAck):
            if not self.suback.done():
                self.suback.set_result(packet)
        elif isinstance(packet, Disconnect):
            self.disconnect = packet
            self.abort(MqttError(f"the broker disconnected: {reason_text(packet.reason_code)}"))
        elif isinstance(packet, PingResp):
            pass  # last_heard is updated for every read

    def connection_lost(self, exc: Exception | None) -> None:
        error = exc or MqttError("connection closed")
        for future in (self.connack, self.suback):
            if not future.done():
                future.set_exception(error)
                future.exception()  # marks it retrieved: a refused CONNECT never awaits SUBACK
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_reading(self) -> None:
        self.paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.paused = False
        self.last_heard = time.monotonic()  # the silence while paused was ours
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def send(self, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def abort(self, reason: Exception) -> None:
        log.warning("mqtt: closing the connection: %s", reason)
        if self.transport is not None:
            self.transport.abort()


class MqttSubscriber:
    """One persistent session kept subscribed to ``subscriptions`` at QoS 1.

    Run ``await subscriber.run()`` in a task; ``stop()`` disconnects cleanly and makes
    ``run`` return. ``on_messages`` is called in the event loop with each TCP read's
    messages, in arrival order; it must not block (queue them and return).
    """

    def __init__(
        self, options: MqttOptions, subscriptions: Sequence[str], on_messages: MessageHandler
    ) -> None:
        if not subscriptions:
            raise ValueError("nothing to subscribe to")
        self._options = options
        self._subscriptions = list(subscriptions)
        self._on_messages = on_messages
        self._connection: _Connection | None = None
        self._numbers = 0
        self._paused = False
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._rng = random.Random()  # jitter only; not security relevant # noqa: S311

    # -- what the service uses ------------------------------------------------------------

    @property
    def connection(self) -> int:
        """The number of the current connection (0 before the first)."""
        return self._connection.number if self._connection is not None else 0

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def ack(self, connection: int, mids: Sequence[int]) -> bool:
        """PUBACK ``mids`` if they came on the current connection; False if dropped."""
        current = self._connection
        if current is None or current.number != connection or not mids:
            return False
        return current.send(encode_pubacks(mids))

    def pause_reading(self) -> None:
        self._paused = True
        if self._connection is not None:
            self._connection.pause_reading()

    def resume_reading(self) -> None:
        self._paused = False
        if self._connection is not None:
            self._connection.resume_reading()

    def stop(self) -> None:
        """Disconnect normally (the session and its queue stay with the broker).

        The broker closes the connection once it has read the DISCONNECT; closing it
        from this side instead could lose the last PUBACKs: anything the broker sends
        meanwhile would be answered with a reset, which discards what it had not read.
        """
        self._stopping.set()
        connection = self._connection
        if connection is not None and connection.send(DISCONNECT_NORMAL):
            connection.resume_reading()  # to see the broker close (what arrives is ignored)

    # -- the connection loop --------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stay connected, reconnect with back-off; return after ``stop()``."""
        delay = self._options.reconnect_initial_s
        while not self._stopping.is_set():
            established = False
            try:
                established = await self._session()
            except MqttConfigurationError:
                raise
            except (OSError, TimeoutError, MqttError) as exc:
                log.warning("mqtt: %s:%d: %s", self._options.host, self._options.port, exc)
            if self._stopping.is_set():
                return
            delay = self._options.reconnect_initial_s if established else delay
            pause = delay * (0.5 + self._rng.random())
            log.info("mqtt: reconnecting in %.1f s", pause)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stopping.wait()
            delay = min(delay * 2, self._options.reconnect_max_s)

    async def _session(self) -> bool:
        """One connection, until it is lost; True if it got as far as subscribing."""
        options = self._options
        self._numbers += 1
        number = self._numbers
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(options.connect_timeout_s):
            _, connection = await loop.create_connection(
                lambda: _Connection(number, self._on_messages, options.maximum_packet_size),
                options.host,
                options.port,
            )
        self._connection = connection
        if self._stopping.is_set():  # stopped while connecting: nothing to say goodbye to
            connection.abort(MqttError("stopped while connecting"))
            await connection.closed
            return False
        try:
            keepalive = await self._handshake(connection)
            self._connected.set()
            log.info("mqtt: connected to %s:%d as %s", options.host, options.port, options.username)
            async with asyncio.TaskGroup() as group:
                watchdogs = (
                    group.create_task(self._keep_alive(connection, keepalive)),
                    group.create_task(self._close_after_stop(connection)),
                )
                await connection.closed
                for watchdog in watchdogs:
                    watchdog.cancel()
            self._check_disconnect(connection)
            return True
        finally:
            self._connected.clear()
            if connection.transport is not None:
                connection.transport.abort()  # no-op when already closed
            await connection.closed

    async def _handshake(self, connection: _Connection) -> int:
        """CONNECT and SUBSCRIBE; the keep alive in force (the broker may set its own)."""
        options = self._options
        connection.send(
            encode_connect(
                options.client_id or options.username,
                options.username,
                options.password,
                keepalive_s=options.keepalive_s,
                clean_start=False,
                session_expiry_s=options.session_expiry_s,
                receive_maximum=options.receive_maximum,
                maximum_packet_size=options.maximum_packet_size,
            )
        )
        if self._paused:
            connection.pause_reading()
        async with asyncio.timeout(options.connect_timeout_s):
            connack = await connection.connack
        if connack.reason_code in _PERMANENT_REFUSALS:
            raise MqttConfigurationError(
                f"the broker refused {options.username!r}: {reason_text(connack.reason_code)}"
            )
        if connack.reason_code >= 0x80:
            raise MqttError(f"connection refused: {reason_text(connack.reason_code)}")
        keepalive = connack.properties.get(Property.SERVER_KEEP_ALIVE, options.keepalive_s)
        filters = [(topic, 1) for topic in self._subscriptions]
        connection.send(encode_subscribe(_SUBSCRIBE_PACKET_ID, filters))
        async with asyncio.timeout(options.connect_timeout_s):
            suback = await connection.suback
        self._check_suback(suback)
        return int(keepalive)

    def _check_suback(self, suback: SubAck) -> None:
        refused = [
            f"{topic}: {reason_text(code)}"
            for topic, code in zip(self._subscriptions, suback.reason_codes, strict=False)
            if code >= 0x80
        ]
        if refused or len(suback.reason_codes) != len(self._subscriptions):
            detail = "; ".join(refused) or f"{len(suback.reason_codes)} answers"
            raise MqttConfigurationError(f"subscriptions refused by the broker: {detail}")

    def _check_disconnect(self, connection: _Connection) -> None:
        packet = connection.disconnect
        if packet is not None and packet.reason_code == _SESSION_TAKEN_OVER:
            # Two processes with one account fight over one session forever; say so.
            log.error(
                "mqtt: another client connected as %r and took this session over: "
                "each ingest worker needs its own broker account",
                self._options.username,
            )

    async def _close_after_stop(self, connection: _Connection) -> None:
        """After ``stop()``, give the broker a moment to close, then close it ourselves."""
        await self._stopping.wait()
        await asyncio.sleep(self._options.connect_timeout_s)
        connection.abort(MqttError("the broker did not close the connection after DISCONNECT"))

    async def _keep_alive(self, connection: _Connection, keepalive_s: int) -> None:
        """PINGREQ twice per keep alive; a broker silent for 1.5 of them is gone."""
        if keepalive_s <= 0:
            return
        while True:
            await asyncio.sleep(keepalive_s / 2)
            silent = time.monotonic() - connection.last_heard
            if not connection.paused and silent > keepalive_s * 1.5:
                connection.abort(MqttError(f"no answer from the broker for {silent:.0f} s"))
                return
            connection.send(PINGREQ)
