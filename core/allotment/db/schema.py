"""The ledger's tables, defined with SQLModel; Alembic migrations are generated from these.

The hot path uses raw DBAPI SQL against the same tables (see ``allotment.db.ledger``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def _big(nullable: bool = False, default: int | None = 0) -> Column:  # type: ignore[type-arg]
    return Column(
        BigInteger,
        nullable=nullable,
        server_default=None if default is None else text(str(default)),
    )


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True, max_length=100)
    value: str = Field(sa_column=Column(Text, nullable=False))


class ConfigRevision(SQLModel, table=True):
    """Every applied ``allotment.yaml``, kept whole; the newest governs."""

    __tablename__ = "config_revisions"
    id: int | None = Field(default=None, primary_key=True)
    applied_at: datetime
    sha256: str = Field(max_length=64)
    source: str = Field(max_length=500)
    document: str = Field(sa_column=Column(Text, nullable=False))


class Team(SQLModel, table=True):
    __tablename__ = "teams"
    id: str = Field(primary_key=True, max_length=100)
    name: str = Field(max_length=200)
    cost_center: str | None = Field(default=None, max_length=100)
    monthly_budget_nanos: int | None = Field(default=None, sa_column=_big(True, None))
    active: bool = True


class Tier(SQLModel, table=True):
    __tablename__ = "tiers"
    id: str = Field(primary_key=True, max_length=100)
    name: str = Field(max_length=200)
    monthly_budget_nanos: int | None = Field(default=None, sa_column=_big(True, None))
    allow: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of globs
    max_request_tokens: int | None = None


class Person(SQLModel, table=True):
    __tablename__ = "people"
    id: str = Field(primary_key=True, max_length=100)
    email: str = Field(max_length=320, unique=True)
    name: str | None = Field(default=None, max_length=200)
    team_id: str | None = Field(default=None, max_length=100, index=True)
    tier_id: str | None = Field(default=None, max_length=100)
    level: int | None = None
    cost_center: str | None = Field(default=None, max_length=100)
    monthly_budget_nanos: int | None = Field(default=None, sa_column=_big(True, None))
    status: str = Field(default="active", max_length=20)
    source: str = Field(default="config", max_length=50)
    external_id: str | None = Field(default=None, max_length=200)
    manager_email: str | None = Field(default=None, max_length=320)
    updated_at: datetime | None = None


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    id: str = Field(primary_key=True, max_length=40)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=20)
    person_id: str = Field(max_length=100, index=True)
    name: str | None = Field(default=None, max_length=200)
    labels: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    monthly_budget_nanos: int | None = Field(default=None, sa_column=_big(True, None))
    created_at: datetime
    revoked_at: datetime | None = None


class Budget(SQLModel, table=True):
    """Budgets that are not implied by org/team/person/key rows: label budgets."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("scope", "scope_id"),)
    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=20)
    scope_id: str = Field(max_length=300)
    monthly_budget_nanos: int = Field(sa_column=_big(False, None))


class WalletRow(SQLModel, table=True):
    """One wallet per (scope, period); a new period is a new row, never a reset."""

    __tablename__ = "wallets"
    __table_args__ = (UniqueConstraint("scope", "scope_id", "period"),)
    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=20)
    scope_id: str = Field(max_length=300)
    period: str = Field(max_length=20)
    period_start: datetime
    period_end: datetime
    limit_nanos: int = Field(sa_column=_big())
    spent_nanos: int = Field(default=0, sa_column=_big())
    reserved_nanos: int = Field(default=0, sa_column=_big())


