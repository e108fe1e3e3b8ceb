"""Registry tables: devices, groups, broker accounts, commissioning and the audit log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from devices.registry.db import Base, utcnow


class LifecycleState(StrEnum):
    REGISTERED = "registered"
    INSTALLED = "installed"
    COMMISSIONED = "commissioned"
    IN_SERVICE = "in_service"
    MAINTENANCE = "maintenance"
    DECOMMISSIONED = "decommissioned"


class GroupType(StrEnum):
    STREET = "street"
    DISTRICT = "district"
    CIRCUIT = "circuit"
    BUILDING = "building"
    CUSTOM = "custom"


device_groups = Table(
    "device_groups",
    Base.metadata,
    Column("device_id", ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(200))
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    district: Mapped[str | None] = mapped_column(String(100), index=True)
    ward: Mapped[str | None] = mapped_column(String(100))
    street: Mapped[str | None] = mapped_column(String(200))
    pole: Mapped[str | None] = mapped_column(String(100))
    cabinet_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    cabinet_circuit: Mapped[int | None]
    rated_power_w: Mapped[float | None]
    modbus_host: Mapped[str | None] = mapped_column(String(255))
    modbus_port: Mapped[int | None]
    modbus_unit: Mapped[int | None]
    register_map: Mapped[str | None] = mapped_column(String(64))
    modbus_word_order: Mapped[str | None] = mapped_column(String(4))
    poll_interval_s: Mapped[float | None]
    firmware: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32), default=LifecycleState.REGISTERED, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    groups: Mapped[list[Group]] = relationship(
        secondary=device_groups, back_populates="devices", lazy="selectin", order_by="Group.id"
    )
    commissioning: Mapped[Commissioning] = relationship(
        back_populates="device", cascade="all, delete-orphan", lazy="joined"
    )


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32), default=GroupType.CUSTOM)
    district: Mapped[str | None] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    devices: Mapped[list[Device]] = relationship(
        secondary=device_groups, back_populates="groups", lazy="raise"
    )


class Commissioning(Base):
    """The commissioning checklist of one device and who signed it off."""

    __tablename__ = "commissioning"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    first_telemetry_at: Mapped[datetime | None]
    self_test_ok_at: Mapped[datetime | None]
    signed_off_by: Mapped[str | None] = mapped_column(String(200))
    signed_off_at: Mapped[datetime | None]

    device: Mapped[Device] = relationship(back_populates="commissioning")


class BrokerAccountRow(Base):
    """A Mosquitto account: one per MQTT device, one per backend process."""

    __tablename__ = "broker_accounts"

    username: Mapped[str] = mapped_column(String(63), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # "device" or "service"
    password_hash: Mapped[str] = mapped_column(String(255))
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), unique=True
    )
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[datetime | None]


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]


class ApiKeyRow(Base):
    """An API key, stored as a SHA-256 of the key; the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
