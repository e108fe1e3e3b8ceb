"""One simulated device on the MQTT wire, and the hub that runs thousands in one process.

``MqttDevice`` carries a ``DeviceModel`` onto the wire contract of ``devices.wire``:
username = client id = device id, a persistent session (a command sent while the
device is briefly away still arrives), Last Will ``offline`` on its retained
``status``, retained ``online`` and ``state`` after connecting and ``state`` after
every change, QoS 1 telemetry at the model's interval on the simulated clock with a
per-device ``seq``, commands answered on ``cmd/ack`` (expired ones ignored), and
reconnection with seeded exponential back-off and jitter. Its wire faults come from
``wire_faults``.

Transport: paho-mqtt clients driven by the asyncio loop itself (paho's "external
event loop": ``add_reader`` calls ``loop_read``, writes go out on the loop's next turn),
never a thread per device. Measured against Mosquitto 2.0.11 here, 1,000 and 5,000
connections: 9.6–10.3 KB of RSS per connected bare paho client against 13.2–14.3 KB
for aiomqtt, which also keeps a task per client waking every second (4× the idle CPU)
and connected 5,000 clients in 8.8 s against 4.8 s. A whole simulated device (spec,
physics model, this front-end, its client) stays near 15 KB (``bench/bench_sim.py``).
``MqttHub`` holds what all devices share:
one keepalive ticker for every client, a bound on concurrent connects, the counters,
and the back-pressure signal (``wait_calm``) a clock running "as fast as possible"
waits on before moving time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.wire import (
    Channel,
    Command,
    CommandAck,
    CommandParamsError,
    DeviceKind,
    PayloadError,
    device_topic,
    kind_spec,
    senml_base_name,
    validate_command_params,
)
from firmware_sim.faults import FaultConfig
from firmware_sim.model import DeviceModel
from firmware_sim.wire_faults import NO_FAULTS, DropStyle, WireFaults
from pharos_core.clock import Clock

log = logging.getLogger(__name__)

MqttProtocol = Literal["3.1.1", "5"]
PayloadFormat = Literal["plain", "senml"]
_ANSWERS_KEPT = 64  # command ids a device remembers its answer to
ONLINE = b"online"
OFFLINE = b"offline"
# A command whose JSON is broken can still be answered when its id is legible.
_COMMAND_ID = re.compile(rb'"id"\s*:\s*"([0-9a-fA-F-]{32,36})"')
# SenML (RFC 8428) unit names of the catalogue's units; others are left out.
_SENML_UNITS = {
    "W": "W",
    "V": "V",
    "A": "A",
    "Hz": "Hz",
    "m": "m",
    "mm": "mm",
    "°C": "Cel",
    "%": "%RH",
    "µg/m³": "ug/m3",
    "dBA": "dB",
    "kWh": "kWh",
    "h": "h",
}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int


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


@dataclass(slots=True)
class WireCounters:
    """What every device of a hub has done so far (read for the progress line)."""

    connected: int = 0  # devices with a live session now
    connecting: int = 0  # connection attempts under way (and first attempts not yet made)
    closing: int = 0  # devices leaving the broker right now
    unacked: int = 0  # QoS 1 publishes waiting for their PUBACK
    messages_sent: int = 0  # every publish handed to the client (status, state, ack, telemetry)
    readings_sent: int = 0  # telemetry messages among them
    readings_dropped: int = 0  # readings taken while the link was down, or over the queue
    readings_skipped: int = 0  # readings never taken: the process fell behind the clock
    commands_acknowledged: int = 0
    commands_ignored: int = 0  # expired on arrival: no ack at all
    commands_unreadable: int = 0  # so broken that not even their id could be read
    connect_failures: int = 0
    links_lost: int = 0  # sessions that ended without the device choosing to


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


class _Alarm:
    """Wakes one task early out of a clock sleep, the way ``asyncio.timeout`` does it.

    ``ring`` cancels the sleeping task and ``sleep`` swallows exactly that cancellation
    (``uncancel``), so a device waits on one clock without a helper task per wait. A
    ring while the task is not asleep ends its next sleep at once.
    """

    __slots__ = ("_pending", "_ringing", "_sleeper")

    def __init__(self) -> None:
        self._sleeper: asyncio.Task[Any] | None = None
        self._ringing = False
        self._pending = False

    async def sleep(self, clock: Clock, seconds: float) -> None:
        if self._pending:
            self._pending = False
            return
        task = asyncio.current_task()
        assert task is not None
        self._sleeper = task
        try:
            await clock.sleep(seconds)
        except asyncio.CancelledError:
            # Someone else's cancellation (a task group shutting down) goes on up.
            if not self._ringing or task.uncancel() > 0:
                raise
        finally:
            self._sleeper = None
            self._ringing = False

    def ring(self) -> None:
        if self._sleeper is None:
            self._pending = True
        elif not self._ringing:
            self._ringing = True
            self._sleeper.cancel()


def local_timezone(utc_offset_h: float) -> timezone:
    return timezone(timedelta(hours=utc_offset_h))


def format_ts(when: datetime, tz: timezone) -> str:
    """ISO 8601 with the device's offset, to the second: ``2026-11-22T18:05:00+07:00``."""
    return when.astimezone(tz).isoformat(timespec="seconds")


