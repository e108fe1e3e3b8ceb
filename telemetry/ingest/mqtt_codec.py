"""The MQTT 5 packets a subscriber needs: encoding what it sends, decoding what it receives.

Only the subset ingest uses (OASIS MQTT 5.0): it sends CONNECT, SUBSCRIBE, PUBACK,
PINGREQ and DISCONNECT, and receives CONNACK, SUBACK, PUBLISH (QoS 0 and 1),
PINGRESP and DISCONNECT. ``Decoder`` is incremental: bytes go in as TCP delivers
them, whole packets come out, and a packet split across reads waits for its rest.
PUBLISH is the hot path (tens of thousands a second), so it is decoded inline into
``InboundMessage`` values without building an intermediate packet object.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

PINGREQ = b"\xc0\x00"
DISCONNECT_NORMAL = b"\xe0\x00"  # reason 0x00: normal disconnection (no Will is sent)
MAX_VARINT = 268_435_455  # the largest Remaining Length MQTT can express
_PUBACK = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    SUBSCRIBE = 8
    SUBACK = 9
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class Property(IntEnum):
    """The MQTT 5 property identifiers this module writes or reads."""

    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_ID = 0x12
    SERVER_KEEP_ALIVE = 0x13
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    MAXIMUM_PACKET_SIZE = 0x27


# How to skip each property by its identifier (MQTT 5.0, section 2.2.2.2).
_BYTE = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
_TWO = frozenset({0x13, 0x21, 0x22, 0x23})
_FOUR = frozenset({0x02, 0x11, 0x18, 0x27})
_VARINT = frozenset({0x0B})
_TEXT = frozenset({0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F})
_BINARY = frozenset({0x09, 0x16})
_PAIR = frozenset({0x26})

# Reason codes of CONNACK/SUBACK/DISCONNECT (MQTT 5.0, section 2.4), for messages.
REASONS: dict[int, str] = {
    0x00: "success",
    0x01: "granted QoS 1",
    0x04: "disconnect with will message",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA2: "wildcard subscriptions not supported",
}


def reason_text(code: int) -> str:
    return f"0x{code:02X} {REASONS.get(code, 'unknown reason')}"


class ProtocolError(Exception):
    """The broker sent something this client cannot read; the connection must close."""


@dataclass(slots=True)
class InboundMessage:
    """One PUBLISH received, stamped with when (µs since the epoch) and on which connection.

    ``mid`` is the packet identifier to acknowledge (0 for QoS 0); it is only valid on
    ``connection``: after a reconnect the broker sends unacknowledged messages again.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    received_us: int
    connection: int
    dup: bool = False  # the broker's DUP flag: it sent this message before (a redelivery)


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason_code: int
    properties: dict[int, int | str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int
    reason_string: str | None


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


ControlPacket = ConnAck | SubAck | Disconnect | PingResp


# --- encoding ------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65535 bytes")
    return _U16.pack(len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_varint(len(body)) + body


def encode_connect(
    client_id: str,
    username: str,
    password: str | None,
    *,
    keepalive_s: int,
    clean_start: bool,
    session_expiry_s: int,
    receive_maximum: int,
    maximum_packet_size: int,
) -> bytes:
    """CONNECT (MQTT 5) with a persistent session unless ``clean_start``."""
    if not 1 <= receive_maximum <= 0xFFFF:
        raise ValueError("receive maximum must be 1 to 65535")
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError("keep alive must be 0 to 65535 seconds")
    flags = 0x80 | (0x40 if password is not None else 0) | (0x02 if clean_start else 0)
    properties = (
        bytes([Property.SESSION_EXPIRY_INTERVAL])
        + _U32.pack(session_expiry_s)
        + bytes([Property.RECEIVE_MAXIMUM])
        + _U16.pack(receive_maximum)
        + bytes([Property.MAXIMUM_PACKET_SIZE])
        + _U32.pack(maximum_packet_size)
    )
    body = (
        encode_text("MQTT")
        + bytes([5, flags])
        + _U16.pack(keepalive_s)
        + encode_varint(len(properties))
        + properties
        + encode_text(client_id)
        + encode_text(username)
    )
    if password is not None:
        body += encode_text(password)
    return _packet(PacketType.CONNECT << 4, body)


def encode_subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    """SUBSCRIBE to ``(filter, max QoS)`` pairs; retained messages are sent on subscribe."""
    if not filters:
        raise ValueError("subscribe needs at least one topic filter")
    body = _U16.pack(packet_id) + b"\x00"  # no properties
    for topic_filter, qos in filters:
        body += encode_text(topic_filter) + bytes([qos & 0x03])
    return _packet((PacketType.SUBSCRIBE << 4) | 0x02, body)


def encode_puback(mid: int) -> bytes:
    """PUBACK with reason 0x00, in its short form (MQTT 5 allows leaving reason out)."""
    return _PUBACK.pack(PacketType.PUBACK << 4, 2, mid)


def encode_pubacks(mids: Sequence[int]) -> bytes:
    pack = _PUBACK.pack
    first = PacketType.PUBACK << 4
    return b"".join([pack(first, 2, mid) for mid in mids])


# --- decoding ------------------------------------------------------------------------------


class Decoder:
    """Bytes in, packets out; keeps the tail of a packet until the rest arrives.

    ``max_packet_size`` bounds the buffer: a larger packet is a protocol error (the
    client asked the broker, in CONNECT, never to send one).
    """

    def __init__(self, max_packet_size: int) -> None:
        self._buffer = bytearray()
        self._max = max_packet_size

    def feed(
        self, data: bytes, received_us: int, connection: int
    ) -> tuple[list[InboundMessage], list[ControlPacket]]:
        """Decode every whole packet buffered; messages are stamped ``received_us`` + index.

        Each message of one read gets its own microsecond, so two readings without a
        device time never share a timestamp (they would be one point in InfluxDB).
        """
        buf = self._buffer
        buf += data
        messages: list[InboundMessage] = []
        controls: list[ControlPacket] = []
        pos, end_of_data = 0, len(buf)
        try:
            pos = self._decode(buf, pos, end_of_data, received_us, connection, messages, controls)
        except (IndexError, struct.error):
            raise ProtocolError("a packet is shorter than its own headers say") from None
        if pos:
            del buf[:pos]
        return messages, controls

    def _decode(
        self,
        buf: bytearray,
        pos: int,
        end_of_data: int,
        received_us: int,
        connection: int,
        messages: list[InboundMessage],
        controls: list[ControlPacket],
    ) -> int:
        """Decode from ``pos`` while whole packets remain; where the next one starts."""
        while end_of_data - pos >= 2:
            header = _remaining_length(buf, pos + 1, end_of_data)
            if header is None:
                break
            length, start = header
            if start - pos + length > self._max:
                raise ProtocolError(f"packet of {length} bytes exceeds the limit of {self._max}")
            end = start + length
            if end > end_of_data:
                break
            first = buf[pos]
            if first >> 4 == PacketType.PUBLISH:
                message = _publish(buf, first, start, end)
                message.received_us = received_us + len(messages)
                message.connection = connection
                messages.append(message)
            else:
                controls.append(_control(first, bytes(buf[start:end])))
            pos = end
        return pos


def _remaining_length(buf: bytearray, index: int, limit: int) -> tuple[int, int] | None:
    """(Remaining Length, index after it), or None while its bytes are still to come."""
    value, shift = 0, 0
    for offset in range(4):
        if index + offset >= limit:
            return None
        byte = buf[index + offset]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + offset + 1
        shift += 7
    raise ProtocolError("malformed remaining length")


def _publish(buf: bytearray, first: int, start: int, end: int) -> InboundMessage:
    qos = (first >> 1) & 0x03
    if qos > 1:
        # Subscriptions are made at QoS 1, so the broker can never send QoS 2.
        raise ProtocolError(f"PUBLISH with QoS {qos} on a QoS 1 subscription")
    topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
    try:
        topic = buf[start + 2 : topic_end].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("PUBLISH topic is not UTF-8") from None
    index, mid = topic_end, 0
    if qos:
        mid = (buf[index] << 8) | buf[index + 1]
        index += 2
    header = _remaining_length(buf, index, end)
    if header is None:
        raise ProtocolError("PUBLISH properties are cut short")
    properties_length, index = header
    index += properties_length
    if index > end or topic_end > end:
        raise ProtocolError("PUBLISH is shorter than its headers")
    retain, dup = bool(first & 0x01), bool(first & 0x08)
    return InboundMessage(topic, bytes(buf[index:end]), qos, retain, mid, 0, 0, dup)


def _control(first: int, body: bytes) -> ControlPacket:
    kind = first >> 4
    if kind == PacketType.CONNACK:
        if len(body) < 2:
            raise ProtocolError("CONNACK too short")
        properties = decode_properties(body, 2)[0] if len(body) > 2 else {}
        return ConnAck(bool(body[0] & 0x01), body[1], properties)
    if kind == PacketType.SUBACK:
        if len(body) < 3:
            raise ProtocolError("SUBACK too short")
        _, index = decode_properties(body, 2)
        return SubAck((body[0] << 8) | body[1], tuple(body[index:]))
    if kind == PacketType.PINGRESP:
        return PingResp()
    if kind == PacketType.DISCONNECT:
        if not body:
            return Disconnect(0x00, None)
        properties = decode_properties(body, 1)[0] if len(body) > 1 else {}
        reason = properties.get(Property.REASON_STRING)
        return Disconnect(body[0], reason if isinstance(reason, str) else None)
    raise ProtocolError(f"unexpected packet type {kind} from the broker")


def decode_properties(body: bytes, index: int) -> tuple[dict[int, int | str], int]:
    """The numeric and text properties at ``index`` (others skipped), and where they end."""
    header = _remaining_length(bytearray(body), index, len(body))
    if header is None:
        raise ProtocolError("properties length cut short")
    length, index = header
    end = index + length
    if end > len(body):
        raise ProtocolError("properties longer than their packet")
    found: dict[int, int | str] = {}
    while index < end:
        identifier = body[index]
        index += 1
        value, index = _property_value(identifier, body, index)
        if value is not None:
            found[identifier] = value
    return found, end


def _property_value(identifier: int, body: bytes, index: int) -> tuple[int | str | None, int]:
    if identifier in _BYTE:
        return body[index], index + 1
    if identifier in _TWO:
        return _U16.unpack_from(body, index)[0], index + 2
    if identifier in _FOUR:
        return _U32.unpack_from(body, index)[0], index + 4
    if identifier in _VARINT:
        header = _remaining_length(bytearray(body), index, len(body))
        if header is None:
            raise ProtocolError("property value cut short")
        return header
    if identifier in _TEXT or identifier in _BINARY:
        size = _U16.unpack_from(body, index)[0]
        raw = body[index + 2 : index + 2 + size]
        text = raw.decode("utf-8", "replace") if identifier in _TEXT else None
        return text, index + 2 + size
    if identifier in _PAIR:
        size = _U16.unpack_from(body, index)[0]
        index += 2 + size
        size = _U16.unpack_from(body, index)[0]
        return None, index + 2 + size
    raise ProtocolError(f"unknown property identifier 0x{identifier:02X}")