class ReservationRow(SQLModel, table=True):
    __tablename__ = "reservations"
    __table_args__ = (
        # the expiry sweep reads open holds only; settled ones leave the index
        Index(
            "ix_reservations_open_expiry",
            "expires_at",
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
        # the anomaly detector's unsettled-holds rule reads expired ones (few: a settled or
        # released hold never enters this index, so the hot path writes no page to it)
        Index(
            "ix_reservations_expired",
            "expires_at",
            sqlite_where=text("state = 'expired'"),
            postgresql_where=text("state = 'expired'"),
        ),
    )
    id: str = Field(primary_key=True, max_length=40)
    request_id: str = Field(max_length=200, unique=True)
    state: str = Field(max_length=20)  # open | settled | expired | released
    amount_nanos: int = Field(sa_column=_big())
    wallet_ids: str = Field(sa_column=Column(Text, nullable=False))  # "1,2,3"
    created_at: datetime
    expires_at: datetime
    context: str = Field(sa_column=Column(Text, nullable=False))  # JSON: intent + principal


class UsageEventRow(SQLModel, table=True):
    """Append-only: triggers refuse UPDATE and DELETE; corrections are new rows."""

    __tablename__ = "usage_events"
    __table_args__ = (
        Index(
            "ux_usage_events_request",
            "request_id",
            unique=True,
            sqlite_where=text("kind = 'usage'"),
            postgresql_where=text("kind = 'usage'"),
        ),
        Index("ix_usage_events_ts", "ts"),
        Index(
            "ix_usage_events_trace",
            "trace_id",
            sqlite_where=text("trace_id IS NOT NULL"),
            postgresql_where=text("trace_id IS NOT NULL"),
        ),
        Index("ix_usage_events_cost", "cost_nanos"),
    )
    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(max_length=200)
    kind: str = Field(max_length=20)  # usage | correction
    ts: datetime
    person_id: str | None = Field(default=None, max_length=100)
    team_id: str | None = Field(default=None, max_length=100)
    key_id: str | None = Field(default=None, max_length=40)
    cost_center: str | None = Field(default=None, max_length=100)
    provider: str = Field(max_length=100)
    model: str = Field(max_length=300)
    endpoint_mode: str = Field(max_length=20)
    input_tokens: int = Field(sa_column=_big())
    cache_read_tokens: int = Field(sa_column=_big())
    cache_write_tokens: int = Field(sa_column=_big())
    cache_write_1h_tokens: int = Field(sa_column=_big())
    output_tokens: int = Field(sa_column=_big())
    reasoning_tokens: int = Field(sa_column=_big())
    tool_calls: int = 0
    search_calls: int = 0
    estimated: bool = False
    cost_nanos: int = Field(sa_column=_big())
    estimate_nanos: int = Field(sa_column=_big())
    external_cost_nanos: int | None = Field(default=None, sa_column=_big(True, None))
    card_version: str = Field(max_length=200)
    outcome: str = Field(max_length=20)
    enforced: bool
    labels: str = Field(sa_column=Column(Text, nullable=False))  # JSON object
    trace_id: str | None = Field(default=None, max_length=200)
    retry_of: str | None = Field(default=None, max_length=200)
    end_user: str | None = Field(default=None, max_length=300)
    reservation_id: str | None = Field(default=None, max_length=40)
    flags: str = Field(default="", max_length=500)  # comma-separated
    # the tier the provider served the call on (canonical: standard, priority, flex ...); NULL
    # when it did not say, and for every event recorded before migration 0005
    service_tier: str | None = Field(default=None, max_length=40)
    row_hash: str = Field(max_length=64)


class LedgerEntry(SQLModel, table=True):
    """Append-only: one row per wallet charged by an event; wallet.spent is their sum.

    No secondary index: entries are read in id order only (``audit verify``), and every index
    would cost a page write per settle.
    """

    __tablename__ = "ledger_entries"
    id: int | None = Field(default=None, primary_key=True)
    event_id: int
    wallet_id: int
    amount_nanos: int = Field(sa_column=_big())
    ts: datetime
    row_hash: str = Field(max_length=64)


class Seal(SQLModel, table=True):
    """A digest chaining every event and entry up to a point; ``audit verify`` recomputes it."""

    __tablename__ = "seals"
    id: int | None = Field(default=None, primary_key=True)
    last_event_id: int
    last_entry_id: int
    digest: str = Field(max_length=64)
    prev_digest: str = Field(max_length=64)
    sealed_at: datetime


class OutboxRow(SQLModel, table=True):
    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    hook: str = Field(max_length=100)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    dedup_key: str | None = Field(default=None, max_length=300, unique=True)
    created_at: datetime
    done: bool = Field(default=False, index=True)


class OutboxDelivery(SQLModel, table=True):
    __tablename__ = "outbox_deliveries"
    outbox_id: int = Field(primary_key=True)
    plugin: str = Field(primary_key=True, max_length=200)
    state: str = Field(max_length=20)  # delivered | failed | dead
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    updated_at: datetime


class OutcomeRow(SQLModel, table=True):
    """Business outcomes attached to a request or a trace (``POST /v1/outcomes``)."""

    __tablename__ = "outcomes"
    id: int | None = Field(default=None, primary_key=True)
    request_id: str | None = Field(default=None, max_length=200, index=True)
    trace_id: str | None = Field(default=None, max_length=200, index=True)
    outcome: str = Field(max_length=50)
    value_nanos: int | None = Field(default=None, sa_column=_big(True, None))
    labels: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    ts: datetime


class JobRun(SQLModel, table=True):
    """One row per job and period key, so a job never runs twice for the same period."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job", "period_key"),)
    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(max_length=100)
    period_key: str = Field(max_length=100)
    started_at: datetime
    finished_at: datetime | None = None
    status: str = Field(max_length=20)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Checkpoint(SQLModel, table=True):
    """Resumable positions of tailers and ingesters (file offsets, cursors)."""

    __tablename__ = "checkpoints"
    name: str = Field(primary_key=True, max_length=300)
    data: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime
