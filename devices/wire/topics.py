"""MQTT topic builders and parsers for the ``pharos/v1/`` tree.

The device id is the MQTT username and client id, so it must be safe in a topic level
(no ``+``, ``#`` or ``/``) and in Mosquitto's password file (no ``:``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

TOPIC_ROOT = "pharos/v1"
ALERTS_TOPIC = f"{TOPIC_ROOT}/alerts"
_DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    STATE = "state"
    STATUS = "status"
    CMD = "cmd"
    CMD_ACK = "cmd/ack"


def is_valid_device_id(device_id: str) -> bool:
    """Lower-case letters, digits, ``-`` and ``_``; 1 to 63 characters."""
    return _DEVICE_ID.fullmatch(device_id) is not None


def device_topic(device_id: str, channel: Channel) -> str:
    if not is_valid_device_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}")
    return f"{TOPIC_ROOT}/dev/{device_id}/{channel.value}"


def subscription(channel: Channel) -> str:
    """The wildcard subscription that matches ``channel`` of every device."""
    return f"{TOPIC_ROOT}/dev/+/{channel.value}"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    device_id: str
    channel: Channel


def parse_device_topic(topic: str) -> DeviceTopic | None:
    """The device and channel of a device topic, or ``None`` for any other topic."""
    prefix = f"{TOPIC_ROOT}/dev/"
    if not topic.startswith(prefix):
        return None
    device_id, _, rest = topic[len(prefix) :].partition("/")
    if not is_valid_device_id(device_id):
        return None
    try:
        return DeviceTopic(device_id, Channel(rest))
    except ValueError:
        return None
