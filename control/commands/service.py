"""The command service: sends stored commands, tracks each device's answer, retries,
expires, rate-limits, and keeps the reported state of every lamp.

``CommandService`` is an async context manager owning three tasks in a TaskGroup: the
sender (pending targets out at ``rate_per_s``, unanswered ones again with doubling
back-off on the injected clock, expired ones closed), the flusher (status changes and
reported states written to the database in batches), and its MQTT link. Cabinets get
``switch_circuit`` as a Modbus coil write through ``devices.modbus_client``. A repeated
command id returns the first command and does nothing again. After a restart, open
targets of unexpired commands are picked up again. A ``self_test`` answered ``ok``
ticks the device's commissioning checklist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from control.commands.link import Inbound, LinkOptions, MqttCommandLink
from control.commands.model import CommandPublic, CommandRequest, TargetStatus
from control.commands.records import (
    Created,
    Route,
    cancel_command,
    create_command,
    open_targets,
    write_updates,
)
from control.state import set_desired, upsert_lamp_state
from devices.modbus_client import ModbusClientPool, ModbusError, ModbusExceptionResponse
from devices.registry.db import transaction
from devices.registry.service import Registry
from devices.wire import Channel
from devices.wire.commands import Command, CommandAck, PayloadError
from pharos_core.clock import Clock, sleep_or_wake
from pharos_core.lifecycle import ServiceTasks

log = logging.getLogger(__name__)

StateListener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class CommandOptions:
    rate_per_s: float = 2000.0  # commands per second onto the broker
    burst: int = 200
    max_unacked: int = 2000  # QoS 1 publishes the broker has not acknowledged yet
    retry_initial_s: float = 15.0  # (clock) first resend of an unanswered command
    retry_max_s: float = 120.0
    flush_interval_s: float = 0.1  # (wall) status changes reach the database this often
    latency_commands_kept: int = 100


class RateLimiter:
    """A token bucket on the wall clock: broker load is real time, not simulated."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate = rate_per_s
        self.capacity = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


@dataclass(slots=True)
class _Open:
    command_id: str
    action: str
    params: dict[str, Any]
    expires_at: datetime
    route: Route
    status: TargetStatus = TargetStatus.PENDING
    attempts: int = 0
    next_at: datetime | None = None  # None: send now
    first_sent_at: datetime | None = None
    sent_mono: float | None = None


@dataclass(slots=True)
class _Pending:
    """What the flusher writes next."""

    targets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)
    self_tests: dict[str, datetime] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.targets or self.reported or self.self_tests)


