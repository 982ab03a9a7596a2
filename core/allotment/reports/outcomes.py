"""Business outcomes (``POST /v1/outcomes``) joined to the calls they judge.

An outcome names a request (its event) or a trace (attributed to the trace's labels and model).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from allotment.runtime import Runtime

SUCCESS_OUTCOMES = frozenset({"success", "accepted", "resolved", "converted", "completed", "ok", "won"})


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    outcome: str
    labels: str
    provider: str
    model: str


def outcome_rows(rt: Runtime, start: datetime, end: datetime) -> list[OutcomeRow]:
    """Outcomes whose calls happened in [start, end), with the labels and model of those calls."""
    sql = text(
        "SELECT o.outcome, e.labels, e.provider, e.model FROM outcomes o "
        "JOIN usage_events e ON e.request_id = o.request_id AND e.kind = 'usage' "
        "WHERE e.ts >= :t0 AND e.ts < :t1 "
        "UNION ALL "
        "SELECT o.outcome, MIN(e.labels), MIN(e.provider), MIN(e.model) FROM outcomes o "
        "JOIN usage_events e ON e.trace_id = o.trace_id AND e.kind = 'usage' "
        "WHERE o.request_id IS NULL AND e.ts >= :t0 AND e.ts < :t1 GROUP BY o.id, o.outcome"
    )
    params = {"t0": rt.ledger.ts(start), "t1": rt.ledger.ts(end)}
    with rt.engine.connect() as conn:
        return [OutcomeRow(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in conn.execute(sql, params)]
