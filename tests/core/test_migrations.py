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
    assert current_revision(database_url) == "0006"
    assert index_names(database_url, "ledger_entries") == set()
    assert index_names(database_url, "reservations") >= {
        "ix_reservations_open_expiry",
        "ix_reservations_expired",
    }
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
    assert "ix_reservations_expired" not in reservations
    assert not has_reserve_function(database_url)

    upgrade(database_url)
    assert current_revision(database_url) == "0006"
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
    """The newest migration that (re)creates ``allotment_settle`` spells the event columns out
    (a migration is a snapshot): they must be the ledger's. A migration that adds a column must
    also recreate ``allotment_settle`` (0005 did, for ``service_tier``)."""
    import importlib

    from allotment.db.ledger import EVENT_COLUMNS

    migration = importlib.import_module("allotment.migrations.versions.0005_usage_event_service_tier")
    spelled = [name.strip() for name in migration.EVENT_COLUMNS.split(",")]
    assert spelled == [*EVENT_COLUMNS, "row_hash"]


def test_service_tier_column_goes_down_and_up_and_old_rows_still_verify(database_url: str) -> None:
    """0005 adds usage_events.service_tier on both databases; an event settled before it (at
    0004) keeps verifying after the upgrade, next to a tiered event settled after it."""
    from datetime import UTC, datetime

    from allotment.audit import verify
    from allotment.testing import intent, temporary_runtime
    from allotment.types import Usage

    upgrade(database_url)  # a PostgreSQL test database may start at head: step back to 0004
    command.downgrade(alembic_config(database_url), "0004")
    assert "service_tier" not in column_names(database_url, "usage_events")
    old = sa.text(
        "INSERT INTO usage_events (request_id, kind, ts, provider, model, endpoint_mode, input_tokens, "
        "cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens, "
        "tool_calls, search_calls, estimated, cost_nanos, estimate_nanos, card_version, outcome, "
        "enforced, labels, flags, row_hash) VALUES ('before', 'usage', :ts, 'openai', 'gpt-4o', 'sync', "
        "1000, 0, 0, 0, 500, 0, 0, 0, :f, 7500000, 0, 'openai-2025-07-01', 'success', :f, '{}', '', :h)"
    )
    from allotment.db.ledger import row_hash

    ts = datetime(2026, 7, 1, tzinfo=UTC)
    stored = {
        "request_id": "before", "kind": "usage", "ts": ts, "person_id": None, "team_id": None,
        "key_id": None, "cost_center": None, "provider": "openai", "model": "gpt-4o",
        "endpoint_mode": "sync", "input_tokens": 1000, "cache_read_tokens": 0, "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0, "output_tokens": 500, "reasoning_tokens": 0, "tool_calls": 0,
        "search_calls": 0, "estimated": False, "cost_nanos": 7500000, "estimate_nanos": 0,
        "external_cost_nanos": None, "card_version": "openai-2025-07-01", "outcome": "success",
        "enforced": False, "labels": "{}", "trace_id": None, "retry_of": None, "end_user": None,
        "reservation_id": None, "flags": "",
    }  # fmt: skip
    engine = create_sa_engine(database_url, write=True)
    try:
        with engine.begin() as conn:
            stamp = ts if engine.dialect.name == "postgresql" else "2026-07-01 00:00:00.000000"
            conn.execute(old, {"ts": stamp, "f": False, "h": row_hash(stored)})
    finally:
        engine.dispose()

    upgrade(database_url)
    assert current_revision(database_url) == "0006"
    assert "service_tier" in column_names(database_url, "usage_events")
    with temporary_runtime(database_url=database_url) as rt:
        tiered = Usage(input_tokens=1000, output_tokens=500, service_tier="priority")
        rt.record(intent(model="gpt-4o", request_id="after"), tiered)
        assert rt.event("after").usage.service_tier == "priority"
        assert rt.event("before").usage.service_tier is None
        report = verify(rt)
        assert report.ok, report.problems
        assert report.events == 2

    command.downgrade(alembic_config(database_url), "0004")
    assert "service_tier" not in column_names(database_url, "usage_events")
    upgrade(database_url)
    assert "service_tier" in column_names(database_url, "usage_events")


def column_names(url: str, table: str) -> set[str]:
    engine = create_sa_engine(url)
    try:
        return {column["name"] for column in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()
