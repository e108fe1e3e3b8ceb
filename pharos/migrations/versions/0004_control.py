"""control: commands, programs, calendars, assignments, overrides (issue 5; filled in by control)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from devices.registry.db import UtcDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "control_commands",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(63), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("cancelled_at", UtcDateTime(), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_commands")),
    )
    op.create_index(op.f("ix_control_commands_target_id"), "control_commands", ["target_id"])
    op.create_index(op.f("ix_control_commands_created_at"), "control_commands", ["created_at"])
    op.create_table(
        "control_command_targets",
        sa.Column("command_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_sent_at", UtcDateTime(), nullable=True),
        sa.Column("last_sent_at", UtcDateTime(), nullable=True),
        sa.Column("answered_at", UtcDateTime(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["control_commands.id"],
            name=op.f("fk_control_command_targets_command_id_control_commands"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("command_id", "device_id", name=op.f("pk_control_command_targets")),
    )
    op.create_index("ix_control_command_targets_status", "control_command_targets", ["status"])
    op.create_table(
        "control_programs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_programs")),
    )
    op.create_table(
        "control_calendars",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("default_program_id", sa.String(64), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["default_program_id"],
            ["control_programs.id"],
            name=op.f("fk_control_calendars_default_program_id_control_programs"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_calendars")),
    )
    op.create_table(
        "control_assignments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(63), nullable=False),
        sa.Column("calendar_id", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["calendar_id"],
            ["control_calendars.id"],
            name=op.f("fk_control_assignments_calendar_id_control_calendars"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_assignments")),
        sa.UniqueConstraint(
            "target_type", "target_id", name=op.f("uq_control_assignments_target_type")
        ),
    )
    op.create_table(
        "control_overrides",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(63), nullable=False),
        sa.Column("level", sa.Double(), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("until", UtcDateTime(), nullable=True),
        sa.Column("cleared_at", UtcDateTime(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_overrides")),
    )
    op.create_index(op.f("ix_control_overrides_target_id"), "control_overrides", ["target_id"])
    op.create_table(
        "control_lamp_state",
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("desired_level", sa.Double(), nullable=True),
        sa.Column("desired_program_id", sa.String(64), nullable=True),
        sa.Column("desired_at", UtcDateTime(), nullable=True),
        sa.Column("reported_level", sa.Double(), nullable=True),
        sa.Column("reported_power", sa.String(8), nullable=True),
        sa.Column("reported_program_id", sa.String(64), nullable=True),
        sa.Column("reported_at", UtcDateTime(), nullable=True),
        sa.Column("drift_since", UtcDateTime(), nullable=True),
        sa.Column("corrections", sa.Integer(), nullable=False),
        sa.Column("last_correction_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_control_lamp_state")),
    )
    # APScheduler 3's SQLAlchemyJobStore table (its own column layout).
    op.create_table(
        "control_jobs",
        sa.Column("id", sa.Unicode(191), nullable=False),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_jobs")),
    )
    op.create_index(op.f("ix_control_jobs_next_run_time"), "control_jobs", ["next_run_time"])


def downgrade() -> None:
    op.drop_index(op.f("ix_control_jobs_next_run_time"), table_name="control_jobs")
    op.drop_table("control_jobs")
    op.drop_table("control_lamp_state")
    op.drop_index(op.f("ix_control_overrides_target_id"), table_name="control_overrides")
    op.drop_table("control_overrides")
    op.drop_table("control_assignments")
    op.drop_table("control_calendars")
    op.drop_table("control_programs")
    op.drop_index("ix_control_command_targets_status", table_name="control_command_targets")
    op.drop_table("control_command_targets")
    op.drop_index(op.f("ix_control_commands_created_at"), table_name="control_commands")
    op.drop_index(op.f("ix_control_commands_target_id"), table_name="control_commands")
    op.drop_table("control_commands")
