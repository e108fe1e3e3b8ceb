"""One MQTT message in, typed values out: points, dead letters, a status or a state (no I/O).

``parse_message`` reads the topic, finds the device through a lookup function, and:

- ``telemetry``: parses the reading (plain or SenML, ``devices.wire.parse_reading``),
  checks each metric against the kind's catalogue (``validate_metrics``) and makes one
  ``Point`` per reading time: measurement = kind; tags = device_id, district, group
  (empty ones left out); fields = the valid metrics, plus ``seq`` (an integer) when the
  device sent one. A partly bad reading keeps its good metrics as a point, and each bad
  metric becomes a dead letter naming the metric and the reason.
- ``status``: ``online``/``offline`` (the Last Will says ``offline``) → ``StatusReport``.
- ``state``: the reported state → ``StateReport``.

Timestamps: no ``ts`` → the time the message was received. A ``ts`` further ahead
than ``max_future_s`` or older than ``max_past_s`` is a device clock gone wrong, not
bad data: the reading is kept at the received time with the field ``ts_replaced =
true`` (a flag on the point, not a dead letter, so no reading is lost and the
replaced ones can be counted). Several replaced times of one SenML pack keep their
spacing (the newest lands on the received time) so they stay distinct points.

Everything else becomes a ``DeadLetter`` (source ``mqtt``) with the device, topic,
payload, a reason naming the field, and ``details["class"]`` to count it by: a topic
outside the contract (``topic``), an unregistered device (``unknown_device``), a
payload that does not parse (``payload``), a bad metric (``metric``), a bad status
or state (``status``, ``state``). An empty payload on ``state`` or ``status`` is the
retained message being cleared, not input: it yields nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from devices.wire import (
    Channel,
    DeviceState,
    DeviceStatus,
    MetricError,
    PayloadError,
    Reading,
    parse_device_topic,
    parse_reading,
    validate_metrics,
)
from devices.wire.topics import DeviceTopic
from telemetry.ingest.directory import DeviceInfo
from telemetry.points import SEQ_FIELD, TS_REPLACED_FIELD, DeadLetter, FieldValue, Point

Lookup = Callable[[str], DeviceInfo | None]
TopicParser = Callable[[str], DeviceTopic | None]
SOURCE = "mqtt"
CHANNELS = (Channel.TELEMETRY, Channel.STATE, Channel.STATUS)
MAX_SEQ = 2**63 - 1  # InfluxDB integers are 64-bit


@dataclass(frozen=True, slots=True)
class TimestampPolicy:
    """How far a device's ``ts`` may stray from the received time before it is replaced."""

    max_future_s: float = 300.0
    max_past_s: float = 7 * 86_400.0
    _future: timedelta = field(init=False, repr=False, compare=False)
    _past: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Made once: this runs for every message.
        object.__setattr__(self, "_future", timedelta(seconds=self.max_future_s))
        object.__setattr__(self, "_past", timedelta(seconds=self.max_past_s))

    def window(self, received_at: datetime) -> tuple[datetime, datetime]:
        return received_at - self._past, received_at + self._future


@dataclass(frozen=True, slots=True)
class StatusReport:
    device_id: str
    status: DeviceStatus
    at: datetime


@dataclass(frozen=True, slots=True)
class StateReport:
    device_id: str
    state: DeviceState
    at: datetime


@dataclass(slots=True)
class ParsedTelemetry:
    """What one message yields; any mix of points and dead letters, or a status/state."""

    points: list[Point] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    status: StatusReport | None = None
    state: StateReport | None = None


