"""The point every package writes, and the sink it is written to.

A ``Point`` is one row of the time-series schema of DESIGN.md: measurement (the device
kind, or a derived measurement such as ``aqi``, ``flood``, ``alerts``, ``energy``,
``fleet``), low-cardinality tags, fields, and its time. Ingest and the Modbus poller
make them from device messages; rules, control's energy report and the fleet statistics
make derived ones. All of them write through one ``PointSink``, handed to them by the
composition root: the InfluxDB writer's ``submit`` (stored or spooled) or the embedded
store's ``write``. The type lives here, lowest, so ``control`` writes points without
importing ``telemetry``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

FieldValue = float | bool | int


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time: datetime

    @property
    def device_id(self) -> str:
        return self.tags["device_id"]


PointSink = Callable[[Sequence[Point]], Awaitable[None]]
"""Durably accept the points (stored, or spooled) and return; raise if neither happened."""
