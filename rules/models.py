"""Rules' tables in the registry database: alerts, their history, technicians' work items.

One row per alert in ``rule_alerts``; at most one alert per rule and device is not
closed (the store keeps that: a repeat bumps ``repeats``). Every change is an event in
``rule_alert_events`` (raised, repeated, acknowledged, commented, cleared, escalated,
closed, reopened) with who and when. A lamp failure's ``maintenance`` action opens a
``rule_work_items`` row for the technicians.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from devices.registry.db import Base


class AlertRow(Base):
    __tablename__ = "rule_alerts"
    __table_args__ = (Index("ix_rule_alerts_rule_device", "rule_id", "device_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(String(100))
    rule_name: Mapped[str] = mapped_column(String(200))
    # No foreign key: alerts outlive decommissioned devices.
    device_id: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str | None] = mapped_column(String(32))
    district: Mapped[str | None] = mapped_column(String(100), index=True)
    severity: Mapped[str] = mapped_column(String(16), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None]
    repeats: Mapped[int] = mapped_column(default=0)
    escalations: Mapped[int] = mapped_column(default=0)
    raised_at: Mapped[datetime] = mapped_column(index=True)
    last_raised_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    cleared_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(100))


class AlertEventRow(Base):
    __tablename__ = "rule_alert_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(
        ForeignKey("rule_alerts.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(100))
    text: Mapped[str | None] = mapped_column(Text)
    value: Mapped[float | None]


class WorkItemRow(Base):
    __tablename__ = "rule_work_items"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(255), index=True)
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("rule_alerts.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime]
    text: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="open")
