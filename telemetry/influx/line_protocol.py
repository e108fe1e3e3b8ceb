"""``Point`` → InfluxDB line protocol, and the little parsing the writer needs back.

Rules as InfluxDB 1.6.7 applies them (checked against the real server in the tests):

- measurement: ``,`` and space are escaped; tag keys, tag values and field keys:
  ``,``, ``=`` and space. A backslash before any other character is stored as it
  is, so backslashes are never doubled; a name *ending* in a backslash cannot be
  written (the backslash would escape the delimiter after it) and is refused.
- string field values: double quotes, with ``"`` and ``\\`` escaped.
- floats are written by ``repr`` (shortest round-tripping form); integers get the
  ``i`` suffix (a metric must keep one type: ``41i`` and ``41.0`` conflict);
  booleans are ``true``/``false``; NaN and infinities have no spelling and are refused.
- tags are sorted by key (InfluxDB's own order, so the same point is the same line)
  and an empty tag value is left out (InfluxDB treats it as absent and cannot parse
  ``k=``). ``time`` is not allowed as a tag or field key.

The timestamp is the point's ``time`` truncated to the chosen precision, so the same
device and time always give the same series and timestamp: a replay overwrites.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from telemetry.points import FieldValue, Point

Precision = Literal["ns", "us", "ms", "s"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_UNIT: dict[Precision, int] = {"us": 1, "ms": 1_000, "s": 1_000_000}
_INT64 = (-(2**63), 2**63 - 1)
_UNWRITABLE = ("\n", "\r")
_RESERVED_KEY = "time"


class LineProtocolError(ValueError):
    """A point InfluxDB could not store; the message names the part and the reason."""


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """Points as lines, and the points that could not be encoded with the reason."""

    lines: list[str]
    refused: list[tuple[Point, str]]


def timestamp(when: datetime, precision: Precision = "ns") -> int:
    """``when`` since the epoch in ``precision`` units; exact integer arithmetic."""
    if when.tzinfo is None:
        raise LineProtocolError("time: naive datetime (times must carry a UTC offset)")
    delta = when - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if precision == "ns":
        return micros * 1_000
    # Floor division: a time before 1970 still maps to one stable timestamp.
    return micros // _US_PER_UNIT[precision]


def encode_point(point: Point, precision: Precision = "ns") -> str:
    """One line of line protocol (no trailing newline), or ``LineProtocolError``."""
    series = _series_key(point.measurement, tuple(point.tags.items()))
    fields = _fields(point.fields)
    return f"{series} {fields} {timestamp(point.time, precision)}"


# Series keys and field keys repeat (a fleet's devices, a kind's metrics): each is
# checked and escaped once. Bounded; an error is raised each time (lru_cache keeps
# only results).
_SERIES_CACHE = 200_000
_FIELD_KEY_CACHE = 10_000


@functools.lru_cache(maxsize=_SERIES_CACHE)
def _series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """``measurement,tag=value,...`` checked and escaped, tags in InfluxDB's order."""
    escaped = _measurement(measurement)
    ordered = sorted((k, v) for k, v in tags if v != "")
    return escaped + "".join(f",{_key('tag key', k)}={_tag_value(k, v)}" for k, v in ordered)


@functools.lru_cache(maxsize=_FIELD_KEY_CACHE)
def _field_key(name: str) -> str:
    return _key("field key", name)


def encode_points(points: Iterable[Point], precision: Precision = "ns") -> EncodedBatch:
    """Every point as a line; the ones that cannot be written are set aside, not raised."""
    lines: list[str] = []
    refused: list[tuple[Point, str]] = []
    for point in points:
        try:
            lines.append(encode_point(point, precision))
        except LineProtocolError as exc:
            refused.append((point, str(exc)))
    return EncodedBatch(lines, refused)


def join_lines(lines: Sequence[str]) -> bytes:
    """The request body (or spool record) for ``lines``."""
    return "\n".join(lines).encode("utf-8")


def split_lines(body: bytes) -> list[str]:
    """The lines of a body made by ``join_lines``.

    A string field value may hold a newline, so the lines are found by reading each
    one's series key and field set, not by splitting on every newline.
    """
    text = body.decode("utf-8")
    lines: list[str] = []
    start = 0
    while start < len(text):
        end = _line_end(text, start)
        if end > start:
            lines.append(text[start:end])
        start = end + 1
    return lines


def series_tags(line: str) -> dict[str, str]:
    """The tags of a line this module wrote (unescaped), e.g. to name its device."""
    key = _until_unescaped(line, " ")
    parts = _split_unescaped(key, ",")[1:]
    tags: dict[str, str] = {}
    for part in parts:
        pieces = _split_unescaped(part, "=")
        if len(pieces) == 2:
            tags[_unescape(pieces[0])] = _unescape(pieces[1])
    return tags