def _wire_value(value: Any) -> Any:
    # Three decimals are below every sensor's resolution and keep messages short.
    if isinstance(value, float):
        return round(value, 3)
    return value


def encode_plain(metrics: dict[str, Any], ts: str, seq: int) -> bytes:
    body = {"ts": ts, "seq": seq, "metrics": {k: _wire_value(v) for k, v in metrics.items()}}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def encode_senml(
    device_id: str, kind_units: dict[str, str], metrics: dict[str, Any], when: datetime
) -> bytes:
    """An RFC 8428 pack: base name and base time on the first record, one record a metric."""
    records: list[dict[str, Any]] = []
    base_time = round(when.timestamp(), 3)
    for name, value in metrics.items():
        record: dict[str, Any] = {"n": name}
        if not records:
            record = {"bn": senml_base_name(device_id), "bt": base_time, **record}
        unit = kind_units.get(name)
        if unit is not None:
            record["u"] = unit
        if isinstance(value, bool):
            record["vb"] = value
        elif isinstance(value, int | float):
            record["v"] = _wire_value(value)
        else:
            record["vs"] = str(value)
        records.append(record)
    return json.dumps(records, separators=(",", ":"), ensure_ascii=False).encode()


def _shut_down(sock: object) -> None:
    """FIN both ways without an MQTT DISCONNECT: to the broker, a lost link."""
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} in a state payload")


def _legible_command_id(payload: bytes) -> uuid.UUID | None:
    match = _COMMAND_ID.search(payload)
    if match is None:
        return None
    try:
        return uuid.UUID(match.group(1).decode("ascii"))
    except ValueError:
        return None


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text``: seeded like a Random, without keeping one."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def senml_units(kind: DeviceKind) -> dict[str, str]:
    return {m.name: _SENML_UNITS[m.unit] for m in kind_spec(kind).metrics if m.unit in _SENML_UNITS}


