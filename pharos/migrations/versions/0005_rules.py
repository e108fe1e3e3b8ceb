"""rules: alerts, alert history, technicians' work items (issue 6)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rule_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("rule_name", sa.String(length=200), nullable=False),
        sa.Column("device_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("district", sa.String(length=100), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("escalations", sa.Integer(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_alerts")),
    )
    with op.batch_alter_table("rule_alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rule_alerts_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_rule_alerts_district"), ["district"], unique=False)
        batch_op.create_index(batch_op.f("ix_rule_alerts_raised_at"), ["raised_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_rule_alerts_severity"), ["severity"], unique=False)
        batch_op.create_index(batch_op.f("ix_rule_alerts_state"), ["state"], unique=False)
        batch_op.create_index("ix_rule_alerts_rule_device", ["rule_id", "device_id"], unique=False)

    op.create_table(
        "rule_alert_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["rule_alerts.id"],
            name=op.f("fk_rule_alert_events_alert_id_rule_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_alert_events")),
    )
    with op.batch_alter_table("rule_alert_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rule_alert_events_alert_id"), ["alert_id"], unique=False
        )

    op.create_table(
        "rule_work_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=255), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["rule_alerts.id"],
            name=op.f("fk_rule_work_items_alert_id_rule_alerts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_work_items")),
    )
    with op.batch_alter_table("rule_work_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rule_work_items_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_rule_work_items_device_id"), ["device_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("rule_work_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rule_work_items_device_id"))
        batch_op.drop_index(batch_op.f("ix_rule_work_items_alert_id"))
    op.drop_table("rule_work_items")
    with op.batch_alter_table("rule_alert_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rule_alert_events_alert_id"))
    op.drop_table("rule_alert_events")
    with op.batch_alter_table("rule_alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_rule_alerts_rule_device")
        batch_op.drop_index(batch_op.f("ix_rule_alerts_state"))
        batch_op.drop_index(batch_op.f("ix_rule_alerts_severity"))
        batch_op.drop_index(batch_op.f("ix_rule_alerts_raised_at"))
        batch_op.drop_index(batch_op.f("ix_rule_alerts_district"))
        batch_op.drop_index(batch_op.f("ix_rule_alerts_device_id"))
    op.drop_table("rule_alerts")
