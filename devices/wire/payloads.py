"""Payload models for what devices publish: readings (plain and SenML), state, status.

``parse_reading`` turns the bytes of a telemetry message into ``Reading`` values whose
metrics are not yet checked; ``validate_metrics`` checks them against the kind's
catalogue so a partly bad reading keeps its good metrics. Errors name the field.

Decoding is bounded before any recursive decoder runs, so no payload can make it raise
anything but ``PayloadError``: at most ``MAX_PAYLOAD_BYTES`` bytes, nesting at most
``MAX_DEPTH`` deep (a cheap scan that skips strings; Python's ``json`` would raise
``RecursionError`` on 100,000 nested ``[``), number literals at most ``MAX_NUMBER_CHARS``
long (``int()`` refuses more than 4,300 digits with a ``ValueError``), no ``NaN`` or
``Infinity`` (not JSON), no duplicate keys (which value would be meant?), at most
``MAX_METRICS`` metrics in a reading and ``MAX_SENML_RECORDS`` records in a pack.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    field_validator,
)

from devices.wire.catalogue import DeviceKind, kind_spec

MetricValue = float | bool

MAX_PAYLOAD_BYTES = 64 * 1024  # a reading is ~100 bytes, a day of buffered SenML ~40 KB
MAX_DEPTH = 16  # a reading nests 2 deep, a SenML pack 2, a state 2
MAX_NUMBER_CHARS = 64  # the longest float repr is 24 characters
MAX_METRICS = 100  # the largest kind has under 30
MAX_SENML_RECORDS = 2000
_QUOTED_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class PayloadError(ValueError):
    """A payload that cannot be read at all; ``field`` names where it went wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class MetricError(BaseModel):
    model_config = ConfigDict(frozen=True)

    metric: str
    reason: str


