"""What every simulated MQTT device in one process shares: the broker's address, the
counters, and the hub that owns the devices' tasks.

``MqttHub`` holds one keepalive ticker for every client (not a task per device), a bound
on concurrent connects spaced in time, the counters behind the progress line, and the
back-pressure signal (``wait_calm``) a clock running "as fast as possible" waits on
before moving time: no connect under way, and few publishes waiting for their PUBACK.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from pharos_core.lifecycle import ServiceTasks

if TYPE_CHECKING:
    from firmware_sim.mqtt.device import MqttDevice
    from firmware_sim.mqtt.link import DeviceLink


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int


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
        self._linked: set[DeviceLink] = set()
        self._calm = asyncio.Event()
        self._calm.set()
        self._closing = asyncio.Event()
        self._tasks = ServiceTasks(self._closing)

    @property
    def devices(self) -> list[MqttDevice]:
        return list(self._devices)

    async def __aenter__(self) -> MqttHub:
        await self._tasks.start(("mqtt-hub-keepalive", self._keep_alive()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        await self._tasks.stop(exc_type, exc, tb)

    def start(self, device: MqttDevice) -> MqttDevice:
        """Run ``device`` in the hub's task group until the hub closes (or it is stopped)."""
        if not self._tasks.running or self._closing.is_set():
            raise RuntimeError("start devices inside `async with hub`")
        if device.hub is not self:
            raise ValueError(f"device {device.device_id} belongs to another hub")
        self._devices.append(device)
        device.expect_first_connect()
        self._tasks.spawn(device.run(), name=f"device-{device.device_id}")
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

    def note_link(self, link: DeviceLink, up: bool) -> None:
        if up and link not in self._linked:
            self._linked.add(link)
            self.counters.connected += 1
        elif not up and link in self._linked:
            self._linked.discard(link)
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
            for link in list(self._linked):
                link.keep_alive()
            with suppress(TimeoutError):
                async with asyncio.timeout(self._keepalive_tick_s):
                    await self._closing.wait()
