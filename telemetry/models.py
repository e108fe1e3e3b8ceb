"""Telemetry tables in the registry database: dead letters and each device's status.

The points themselves live in InfluxDB or the embedded store; what sits here is the
state the registry side reads: input that could not be stored (with the reason) and,
per device, online/offline, last seen, the last value of each metric and the reported
state. Last values are JSON on the status row: one row per device means one write per
device per flush, however many metrics it reports.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from devices.registry.db import Base


class DeadLetterRow(Base):
    """One input that could not be stored: what came, from where, and why not."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text)
    reason_class: Mapped[str] = mapped_column(String(64), index=True)
    # No foreign key: an unknown device is one of the reasons a letter exists.
    device_id: Mapped[str | None] = mapped_column(String(255), index=True)
    topic: Mapped[str | None] = mapped_column(String(1024))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    payload_size: Mapped[int]
    payload_preview: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None]


class DeviceStatusRow(Base):
    """The reported side of a device's twin."""

    __tablename__ = "device_status"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    online: Mapped[bool | None]
    status_changed_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    # {"metric": {"value": 41.2, "at": "<iso8601>"}}
    last_values: Mapped[dict[str, Any] | None]
    reported_state: Mapped[dict[str, Any] | None]
    reported_at: Mapped[datetime | None]
