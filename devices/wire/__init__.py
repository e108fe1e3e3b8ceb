"""The wire contract with devices: kinds and their metric catalogue, topics, payloads.

This is the only part of ``devices`` that the simulator imports, exactly as a real
device's firmware would only know the contract.
"""

from devices.wire.catalogue import (
    CATALOGUE,
    DeviceKind,
    KindSpec,
    MetricSpec,
    Transport,
    kind_spec,
)
from devices.wire.commands import (
    Command,
    CommandAck,
    CommandAction,
    CommandParamsError,
    validate_command_params,
)
from devices.wire.payloads import (
    DeviceState,
    DeviceStatus,
    MetricError,
    PayloadError,
    Reading,
    parse_reading,
    validate_metrics,
)
from devices.wire.topics import (
    ALERTS_TOPIC,
    TOPIC_ROOT,
    Channel,
    DeviceTopic,
    device_topic,
    is_valid_device_id,
    parse_device_topic,
)

__all__ = [
    "ALERTS_TOPIC",
    "CATALOGUE",
    "TOPIC_ROOT",
    "Channel",
    "Command",
    "CommandAck",
    "CommandAction",
    "CommandParamsError",
    "DeviceKind",
    "DeviceState",
    "DeviceStatus",
    "DeviceTopic",
    "KindSpec",
    "MetricError",
    "MetricSpec",
    "PayloadError",
    "Reading",
    "Transport",
    "device_topic",
    "is_valid_device_id",
    "kind_spec",
    "parse_device_topic",
    "parse_reading",
    "validate_command_params",
    "validate_metrics",
]