class CommandService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        link: LinkOptions,
        *,
        modbus: ModbusClientPool | None = None,
        options: CommandOptions | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._link_options = link
        self._modbus = modbus
        self.options = options or CommandOptions()
        self._limiter = RateLimiter(self.options.rate_per_s, self.options.burst)
        self._open: dict[tuple[str, str], _Open] = {}
        self._open_per_command: dict[str, int] = {}
        self._settled: dict[str, asyncio.Event] = {}
        self._latencies: OrderedDict[str, list[float]] = OrderedDict()
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._state_listeners: list[StateListener] = []
        self._link: MqttCommandLink | None = None
        self._stopping = asyncio.Event()
        self._tasks = ServiceTasks(self._stopping, self._wake)
        self.reported: dict[str, dict[str, Any]] = {}
        self.unknown_acks = 0

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> CommandService:
        for target in await asyncio.to_thread(self._load_open):
            self._track(target)
        self._link = MqttCommandLink(self._link_options, self._on_inbound)
        await self._link.__aenter__()
        await self._tasks.start(
            ("commands-send", self._send_loop()), ("commands-flush", self._flush_loop())
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._link is not None
        try:
            await self._tasks.stop(exc_type, exc, tb)
        finally:
            await self._link.__aexit__(exc_type, exc, tb)
            await self._flush()

    def add_state_listener(self, listener: StateListener) -> None:
        """``listener(device_id, state)`` on every reported state (on the event loop)."""
        self._state_listeners.append(listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        self._state_listeners.remove(listener)

    # --- the API of the service -----------------------------------------------------------

    async def submit(
        self, request: CommandRequest, actor: str, *, source: str = "api"
    ) -> CommandPublic:
        """Store and send ``request``; a known id returns the stored command, untouched."""
        now = self._clock.now()
        created: Created = await asyncio.to_thread(self._create, request, actor, now, source)
        if created.new:
            expires = now + timedelta(seconds=request.ttl_s)
            for route in created.routes:
                self._track(_Open(str(request.id), request.action, request.params, expires, route))
            self._wake.set()
        return created.command

    async def cancel(self, command_id: uuid.UUID) -> CommandPublic:
        now = self._clock.now()
        key = str(command_id)
        result: CommandPublic = await asyncio.to_thread(
            self._in_transaction, cancel_command, key, now
        )
        for target in [t for t in self._open.values() if t.command_id == key]:
            target.status = TargetStatus.CANCELLED
            self._close(target)
        return result

    async def wait_settled(self, command_id: uuid.UUID) -> None:
        """Until every target of the command has a final status, and it is in the database."""
        key = str(command_id)
        event = self._settled.get(key)
        if event is not None:
            await event.wait()
        await self.flushed()

    async def flushed(self) -> None:
        """Until what happened so far is written to the database."""
        if self._pending.empty():
            return
        self._flushed.clear()
        await self._flushed.wait()

    def latencies(self, command_id: uuid.UUID) -> list[float]:
        """Seconds (wall) from first send to acknowledgement, per answered device."""
        return list(self._latencies.get(str(command_id), []))

    def open_count(self, command_id: uuid.UUID) -> int:
        return self._open_per_command.get(str(command_id), 0)

    @property
    def published(self) -> int:
        """Command messages the broker acknowledged (resends included)."""
        return self._link.session.published if self._link is not None else 0

    # --- database work (in threads) ---------------------------------------------------

    def _in_transaction(self, work: Callable[..., Any], *args: Any) -> Any:
        with transaction(self._sessions) as session:
            return work(session, *args)

    def _create(self, request: CommandRequest, actor: str, now: datetime, source: str) -> Created:
        with transaction(self._sessions) as session:
            created = create_command(session, request, actor, now, source)
            if created.new:
                _record_desired(session, request, [r.device_id for r in created.routes], now)
            return created

    def _load_open(self) -> list[_Open]:
        with transaction(self._sessions) as session:
            rows = open_targets(session)
        return [
            _Open(
                r.command_id,
                r.action,
                r.params,
                r.expires_at,
                r.route,
                r.status,
                r.attempts,
                None,
                r.last_sent_at,
            )
            for r in rows
        ]

    # --- tracking -------------------------------------------------------------------------

    def _track(self, target: _Open) -> None:
        key = (target.command_id, target.route.device_id)
        if key in self._open:
            return
        self._open[key] = target
        self._open_per_command[target.command_id] = (
            self._open_per_command.get(target.command_id, 0) + 1
        )
        self._settled.setdefault(target.command_id, asyncio.Event()).clear()

    def _close(self, target: _Open) -> None:
        key = (target.command_id, target.route.device_id)
        if self._open.pop(key, None) is None:
            return
        left = self._open_per_command.get(target.command_id, 1) - 1
        if left <= 0:
            self._open_per_command.pop(target.command_id, None)
            event = self._settled.pop(target.command_id, None)
            if event is not None:
                event.set()
        else:
            self._open_per_command[target.command_id] = left

    def _finish(self, target: _Open, status: TargetStatus, detail: str, now: datetime) -> None:
        target.status = status
        self._note(target, status=status.value, answered_at=now, detail=detail[:2000])
        self._close(target)
        if status is TargetStatus.OK and target.action == "self_test":
            self._pending.self_tests[target.route.device_id] = now

    def _note(self, target: _Open, **columns: Any) -> None:
        key = (target.command_id, target.route.device_id)
        row = self._pending.targets.setdefault(
            key, {"command_id": target.command_id, "device_id": target.route.device_id}
        )
        row.update(columns)

    # --- sending --------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while not self._stopping.is_set():
            next_at: datetime | None = None
            for target in list(self._open.values()):
                if target.status.final:
                    continue
                now = self._clock.now()
                if now >= target.expires_at:
                    self._finish(target, TargetStatus.EXPIRED, "no answer before expiry", now)
                    continue
                if target.next_at is None or target.next_at <= now:
                    await self._send(target)
                if target.status.final:
                    continue
                due = min(target.next_at or target.expires_at, target.expires_at)
                next_at = due if next_at is None else min(next_at, due)
            until = next_at or self._clock.now() + timedelta(hours=1)
            await sleep_or_wake(self._clock, until, self._wake)

    def _backoff(self, attempts: int) -> timedelta:
        seconds = self.options.retry_initial_s * 2 ** max(0, attempts - 1)
        return timedelta(seconds=min(self.options.retry_max_s, seconds))

    async def _send(self, target: _Open) -> None:
        now = self._clock.now()
        target.attempts += 1
        target.next_at = now + self._backoff(target.attempts)
        if target.first_sent_at is None:
            target.first_sent_at = now
            target.sent_mono = time.monotonic()
        target.status = TargetStatus.SENT
        self._note(
            target,
            status="sent",
            attempts=target.attempts,
            first_sent_at=target.first_sent_at,
            last_sent_at=now,
        )
        if target.route.is_modbus:
            await self._send_modbus(target)
            return
        await self._limiter.take()
        link = self._link
        assert link is not None
        await link.wait_below(self.options.max_unacked)  # paho's queue stays bounded
        command = Command(
            id=uuid.UUID(target.command_id),
            action=target.action,
            params=target.params,
            expires_at=target.expires_at,
        )
        if not link.publish(target.route.device_id, command):
            self._note(target, detail="the MQTT client refused the publish; retrying")

    async def _send_modbus(self, target: _Open) -> None:
        route = target.route
        now = self._clock.now()
        if self._modbus is None or route.modbus_host is None:
            self._finish(target, TargetStatus.FAILED, "no Modbus address for this cabinet", now)
            return
        circuit, on = int(target.params["circuit"]), bool(target.params["on"])
        client = self._modbus.client(route.modbus_host, route.modbus_port or 502)
        try:
            await client.write_circuit(route.modbus_unit or 1, circuit, on)
        except ModbusExceptionResponse as exc:
            self._finish(target, TargetStatus.REJECTED, str(exc), self._clock.now())
            return
        except ModbusError as exc:
            self._note(target, detail=f"{exc}; retrying")  # stays sent: retried, then expires
            return
        self._finish(target, TargetStatus.OK, f"circuit {circuit} {'on' if on else 'off'}", now)
        self._record_latency(target)

    def _record_latency(self, target: _Open) -> None:
        if target.sent_mono is None:
            return
        series = self._latencies.setdefault(target.command_id, [])
        series.append(time.monotonic() - target.sent_mono)
        self._latencies.move_to_end(target.command_id)
        while len(self._latencies) > self.options.latency_commands_kept:
            self._latencies.popitem(last=False)

    # --- receiving (event loop, from the link) -----------------------------------------------

    def _on_inbound(self, message: Inbound) -> None:
        if message.channel is Channel.CMD_ACK:
            self._on_ack(message.device_id, message.payload)
        elif message.channel is Channel.STATE:
            self._on_state(message.device_id, message.payload)

    def _on_ack(self, device_id: str, payload: bytes) -> None:
        try:
            ack = CommandAck.parse(payload)
        except PayloadError as exc:
            log.info("%s: unreadable acknowledgement ignored: %s", device_id, exc)
            self.unknown_acks += 1
            return
        target = self._open.get((str(ack.id), device_id))
        if target is None or target.status.final:
            self.unknown_acks += 1  # a duplicate, a late answer, or not ours
            return
        status = TargetStatus(ack.status)
        self._finish(target, status, ack.detail, self._clock.now())
        self._record_latency(target)

    def _on_state(self, device_id: str, payload: bytes) -> None:
        try:
            state = json.loads(payload)
        except ValueError:
            return
        if not isinstance(state, dict) or not ("dim_level" in state or "program_id" in state):
            return  # not a lamp's state (a cabinet's circuits, a gauge's interval)
        self.reported[device_id] = state
        level = state.get("dim_level")
        self._pending.reported[device_id] = {
            "reported_level": float(level) if isinstance(level, int | float) else None,
            "reported_power": str(state["power"])[:8] if "power" in state else None,
            "reported_program_id": str(state["program_id"])[:64]
            if state.get("program_id")
            else None,
            "reported_at": self._clock.now(),
        }
        for listener in self._state_listeners:
            listener(device_id, state)

    # --- flushing ------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            await self._flush()
            try:
                async with asyncio.timeout(self.options.flush_interval_s):
                    await self._stopping.wait()
            except TimeoutError:
                continue

    async def _flush(self) -> None:
        pending, self._pending = self._pending, _Pending()
        if not pending.empty():
            await asyncio.to_thread(self._write, pending)
        self._flushed.set()

    def _write(self, pending: _Pending) -> None:
        with transaction(self._sessions) as session:
            write_updates(session, list(pending.targets.values()))
            upsert_lamp_state(session, pending.reported)
            if pending.self_tests:
                registry = Registry(session, "control", clock=self._clock.now)
                for device_id, at in pending.self_tests.items():
                    registry.record_self_test(device_id, at)


def _record_desired(
    session: Session, request: CommandRequest, device_ids: list[str], now: datetime
) -> None:
    """A command sets the desired state of the lamps it reaches."""
    params = request.params
    if request.action in ("set_dim", "override"):
        set_desired(session, device_ids, now, level=float(params["level"]))
    elif request.action == "switch" and params.get("on") is False:
        set_desired(session, device_ids, now, level=0.0)
    elif request.action == "set_program":
        set_desired(session, device_ids, now, program_id=str(params["program"]["id"]))
