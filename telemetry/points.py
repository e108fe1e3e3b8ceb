"""The typed values the telemetry modules meet through: points, dead letters, sinks.

Ingest (MQTT, Modbus) turns device messages into ``Point`` values; the writer puts
them into InfluxDB or the spool; the stores answer queries over them. ``Point`` and
its sink (``PointSink``) are the core's (``pharos_core.points``, shared with rules and
control); the dead letters and the fields telemetry adds are telemetry's own. Schema of
DESIGN.md: measurement = device kind; tags = device_id, district, group (low
cardinality only); fields = metrics; time = the device's ``ts`` (server time when
absent). The same device and time written twice is one point, so replays are harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pharos_core.points import FieldValue, Point, PointSink

__all__ = [
    "SEQ_FIELD",
    "TS_REPLACED_FIELD",
    "DeadLetter",
    "DeadLetterSink",
    "FieldValue",
    "Point",
    "PointSink",
]

# Fields Pharos adds beside the device's metrics.
SEQ_FIELD = "seq"  # the device's message counter, to count loss and duplicates
TS_REPLACED_FIELD = "ts_replaced"  # true when the device's ts was missing or implausible


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that could not be stored, kept with the reason (nothing is dropped silently)."""

    received_at: datetime
    source: str  # "mqtt", "modbus", "influx"
    reason: str
    device_id: str | None = None
    topic: str | None = None
    payload: bytes = b""
    details: dict[str, str] = field(default_factory=dict)


class DeadLetterSink(Protocol):
    async def put(self, letters: Sequence[DeadLetter]) -> None: ...
