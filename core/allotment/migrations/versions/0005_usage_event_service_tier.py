"""usage events: the service tier the provider served the call on

A nullable ``service_tier`` column (canonical names: standard, priority, flex, batch, scale,
reserved ...). Rows written before it stay NULL; a row's hash covers the column only when it is
set (``allotment.db.ledger.LATE_HASHED_COLUMNS``), so ``audit verify`` still proves them.
Adding a nullable column rewrites no row, so the append-only triggers never fire.

PostgreSQL's ``allotment_settle`` (0004) lists the event columns it copies from its JSON
argument: it is recreated with the new column, or the admitting process's settles would drop it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _load_0004() -> ModuleType:
    """The 0004 script (its name starts with a digit, so no ``import``): the function body."""
    path = Path(__file__).with_name("0004_postgres_reserve_function.py")
    spec = importlib.util.spec_from_file_location("_allotment_migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_previous = _load_0004()
SETTLE = _previous.SETTLE
EVENT_COLUMNS_BEFORE = _previous.EVENT_COLUMNS
EVENT_COLUMNS = EVENT_COLUMNS_BEFORE.replace("flags, row_hash", "flags, service_tier, row_hash")
assert EVENT_COLUMNS != EVENT_COLUMNS_BEFORE


def upgrade() -> None:
    op.add_column(
        "usage_events",
        sa.Column("service_tier", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SETTLE.replace("COLUMNS", EVENT_COLUMNS))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SETTLE.replace("COLUMNS", EVENT_COLUMNS_BEFORE))
    # native DROP COLUMN (SQLite >= 3.35): a batch copy of the table would lose its triggers
    op.execute("ALTER TABLE usage_events DROP COLUMN service_tier")
