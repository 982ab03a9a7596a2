"""expired reservations index: the anomaly detector finds holds that expired unsettled

A partial index on ``expires_at`` of expired reservations only. Settling or releasing a hold
never puts it in this index, so the admit/settle path writes no page to it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

EXPIRED = sa.text("state = 'expired'")


def upgrade() -> None:
    op.create_index(
        "ix_reservations_expired",
        "reservations",
        ["expires_at"],
        sqlite_where=EXPIRED,
        postgresql_where=EXPIRED,
    )


def downgrade() -> None:
    op.drop_index("ix_reservations_expired", table_name="reservations")
