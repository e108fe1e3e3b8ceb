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

Timestamps: no ``ts`` → the time the message was FIRST received (``FirstSeenTimes``),
so a redelivered copy lands on the same point (same device, measurement and time)
instead of becoming a second one. A ``ts`` further ahead
than ``max_future_s`` or older than ``max_past_s`` is a device clock gone wrong, not
bad data: the reading is kept at the received time with the field ``ts_replaced =
true`` (a flag on the point, not a dead letter, so no reading is lost and the
replaced ones can be counted). Several replaced times of one SenML pack keep their
spacing (the newest lands on the received time) so they stay distinct points.

Everything else becomes a ``DeadLetter`` (source ``mqtt``) with the device, topic,
payload, a reason naming the field, and ``details["class"]`` to count it by: a topic
outside the contract (``topic``), an unregistered device (``unknown_device``), a
payload that does not parse (``payload``), a bad metric (``metric``), a bad status
or state (``status``, ``state``). A message yields at most ONE dead letter holding all
its reasons (``reason`` joins them with ``; ``, the first ``MAX_REASONS`` of them, each
cut to ``REASON_CHARS``; ``details["reasons"]`` says how many, ``details["classes"]``
which classes, ``details["metric"]`` which metrics): 20,000 unknown metric names are
one letter, not 20,000 copies of the payload. An empty payload on ``state`` or
``status`` is the retained message being cleared, not input: it yields nothing.