def measurement_of(line: str) -> str:
    """The measurement of a line this module wrote (unescaped)."""
    return _unescape(_split_unescaped(_until_unescaped(line, " "), ",")[0])


def field_types(line: str) -> dict[str, str]:
    """Field key → InfluxDB type name (``float``, ``integer``, ``boolean``, ``string``)."""
    key = _until_unescaped(line, " ")
    rest = line[len(key) + 1 :]
    field_set = rest[: rest.rfind(" ")] if " " in rest else rest  # a timestamp has no space
    return {_unescape(k): _type_of(v) for k, v in _field_pairs(field_set)}


# --- encoding ---------------------------------------------------------------------------


def _measurement(name: str) -> str:
    _check_name("measurement", name)
    if name.startswith("#"):
        raise LineProtocolError(f"measurement {name!r}: a line starting with '#' is a comment")
    return name.replace(",", "\\,").replace(" ", "\\ ")


def _key(part: str, name: str) -> str:
    _check_name(part, name)
    if name == _RESERVED_KEY:
        raise LineProtocolError(f"{part} 'time': reserved by InfluxDB")
    return _escape(name)


def _tag_value(key: str, value: str) -> str:
    _check_name(f"tag {key!r}", value)
    return _escape(value)


def _escape(text: str) -> str:
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _check_name(part: str, name: str) -> None:
    if not name:
        raise LineProtocolError(f"{part}: empty")
    if any(char in name for char in _UNWRITABLE):
        raise LineProtocolError(f"{part} {name!r}: line breaks cannot be written")
    if name.endswith("\\"):
        raise LineProtocolError(f"{part} {name!r}: a trailing backslash cannot be written")


def _fields(fields: Mapping[str, FieldValue | str]) -> str:
    if not fields:
        raise LineProtocolError("fields: a point needs at least one field")
    return ",".join([f"{_field_key(k)}={_field_value(k, v)}" for k, v in fields.items()])


def _field_value(key: str, value: FieldValue | str) -> str:
    kind = type(value)
    if kind is float:  # the common case first; exact types (a bool is an int)
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise LineProtocolError(f"field {key!r}: {value} cannot be stored (not finite)")
        return repr(value)
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise LineProtocolError(f"field {key!r}: {value} is outside the 64-bit integer range")
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"field {key!r}: {value} cannot be stored (not finite)")
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise LineProtocolError(f"field {key!r}: unsupported type {type(value).__name__}")


# --- parsing back (lines this module wrote) ---------------------------------------------


def _unescape(text: str) -> str:
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def _escaped(text: str, index: int) -> bool:
    # InfluxDB's own rule outside strings: a delimiter right after a backslash is data.
    return index > 0 and text[index - 1] == "\\"


def _until_unescaped(text: str, delimiter: str) -> str:
    for index, char in enumerate(text):
        if char == delimiter and not _escaped(text, index):
            return text[:index]
    return text


def _split_unescaped(text: str, delimiter: str, limit: int = -1) -> list[str]:
    parts: list[str] = []
    start = 0
    for index, char in enumerate(text):
        if char == delimiter and not _escaped(text, index) and (limit < 0 or len(parts) < limit):
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _field_pairs(field_set: str) -> list[tuple[str, str]]:
    """``key=value`` pairs; a quoted value may hold commas, spaces and newlines."""
    pairs: list[tuple[str, str]] = []
    index = 0
    while index < len(field_set):
        key_start = index
        while index < len(field_set) and not (
            field_set[index] == "=" and not _escaped(field_set, index)
        ):
            index += 1
        key = field_set[key_start:index]
        index += 1
        value_start = index
        index = _value_end(field_set, index)
        pairs.append((key, field_set[value_start:index]))
        index += 1  # the comma
    return pairs


def _value_end(text: str, index: int) -> int:
    """Where the field value starting at ``index`` ends (a comma, space or the end)."""
    if index < len(text) and text[index] == '"':
        index += 1
        while index < len(text) and text[index] != '"':
            index += 2 if text[index] == "\\" else 1
        return index + 1
    while index < len(text) and text[index] not in ", \n":
        index += 1
    return index


def _line_end(text: str, start: int) -> int:
    """The index of the newline that ends the line starting at ``start`` (or the end)."""
    index = start
    while index < len(text) and text[index] != "\n":
        if text[index] == " " and not _escaped(text, index):
            break
        index += 1
    # The field set: keys, then values that may be quoted; then the timestamp.
    while index < len(text) and text[index] != "\n":
        if text[index] == "=" and not _escaped(text, index):
            index = _value_end(text, index + 1)
        else:
            index += 1
    return index


def _type_of(raw: str) -> str:
    if raw.startswith('"'):
        return "string"
    if raw in ("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"):
        return "boolean"
    if raw.endswith("i"):
        return "integer"
    if raw.endswith("u"):
        return "unsigned"
    return "float"
