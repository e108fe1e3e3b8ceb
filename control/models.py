"""Control's tables, on the registry's ``Base`` (one metadata, one Alembic history).

Commands and their per-device tracking, programs, calendars, assignments, overrides,
and each lamp's desired and reported state. APScheduler's job table (``control_jobs``)
is created by the same migration; APScheduler's job store owns its rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from devices.registry.db import Base, utcnow

JOBS_TABLE = "control_jobs"

# APScheduler 3's SQLAlchemyJobStore layout, declared here so the schema check sees it.
jobs_table = Table(
    JOBS_TABLE,
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)


class CommandRow(Base):
    """One command as asked: an action for one device or a group."""

    __tablename__ = "control_commands"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    target_type: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(63), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(String(32), default="api")  # api, schedule, drift

    targets: Mapped[list[CommandTargetRow]] = relationship(
        back_populates="command",
        cascade="all, delete-orphan",
        lazy="raise",
        order_by="CommandTargetRow.device_id",
    )


class CommandTargetRow(Base):
    """The command's life on one device: pending -> sent -> ok / rejected / failed / expired."""

    __tablename__ = "control_command_targets"
    __table_args__ = (Index("ix_control_command_targets_status", "status"),)

    command_id: Mapped[str] = mapped_column(
        ForeignKey("control_commands.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    first_sent_at: Mapped[datetime | None]
    last_sent_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    detail: Mapped[str] = mapped_column(Text, default="")

    command: Mapped[CommandRow] = relationship(back_populates="targets")


class ProgramRow(Base):
    __tablename__ = "control_programs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    steps: Mapped[dict[str, Any]]  # {"steps": [...]} as ProgramStep dumps
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CalendarRow(Base):
    __tablename__ = "control_calendars"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    default_program_id: Mapped[str] = mapped_column(
        ForeignKey("control_programs.id", ondelete="RESTRICT")
    )
    rules: Mapped[dict[str, Any]]  # {"rules": [...]} as CalendarRule dumps
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AssignmentRow(Base):
    """A calendar assigned to a group or a single device."""

    __tablename__ = "control_assignments"
    __table_args__ = (UniqueConstraint("target_type", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    target_type: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(63))
    calendar_id: Mapped[str] = mapped_column(
        ForeignKey("control_calendars.id", ondelete="RESTRICT")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OverrideRow(Base):
    """A temporary level over the program, for N minutes or until cleared."""

    __tablename__ = "control_overrides"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    target_type: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(63), index=True)
    level: Mapped[float]
    starts_at: Mapped[datetime]
    until: Mapped[datetime | None]
    cleared_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")


class LampStateRow(Base):
    """Desired state (set by commands and the schedule) beside the reported one."""

    __tablename__ = "control_lamp_state"

    device_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    desired_level: Mapped[float | None]
    desired_program_id: Mapped[str | None] = mapped_column(String(64))
    desired_at: Mapped[datetime | None]
    reported_level: Mapped[float | None]
    reported_power: Mapped[str | None] = mapped_column(String(8))
    reported_program_id: Mapped[str | None] = mapped_column(String(64))
    reported_at: Mapped[datetime | None]
    drift_since: Mapped[datetime | None]
    corrections: Mapped[int] = mapped_column(default=0)
    last_correction_at: Mapped[datetime | None]
