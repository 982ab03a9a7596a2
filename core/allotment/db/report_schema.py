"""Tables owned by reports: daily rollups of the usage ledger and the rollup watermark.

Rollups are derived data (rebuilt freely); the append-only ledger stays the source of truth.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Text, text
from sqlmodel import Field, SQLModel


def _metric() -> Any:
    # sa_type, not sa_column: a Column object cannot be shared by the three tables' subclasses
    return Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": text("0")})


class _Metrics(SQLModel):
    """The summed facts every rollup keeps (counts of ``kind='usage'`` rows, sums of all rows)."""

    requests: int = _metric()
    errors: int = _metric()
    retries: int = _metric()
    batch_requests: int = _metric()
    tool_requests: int = _metric()
    unpriced_requests: int = _metric()
    input_tokens: int = _metric()
    cache_read_tokens: int = _metric()
    cache_write_tokens: int = _metric()
    output_tokens: int = _metric()
    cost_nanos: int = _metric()


class RollupTeamDay(_Metrics, table=True):
    """Spend per org-local day, team, cost center, provider, model, enforced/passive."""

    __tablename__ = "rollup_team_day"
    day: str = Field(primary_key=True, max_length=10)
    team_id: str = Field(primary_key=True, max_length=100)
    cost_center: str = Field(primary_key=True, max_length=100)
    provider: str = Field(primary_key=True, max_length=100)
    model: str = Field(primary_key=True, max_length=300)
    enforced: bool = Field(primary_key=True)


class RollupPersonDay(_Metrics, table=True):
    """Spend per org-local day and person (active people, per-person finance lines)."""

    __tablename__ = "rollup_person_day"
    day: str = Field(primary_key=True, max_length=10)
    person_id: str = Field(primary_key=True, max_length=100)
    team_id: str = Field(primary_key=True, max_length=100)
    enforced: bool = Field(primary_key=True)


class RollupLabelDay(_Metrics, table=True):
    """Spend per org-local day, label set (canonical JSON), provider, model: cost by workflow."""

    __tablename__ = "rollup_label_day"
    day: str = Field(primary_key=True, max_length=10)
    labels: str = Field(sa_column=Column(Text, primary_key=True))
    provider: str = Field(primary_key=True, max_length=100)
    model: str = Field(primary_key=True, max_length=300)
    enforced: bool = Field(primary_key=True)


class RollupState(SQLModel, table=True):
    """How far the rollups have folded the ledger: every event id <= ``last_event_id``."""

    __tablename__ = "rollup_state"
    name: str = Field(primary_key=True, max_length=50)
    last_event_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    timezone: str = Field(max_length=100)
    updated_at: datetime
