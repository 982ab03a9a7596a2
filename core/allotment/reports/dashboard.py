"""Usage dashboard data: today, this month, 7/30-day velocity, providers, wallets, costliest calls.

Served at ``/admin/reports/dashboard``; reads rollups plus the tail, and one indexed top-N query.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from allotment.db.ledger import parse_ts
from allotment.reports.common import money, percent, tokens
from allotment.reports.periods import day_start_utc, local_today, period_of, shift
from allotment.reports.rollup import TEAM, read_facts

if TYPE_CHECKING:
    from allotment.runtime import Runtime


def _window(facts: list[dict[str, Any]], since: str, days: int) -> dict[str, Any]:
    spend = sum(f["cost_nanos"] for f in facts if f["day"] >= since)
    used = sum(tokens(f) for f in facts if f["day"] >= since)
    return {
        **money("spend", spend),
        "tokens": used,
        "requests": sum(f["requests"] for f in facts if f["day"] >= since),
        "days": days,
        **money("spend_per_day", spend // days),
        "tokens_per_day": used // days,
    }


def dashboard(rt: Runtime, now: datetime | None = None, costliest: int = 10) -> dict[str, Any]:
    tz = rt.directory.timezone
    today = local_today(tz, now)
    month_start = today.replace(day=1)
    first = min(shift(today, -29), month_start)
    facts = read_facts(rt, TEAM, first, shift(today, 1), by_day=True, keep=("provider", "model"))
    month = [f for f in facts if f["day"] >= month_start.isoformat()]
    month_spend = sum(f["cost_nanos"] for f in month)
    providers: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    models: dict[tuple[str, str], int] = defaultdict(int)
    for f in month:
        providers[f["provider"]]["spend"] += f["cost_nanos"]
        providers[f["provider"]]["tokens"] += tokens(f)
        models[(f["provider"], f["model"])] += f["cost_nanos"]
    shares = sorted(models.items(), key=lambda kv: -kv[1])
    # Herfindahl index in basis points: 10000 means one model takes all spend
    hhi = sum(v * v for _, v in shares) * 10_000 // (month_spend * month_spend) if month_spend else 0
    daily: dict[str, int] = defaultdict(int)
    for f in facts:
        daily[f["day"]] += f["cost_nanos"]
    period = period_of(today)
    return {
        "generated_at": (now or datetime.now(UTC)).isoformat(),
        "timezone": tz.key,
        "today": {"date": today.isoformat(), **_window(facts, today.isoformat(), 1)},
        "month": {
            "period": period,
            **_window(month, month_start.isoformat(), (today - month_start).days + 1),
        },
        "last_7_days": _window(facts, shift(today, -6).isoformat(), 7),
        "last_30_days": _window(facts, shift(today, -29).isoformat(), 30),
        "daily": [
            {
                "date": shift(today, -i).isoformat(),
                **money("spend", daily.get(shift(today, -i).isoformat(), 0)),
            }
            for i in range(29, -1, -1)
        ],
        "providers": sorted(
            (
                {
                    "provider": p,
                    **money("spend", v["spend"]),
                    "tokens": v["tokens"],
                    "share_percent": percent(v["spend"], month_spend),
                }
                for p, v in providers.items()
            ),
            key=lambda r: -r["spend_nanos"],
        ),
        "model_concentration": {
            "top_model": f"{shares[0][0][0]}/{shares[0][0][1]}" if shares else None,
            "top_model_share_percent": percent(shares[0][1], month_spend) if shares else None,
            "hhi": hhi,
            "models": len(shares),
        },
        "wallets": [
            {
                k: w[k]
                for k in (
                    "scope",
                    "scope_id",
                    "limit_usd",
                    "spent_usd",
                    "reserved_usd",
                    "used_percent",
                    "status",
                )
            }
            for w in rt.admin.budgets(period)
        ],
        "costliest": _costliest(rt, day_start_utc(month_start, tz), costliest),
    }


def _costliest(rt: Runtime, since: datetime, limit: int) -> list[dict[str, Any]]:
    # "+ts" keeps SQLite on the cost index (walk from the top) instead of sorting the month
    ts = "+ts" if rt.engine.dialect.name == "sqlite" else "ts"
    sql = text(
        "SELECT request_id, trace_id, provider, model, cost_nanos, ts, person_id, team_id, labels "
        f"FROM usage_events WHERE {ts} >= :t0 AND kind = 'usage' ORDER BY cost_nanos DESC LIMIT :n"
    )
    with rt.engine.connect() as conn:
        rows = conn.execute(sql, {"t0": rt.ledger.ts(since), "n": limit}).fetchall()
    return [
        {
            "request_id": r[0],
            "trace_id": r[1],
            "provider": r[2],
            "model": r[3],
            **money("cost", int(r[4])),
            "ts": parse_ts(r[5]).isoformat(),
            "person_id": r[6],
            "team_id": r[7],
            "labels": orjson.loads(r[8]) if r[8] else {},
        }
        for r in rows
    ]