class MqttHub:
    """What every simulated MQTT device in one process shares; owns their tasks.

    Use as ``async with MqttHub(broker) as hub: hub.start(device)``. Leaving it asks
    every device to stop cleanly (``offline`` published, then DISCONNECT) and waits.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        connect_concurrency: int = 64,
        connects_per_second: float = 2000.0,
        max_unacked: int = 2000,
        keepalive_tick_s: float = 2.0,
    ) -> None:
        if connect_concurrency < 1 or connects_per_second <= 0 or max_unacked < 0:
            raise ValueError(
                "connect_concurrency, connects_per_second and max_unacked must be positive"
            )
        self.broker = broker
        self.counters = WireCounters()
        self.max_unacked = max_unacked
        self._connect_slots = asyncio.Semaphore(connect_concurrency)
        self._connect_spacing_s = 1.0 / connects_per_second
        self._next_connect_at = 0.0
        self._keepalive_tick_s = keepalive_tick_s
        self._devices: list[MqttDevice] = []
        self._linked: set[MqttDevice] = set()
        self._calm = asyncio.Event()
        self._calm.set()
        self._closing = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None

    @property
    def devices(self) -> list[MqttDevice]:
        return list(self._devices)

    async def __aenter__(self) -> MqttHub:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._tasks.create_task(self._keep_alive(), name="mqtt-hub-keepalive")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        self._closing.set()
        assert self._tasks is not None
        await self._tasks.__aexit__(exc_type, exc, tb)

    def start(self, device: MqttDevice) -> MqttDevice:
        """Run ``device`` in the hub's task group until the hub closes (or it is stopped)."""
        if self._tasks is None or self._closing.is_set():
            raise RuntimeError("start devices inside `async with hub`")
        if device.hub is not self:
            raise ValueError(f"device {device.device_id} belongs to another hub")
        self._devices.append(device)
        device.expect_first_connect()
        self._tasks.create_task(device.run(), name=f"device-{device.device_id}")
        return device

    def stop_all(self) -> None:
        for device in self._devices:
            device.request_stop()

    async def wait_calm(self) -> None:
        """Wait until no connection attempt is under way and few publishes are unacked."""
        await self._calm.wait()

    def is_calm(self) -> bool:
        return self._calm.is_set()

    # --- called by the devices ------------------------------------------------------

    @asynccontextmanager
    async def connect_slot(self) -> AsyncIterator[None]:
        """A turn to connect: at most ``connect_concurrency`` at once, spaced in time."""
        async with self._connect_slots:
            now = time.monotonic()
            start_at = max(now, self._next_connect_at)
            self._next_connect_at = start_at + self._connect_spacing_s
            if start_at > now:
                await asyncio.sleep(start_at - now)  # pacing the broker, not synchronising
            yield

    def note_connecting(self, delta: int) -> None:
        self.counters.connecting += delta
        self._update_calm()

    def note_closing(self, delta: int) -> None:
        self.counters.closing += delta
        self._update_calm()

    def note_unacked(self, delta: int) -> None:
        self.counters.unacked += delta
        self._update_calm()

    def note_link(self, device: MqttDevice, up: bool) -> None:
        if up and device not in self._linked:
            self._linked.add(device)
            self.counters.connected += 1
        elif not up and device in self._linked:
            self._linked.discard(device)
            self.counters.connected -= 1

    def _update_calm(self) -> None:
        counters = self.counters
        busy = counters.connecting > 0 or counters.closing > 0
        if not busy and counters.unacked <= self.max_unacked:
            self._calm.set()
        else:
            self._calm.clear()

    async def _keep_alive(self) -> None:
        """One ticker for every client: paho's keepalive (PINGREQ, dead-link detection)."""
        while not self._closing.is_set():
            for device in list(self._linked):
                device.keep_alive()
            with suppress(TimeoutError):
                async with asyncio.timeout(self._keepalive_tick_s):
                    await self._closing.wait()


