"""One simulated device on the MQTT wire: its model's readings, state and answers, on time.

``MqttDevice`` carries a ``DeviceModel`` onto the wire contract of ``devices.wire``:
retained ``online`` and ``state`` after connecting and ``state`` after every change,
QoS 1 telemetry at the model's interval on the simulated clock with a per-device
``seq`` (staggered at a seeded phase), commands answered on ``cmd/ack``, reconnection
with seeded exponential back-off and jitter. It sleeps on the one clock until its next
event (a reading, a change of its fault plan, a retry) and is woken early by a lost
link or a stop. The parts: the session (``link``), the payloads (``encoding``), the
answers to commands (``commands``), what its wire faults do (``faults``), and the hub
all devices of a process share (``hub``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from datetime import datetime, timedelta
from typing import Any

from devices.wire import Channel
from firmware_sim.faults import FaultConfig
from firmware_sim.model import DeviceModel
from firmware_sim.mqtt.commands import CommandAnswerer
from firmware_sim.mqtt.encoding import (
    ONLINE,
    encode_plain,
    encode_senml,
    encode_state,
    format_ts,
    local_timezone,
    senml_units,
)
from firmware_sim.mqtt.faults import LinkStep, link_step, reading_payload
from firmware_sim.mqtt.hub import MqttHub
from firmware_sim.mqtt.link import Backoff, DeviceLink, LinkState, WireOptions
from firmware_sim.wire_faults import NO_FAULTS, WireFaults
from pharos_core.clock import Clock


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


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text``: seeded like a Random, without keeping one."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class MqttDevice:
    """One device on the wire; ``run`` is its whole life, ``request_stop`` ends it cleanly."""

    __slots__ = (
        "_alarm",
        "_backoff",
        "_clock",
        "_commands",
        "_last_state",
        "_link",
        "_model",
        "_next_reading",
        "_options",
        "_phase_s",
        "_plan",
        "_retry_at",
        "_seq",
        "_stop_requested",
        "_tz",
        "_wire",
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
        self._tz = local_timezone(self._options.utc_offset_h)
        self._link = DeviceLink(
            device_id,
            secret,
            hub=hub,
            options=self._options,
            on_command=self._answer,
            on_lost=self._link_lost,
        )
        self._commands = CommandAnswerer(model, self._wire, hub.counters)
        self._alarm = _Alarm()
        self._stop_requested = False
        self._seq = 0
        self._last_state: dict[str, Any] | None = None
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
        return self._link.state

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
        self._link.expect_connect()

    def drop_link(self) -> None:
        """Break the link as a network fault would (no DISCONNECT); the device reconnects."""
        self._link.drop()

    # --- life ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, report and answer until asked to stop; then leave cleanly."""
        self._link.attach_loop(asyncio.get_running_loop())
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
            await self._link.leave()
        except asyncio.CancelledError:
            self._link.hang_up()
            raise
        finally:
            self._link.forget_counts()

    async def _follow_link_plan(self) -> None:
        step = link_step(self._plan, self._link.state, self._clock.now(), self._retry_at)
        if step is LinkStep.LEAVE:
            await self._link.leave()
        elif step is LinkStep.CUT:
            await self._link.cut()
        elif step is LinkStep.CONNECT:
            await self._connect()
        elif step is LinkStep.STAY_AWAY:
            self._link.stop_expecting()

    def _next_event(self) -> datetime:
        now = self._clock.now()
        events = [self._next_reading]
        change = self._plan.next_change(now)
        if change is not None:
            events.append(change)
        if self._link.state is LinkState.DOWN and self._plan.wants_link(now):
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

    async def _connect(self) -> None:
        if await self._link.open():
            self._backoff.reset()
            self._announce()
            return
        self.hub.counters.connect_failures += 1
        self._retry_at = self._clock.now() + self._backoff.next_delay()

    def _announce(self) -> None:
        """After every connect: retained ``online``, then the retained state."""
        self._link.publish(self._link.topic(Channel.STATUS), ONLINE, retain=True)
        self._publish_state(self._clock.now())

    def _link_lost(self) -> None:
        """The link broke by itself (called by the link): retry after a back-off."""
        self._retry_at = self._clock.now() + self._backoff.next_delay()
        self._alarm.ring()

    # --- reporting ---------------------------------------------------------------------

    def report_now(self) -> None:
        """Publish a reading and the state at once: a change the device notices by itself
        (its supply cut at the cabinet) is reported without waiting for the interval."""
        if not self._link.up:
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
        if self._link.up:
            self._publish_state_if_changed(now)

    def _publish_reading(self, now: datetime) -> None:
        metrics = self._model.sample(now)
        self._seq += 1
        malformation = self._wire.next_malformation()  # drawn even when the link is down
        if not self._link.up:
            self.hub.counters.readings_dropped += 1
            return
        device_now = self._wire.device_time(now)
        payload = reading_payload(self._wire, metrics, malformation, device_now, self._encode)
        if self._link.publish(self._link.topic(Channel.TELEMETRY), payload) is None:
            self.hub.counters.readings_dropped += 1
        else:
            self.hub.counters.readings_sent += 1

    def _encode(self, metrics: dict[str, Any], device_now: datetime) -> bytes:
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
        payload = encode_state(state, format_ts(self._wire.device_time(now), self._tz))
        self._link.publish(self._link.topic(Channel.STATE), payload, retain=True)

    def _publish_state_if_changed(self, now: datetime) -> None:
        if self._current_state(now) != self._last_state:
            self._publish_state(now)

    # --- commands ------------------------------------------------------------------------

    def _answer(self, payload: bytes) -> None:
        now = self._clock.now()
        answer = self._commands.answer(payload, now)
        if answer.ack is not None:
            ack_topic = self._link.topic(Channel.CMD_ACK)
            if self._link.publish(ack_topic, answer.ack.to_payload()) is not None:
                self.hub.counters.commands_acknowledged += 1
        if answer.carried_out:
            self._publish_state(now)
