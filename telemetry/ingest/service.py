"""The MQTT ingest service: broker → parse → durable storage, then the acknowledgement.

``IngestService`` owns, in one task group: the MQTT session (``MqttSubscriber``), the
batcher and the acker. The path of a message:

1. The transport hands each TCP read's messages to ``_on_messages``, which queues
   them in the inbox (bounded: past ``max_queued`` the socket is no longer read, so
   TCP pushes back on the broker, which holds the rest in its queue).
2. The batcher takes what has arrived (up to ``batch_size`` messages, one connection's
   at a time), looks up devices it does not know, parses (``parsing.parse_message``)
   and starts a task storing the unit: points to the sink (``InfluxWriter.submit`` or
   the embedded store), dead letters to the dead-letter store, status and state to
   the device twin (flushed to the database before the acknowledgement), points to
   the twin too (last values, first reading → commissioning). At most
   ``max_in_flight`` units are being stored at once.
3. The acker acknowledges each unit's QoS 1 messages once the unit is stored, in the
   order the messages arrived (MQTT wants PUBACKs in order), so a crash before that
   point leaves them with the broker, which sends them again: duplicates land on the
   same point (same device and time), nothing is lost.

No message can stop the worker: parsing is bounded (``parsing``), and should it raise
anyway (a bug), that one message becomes a dead letter ``internal: <ExceptionType>``
(logged with its traceback), is acknowledged once the letter is stored, and the
rest of its unit goes on. Dead letters pass a per-device rate limit
(``DeadLetterLimiter``) before the store, and are counted per reason class in
``TelemetryMetrics`` (``pharos_dead_letters_total{reason=...}``) whether stored or
counted by the limit. A reading without ``ts`` takes the time it was first received
(``FirstSeenTimes``), so a redelivered copy lands on the same point.

Failures while storing are retried with back-off and never acknowledged meanwhile:
``SpoolFull`` (InfluxDB away and the spool full) stops the flow — units stay in
flight, the batcher waits for a free slot, the inbox fills, reading pauses and the
broker keeps the messages — until the spool drains. ``InfluxConfigurationError``
(and the broker refusing this account) is not retried: the service stops with it.

Stopping (leaving ``async with``) stops reading, stores and acknowledges everything
already received, then disconnects (within ``stop_timeout_s``; what is not stored
by then is left unacknowledged with the broker).

A reading's lag is the time from its reading time (the device's ``ts``, or when it
was received) to the moment it was stored, both on the process's clock (``clock``);
the newest unit's largest lag goes to ``TelemetryMetrics.lag_seconds`` and recent
lags to ``stats.lag_p99_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from devices.wire import Channel, DeviceState, DeviceStatus
from devices.wire.topics import parse_device_topic, subscription
from pharos_core.clock import Clock, SystemClock
from pharos_core.points import PointSink
from telemetry.deadletters import DeadLetterLimiter, RateLimit, reason_class
from telemetry.influx.client import InfluxConfigurationError
from telemetry.ingest.directory import DeviceDirectory
from telemetry.ingest.mqtt import MqttOptions, MqttSubscriber
from telemetry.ingest.mqtt_codec import InboundMessage
from telemetry.ingest.parsing import (
    FirstSeenTimes,
    StateReport,
    StatusReport,
    TimestampPolicy,
    device_id_of,
    internal_letter,
    parse_message,
)
from telemetry.metrics import TelemetryMetrics
from telemetry.points import DeadLetter, DeadLetterSink, Point
from telemetry.spool import SpoolFull

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PARSE_SLICE = 500  # messages parsed between two yields to the event loop
_TOPIC_CACHE = 300_000  # parsed topics kept: three per device of a 100,000-device fleet
_TELEMETRY_SUFFIX = "/" + Channel.TELEMETRY.value


class TwinSink(Protocol):
    """What ingest needs of ``telemetry.twin.DeviceTwinStore``."""

    async def record_status(self, device_id: str, status: DeviceStatus, at: datetime) -> None: ...
    async def record_state(self, device_id: str, state: DeviceState, at: datetime) -> None: ...
    async def record_points(self, points: Sequence[Point]) -> None: ...
    async def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    """What one unit of messages yielded, handed to observers before it is stored."""

    points: Sequence[Point]
    statuses: Sequence[StatusReport]
    states: Sequence[StateReport]


class IngestObserver(Protocol):
    """Sees every parsed batch before storage (the rules engine evaluates here).

    Called on the event loop: it must be quick and must not block (queue the work,
    bounded). An exception is logged and counted, never stops ingest.
    """

    def observe(self, batch: ParsedBatch) -> None: ...


class IngestSettingsLike(Protocol):
    """The fields of ``pharos.settings.TelemetrySettings`` ingest reads."""

    @property
    def batch_size(self) -> int: ...
    @property
    def share_group(self) -> str | None: ...
    @property
    def max_future_s(self) -> float: ...
    @property
    def max_past_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """How ingest batches and holds back. See the module docstring."""

    batch_size: int = 5000
    max_in_flight: int = 8
    max_queued: int = 20_000
    share_group: str | None = None
    timestamps: TimestampPolicy = field(default_factory=TimestampPolicy)
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    stop_timeout_s: float = 30.0
    stats_interval_s: float | None = 60.0
    lag_samples: int = 50_000
    dead_letter_limit: RateLimit = field(default_factory=RateLimit)
    first_seen_entries: int = 200_000

    @classmethod
    def from_settings(cls, telemetry: IngestSettingsLike, **overrides: object) -> IngestOptions:
        options = cls(
            batch_size=telemetry.batch_size,
            share_group=telemetry.share_group,
            timestamps=TimestampPolicy(telemetry.max_future_s, telemetry.max_past_s),
        )
        return replace(options, **overrides)  # type: ignore[arg-type]


def subscriptions(share_group: str | None) -> list[str]:
    """The topic filters of one ingest worker.

    With a share group, telemetry is a shared subscription (``$share/<group>/...``): the
    broker gives each reading to one worker of the group. ``state`` and ``status`` stay
    plain subscriptions on every worker: they are few, recording them twice is harmless
    (the twin keeps the newest), and MQTT 5 never sends retained messages to a shared
    subscription, so only a plain one gets each device's current state when a worker
    starts. The group name must not be guessable: Mosquitto's ACL never checks
    SUBSCRIBE, so a device that joins the group takes a share of the readings, which
    its read rights then drop (see mosquitto/README.md).
    """
    telemetry = subscription(Channel.TELEMETRY)
    if share_group:
        telemetry = f"$share/{share_group}/{telemetry}"
    return [telemetry, subscription(Channel.STATE), subscription(Channel.STATUS)]


@dataclass(slots=True)
class IngestStats:
    """Counts since start (for tests, the benchmark and the periodic log line)."""

    messages: int = 0  # MQTT messages received (every channel)
    readings: int = 0  # telemetry messages received
    points: int = 0  # points stored (or spooled)
    dead_letters: int = 0  # stored (summaries of rate-limited bursts included)
    dead_letters_suppressed: int = 0  # counted by the per-device rate limit instead
    internal_errors: int = 0  # messages whose parsing raised (dead-lettered as internal)
    statuses: int = 0
    states: int = 0
    observer_errors: int = 0  # observers (the rules engine) that raised
    acked: int = 0  # QoS 1 messages acknowledged
    unacked_dropped: int = 0  # stored, but their connection was gone (the broker resends)
    queued: int = 0  # messages in the inbox now
    in_flight: int = 0  # units being stored now
    reading_paused: bool = False
    lag_last_s: float = 0.0
    lag_p50_s: float = 0.0
    lag_p99_s: float = 0.0


@dataclass(slots=True)
class _Unit:
    """Messages of one connection, parsed, on their way to storage."""

    connection: int
    mids: list[int] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    statuses: list[StatusReport] = field(default_factory=list)
    states: list[StateReport] = field(default_factory=list)
    newest: datetime = _EPOCH  # the last message's receive time
    stored: asyncio.Event = field(default_factory=asyncio.Event)


class _Lags:
    """The most recent lags (bounded), for percentiles on demand."""

    def __init__(self, size: int) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.last = 0.0

    def add(self, points: Sequence[Point], now: float) -> None:
        if not points:
            return
        lags = [now - point.time.timestamp() for point in points]
        self._samples.extend(lags)
        self.last = max(lags)

    def percentile(self, fraction: float) -> float:
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class IngestService:
    """MQTT → durable storage, acknowledged only after; an async context manager."""

    def __init__(
        self,
        mqtt: MqttOptions,
        *,
        submit: PointSink,
        dead_letters: DeadLetterSink,
        twin: TwinSink,
        directory: DeviceDirectory,
        metrics: TelemetryMetrics | None = None,
        options: IngestOptions | None = None,
        observers: Sequence[IngestObserver] = (),
        clock: Clock | None = None,
    ) -> None:
        self._options = options or IngestOptions()
        # The process's clock: received times and lags are on it (the demo's simulated
        # time, not the wall's). The transport stamps messages with the wall clock, so
        # a clock other than the system's is applied as an offset taken per parse.
        self._clock = clock
        self._on_wall = clock is None or isinstance(clock, SystemClock)
        self._observers = tuple(observers)
        if self._options.batch_size < 1 or self._options.max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be at least 1")
        self._submit = submit
        self._dead_letters = dead_letters
        self._twin = twin
        self._directory = directory
        self._metrics = metrics or TelemetryMetrics()
        self._subscriber = MqttSubscriber(
            mqtt, subscriptions(self._options.share_group), self._on_messages
        )
        # Topics repeat (three per device): parse each once; bounded by the fleet's size.
        self._topics = functools.lru_cache(maxsize=_TOPIC_CACHE)(parse_device_topic)
        self._inbox: deque[InboundMessage] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self._options.max_in_flight)
        self._ack_queue: asyncio.Queue[_Unit | None] = asyncio.Queue(
            self._options.max_in_flight + 1
        )
        self._stats = IngestStats()
        self._limiter = DeadLetterLimiter(self._options.dead_letter_limit)
        self._first_seen = FirstSeenTimes(self._options.first_seen_entries)
        self._lags = _Lags(self._options.lag_samples)
        self._stopping = False
        self._paused = False
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # all but the MQTT session's
        self._acker: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        group.create_task(self._subscriber.run(), name="ingest-mqtt")
        self._start(self._run_batcher(), "ingest-batcher")
        self._acker = self._start(self._run_acker(), "ingest-acker")
        if self._options.stats_interval_s:
            self._start(self._log_stats(self._options.stats_interval_s), "ingest-stats")
        return self

    def _start(self, work: Coroutine[object, object, None], name: str) -> asyncio.Task[None]:
        assert self._group is not None
        try:
            task = self._group.create_task(work, name=name)
        except RuntimeError:  # the group is shutting down (Python 3.11 leaves `work` unclosed)
            work.close()
            raise
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group = self._group
        if group is None or self._done.is_set():
            return
        # The group stays open while stopping gracefully: the batcher still starts a
        # store task per unit left in the inbox (clearing it first made that fail, and
        # the failure cancelled this very stop).
        if exc is None:
            await self._stop_gracefully()
        else:
            self._subscriber.stop()  # leaving on an error: nothing more is acknowledged
        self._done.set()
        try:
            await group.__aexit__(exc_type, exc, tb)
        finally:
            self._group = None

    async def _stop_gracefully(self) -> None:
        self._begin_stop()
        assert self._acker is not None
        _, pending = await asyncio.wait({self._acker}, timeout=self._options.stop_timeout_s)
        if pending:
            log.error(
                "ingest: storage did not finish within %.0f s; the unacknowledged messages "
                "stay with the broker",
                self._options.stop_timeout_s,
            )
            for task in list(self._tasks):
                task.cancel()
        else:
            await self._flush_summaries()
        self._subscriber.stop()

    async def _flush_summaries(self) -> None:
        """Store the counts of bursts still being rate-limited: they end with the service."""
        summaries = self._limiter.flush()
        if not summaries:
            return
        try:
            async with asyncio.timeout(self._options.stop_timeout_s):
                await self._dead_letters.put(summaries)
            self._stats.dead_letters += len(summaries)
        except Exception:
            log.exception("ingest: %d rate-limit summaries not stored", len(summaries))

    def _begin_stop(self) -> None:
        self._stopping = True
        self._subscriber.pause_reading()
        self._arrived.set()

    async def wait_connected(self) -> None:
        """Until the session is subscribed (tests, the CLI's log line)."""
        await self._subscriber.wait_connected()

    @property
    def metrics(self) -> TelemetryMetrics:
        return self._metrics

    @property
    def stats(self) -> IngestStats:
        """A snapshot, with lag percentiles computed now."""
        stats = IngestStats(**asdict(self._stats))
        stats.queued = len(self._inbox)
        stats.reading_paused = self._paused
        stats.lag_last_s = self._lags.last
        stats.lag_p50_s = self._lags.percentile(0.50)
        stats.lag_p99_s = self._lags.percentile(0.99)
        return stats

    # -- receiving (the transport's callback) ---------------------------------------------

    def _on_messages(self, messages: list[InboundMessage]) -> None:
        if self._stopping:
            return  # not acknowledged: the broker sends them again to the next session
        self._inbox.extend(messages)
        self._stats.messages += len(messages)
        self._arrived.set()
        if not self._paused and len(self._inbox) >= self._options.max_queued:
            self._paused = True
            self._subscriber.pause_reading()

    def _maybe_resume(self) -> None:
        low_water = self._options.max_queued // 2
        if self._paused and not self._stopping and len(self._inbox) <= low_water:
            self._paused = False
            self._subscriber.resume_reading()

    # -- batching and parsing -------------------------------------------------------------

    async def _run_batcher(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._inbox:
                await self._slots.acquire()
                unit = await self._next_unit()
                self._stats.in_flight += 1
                self._start(self._store(unit), "ingest-store")
                await self._ack_queue.put(unit)
            if self._stopping:
                await self._ack_queue.put(None)
                return

    async def _next_unit(self) -> _Unit:
        taken = self._take()
        self._maybe_resume()
        ids = {device_id_of(message.topic, self._topics) for message in taken}
        unknown = {i for i in ids if i is not None and self._directory.get(i) is None}
        if unknown:
            # A device registered a moment ago is found before its reading is judged.
            await self._retrying("device lookup", self._directory.lookup, unknown)
        unit = _Unit(taken[0].connection)
        for start in range(0, len(taken), _PARSE_SLICE):
            if start:
                await asyncio.sleep(0)  # let the transport read meanwhile
            self._parse_into(unit, taken[start : start + _PARSE_SLICE])
        return unit

    def _take(self) -> list[InboundMessage]:
        """Up to ``batch_size`` queued messages, all of the first one's connection."""
        inbox = self._inbox
        connection = inbox[0].connection
        taken: list[InboundMessage] = []
        while inbox and len(taken) < self._options.batch_size:
            if inbox[0].connection != connection:
                break
            taken.append(inbox.popleft())
        return taken

    def _parse_into(self, unit: _Unit, messages: list[InboundMessage]) -> None:
        policy = self._options.timestamps
        lookup = self._directory.get
        readings = 0
        epoch = _EPOCH + self._clock_offset()
        for message in messages:
            if message.qos:
                unit.mids.append(message.mid)
            if message.topic.endswith(_TELEMETRY_SUFFIX):
                readings += 1
            received_at = epoch + timedelta(microseconds=message.received_us)
            try:
                parsed = parse_message(
                    message.topic,
                    message.payload,
                    received_at,
                    lookup,
                    policy,
                    self._topics,
                    self._first_seen,
                    message.dup,
                )
            except Exception as exc:  # a bug: this message is dead-lettered, not the worker
                unit.letters.append(self._internal(message, received_at, exc))
                continue
            finally:
                unit.newest = received_at
            unit.points += parsed.points
            unit.letters += parsed.dead_letters
            if parsed.status is not None:
                unit.statuses.append(parsed.status)
            if parsed.state is not None:
                unit.states.append(parsed.state)
        self._stats.readings += readings
        self._metrics.received += readings
        self._notify(unit)

    def _clock_offset(self) -> timedelta:
        """How far the process's clock is from the wall clock the transport stamps with."""
        if self._on_wall or self._clock is None:
            return timedelta(0)
        return self._clock.now() - datetime.fromtimestamp(time.time(), UTC)

    def _now_s(self) -> float:
        """Now on the process's clock, seconds since the epoch (for lags)."""
        if self._on_wall or self._clock is None:
            return time.time()
        return self._clock.now().timestamp()

    def _internal(
        self, message: InboundMessage, received_at: datetime, exc: Exception
    ) -> DeadLetter:
        self._stats.internal_errors += 1
        n = self._stats.internal_errors
        if n <= 10 or n % 1000 == 0:  # a flood of one bug must not flood the log
            log.error(
                "ingest: parsing a message on %r raised (%d so far); dead-lettered",
                message.topic[:200],
                n,
                exc_info=exc,
            )
        return internal_letter(message.topic, message.payload, received_at, exc)

    def _notify(self, unit: _Unit) -> None:
        if not self._observers or not (unit.points or unit.statuses or unit.states):
            return
        batch = ParsedBatch(tuple(unit.points), tuple(unit.statuses), tuple(unit.states))
        for observer in self._observers:
            try:
                observer.observe(batch)
            except Exception:  # an observer's bug must not stop storage
                self._stats.observer_errors += 1
                log.exception("ingest observer %r failed", observer)

    # -- storing --------------------------------------------------------------------------

    async def _store(self, unit: _Unit) -> None:
        if unit.points:
            await self._retrying("points", self._submit, unit.points)
            self._lags.add(unit.points, self._now_s())
            self._metrics.lag_seconds = self._lags.last
            self._stats.points += len(unit.points)
        if unit.letters or self._limiter.suppressing:
            await self._store_letters(unit.letters, unit.newest)
        await self._record_twin(unit)
        unit.stored.set()

    async def _store_letters(self, letters: Sequence[DeadLetter], now: datetime) -> None:
        """Count each letter, store those the per-device limit admits (durably).

        Also the summaries of rate-limited bursts that ended by ``now``.
        """
        metrics = self._metrics
        for letter in letters:
            metrics.count_dead_letter(letter.details.get("classes") or reason_class(letter))
        metrics.invalid += len(letters)
        before = self._limiter.suppressed
        kept = self._limiter.admit(letters) if letters else self._limiter.due(now)
        suppressed = self._limiter.suppressed - before
        self._stats.dead_letters_suppressed += suppressed
        metrics.dead_letters_suppressed += suppressed
        if kept:
            await self._retrying("dead letters", self._dead_letters.put, kept)
            self._stats.dead_letters += len(kept)
            metrics.dead_letters_pruned = getattr(self._dead_letters, "pruned", 0)

    async def _record_twin(self, unit: _Unit) -> None:
        for status in unit.statuses:
            await self._twin.record_status(status.device_id, status.status, status.at)
        for state in unit.states:
            await self._twin.record_state(state.device_id, state.state, state.at)
        if unit.points:
            # Last values and the first reading: the twin writes them within its
            # interval; they are rebuilt from the readings, so no wait for them here.
            await self._twin.record_points(unit.points)
        if unit.statuses or unit.states:
            # A status or state is only in this message: stored before it is acked.
            await self._retrying("device twin", self._twin.flush)
            self._stats.statuses += len(unit.statuses)
            self._stats.states += len(unit.states)

    async def _retrying(
        self, what: str, call: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        """Await ``call`` until it succeeds; configuration errors are not retried."""
        delay = self._options.retry_initial_s
        failures = 0
        while True:
            try:
                await call(*args)
                if failures:
                    log.info("ingest: %s stored after %d failed attempt(s)", what, failures)
                return
            except InfluxConfigurationError:
                raise
            except SpoolFull as exc:
                # Back-pressure, not a fault: nothing is acked, so the broker holds on.
                if not failures:
                    log.warning("ingest: %s wait: %s; not acknowledging meanwhile", what, exc)
            except Exception:
                log.exception("ingest: storing %s failed; retrying in %.1f s", what, delay)
            failures += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._options.retry_max_s)

    # -- acknowledging --------------------------------------------------------------------

    async def _run_acker(self) -> None:
        while True:
            unit = await self._ack_queue.get()
            try:
                if unit is None:
                    return
                await unit.stored.wait()
                if self._subscriber.ack(unit.connection, unit.mids):
                    self._stats.acked += len(unit.mids)
                elif unit.mids:
                    self._stats.unacked_dropped += len(unit.mids)
                self._stats.in_flight -= 1
                self._slots.release()
            finally:
                self._ack_queue.task_done()

    # -- reporting ------------------------------------------------------------------------

    async def _log_stats(self, interval_s: float) -> None:
        while not self._done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._done.wait()
            log.info("ingest stats %s", json.dumps(asdict(self.stats)))


def counted(write: PointSink, metrics: TelemetryMetrics) -> PointSink:
    """``write`` that counts what it stored in ``metrics.written``.

    For a sink that does not count itself: the embedded store (the InfluxDB writer counts
    what InfluxDB took and what it spooled).
    """

    async def submit(points: Sequence[Point]) -> None:
        await write(points)
        metrics.written += len(points)

    return submit