def parse_message(
    topic: str,
    payload: bytes,
    received_at: datetime,
    lookup: Lookup,
    policy: TimestampPolicy | None = None,
    topics: TopicParser = parse_device_topic,
) -> ParsedTelemetry:
    """The typed values of one message; never raises for bad input (it dead-letters it).

    ``topics`` parses the topic; ingest passes a cached ``parse_device_topic`` (topics
    repeat: a few per device).
    """
    policy = policy or TimestampPolicy()
    letters = _Letters(topic, payload, received_at)
    where = topics(topic)
    if where is None or where.channel not in CHANNELS:
        reason = "topic: not a device telemetry, state or status topic under pharos/v1/dev/"
        return letters.only(reason, "topic")
    device_id = where.device_id
    letters.device_id = device_id
    device = lookup(device_id)
    if device is None:
        return letters.only(f"device: {device_id!r} is not in the registry", "unknown_device")
    if where.channel is Channel.TELEMETRY:
        return _telemetry(device, payload, received_at, policy, letters)
    if not payload:
        return ParsedTelemetry()  # a retained message being cleared
    if where.channel is Channel.STATUS:
        return _status(device_id, payload, received_at, letters)
    return _state(device_id, payload, received_at, policy, letters)


def device_id_of(topic: str, topics: TopicParser = parse_device_topic) -> str | None:
    """The device a topic belongs to, or None (used to look devices up first)."""
    where = topics(topic)
    return where.device_id if where is not None else None


# -- telemetry ------------------------------------------------------------------------------


def _telemetry(
    device: DeviceInfo,
    payload: bytes,
    received_at: datetime,
    policy: TimestampPolicy,
    letters: _Letters,
) -> ParsedTelemetry:
    fast = plain_reading_point(device, payload, received_at, policy)
    if fast is not None:
        return ParsedTelemetry(points=[fast])
    return _telemetry_checked(device, payload, received_at, policy, letters)


def _telemetry_checked(
    device: DeviceInfo,
    payload: bytes,
    received_at: datetime,
    policy: TimestampPolicy,
    letters: _Letters,
) -> ParsedTelemetry:
    """The general path: every form of reading, every error named."""
    try:
        readings = parse_reading(payload, device.device_id)
    except PayloadError as exc:
        return letters.only(str(exc), "payload", field=exc.field)
    except (OverflowError, OSError, ValueError) as exc:
        # parse_reading lets a time beyond the platform's range escape as these.
        return letters.only(f"ts: not a usable time ({exc})", "payload", field="ts")
    result = ParsedTelemetry()
    times = reading_times(readings, received_at, policy)
    for reading, (when, replaced) in zip(readings, times, strict=True):
        try:
            good, errors = validate_metrics(device.kind, reading.metrics)
        except (KeyError, ValueError) as exc:  # a kind the catalogue does not know
            return letters.only(f"kind: {device.kind!r} has no metric catalogue ({exc})", "kind")
        result.dead_letters += [letters.metric(error) for error in errors]
        seq = reading.seq
        if seq is not None and seq > MAX_SEQ:
            reason = f"seq: {seq} does not fit a 64-bit integer field"
            result.dead_letters.append(letters.letter(reason, "payload", field="seq"))
            seq = None
        if good:
            result.points.append(_point(device, good, seq, when, replaced))
    return result


# -- speed: the common reading, without the general path's cost ----------------------------

_PLAIN_KEYS = frozenset({"ts", "seq", "metrics"})


def plain_reading_point(
    device: DeviceInfo, payload: bytes, received_at: datetime, policy: TimestampPolicy
) -> Point | None:
    """The point of a plain reading that is entirely good, or None for the general path.

    Most messages are one plain reading (epoch ``ts`` in the window, whole ``seq``,
    known metrics in range). For those this gives the point ``_telemetry`` would give,
    at a fraction of the cost (orjson, no pydantic model); anything else (SenML, an ISO
    time, a bad or unknown metric, a stray ``ts``, a bad payload) returns None and takes
    the general path, which names every error. A speed path only: it judges nothing.
    """
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict or not _PLAIN_KEYS.issuperset(document):
        return None
    metrics = document.get("metrics")
    seq = document.get("seq")
    ts = document.get("ts")
    if type(metrics) is not dict or not metrics:
        return None
    if seq is not None and (type(seq) is not int or not 0 <= seq <= MAX_SEQ):
        return None
    if ts is None:
        when = received_at
    else:
        if type(ts) is not float and type(ts) is not int:
            return None
        earliest, latest = policy.window(received_at)
        # Epoch seconds inside the window are ordinary finite numbers: exact as
        # datetime.fromtimestamp reads them (as the general path does).
        low, high = earliest.timestamp(), latest.timestamp()
        if not low <= ts <= high:
            return None
        when = datetime.fromtimestamp(float(ts), tz=UTC)
        if not earliest <= when <= latest:
            return None
    try:
        good, errors = validate_metrics(device.kind, metrics)
    except (KeyError, ValueError):
        return None
    if errors or not good:
        return None
    fields: dict[str, FieldValue] = dict(good)
    if seq is not None:
        fields[SEQ_FIELD] = seq
    return Point(device.kind, device.tags(), fields, when)