def _to_datetime(value: object) -> datetime:
    """ISO 8601 with an offset, or epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("expected ISO 8601 text or epoch seconds, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("epoch seconds must be finite")
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"time {value!r} has no UTC offset")
        return parsed
    raise ValueError(f"expected ISO 8601 text or epoch seconds, got {type(value).__name__}")


class Reading(BaseModel):
    """One reading of one device at one time; metric values are raw until validated."""

    model_config = ConfigDict(extra="forbid")

    ts: datetime | None = Field(None, description="device time; None means 'use server time'")
    seq: NonNegativeInt | None = Field(None, description="per-device message counter")
    metrics: dict[str, Any] = Field(description="metric name to raw value")

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: object) -> datetime | None:
        return None if value is None else _to_datetime(value)

    @field_validator("seq", mode="before")
    @classmethod
    def _strict_seq(cls, value: object) -> object:
        if isinstance(value, bool) or (value is not None and not isinstance(value, int)):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value

    @field_validator("metrics")
    @classmethod
    def _not_empty(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("a reading needs at least one metric")
        if len(value) > MAX_METRICS:
            raise ValueError(f"{len(value)} metrics in one reading (at most {MAX_METRICS})")
        return value


class SenMLRecord(BaseModel):
    """One record of an RFC 8428 pack (JSON form); only the fields Pharos uses."""

    model_config = ConfigDict(extra="forbid")

    bn: str | None = None
    bt: float | None = None
    bu: str | None = None
    bver: int | None = None
    n: str = ""
    u: str | None = None
    v: float | None = None
    vb: bool | None = None
    vs: str | None = None
    t: float | None = None
    s: float | None = None
    ut: float | None = None


def _nested_deeper_than(text: str, limit: int) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` (iterative; strings skipped)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case, at C speed
    depth = 0
    for match in _QUOTED_OR_BRACKET.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def _bounded_number(kind: Callable[[str], object]) -> Callable[[str], object]:
    def parse(literal: str) -> object:
        if len(literal) > MAX_NUMBER_CHARS:
            reason = f"a number {len(literal)} characters long (at most {MAX_NUMBER_CHARS})"
            raise PayloadError("payload", reason)
        value = kind(literal)
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError("payload", f"number {literal[:20]} is out of range")
        return value

    return parse


def _no_constant(name: str) -> object:
    raise PayloadError("payload", f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise PayloadError("payload", f"duplicate key {duplicate[:64]!r}")
    return document


_parse_int = _bounded_number(int)
_parse_float = _bounded_number(float)


def decode_json(payload: bytes) -> Any:
    """The JSON document of ``payload``, within the bounds of the module docstring.

    Raises ``PayloadError`` (field ``payload``) and nothing else, whatever the bytes.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        reason = f"{len(payload)} bytes (at most {MAX_PAYLOAD_BYTES})"
        raise PayloadError("payload", reason)
    try:
        # Decode first: json.loads on bytes would guess UTF-16/32 from the first bytes.
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("payload", f"not UTF-8 text (byte {exc.start})") from None
    if _nested_deeper_than(text, MAX_DEPTH):
        raise PayloadError("payload", f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise PayloadError("payload", f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:  # unreachable after the depth scan; kept as the last guard
        raise PayloadError("payload", f"nested deeper than {MAX_DEPTH} levels") from None


_decode_json = decode_json


def _first_error(exc: ValidationError, prefix: str = "") -> PayloadError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "payload"
    return PayloadError(f"{prefix}{where}", err["msg"])


def parse_reading(payload: bytes, device_id: str) -> list[Reading]:
    """Readings in a telemetry payload: one for the plain form, one per time for SenML.

    Raises ``PayloadError`` naming the field when the payload cannot be read at all.
    """
    document = _decode_json(payload)
    if isinstance(document, dict):
        try:
            return [Reading.model_validate(document)]
        except ValidationError as exc:
            raise _first_error(exc) from None
    if isinstance(document, list):
        return _parse_senml(document, device_id)
    raise PayloadError("payload", "expected a JSON object (reading) or array (SenML pack)")


def senml_base_name(device_id: str) -> str:
    """The SenML base name (``bn``) of a device's packs: ``urn:dev:pharos:{device_id}:``."""
    return f"urn:dev:pharos:{device_id}:"


def _parse_senml(pack: list[Any], device_id: str) -> list[Reading]:
    if not pack:
        raise PayloadError("payload", "empty SenML pack")
    if len(pack) > MAX_SENML_RECORDS:
        reason = f"{len(pack)} records in one SenML pack (at most {MAX_SENML_RECORDS})"
        raise PayloadError("payload", reason)
    base_name, base_time = "", 0.0
    by_time: dict[float | None, dict[str, Any]] = {}
    expected_prefix = senml_base_name(device_id)
    for index, raw in enumerate(pack):
        try:
            record = SenMLRecord.model_validate(raw)
        except ValidationError as exc:
            raise _first_error(exc, f"[{index}].") from None
        if record.bn is not None:
            if record.bn != expected_prefix:
                raise PayloadError(
                    f"[{index}].bn", f"base name must be {expected_prefix!r} for this device"
                )
            base_name = record.bn
        if record.bt is not None:
            base_time = record.bt
        name = (base_name + record.n)[len(expected_prefix) :] if base_name else record.n
        if not name:
            raise PayloadError(f"[{index}].n", "record has no name")
        values = [x for x in (record.v, record.vb, record.vs) if x is not None]
        if len(values) != 1:
            raise PayloadError(f"[{index}]", "a record needs exactly one of v, vb, vs")
        has_time = record.t is not None or base_time != 0.0
        when = base_time + (record.t or 0.0) if has_time else None
        by_time.setdefault(when, {})[name] = values[0]
    readings = []
    for when, metrics in by_time.items():
        try:
            readings.append(Reading(ts=when, metrics=metrics))
        except ValidationError as exc:
            raise _first_error(exc) from None
    return readings


def validate_metrics(
    kind: DeviceKind | str, metrics: dict[str, Any]
) -> tuple[dict[str, MetricValue], list[MetricError]]:
    """Split raw metrics into valid values and errors (unknown name, wrong type, range)."""
    spec = kind_spec(kind)
    good: dict[str, MetricValue] = {}
    errors: list[MetricError] = []
    for name, raw in metrics.items():
        metric = spec.metric(name)
        if metric is None:
            errors.append(MetricError(metric=name, reason=f"unknown metric for kind {spec.kind}"))
            continue
        try:
            good[name] = metric.check(raw)
        except ValueError as exc:
            errors.append(MetricError(metric=name, reason=str(exc)))
    return good, errors


class DeviceStatus(StrEnum):
    """The retained ``status`` payload; the Last Will is ``offline``."""

    ONLINE = "online"
    OFFLINE = "offline"

    @classmethod
    def parse(cls, payload: bytes) -> DeviceStatus:
        text = payload[:64].decode("utf-8", errors="replace").strip()
        try:
            if len(payload) > 64:
                raise ValueError
            return cls(text)
        except ValueError:
            reason = f"status must be 'online' or 'offline', got {text[:20]!r}"
            raise PayloadError("payload", reason) from None


class DeviceState(BaseModel):
    """The retained reported state; keys by kind, all optional but ``ts``."""

    model_config = ConfigDict(extra="forbid")

    ts: AwareDatetime | None = None
    power: Literal["on", "off"] | None = None
    dim_level: Annotated[float, Field(ge=0, le=100)] | None = None
    program_id: str | None = None
    override_until: AwareDatetime | None = None
    fw: str | None = None
    interval_s: Annotated[int, Field(ge=1)] | None = None
    circuits: dict[str, bool] | None = None
    door_open: bool | None = None

    @classmethod
    def parse(cls, payload: bytes) -> DeviceState:
        document = _decode_json(payload)
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise _first_error(exc) from None
