"""Commands are checked per kind and action; topics round-trip through their parser."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from devices.wire import (
    CATALOGUE,
    Channel,
    Command,
    CommandAck,
    CommandParamsError,
    DeviceKind,
    PayloadError,
    device_topic,
    is_valid_device_id,
    parse_device_topic,
    validate_command_params,
)
from devices.wire.topics import subscription


def test_every_kind_of_the_design_is_catalogued() -> None:
    assert {k.value for k in CATALOGUE} == {
        "streetlight",
        "smart_pole",
        "env_monitor",
        "flood_gauge",
        "energy_meter",
        "lighting_cabinet",
    }
    pole = CATALOGUE[DeviceKind.SMART_POLE]
    lamp = CATALOGUE[DeviceKind.STREETLIGHT]
    assert set(lamp.metric_names()) < set(pole.metric_names())
    assert pole.commands == lamp.commands


@pytest.mark.parametrize(
    ("kind", "action", "params"),
    [
        ("streetlight", "set_dim", {"level": 70}),
        ("smart_pole", "switch", {"on": False}),
        ("streetlight", "override", {"level": 100, "minutes": 30}),
        ("streetlight", "self_test", {}),
        ("flood_gauge", "set_interval", {"seconds": 60}),
        ("lighting_cabinet", "switch_circuit", {"circuit": 2, "on": True}),
        (
            "streetlight",
            "set_program",
            {
                "program": {
                    "id": "default",
                    "steps": [
                        {"event": "sunset", "offset_minutes": -10, "level": 100},
                        {"at": "22:00", "level": 70},
                    ],
                }
            },
        ),
    ],
)
def test_valid_commands(kind: str, action: str, params: dict[str, object]) -> None:
    validate_command_params(kind, action, params)


@pytest.mark.parametrize(
    ("kind", "action", "params", "field"),
    [
        ("streetlight", "set_dim", {"level": 150}, "params.level"),
        ("streetlight", "set_dim", {}, "params.level"),
        ("streetlight", "fly", {}, "action"),
        ("energy_meter", "switch", {"on": True}, "action"),
        ("env_monitor", "set_dim", {"level": 1}, "action"),
        ("lighting_cabinet", "switch_circuit", {"circuit": 0, "on": True}, "params.circuit"),
        ("streetlight", "override", {"level": 50, "minutes": 0}, "params.minutes"),
        ("streetlight", "switch", {"on": True, "extra": 1}, "params.extra"),
    ],
)
def test_invalid_commands_name_the_field(
    kind: str, action: str, params: dict[str, object], field: str
) -> None:
    with pytest.raises(CommandParamsError) as caught:
        validate_command_params(kind, action, params)
    assert caught.value.field == field


def test_command_and_ack_round_trip() -> None:
    now = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
    command = Command(
        id=uuid.uuid4(),
        action="set_dim",
        params={"level": 50},
        expires_at=now + timedelta(minutes=5),
    )
    assert Command.parse(command.to_payload()) == command
    assert not command.is_expired(now)
    assert command.is_expired(now + timedelta(minutes=5))
    ack = CommandAck(id=command.id, status="rejected", detail="level 150 out of range")
    assert CommandAck.parse(ack.to_payload()) == ack
    with pytest.raises(PayloadError, match="status"):
        CommandAck.parse(b'{"id": "' + str(command.id).encode() + b'", "status": "maybe"}')


def test_topics_round_trip() -> None:
    for channel in Channel:
        topic = device_topic("sl-0001", channel)
        parsed = parse_device_topic(topic)
        assert parsed is not None and parsed.device_id == "sl-0001" and parsed.channel == channel
    assert device_topic("sl-0001", Channel.CMD_ACK) == "pharos/v1/dev/sl-0001/cmd/ack"
    assert subscription(Channel.TELEMETRY) == "pharos/v1/dev/+/telemetry"
    assert parse_device_topic("pharos/v1/dev/sl-0001/other") is None
    assert parse_device_topic("pharos/v1/alerts") is None
    assert parse_device_topic("pharos/v1/dev/SL+1/telemetry") is None


@pytest.mark.parametrize("bad", ["", "A1", "a/b", "a+b", "a#", "a:b", "-a", "a" * 64])
def test_device_ids_that_cannot_be_usernames_or_topic_levels(bad: str) -> None:
    assert not is_valid_device_id(bad)
    with pytest.raises(ValueError, match="invalid device id"):
        device_topic(bad, Channel.TELEMETRY)
