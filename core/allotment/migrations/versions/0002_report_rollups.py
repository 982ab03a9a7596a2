"""report rollups: daily team/person/label rollups, their watermark, a cost index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

METRICS = (
    "requests",
    "errors",
    "retries",
    "batch_requests",
    "tool_requests",
    "unpriced_requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_nanos",
)


def _metrics() -> list[sa.Column]:  # type: ignore[type-arg]
    return [sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False) for name in METRICS]


def upgrade() -> None:
    op.create_table(
        "rollup_team_day",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("team_id", sa.String(length=100), nullable=False),
        sa.Column("cost_center", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("enforced", sa.Boolean(), nullable=False),
        *_metrics(),
        sa.PrimaryKeyConstraint("day", "team_id", "cost_center", "provider", "model", "enforced"),
    )
    op.create_table(
        "rollup_person_day",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("person_id", sa.String(length=100), nullable=False),
        sa.Column("team_id", sa.String(length=100), nullable=False),
        sa.Column("enforced", sa.Boolean(), nullable=False),
        *_metrics(),
        sa.PrimaryKeyConstraint("day", "person_id", "team_id", "enforced"),
    )
    op.create_table(
        "rollup_label_day",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("enforced", sa.Boolean(), nullable=False),
        *_metrics(),
        sa.PrimaryKeyConstraint("day", "labels", "provider", "model", "enforced"),
    )
    op.create_table(
        "rollup_state",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("timezone", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # the dashboard's costliest requests: walk the index from the top instead of sorting a month
    op.create_index("ix_usage_events_cost", "usage_events", ["cost_nanos"])


def downgrade() -> None:
    op.drop_index("ix_usage_events_cost", table_name="usage_events")
    for table in ("rollup_state", "rollup_label_day", "rollup_person_day", "rollup_team_day"):
        op.drop_table(table)