def reading_times(
    readings: Sequence[Reading], received_at: datetime, policy: TimestampPolicy
) -> list[tuple[datetime, bool]]:
    """(time, replaced) per reading, by the rules of the module docstring."""
    earliest, latest = policy.window(received_at)
    if len(readings) == 1:  # the plain form: the common case, kept short
        ts = readings[0].ts
        if ts is None:
            return [(received_at, False)]
        return [(ts, False) if earliest <= ts <= latest else (received_at, True)]
    strays = [r.ts for r in readings if r.ts is not None and not earliest <= r.ts <= latest]
    newest_stray = max(strays) if strays else received_at
    times: list[tuple[datetime, bool]] = []
    for reading in readings:
        ts = reading.ts
        if ts is None:
            times.append((received_at, False))
        elif earliest <= ts <= latest:
            times.append((ts, False))
        else:
            times.append((_shifted(received_at, newest_stray - ts), True))
    return times


def _shifted(received_at: datetime, before: timedelta) -> datetime:
    """``before`` ahead of the received time, or the received time if out of range."""
    try:
        return received_at - before
    except OverflowError:
        return received_at


def _point(
    device: DeviceInfo,
    good: dict[str, float | bool],
    seq: int | None,
    when: datetime,
    replaced: bool,
) -> Point:
    fields: dict[str, FieldValue] = dict(good)
    if seq is not None:
        fields[SEQ_FIELD] = seq
    if replaced:
        fields[TS_REPLACED_FIELD] = True
    return Point(device.kind, device.tags(), fields, when)


# -- status and state -----------------------------------------------------------------------


def _status(
    device_id: str, payload: bytes, received_at: datetime, letters: _Letters
) -> ParsedTelemetry:
    try:
        status = DeviceStatus.parse(payload)
    except PayloadError as exc:
        return letters.only(str(exc), "status", field=exc.field)
    return ParsedTelemetry(status=StatusReport(device_id, status, received_at))


def _state(
    device_id: str,
    payload: bytes,
    received_at: datetime,
    policy: TimestampPolicy,
    letters: _Letters,
) -> ParsedTelemetry:
    try:
        state = DeviceState.parse(payload)
    except PayloadError as exc:
        return letters.only(str(exc), "state", field=exc.field)
    earliest, latest = policy.window(received_at)
    at = state.ts if state.ts is not None and earliest <= state.ts <= latest else received_at
    return ParsedTelemetry(state=StateReport(device_id, state, at))


# -- dead letters ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Letters:
    """Makes the dead letters of one message (same topic, payload and time)."""

    topic: str
    payload: bytes
    received_at: datetime
    device_id: str | None = None

    def letter(self, reason: str, kind: str, **details: str) -> DeadLetter:
        return DeadLetter(
            received_at=self.received_at,
            source=SOURCE,
            reason=reason,
            device_id=self.device_id,
            topic=self.topic,
            payload=self.payload,
            details={"class": kind, **details},
        )

    def only(self, reason: str, kind: str, **details: str) -> ParsedTelemetry:
        return ParsedTelemetry(dead_letters=[self.letter(reason, kind, **details)])

    def metric(self, error: MetricError) -> DeadLetter:
        return self.letter(f"{error.metric}: {error.reason}", "metric", metric=error.metric)