class MqttDevice:
    """One device on the wire; ``run`` is its whole life, ``request_stop`` ends it cleanly."""

    __slots__ = (
        "_alarm",
        "_answered",
        "_backoff",
        "_client",
        "_clock",
        "_connack",
        "_counted_connecting",
        "_down",
        "_flush_scheduled",
        "_last_state",
        "_link",
        "_loop",
        "_model",
        "_next_reading",
        "_offline_acked",
        "_offline_mid",
        "_options",
        "_phase_s",
        "_plan",
        "_retry_at",
        "_secret",
        "_seq",
        "_stop_requested",
        "_topic_root",
        "_tz",
        "_unacked",
        "_wire",
        "_writer_added",
        "hub",
    )

    def __init__(
        self,
        model: DeviceModel,
        secret: str,
        *,
        hub: MqttHub,
        clock: Clock,
        faults: FaultConfig | None = None,
        seed: int | str = 0,
        options: WireOptions | None = None,
    ) -> None:
        self._model = model
        self._secret = secret
        self.hub = hub
        self._clock = clock
        self._options = options or WireOptions()
        device_id = model.device_id
        # Separate streams, so reconnections never shift which messages are malformed;
        # a Random only where a fault needs one (each weighs 2.5 KB, times thousands).
        config = faults or NO_FAULTS
        wire_rng = (
            random.Random(f"{seed}:{device_id}:wire")  # noqa: S311 - simulation, not secrets
            if WireFaults.needs_random(config)
            else None
        )
        self._wire = WireFaults(config, wire_rng)
        interval = max(1, int(model.interval_s))
        phase = stable_fraction(f"{seed}:{device_id}:phase")
        self._phase_s = float(int(phase * interval)) if self._options.stagger_readings else 0.0
        self._backoff = Backoff(
            self._options.backoff_initial_s, self._options.backoff_max_s, f"{seed}:{device_id}"
        )
        self._topic_root = device_topic(device_id, Channel.STATUS).removesuffix(
            Channel.STATUS.value
        )
        self._tz = local_timezone(self._options.utc_offset_h)
        self._client = self._make_client()
        self._alarm = _Alarm()
        self._link = LinkState.DOWN
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[bool] | None = None
        self._down: asyncio.Future[None] | None = None
        self._offline_mid: int | None = None
        self._offline_acked: asyncio.Future[None] | None = None
        self._unacked = 0  # our QoS 1 publishes without PUBACK (paho resends them itself)
        self._writer_added = False
        self._flush_scheduled = False
        self._counted_connecting = False
        self._stop_requested = False
        self._seq = 0
        self._last_state: dict[str, Any] | None = None
        # Answers to the last commands, by id: a command sent again (the backend's retry
        # after a lost acknowledgement) is answered again, not carried out twice.
        self._answered: OrderedDict[uuid.UUID, CommandAck] = OrderedDict()
        self._plan = self._wire.link_plan(clock.now())
        self._next_reading = clock.now()
        self._retry_at = clock.now()

    @property
    def device_id(self) -> str:
        return self._model.device_id

    @property
    def model(self) -> DeviceModel:
        return self._model

    @property
    def link(self) -> LinkState:
        return self._link

    @property
    def seq(self) -> int:
        """The ``seq`` of the last reading taken (sent or not)."""
        return self._seq

    def request_stop(self) -> None:
        """Leave cleanly: publish ``offline``, disconnect, and let ``run`` return."""
        self._stop_requested = True
        self._alarm.ring()

    def expect_first_connect(self) -> None:
        """Count the first attempt as under way from now (the hub's clock waits for it)."""
        if not self._counted_connecting:
            self._counted_connecting = True
            self.hub.note_connecting(+1)

    def keep_alive(self) -> None:
        """Called by the hub's ticker: paho's PINGREQ and dead-link check."""
        if self._link is LinkState.UP:
            self._client.loop_misc()

    def drop_link(self) -> None:
        """Break the link as a network fault would (no DISCONNECT); the device reconnects."""
        if self._link is LinkState.UP:
            with suppress(OSError):
                _shut_down(self._client.socket())

    # --- life ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, report and answer until asked to stop; then leave cleanly."""
        self._loop = asyncio.get_running_loop()
        self.expect_first_connect()
        start = self._clock.now()
        self._plan = self._wire.link_plan(start)
        self._next_reading = start + timedelta(seconds=self._phase_s)
        self._retry_at = start
        try:
            while not self._stop_requested:
                await self._follow_link_plan()
                self._report_if_due()
                await self._sleep_until_next_event()
            await self._leave()
        except asyncio.CancelledError:
            self._hang_up()
            raise
        finally:
            self._forget_counts()

    async def _follow_link_plan(self) -> None:
        now = self._clock.now()
        wanted = self._plan.wants_link(now)
        if self._link is LinkState.UP and not wanted:
            if self._plan.drop is DropStyle.CLEAN:
                await self._leave()
            else:
                await self._cut()
        elif wanted and self._link is LinkState.DOWN and now >= self._retry_at:
            await self._connect()
        elif not wanted and self._counted_connecting:
            self._counted_connecting = False
            self.hub.note_connecting(-1)

    def _next_event(self) -> datetime:
        now = self._clock.now()
        events = [self._next_reading]
        change = self._plan.next_change(now)
        if change is not None:
            events.append(change)
        if self._link is LinkState.DOWN and self._plan.wants_link(now):
            events.append(self._retry_at)
        return min(events)

    async def _sleep_until_next_event(self) -> None:
        if self._stop_requested:
            return
        seconds = (self._next_event() - self._clock.now()).total_seconds()
        if seconds > 0:
            await self._alarm.sleep(self._clock, seconds)
        else:
            await asyncio.sleep(0)  # something is due already: let others run first

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
        client.will_set(self._topic(Channel.STATUS), OFFLINE, qos=1, retain=True)
        client.max_queued_messages_set(self._options.max_queued)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    async def _connect(self) -> None:
        self._link = LinkState.CONNECTING
        if not self._counted_connecting:
            self._counted_connecting = True
            self.hub.note_connecting(+1)
        try:
            accepted = await self._open_session()
        finally:
            self._counted_connecting = False
            self.hub.note_connecting(-1)
        if accepted and self._link is LinkState.CONNECTING:
            self._link = LinkState.UP
            self.hub.note_link(self, up=True)
            self._backoff.reset()
            self._announce()
            return
        self._link = LinkState.DOWN
        self.hub.counters.connect_failures += 1
        self._retry_at = self._clock.now() + self._backoff.next_delay()

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
            self._hang_up()
            return False
        if accepted:
            self._client.subscribe(self._topic(Channel.CMD), qos=1)
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

    def _announce(self) -> None:
        """After every connect: retained ``online``, then the retained state."""
        self._publish(self._topic(Channel.STATUS), ONLINE, retain=True)
        self._publish_state(self._clock.now())

    # --- leaving -------------------------------------------------------------------------

    async def _leave(self) -> None:
        """Clean: retained ``offline`` (acknowledged), then DISCONNECT (no Last Will)."""
        if self._link is not LinkState.UP:
            return
        loop = self._require_loop()
        self.hub.note_closing(+1)  # a clock racing ahead would wait for this
        try:
            self._offline_acked = loop.create_future()
            self._offline_mid = self._publish(self._topic(Channel.STATUS), OFFLINE, retain=True)
            if self._offline_mid is not None:
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._options.stop_timeout_s):
                        await self._offline_acked
            if self._link is not LinkState.UP:
                return  # the link broke meanwhile: the Last Will said it
            await self._close(lambda: self._client.disconnect())
        finally:
            self.hub.note_closing(-1)

    async def _cut(self) -> None:
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
        self._link = LinkState.CLOSING
        self.hub.note_link(self, up=False)
        self._down = loop.create_future()
        try:
            how()
            async with asyncio.timeout(self._options.stop_timeout_s):
                await self._down
        except (OSError, TimeoutError) as exc:
            log.debug("%s: closing the link: %s", self.device_id, exc)
            self._hang_up()
        self._link = LinkState.DOWN

    def _hang_up(self) -> None:
        """Drop the socket at once (cancelled, or the broker does not answer)."""
        sock = self._client.socket()
        if sock is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            self._writer_added = False
            with suppress(OSError):
                sock.close()
        self.hub.note_link(self, up=False)
        self._link = LinkState.DOWN

    def _forget_counts(self) -> None:
        if self._counted_connecting:
            self._counted_connecting = False
            self.hub.note_connecting(-1)
        if self._unacked:
            self.hub.note_unacked(-self._unacked)
            self._unacked = 0
        self.hub.note_link(self, up=False)

    def _topic(self, channel: Channel) -> str:
        return self._topic_root + channel.value

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the device is not running")
        return self._loop

    # --- publishing ------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> int | None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        self._unacked += 1
        self.hub.note_unacked(+1)
        self.hub.counters.messages_sent += 1
        return info.mid

    def report_now(self) -> None:
        """Publish a reading and the state at once: a change the device notices by itself
        (its supply cut at the cabinet) is reported without waiting for the interval."""
        if self._link is not LinkState.UP:
            return
        now = self._clock.now()
        self._publish_reading(now)
        self._publish_state_if_changed(now)

    def _report_if_due(self) -> None:
        now = self._clock.now()
        if now < self._next_reading:
            return
        self._publish_reading(now)
        interval = timedelta(seconds=self._model.interval_s)
        self._next_reading += interval
        if self._next_reading <= now:
            # Fell behind (an overloaded process at high acceleration): skip ahead, and
            # say so, rather than bursting the missed readings out at once.
            missed = int((now - self._next_reading) / interval) + 1
            self.hub.counters.readings_skipped += missed
            self._next_reading += interval * missed
        if self._link is LinkState.UP:
            self._publish_state_if_changed(now)

    def _publish_reading(self, now: datetime) -> None:
        metrics = self._model.sample(now)
        self._seq += 1
        malformation = self._wire.next_malformation()
        if self._link is not LinkState.UP:
            self.hub.counters.readings_dropped += 1
            return
        raw: dict[str, Any] = dict(metrics)
        if malformation is not None:
            raw = self._wire.malform_metrics(raw, malformation)
        payload = self._encode_reading(raw, self._wire.device_time(now))
        if malformation is not None:
            payload = self._wire.malform_payload(payload, malformation)
        if self._publish(self._topic(Channel.TELEMETRY), payload) is None:
            self.hub.counters.readings_dropped += 1
        else:
            self.hub.counters.readings_sent += 1

    def _encode_reading(self, metrics: dict[str, Any], device_now: datetime) -> bytes:
        if self._options.payload_format == "senml":
            units = senml_units(self._model.kind)
            return encode_senml(self.device_id, units, metrics, device_now)
        return encode_plain(metrics, format_ts(device_now, self._tz), self._seq)

    def _current_state(self, now: datetime) -> dict[str, Any]:
        state = dict(self._model.state(now))
        state.setdefault("fw", self._options.firmware)
        return state

    def _publish_state(self, now: datetime) -> None:
        state = self._current_state(now)
        self._last_state = state
        body = {"ts": format_ts(self._wire.device_time(now), self._tz), **state}
        payload = json.dumps(body, separators=(",", ":"), default=_json_default)
        self._publish(self._topic(Channel.STATE), payload.encode(), retain=True)

    def _publish_state_if_changed(self, now: datetime) -> None:
        if self._current_state(now) != self._last_state:
            self._publish_state(now)

    # --- commands ------------------------------------------------------------------------

    def _answer(self, payload: bytes) -> None:
        now = self._clock.now()
        try:
            command = Command.parse(payload)
        except PayloadError as exc:
            command_id = _legible_command_id(payload)
            if command_id is None:
                self.hub.counters.commands_unreadable += 1
                log.info("%s: unreadable command ignored: %s", self.device_id, exc)
                return
            self._ack(CommandAck(id=command_id, status="rejected", detail=str(exc)))
            return
        if command.is_expired(self._wire.device_time(now)):
            self.hub.counters.commands_ignored += 1
            return
        known = self._answered.get(command.id)
        if known is not None:
            self._ack(known)
            return
        try:
            validate_command_params(self._model.kind, command.action, command.params)
        except CommandParamsError as exc:
            self._ack(CommandAck(id=command.id, status="rejected", detail=str(exc)))
            return
        outcome = self._model.handle(command.action, command.params, now)
        ack = CommandAck(id=command.id, status=outcome.status, detail=outcome.detail)
        self._answered[command.id] = ack
        while len(self._answered) > _ANSWERS_KEPT:
            self._answered.popitem(last=False)
        self._ack(ack)
        if outcome.status == "ok":
            self._publish_state(now)

    def _ack(self, ack: CommandAck) -> None:
        if self._publish(self._topic(Channel.CMD_ACK), ack.to_payload()) is not None:
            self.hub.counters.commands_acknowledged += 1

    # --- paho callbacks (all on the event loop's thread) ------------------------------------

    def _on_readable(self) -> None:
        try:
            self._client.loop_read()
        except Exception:
            log.exception("%s: reading from the broker failed", self.device_id)
            self._link_lost()
            self._hang_up()

    def _on_writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception:
            log.exception("%s: writing to the broker failed", self.device_id)
            self._link_lost()
            self._hang_up()

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
        if self._link is LinkState.UP:
            log.debug("%s: link lost: %s", self.device_id, reason)
            self._link_lost()
        if self._down is not None and not self._down.done():
            self._down.set_result(None)

    def _link_lost(self) -> None:
        if self._link is not LinkState.UP:
            return
        self._link = LinkState.DOWN
        self.hub.note_link(self, up=False)
        self.hub.counters.links_lost += 1
        self._retry_at = self._clock.now() + self._backoff.next_delay()
        self._alarm.ring()

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
        if message.topic != self._topic(Channel.CMD):
            return
        try:
            self._answer(bytes(message.payload))
        except Exception:
            # A model bug must not take the link down with it; the log says which device.
            log.exception("%s: answering a command failed", self.device_id)


__all__ = [
    "BrokerAddress",
    "LinkState",
    "MqttDevice",
    "MqttHub",
    "WireCounters",
    "WireOptions",
    "encode_plain",
    "encode_senml",
    "format_ts",
]
