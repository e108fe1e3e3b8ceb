"""MQTT ingest: readings, state and status from the broker into durable storage.

- ``mqtt_codec`` / ``mqtt``: a small MQTT 5 subscriber on asyncio (persistent session,
  QoS 1, acknowledgements sent by hand once a reading is durable);
- ``directory``: device id → kind, district and group, from the registry;
- ``parsing``: one message → points, dead letters, a status or a state (no I/O);
- ``service``: ``IngestService``, which joins them to the point sink (the InfluxDB
  writer or the embedded store), the dead-letter store and the device twin.
"""

from pharos_core.mqtt import MqttError
from telemetry.ingest.directory import DeviceDirectory, DeviceInfo
from telemetry.ingest.mqtt import MqttConfigurationError, MqttOptions, MqttSubscriber
from telemetry.ingest.mqtt_codec import InboundMessage
from telemetry.ingest.parsing import (
    FirstSeenTimes,
    ParsedTelemetry,
    StateReport,
    StatusReport,
    TimestampPolicy,
    parse_message,
)
from telemetry.ingest.service import (
    IngestObserver,
    IngestOptions,
    IngestService,
    IngestStats,
    ParsedBatch,
    TwinSink,
    counted,
    subscriptions,
)

__all__ = [
    "DeviceDirectory",
    "DeviceInfo",
    "FirstSeenTimes",
    "InboundMessage",
    "IngestObserver",
    "IngestOptions",
    "IngestService",
    "IngestStats",
    "MqttConfigurationError",
    "MqttError",
    "MqttOptions",
    "MqttSubscriber",
    "ParsedBatch",
    "ParsedTelemetry",
    "StateReport",
    "StatusReport",
    "TimestampPolicy",
    "TwinSink",
    "counted",
    "parse_message",
    "subscriptions",
]
