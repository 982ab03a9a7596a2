"""lean write indexes: drop indexes no query uses, index only open reservations by expiry

Every index on a hot table is one more page written to the WAL per commit. Ledger entries
are only ever read in id order (audit) so their two indexes go; the expiry sweep only looks
at open reservations, so a partial index replaces the state and expiry indexes; reports read
rollups now, so the team/time index on events goes (time, cost and request stay); the trace
index keeps only traced calls, so an untraced call writes no page to it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OPEN = sa.text("state = 'open'")
TRACED = sa.text("trace_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_ledger_entries_wallet", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_event_id", table_name="ledger_entries")
    op.drop_index("ix_reservations_state", table_name="reservations")
    op.drop_index("ix_reservations_expires_at", table_name="reservations")
    op.drop_index("ix_usage_events_team_ts", table_name="usage_events")
    op.drop_index("ix_usage_events_trace", table_name="usage_events")
    op.create_index(
        "ix_usage_events_trace",
        "usage_events",
        ["trace_id"],
        sqlite_where=TRACED,
        postgresql_where=TRACED,
    )
    op.create_index(
        "ix_reservations_open_expiry",
        "reservations",
        ["expires_at"],
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index("ix_reservations_open_expiry", table_name="reservations")
    op.drop_index("ix_usage_events_trace", table_name="usage_events")
    op.create_index("ix_usage_events_trace", "usage_events", ["trace_id"])
    op.create_index("ix_usage_events_team_ts", "usage_events", ["team_id", "ts", "cost_nanos"])
    op.create_index("ix_reservations_expires_at", "reservations", ["expires_at"])
    op.create_index("ix_reservations_state", "reservations", ["state"])
    op.create_index("ix_ledger_entries_event_id", "ledger_entries", ["event_id"])
    op.create_index("ix_ledger_entries_wallet", "ledger_entries", ["wallet_id"])