Decoding is bounded (``devices.wire.payloads``: size, depth, number length, metric
count), so bad input ends as ``PayloadError``; ingest still guards each message
against anything unexpected (``internal_letter``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from devices.wire import (
    Channel,
    DeviceState,
    DeviceStatus,
    PayloadError,
    Reading,
    parse_device_topic,
    parse_reading,
    validate_metrics,
)
from devices.wire.payloads import MAX_PAYLOAD_BYTES
from devices.wire.topics import DeviceTopic
from telemetry.ingest.directory import DeviceInfo
from telemetry.points import SEQ_FIELD, TS_REPLACED_FIELD, DeadLetter, FieldValue, Point

Lookup = Callable[[str], DeviceInfo | None]
TopicParser = Callable[[str], DeviceTopic | None]
SOURCE = "mqtt"
CHANNELS = (Channel.TELEMETRY, Channel.STATE, Channel.STATUS)
MAX_SEQ = 2**63 - 1  # InfluxDB integers are 64-bit
MAX_REASONS = 20  # reasons spelled out in one letter; the rest are counted
REASON_CHARS = 300


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


class FirstSeenTimes:
    """When a ts-less reading was first received, so its redelivery gets that time again.

    A reading without ``ts`` has nothing of its own to put on the time axis, and its
    receive time changes when the broker sends it again (an acknowledgement lost across
    a broker restart or a reconnect). What a redelivery keeps is the message itself: the
    device, its ``seq`` and the payload bytes. So the key is (device, seq, payload hash)
    and the value the first receive time, in one least-recently-used map of
    ``max_entries`` (200,000 entries ≈ 40 MB, several minutes of a 100,000-device fleet;
    a redelivery comes within the broker's unacknowledged window, far less than that).

    - With ``seq``: a copy within ``window_s`` of the first is the same reading. The
      payload is part of the key so a device that restarts its ``seq`` at 0 with other
      values gets its own point; the window so a repeat hours later is a new reading.
    - Without ``seq``: identical bytes are also what a device sends every minute when
      nothing changes, so only a message the broker marks as sent before (MQTT's DUP
      flag) is looked up; every other one is remembered under its receive time.

    The map lives in the ingest process: a redelivery after ingest itself restarts (the
    map empty) still gets a new time when it has no ``ts`` — devices that send ``ts``
    (the simulator does) are idempotent across everything. The MQTT packet identifier
    is no identity: it is per session and reused as soon as it is acknowledged.
    """

    def __init__(self, max_entries: int = 200_000, window_s: float = 3600.0) -> None:
        self._times: OrderedDict[tuple[str, int | None, bytes], datetime] = OrderedDict()
        self._max = max_entries
        self._window = timedelta(seconds=window_s)

    def __len__(self) -> int:
        return len(self._times)

    def time_of(
        self,
        device_id: str,
        seq: int | None,
        payload: bytes,
        received_at: datetime,
        redelivered: bool,
    ) -> datetime:
        key = (device_id, seq, hashlib.blake2b(payload, digest_size=16).digest())
        times = self._times
        if seq is not None or redelivered:
            first = times.get(key)
            if first is not None and timedelta(0) <= received_at - first <= self._window:
                times.move_to_end(key)
                return first
        times[key] = received_at
        times.move_to_end(key)
        if len(times) > self._max:
            times.popitem(last=False)
        return received_at


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
    first_seen: FirstSeenTimes | None = None,
    redelivered: bool = False,
) -> ParsedTelemetry:
    """The typed values of one message; never raises for bad input (it dead-letters it).

    ``topics`` parses the topic; ingest passes a cached ``parse_device_topic`` (topics
    repeat: a few per device). ``first_seen`` gives ts-less readings the time they were
    first received (without it: this receipt's time); ``redelivered`` is MQTT's DUP.
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
        if first_seen is not None:
            return _telemetry(
                device, payload, received_at, policy, letters, first_seen, redelivered
            )
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
    first_seen: FirstSeenTimes | None = None,
    redelivered: bool = False,
) -> ParsedTelemetry:
    fast = plain_reading_point(device, payload, received_at, policy)
    if fast is not None:
        return ParsedTelemetry(points=[fast])
    return _telemetry_checked(
        device, payload, received_at, policy, letters, first_seen, redelivered
    )


def _telemetry_checked(
    device: DeviceInfo,
    payload: bytes,
    received_at: datetime,
    policy: TimestampPolicy,
    letters: _Letters,
    first_seen: FirstSeenTimes | None,
    redelivered: bool,
) -> ParsedTelemetry:
    """The general path: every form of reading, every error named."""
    try:
        readings = parse_reading(payload, device.device_id)
    except PayloadError as exc:
        return letters.only(str(exc), "payload", field=exc.field)
    except (OverflowError, OSError, ValueError) as exc:
        # Decoding raises only PayloadError; what is left is a time beyond the
        # platform's range, which datetime lets escape as these.
        return letters.only(f"ts: not a usable time ({exc})", "payload", field="ts")
    result = ParsedTelemetry()
    if first_seen is not None and _takes_received_time(readings, received_at, policy):
        # A SenML pack has no seq: its payload (and DUP) are its identity.
        seq = readings[0].seq if len(readings) == 1 else None
        received_at = first_seen.time_of(device.device_id, seq, payload, received_at, redelivered)
    times = reading_times(readings, received_at, policy)
    for reading, (when, replaced) in zip(readings, times, strict=True):
        try:
            good, errors = validate_metrics(device.kind, reading.metrics)
        except (KeyError, ValueError) as exc:  # a kind the catalogue does not know
            return letters.only(f"kind: {device.kind!r} has no metric catalogue ({exc})", "kind")
        for error in errors:
            letters.add(f"{error.metric}: {error.reason}", "metric", metric=error.metric)
        seq = reading.seq
        if seq is not None and seq > MAX_SEQ:
            letters.add(f"seq: {seq} does not fit a 64-bit integer field", "payload", "seq")
            seq = None
        if good:
            result.points.append(_point(device, good, seq, when, replaced))
    result.dead_letters = letters.collected()
    return result


def _takes_received_time(
    readings: Sequence[Reading], received_at: datetime, policy: TimestampPolicy
) -> bool:
    """Whether a reading's time would come from the receipt (no ts, or one replaced)."""
    earliest, latest = policy.window(received_at)
    return any(r.ts is None or not earliest <= r.ts <= latest for r in readings)


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
    if len(payload) > MAX_PAYLOAD_BYTES:  # the general path names the bound
        return None
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
    # A reading without ts takes its first receive time (idempotent redelivery): the
    # general path keeps that memory.
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
    """Collects the reasons of one message into its one dead letter."""

    topic: str
    payload: bytes
    received_at: datetime
    device_id: str | None = None
    reasons: list[str] = field(default_factory=list)
    classes: dict[str, None] = field(default_factory=dict)  # in order, once each
    fields: dict[str, None] = field(default_factory=dict)
    metrics: dict[str, None] = field(default_factory=dict)
    count: int = 0

    def add(
        self, reason: str, kind: str, field: str | None = None, metric: str | None = None
    ) -> None:
        self.count += 1
        self.classes.setdefault(kind)
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(_cut(reason, REASON_CHARS))
            if field is not None:
                self.fields.setdefault(_cut(field, 64))
            if metric is not None:
                self.metrics.setdefault(_cut(metric, 64))

    def collected(self) -> list[DeadLetter]:
        """The message's dead letter, or none when nothing was wrong."""
        if not self.count:
            return []
        reason = "; ".join(self.reasons)
        if self.count > len(self.reasons):
            reason += f"; and {self.count - len(self.reasons)} more"
        details = {"class": next(iter(self.classes))}
        if self.count > 1:
            details["reasons"] = str(self.count)
        if len(self.classes) > 1:
            details["classes"] = ",".join(self.classes)
        if self.fields:
            details["field"] = ",".join(self.fields)
        if self.metrics:
            details["metric"] = ",".join(self.metrics)
        letter = DeadLetter(
            received_at=self.received_at,
            source=SOURCE,
            reason=reason,
            device_id=self.device_id,
            topic=self.topic,
            payload=self.payload,
            details=details,
        )
        return [letter]

    def only(self, reason: str, kind: str, field: str | None = None) -> ParsedTelemetry:
        self.add(reason, kind, field)
        return ParsedTelemetry(dead_letters=self.collected())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def internal_letter(
    topic: str, payload: bytes, received_at: datetime, error: BaseException
) -> DeadLetter:
    """The letter of a message whose parsing raised (a bug): reason ``internal: <type>``."""
    try:
        device_id = device_id_of(topic)
    except Exception:  # the last guard must not raise itself
        device_id = None
    letters = _Letters(topic, payload, received_at, device_id)
    letters.add(f"internal: {type(error).__name__}", "internal")
    [letter] = letters.collected()
    return letter
