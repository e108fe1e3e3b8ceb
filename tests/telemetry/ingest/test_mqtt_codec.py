"""The MQTT 5 packets ingest sends and reads, byte for byte (MQTT 5.0 spec examples)."""

from __future__ import annotations

import pytest

from telemetry.ingest.mqtt_codec import (
    ConnAck,
    Decoder,
    Disconnect,
    PingResp,
    ProtocolError,
    SubAck,
    encode_connect,
    encode_puback,
    encode_pubacks,
    encode_subscribe,
    encode_varint,
)


def publish(topic: str, payload: bytes, *, qos: int, mid: int = 0, props: bytes = b"") -> bytes:
    body = len(topic).to_bytes(2, "big") + topic.encode()
    if qos:
        body += mid.to_bytes(2, "big")
    body += encode_varint(len(props)) + props + payload
    return bytes([0x30 | (qos << 1)]) + encode_varint(len(body)) + body


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"),
     (16_384, b"\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f")],
)  # fmt: skip
def test_varint_matches_the_spec_table(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded


def test_connect_asks_for_a_persistent_session_and_a_large_window() -> None:
    packet = encode_connect(
        "ingest-1", "ingest-1", "s3cret", keepalive_s=30, clean_start=False,
        session_expiry_s=3600, receive_maximum=65_535, maximum_packet_size=1 << 21,
    )  # fmt: skip
    assert packet[0] == 0x10
    body = packet[2:]
    assert body[:7] == b"\x00\x04MQTT\x05"
    flags = body[7]
    assert flags & 0x02 == 0, "clean start must be off"
    assert flags & 0xC0 == 0xC0, "username and password present"
    assert b"\x11\x00\x00\x0e\x10" in body  # session expiry 3600
    assert b"\x21\xff\xff" in body  # receive maximum 65535
    assert body.endswith(b"\x00\x08ingest-1\x00\x08ingest-1\x00\x06s3cret")


def test_subscribe_lists_every_filter_at_its_qos() -> None:
    packet = encode_subscribe(1, [("a/+/b", 1), ("$share/g/c", 1)])
    assert packet[0] == 0x82
    assert packet[2:] == b"\x00\x01\x00" + b"\x00\x05a/+/b\x01" + b"\x00\x0a$share/g/c\x01"


def test_pubacks_are_four_bytes_each() -> None:
    assert encode_puback(0x1234) == b"\x40\x02\x12\x34"
    assert encode_pubacks([1, 2]) == b"\x40\x02\x00\x01\x40\x02\x00\x02"


def test_publishes_are_decoded_with_qos_mid_and_properties_skipped() -> None:
    decoder = Decoder(1 << 20)
    data = publish("t/1", b"hello", qos=1, mid=7, props=b"\x02\x00\x00\x00\x3c") + publish(
        "t/2", b"", qos=0
    )
    messages, controls = decoder.feed(data, 1_000, connection=3)
    assert controls == []
    assert [(m.topic, m.payload, m.qos, m.mid, m.connection) for m in messages] == [
        ("t/1", b"hello", 1, 7, 3),
        ("t/2", b"", 0, 0, 3),
    ]
    assert [m.received_us for m in messages] == [1_000, 1_001], "one microsecond each"


def test_a_packet_split_anywhere_waits_for_its_rest() -> None:
    data = publish("pharos/v1/dev/x/telemetry", b'{"metrics": {}}', qos=1, mid=300) * 3
    for cut in range(1, len(data)):
        decoder = Decoder(1 << 20)
        first, _ = decoder.feed(data[:cut], 0, 1)
        second, _ = decoder.feed(data[cut:], 0, 1)
        assert [m.mid for m in first + second] == [300, 300, 300], f"cut at {cut}"


def test_control_packets() -> None:
    decoder = Decoder(1 << 20)
    connack = b"\x20\x06\x01\x00\x03\x13\x00\x3c"  # session present, server keep alive 60
    suback = b"\x90\x05\x00\x01\x00\x01\x87"
    disconnect = b"\xe0\x0d\x8e\x0b\x1f\x00\x08taken ov"
    _, controls = decoder.feed(connack + suback + b"\xd0\x00" + disconnect, 0, 1)
    assert controls == [
        ConnAck(True, 0x00, {0x13: 60}),
        SubAck(1, (0x01, 0x87)),
        PingResp(),
        Disconnect(0x8E, "taken ov"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"\x34\x05\x00\x01t\x00\x01",  # QoS 2 on a QoS 1 subscription
        b"\x30\x80\x80\x80\x80\x01",  # a remaining length of five bytes
        b"\x32\x03\x00\x09t",  # topic longer than the packet
        b"\x50\x02\x00\x01",  # PUBREC: never expected by a QoS 1 subscriber
    ],
)
def test_malformed_input_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        Decoder(1 << 20).feed(data, 0, 1)


def test_a_packet_over_the_limit_is_refused_before_it_is_buffered() -> None:
    big = publish("t", b"x" * 2000, qos=0)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        Decoder(1000).feed(big[:10], 0, 1)
