"""devices: per-meter Modbus word order and poll interval

Real meters differ in word and byte order (DOMAIN.md), so the order is per device,
defaulting (NULL) to the register map's own.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("modbus_word_order", sa.String(length=4), nullable=True))
        batch_op.add_column(sa.Column("poll_interval_s", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("poll_interval_s")
        batch_op.drop_column("modbus_word_order")
