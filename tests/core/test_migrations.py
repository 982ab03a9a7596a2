"""Migrations go down and up again on both databases, and leave the schema the ledger expects."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from allotment.db.migrate import alembic_config, create_sa_engine, current_revision, upgrade


def index_names(url: str, table: str) -> set[str]:
    engine = create_sa_engine(url)
    try:
        return {ix["name"] for ix in sa.inspect(engine).get_indexes(table) if ix["name"]}
    finally:
        engine.dispose()


def has_reserve_function(url: str) -> bool:
    engine = create_sa_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            return False
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT 1 FROM pg_proc WHERE proname = 'allotment_reserve'"))
            return found.first() is not None
    finally:
        engine.dispose()


def test_lean_indexes_go_down_and_up(database_url: str) -> None:
    upgrade(database_url)
    assert current_revision(database_url) == "0004"
    assert index_names(database_url, "ledger_entries") == set()
    assert index_names(database_url, "reservations") >= {"ix_reservations_open_expiry"}
    assert "ix_usage_events_team_ts" not in index_names(database_url, "usage_events")
    assert has_reserve_function(database_url) == database_url.startswith("postgresql")

    command.downgrade(alembic_config(database_url), "0002")
    assert current_revision(database_url) == "0002"
    assert index_names(database_url, "ledger_entries") == {
        "ix_ledger_entries_wallet",
        "ix_ledger_entries_event_id",
    }
    reservations = index_names(database_url, "reservations")
    assert {"ix_reservations_state", "ix_reservations_expires_at"} <= reservations
    assert "ix_reservations_open_expiry" not in reservations
    assert not has_reserve_function(database_url)

    upgrade(database_url)
    assert current_revision(database_url) == "0004"
    assert "ix_reservations_open_expiry" in index_names(database_url, "reservations")
    assert has_reserve_function(database_url) == database_url.startswith("postgresql")


def query_plan(url: str, sql: str, params: dict[str, str]) -> str:
    engine = create_sa_engine(url)
    try:
        with engine.connect() as conn:
            return " | ".join(
                str(row[-1]) for row in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql), params)
            )
    finally:
        engine.dispose()


def test_the_partial_indexes_serve_their_queries_on_sqlite(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    sweep = query_plan(
        sqlite_url,
        "SELECT request_id, amount_nanos, wallet_ids FROM reservations "
        "WHERE state = 'open' AND expires_at < :t ORDER BY expires_at LIMIT 10",
        {"t": "2026-01-01 00:00:00.000000"},
    )
    assert "ix_reservations_open_expiry" in sweep
    # the outcomes report joins events to outcomes by trace: an equality implies NOT NULL
    by_trace = query_plan(
        sqlite_url, "SELECT id FROM usage_events WHERE trace_id = :t AND kind = 'usage'", {"t": "tr_1"}
    )
    assert "ix_usage_events_trace" in by_trace


def test_the_settle_function_inserts_every_event_column() -> None:
    """Migration 0004 spells the event columns out (a migration is a snapshot): they must be
    the ledger's. A migration that adds a column must also recreate ``allotment_settle``."""
    import importlib

    from allotment.db.ledger import EVENT_COLUMNS

    migration = importlib.import_module("allotment.migrations.versions.0004_postgres_reserve_function")
    spelled = [name.strip() for name in migration.EVENT_COLUMNS.split(",")]
    assert spelled == [*EVENT_COLUMNS, "row_hash"]
