"""``RulesService``: the rule engine on the live stream, the alert lifecycle and actions.

An async context manager owning, in one task group: the evaluator (parsed batches from
ingest's ``observe`` → ``RuleEngine`` → alerts, actions, derived points), the ticker
(silence, escalation and the ``alerts`` measurement every minute, on the injected
clock) and the webhook worker.

``observe`` runs on ingest's event loop and never blocks it: the batch goes into a
bounded queue (``queue_size`` batches). When the queue is full the batch is not
evaluated (its points are still stored by ingest, so a backtest covers them) and
this is counted in ``stats.dropped_batches`` / ``dropped_points`` and logged.

For each transition the alert is recorded (``AlertStore``) while the command actions
go out, concurrently (the command does not wait for the database); then the event is
published on ``pharos/v1/alerts`` (QoS 1) and the other actions run. Webhooks go
through their own bounded queue so a slow endpoint never holds evaluation up.
Derived points (``aqi``, ``flood``, ``alerts``) go to the injected ``PointSink``.
Rules are reloaded from their files with ``reload()``: a file with errors is refused
(``RuleFileError``) and the running rules keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devices.wire import ALERTS_TOPIC
from pharos_core.clock import Clock
from pharos_core.lifecycle import ServiceTasks
from pharos_core.points import PointSink
from rules.actions import ControlPort, MaintenancePort, Publisher, WebhookSender
from rules.alerts import AlertChange, AlertStore, AsyncAlerts
from rules.catalog import Catalog
from rules.derived import Derivations, DeviceFacts, ExpectedLevel, SunTimes
from rules.engine import Outcome, RuleEngine, Transition, TransitionKind
from rules.settings import RulesSettings
from rules.spec import (
    CommandActionSpec,
    CommandTarget,
    MaintenanceActionSpec,
    PublishActionSpec,
    Rule,
    Severity,
    SilenceCondition,
    WebhookActionSpec,
    load_rule_files,
)
from telemetry.ingest import ParsedBatch
from telemetry.points import Point

log = logging.getLogger(__name__)

_ALERTS_EVERY_S = 60.0
_WEBHOOK_QUEUE = 1000
_TRANSITION_QUEUE = 10_000  # raised/cleared waiting for the database and the IOC
_COMMANDS_IN_FLIGHT = 256  # command actions being sent at once
_DERIVED_BUFFER = 50_000  # derived points waiting for the sink (written in batches)
OVERLOAD_RULE = Rule(
    id="rules-overloaded",
    name="Rules evaluation overloaded",
    description="batches were not evaluated: alerts may have been missed",
    severity=Severity.MAJOR,
    when=SilenceCondition(silent=0),  # never evaluated: raised by the service itself
)
OVERLOAD_SOURCE = DeviceFacts("pharos-rules", "service")


@dataclass(slots=True)
class RulesStats:
    batches: int = 0
    points: int = 0
    dropped_batches: int = 0  # the queue was full: not evaluated (still stored by ingest)
    dropped_points: int = 0
    evaluations: int = 0
    raised: int = 0
    cleared: int = 0
    escalated: int = 0
    commands: int = 0
    action_errors: int = 0
    published: int = 0
    derived_points: int = 0
    derived_errors: int = 0
    webhooks_dropped: int = 0
    queued: int = 0
    derived_dropped: int = 0  # derived points the full derived buffer could not take
    silence_deferred: int = 0  # ticks whose silence waited for evaluation to catch up
    overloaded: bool = False  # the ``rules-overloaded`` alert is raised now


@dataclass(frozen=True, slots=True)
class _Webhook:
    spec: WebhookActionSpec
    body: dict[str, Any]


class RulesService:
    """The rules engine as a service; see the module docstring."""

    def __init__(
        self,
        *,
        settings: RulesSettings,
        catalog: Catalog,
        alerts: AlertStore,
        clock: Clock,
        sun: SunTimes,
        rules: Sequence[Rule] | None = None,
        publisher: Publisher | None = None,
        control: ControlPort | None = None,
        webhooks: WebhookSender | None = None,
        maintenance: MaintenancePort | None = None,
        submit: PointSink | None = None,
        expected_level: ExpectedLevel | None = None,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._store = alerts
        self._alerts = AsyncAlerts(alerts)
        self._clock = clock
        self._sun = sun
        self._publisher = publisher
        self._control = control
        self._webhooks = webhooks
        self._maintenance = maintenance
        self._submit = submit
        loaded = list(rules) if rules is not None else load_rule_files(settings.files)
        self.engine = RuleEngine(
            loaded,
            Derivations(settings, sun, expected_level),
            catalog.get,
            silence_clear_readings=settings.silence_clear_readings,
        )
        self._queue: asyncio.Queue[ParsedBatch] = asyncio.Queue(settings.queue_size)
        self._hooks: asyncio.Queue[_Webhook] = asyncio.Queue(_WEBHOOK_QUEUE)
        self._transitions: asyncio.Queue[Transition] = asyncio.Queue(_TRANSITION_QUEUE)
        self._command_slots = asyncio.Semaphore(_COMMANDS_IN_FLIGHT)
        self._commanding: set[asyncio.Task[None]] = set()
        self._stats = RulesStats()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks = ServiceTasks(cancel=True)  # its loops wait on queues: cancelled
        self._alert_keys: set[tuple[str, str]] = set()
        # Derived points wait here for the sink: evaluation never waits on storage.
        self._derived: list[Point] = []
        self._derived_ready = asyncio.Event()
        self._writing_derived = False

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        for rule_id, device_id in await self._alerts.live_pairs():
            self.engine.mark_raised(rule_id, device_id)
        await self._tasks.start(
            ("rules-evaluator", self._evaluate_forever()),
            ("rules-ticker", self._tick_forever()),
            ("rules-webhooks", self._webhooks_forever()),
            ("rules-lifecycle", self._lifecycle_forever()),
            ("rules-derived", self._derived_forever()),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._tasks.running:
            return
        if exc is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.wait_idle()
        await self._tasks.stop(exc_type, exc, tb)

    @property
    def stats(self) -> RulesStats:
        stats = RulesStats(**asdict(self._stats))
        stats.evaluations = self.engine.stats.evaluations
        stats.queued = self._queue.qsize()
        return stats

    @property
    def rules(self) -> list[Rule]:
        return self.engine.rules

    def rule_map(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.engine.rules}

    async def reload(self, paths: Sequence[Path] | None = None) -> list[Rule]:
        """Load the rule files again; on ``RuleFileError`` the running rules stay."""
        files = list(paths) if paths is not None else self._settings.files
        rules = await asyncio.to_thread(load_rule_files, files)
        self.engine.set_rules(rules)
        log.info("rules: %d rule(s) loaded from %s", len(rules), ", ".join(map(str, files)))
        return rules

    def set_rules(self, rules: Sequence[Rule]) -> None:
        self.engine.set_rules(rules)

    async def wait_idle(self) -> None:
        """Until every queued batch has been evaluated and its actions taken."""
        while not self._is_idle():
            self._idle.clear()
            await self._idle.wait()

    def _is_idle(self) -> bool:
        return not (
            self._queue.qsize()
            or self._transitions.qsize()
            or self._busy
            or self._commanding
            or self._derived
            or self._writing_derived
        )

    def _maybe_idle(self) -> None:
        if self._is_idle():
            self._idle.set()

    # -- the ingest observer --------------------------------------------------------------

    def observe(self, batch: ParsedBatch) -> None:
        """Ingest's hook: queue the batch, never block (full → counted, not evaluated)."""
        try:
            self._queue.put_nowait(batch)
            self._idle.clear()
        except asyncio.QueueFull:
            self._stats.dropped_batches += 1
            self._stats.dropped_points += len(batch.points)
            self._overload("raised")
            if (
                self._stats.dropped_batches in (1, 10, 100)
                or self._stats.dropped_batches % 1000 == 0
            ):
                log.warning(
                    "rules: evaluation queue full (%d batches); %d batch(es) not evaluated so far",
                    self._settings.queue_size,
                    self._stats.dropped_batches,
                )

    def _overload(self, kind: TransitionKind) -> None:
        """Raise (queue full) or clear (caught up) the service's own alert."""
        if self._stats.overloaded == (kind == "raised"):
            return
        dropped = self._stats.dropped_batches
        message = (
            f"rules: evaluation queue full ({self._settings.queue_size} batches); "
            f"{dropped} batch(es) not evaluated so far"
            if kind == "raised"
            else f"rules: evaluation caught up; {dropped} batch(es) were not evaluated"
        )
        transition = Transition(
            kind, OVERLOAD_RULE, OVERLOAD_SOURCE, self._clock.now(), float(dropped), message
        )
        try:
            self._transitions.put_nowait(transition)
        except asyncio.QueueFull:
            log.error("%s (and the alert queue is full too)", message)
            return
        self._stats.overloaded = kind == "raised"
        self._idle.clear()

    # -- evaluation -----------------------------------------------------------------------

    async def _evaluate_forever(self) -> None:
        while True:
            batch = await self._queue.get()
            self._busy += 1
            try:
                await self._evaluate(batch)
            except Exception:
                log.exception("rules: evaluating a batch failed")
            finally:
                self._busy -= 1
                self._queue.task_done()
                if self._stats.overloaded and self._queue.qsize() == 0:
                    self._overload("cleared")
                self._maybe_idle()

    async def _evaluate(self, batch: ParsedBatch) -> None:
        self._stats.batches += 1
        self._stats.points += len(batch.points)
        outcome: Outcome = self.engine.on_points(batch.points)
        for status in batch.statuses:
            # The clock's now, not the received time: both are the same in production,
            # and the simulated one is the time of the readings.
            online = status.status.value == "online"
            now = self._clock.now()
            outcome.transitions += self.engine.on_status(status.device_id, online, now)
        await self.handle(outcome.transitions)
        if outcome.derived:
            self._buffer_derived(outcome.derived)

    def _buffer_derived(self, points: Sequence[Point]) -> None:
        """Queue derived points for the writer task (bounded: beyond, counted and logged)."""
        if self._submit is None:
            return
        room = _DERIVED_BUFFER - len(self._derived)
        if room < len(points):
            self._stats.derived_dropped += len(points) - max(room, 0)
            log.error("rules: derived buffer full; %d point(s) not written", len(points) - room)
            points = points[: max(room, 0)]
        self._derived.extend(points)
        self._derived_ready.set()

    async def _derived_forever(self) -> None:
        """Write what evaluation derived, all that waits in one call (one transaction)."""
        while True:
            await self._derived_ready.wait()
            self._derived_ready.clear()
            points, self._derived = self._derived, []
            if not points:
                continue
            self._writing_derived = True
            try:
                await self._submit_derived(points)
            finally:
                self._writing_derived = False
                self._maybe_idle()

    async def _submit_derived(self, points: Sequence[Point]) -> None:
        """Write derived points; a failure is logged and counted, never stops evaluation."""
        if self._submit is None:
            return
        try:
            await self._submit(points)
            self._stats.derived_points += len(points)
        except Exception:
            self._stats.derived_errors += 1
            log.exception("rules: writing %d derived point(s) failed", len(points))

    async def handle(self, transitions: Sequence[Transition]) -> None:
        """Send each transition's commands at once, then queue it for the lifecycle."""
        for transition in transitions:
            await self._start_commands(transition)
            await self._transitions.put(transition)

    async def _start_commands(self, transition: Transition) -> None:
        for action in transition.rule.actions:
            if isinstance(action, CommandActionSpec) and transition.kind in action.on:
                await self._command_slots.acquire()
                task = self._tasks.spawn(self._command(action, transition))
                self._commanding.add(task)
                task.add_done_callback(self._command_done)

    def _command_done(self, task: asyncio.Task[None]) -> None:
        self._commanding.discard(task)
        self._command_slots.release()
        self._maybe_idle()

    async def _lifecycle_forever(self) -> None:
        while True:
            transition = await self._transitions.get()
            self._busy += 1
            try:
                await self._record(transition)
                if not self._transitions.qsize():
                    await self._write_alert_counts()
            except Exception:
                self._stats.action_errors += 1
                what = (transition.kind, transition.rule.id)
                log.exception("rules: handling %s of %s failed", *what)
            finally:
                self._busy -= 1
                self._maybe_idle()

    async def _record(self, transition: Transition) -> None:
        rule = transition.rule
        change: AlertChange | None
        if transition.kind == "raised":
            self._stats.raised += 1
            change = await self._alerts.record_raise(transition)
        else:
            self._stats.cleared += 1
            change = await self._alerts.record_clear(transition, rule.auto_close)
        if change is not None:
            await self._after(rule, transition.device, change, transition.kind, transition.at)

    async def _after(
        self,
        rule: Rule,
        device: DeviceFacts,
        change: AlertChange,
        event: str,
        at: datetime,
    ) -> None:
        await self.publish_change(change)
        for action in rule.actions:
            if event not in action.on:
                continue
            if isinstance(action, PublishActionSpec):
                await self._publish(action.publish, change.message())
            elif isinstance(action, WebhookActionSpec):
                self._queue_webhook(action, change.message())
            elif isinstance(action, MaintenanceActionSpec) and event == "raised":
                await self._to_maintenance(action, device, change, at)

    async def publish_change(self, change: AlertChange) -> None:
        """Publish an alert event on ``pharos/v1/alerts`` (also used by the API)."""
        await self._publish(ALERTS_TOPIC, change.message())

    async def _publish(self, topic: str, message: dict[str, object]) -> None:
        if self._publisher is None:
            return
        try:
            payload = json.dumps(message, ensure_ascii=False).encode()
            await self._publisher.publish(topic, payload, 1)
            self._stats.published += 1
        except Exception:
            self._stats.action_errors += 1
            log.exception("rules: publishing on %s failed", topic)

    def _commands(self, rule: Rule, transition: Transition, event: str) -> list[Awaitable[None]]:
        return [
            self._command(action, transition)
            for action in rule.actions
            if isinstance(action, CommandActionSpec) and event in action.on
        ]

    async def _command(self, action: CommandActionSpec, transition: Transition) -> None:
        if self._control is None:
            return
        device = transition.device
        kinds = [k.value for k in action.kinds]
        if action.target is CommandTarget.DEVICE:
            targets = [device.device_id]
        elif action.target is CommandTarget.DISTRICT:
            if device.district is None:
                return
            targets = self._catalog.members(district=device.district, kinds=kinds)
        else:
            targets = self._catalog.members(group=action.group, kinds=kinds)
        params = dict(action.params)
        if action.until_sunrise and action.command == "override":
            minutes = (self._sun.next_sunrise(transition.at) - transition.at).total_seconds() / 60
            params["minutes"] = max(1, min(24 * 60, math.ceil(minutes)))
        if not targets:
            return
        try:
            sent = await self._control.send_command(
                targets, action.command, params, reason=f"{transition.rule.id} {transition.kind}"
            )
            self._stats.commands += sent
        except Exception:
            self._stats.action_errors += 1
            log.exception("rules: %s to %d device(s) failed", action.command, len(targets))

    async def _to_maintenance(
        self, action: MaintenanceActionSpec, device: DeviceFacts, change: AlertChange, at: datetime
    ) -> None:
        await self._alerts.add_work_item(device.device_id, change.alert.id, action.maintenance, at)
        if self._maintenance is not None:
            await self._maintenance.to_maintenance(device.device_id, action.maintenance)

    def _queue_webhook(self, spec: WebhookActionSpec, body: dict[str, Any]) -> None:
        try:
            self._hooks.put_nowait(_Webhook(spec, body))
        except asyncio.QueueFull:
            self._stats.webhooks_dropped += 1
            log.error("rules: webhook queue full; %s not posted", spec.webhook)

    async def _webhooks_forever(self) -> None:
        while True:
            hook = await self._hooks.get()
            if self._webhooks is None:
                continue
            self._busy += 1
            try:
                await self._webhooks.post(hook.spec.webhook, hook.body, hook.spec.headers)
            except Exception:
                self._stats.action_errors += 1
                log.exception("rules: webhook %s failed", hook.spec.webhook)
            finally:
                self._busy -= 1
                self._maybe_idle()

    # -- the ticker -----------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        interval = min(self._settings.silence_check_s, self._settings.escalation_check_s)
        since_counts = 0.0
        while True:
            await self._clock.sleep(interval)
            since_counts += interval
            try:
                await self.tick(write_counts=since_counts >= _ALERTS_EVERY_S)
            except Exception:
                log.exception("rules: tick failed")
            if since_counts >= _ALERTS_EVERY_S:
                since_counts = 0.0

    async def tick(self, *, write_counts: bool = True) -> None:
        """Silence and escalation at the clock's now (the ticker calls it; tests too)."""
        self._busy += 1
        try:
            # Silence is judged once every batch received so far is evaluated: a device
            # whose readings still wait in the queue is not silent (its last reading
            # time and the clock's now belong to the same moment).
            if await self._caught_up():
                await self.handle(self.engine.tick(self._clock.now()))
            else:
                self._stats.silence_deferred += 1
            now = self._clock.now()
            for change in await self._alerts.escalate_due(now, self.rule_map()):
                self._stats.escalated += 1
                rule = self.rule_map().get(change.alert.rule_id)
                if rule is None:
                    continue
                facts = self._catalog.get(change.alert.device_id) or DeviceFacts(
                    change.alert.device_id, change.alert.kind or "", change.alert.district
                )
                transition = Transition("raised", rule, facts, now, change.alert.value, "")
                await asyncio.gather(*self._commands(rule, transition, "escalated"))
                await self._after(rule, facts, change, "escalated", now)
            if write_counts:
                await self._write_alert_counts()
        finally:
            self._busy -= 1
            self._maybe_idle()

    async def _caught_up(self) -> bool:
        """Until the evaluation queue is worked off (False: not within a tick's time)."""
        if not self._queue.qsize():
            return True
        interval = min(self._settings.silence_check_s, self._settings.escalation_check_s)
        try:
            async with asyncio.timeout(min(interval, 10.0)):  # wall time: the work itself
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def _write_alert_counts(self) -> None:
        if self._submit is None:
            return
        counts = await self._alerts.open_counts()
        keys = set(counts) | self._alert_keys
        self._alert_keys = set(counts)
        now = self._clock.now()
        points = [
            Point(
                "alerts",
                {"severity": severity, **({"district": district} if district else {})},
                {"open": counts.get((severity, district), 0)},
                now,
            )
            for severity, district in sorted(keys)
        ]
        if points:
            await self._submit_derived(points)
