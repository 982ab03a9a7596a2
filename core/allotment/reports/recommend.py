"""Routing recommendations: where traffic looks overpriced, priced from its real token counts.

Candidates are limited to models every caller's tier allows; nothing here changes routing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from allotment.pricing.book import price_with
from allotment.reports.common import money, percent
from allotment.reports.outcomes import SUCCESS_OUTCOMES, outcome_rows
from allotment.reports.periods import day_start_utc, local_today, shift
from allotment.types import Usage

if TYPE_CHECKING:
    from allotment.runtime import Runtime

MAX_OUTPUT = 1000  # short answers: extraction, classification, routing
SIMPLE = re.compile(r"extract|classif|tag|label|rout|rerank|intent|sentiment|moderat|summar")
OFFLINE = re.compile(r"batch|nightly|eval|backfill|offline|report|digest")
MIN_OUTCOMES = 5
WORSE_BY = Decimal("0.05")


def _shapes(rt: Runtime, start: datetime, end: datetime) -> Any:
    sql = text(
        "SELECT labels, provider, model, endpoint_mode, person_id, input_tokens, cache_read_tokens, "
        "cache_write_tokens, cache_write_1h_tokens, output_tokens, tool_calls, COUNT(*), SUM(cost_nanos) "
        "FROM usage_events WHERE kind = 'usage' AND ts >= :t0 AND ts < :t1 "
        "GROUP BY labels, provider, model, endpoint_mode, person_id, input_tokens, cache_read_tokens, "
        "cache_write_tokens, cache_write_1h_tokens, output_tokens, tool_calls"
    )
    with rt.engine.connect() as conn:
        return conn.execute(sql, {"t0": rt.ledger.ts(start), "t1": rt.ledger.ts(end)}).fetchall()


def recommend(
    rt: Runtime, *, days: int = 30, group_by: list[str] | None = None, now: datetime | None = None
) -> dict[str, Any]:
    dims = group_by or ["feature"]
    tz = rt.directory.timezone
    moment = now or datetime.now(UTC)
    today = local_today(tz, moment)
    start, end = day_start_utc(shift(today, -days), tz), day_start_utc(today, tz)
    groups: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {"shapes": [], "people": set(), "requests": 0, "cost": 0}
    )
    for r in _shapes(rt, start, end):
        labels = orjson.loads(r[0]) if r[0] else {}
        values = tuple(labels.get(d) for d in dims)
        if any(v is None for v in values):
            continue  # unlabeled traffic has no workflow to recommend for
        g = groups[(values, str(r[1]), str(r[2]))]
        usage = Usage(
            input_tokens=int(r[5]),
            cache_read_tokens=int(r[6]),
            cache_write_tokens=int(r[7]),
            cache_write_1h_tokens=int(r[8]),
            output_tokens=int(r[9]),
            tool_calls=int(r[10]),
        )
        g["shapes"].append((usage, str(r[3]), int(r[11]), int(r[12])))
        if r[4]:
            g["people"].add(str(r[4]))
        g["requests"] += int(r[11])
        g["cost"] += int(r[12])
    rates = _success_rates(rt, start, end, dims)
    book = rt.rate_book
    catalogue = [(p, m) for p, m in book.models(moment) if not book.entry(p, m, moment).is_pattern]
    out: list[dict[str, Any]] = []
    for (values, provider, model), g in sorted(groups.items(), key=lambda kv: -kv[1]["cost"]):
        workflow = ", ".join(f"{d}={v}" for d, v in zip(dims, values, strict=True))
        served = {(p, m) for (v, p, m) in groups if v == values}
        tiers = _tiers(rt, g["people"])
        move = _best_move(rt, catalogue, tiers, g, values, provider, model, served, rates, moment, days)
        if move:
            out.append({"type": "route", "workflow": workflow, **move})
        out.extend(_batch_and_cache(rt, workflow, values, provider, model, g, moment, days))
    return {
        "window_days": days,
        "group_by": dims,
        "recommendations": out,
        "note": "recommendations only; routing and policy are unchanged",
    }


def _tiers(rt: Runtime, people: set[str]) -> list[Any] | None:
    tiers = []
    for person_id in people:
        info = rt.directory.people.get(person_id)
        tier = rt.directory.tiers.get(info.tier_id or "") if info else None
        if tier is None:
            return None  # a caller whose policy we cannot read: propose nothing
        tiers.append(tier)
    return tiers or None


def _success_rates(
    rt: Runtime, start: datetime, end: datetime, dims: list[str]
) -> dict[tuple[Any, ...], tuple[int, int]]:
    counts: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for row in outcome_rows(rt, start, end):
        labels = orjson.loads(row.labels) if row.labels else {}
        key = (tuple(labels.get(d) for d in dims), row.provider, row.model)
        counts[key][0] += 1
        counts[key][1] += row.outcome.lower() in SUCCESS_OUTCOMES
    return {k: (v[0], v[1]) for k, v in counts.items()}


def _best_move(
    rt: Runtime,
    catalogue: list[tuple[str, str]],
    tiers: list[Any] | None,
    g: dict[str, Any],
    values: tuple[Any, ...],
    provider: str,
    model: str,
    served: set[tuple[str, str]],
    rates: dict[tuple[Any, ...], tuple[int, int]],
    moment: datetime,
    days: int,
) -> dict[str, Any] | None:
    if not tiers:
        return None
    eligible = [s for s in g["shapes"] if s[0].output_tokens <= MAX_OUTPUT and s[0].tool_calls == 0]
    count = sum(s[2] for s in eligible)
    if not count:
        return None
    current = sum(s[3] for s in eligible)
    mine = rates.get((values, provider, model))
    best: dict[str, Any] | None = None
    for cand_provider, cand_model in catalogue:
        if (cand_provider, cand_model) == (provider, model):
            continue
        if not all(t.allowlist.allows(cand_provider, cand_model) for t in tiers):
            continue
        resolution = rt.rate_book.find(cand_provider, cand_model, moment)
        if resolution is None:
            continue
        priced = sum(price_with(resolution, u, mode).amount_nanos * n for u, mode, n, _ in eligible)
        saving = current - priced
        if saving <= 0:
            continue
        theirs = rates.get((values, cand_provider, cand_model))
        confidence, evidence = _confidence(values, mine, theirs, (cand_provider, cand_model) in served)
        if confidence is None:
            continue  # observed outcomes say the cheaper model does worse here
        if best is None or saving > best["saving_nanos"]:
            monthly = saving * 30 // days
            best = {
                "from": f"{provider}/{model}",
                "to": f"{cand_provider}/{cand_model}",
                "card_version": resolution.version,
                "move_percent": percent(count, g["requests"], "1"),
                **money("saving", saving),
                **money("monthly_saving", monthly),
                "confidence": confidence,
                "summary": f"move {percent(count, g['requests'], '1')}% of this traffic to {cand_model}, "
                f"saving {money('x', monthly)['x_usd']} USD/month",
                "evidence": {
                    "requests": g["requests"],
                    "eligible_requests": count,
                    "max_output_tokens": MAX_OUTPUT,
                    "tool_calls": "excluded",
                    **money("eligible_cost", current),
                    **money("candidate_cost", priced),
                    **evidence,
                },
            }
    return best


def _confidence(
    values: tuple[Any, ...], mine: tuple[int, int] | None, theirs: tuple[int, int] | None, both_serve: bool
) -> tuple[str | None, dict[str, Any]]:
    evidence: dict[str, Any] = {}
    if both_serve and mine and theirs and mine[0] >= MIN_OUTCOMES and theirs[0] >= MIN_OUTCOMES:
        rate_mine, rate_theirs = Decimal(mine[1]) / mine[0], Decimal(theirs[1]) / theirs[0]
        evidence = {
            "success_rate": str(round(rate_mine, 4)),
            "candidate_success_rate": str(round(rate_theirs, 4)),
        }
        if rate_theirs < rate_mine - WORSE_BY:
            return None, evidence
        return "high", evidence
    if any(SIMPLE.search(str(v)) for v in values):
        return "medium", {"workflow_kind": "extraction/classification"}
    return "low", evidence


def _batch_and_cache(
    rt: Runtime,
    workflow: str,
    values: tuple[Any, ...],
    provider: str,
    model: str,
    g: dict[str, Any],
    moment: datetime,
    days: int,
) -> list[dict[str, Any]]:
    resolution = rt.rate_book.find(provider, model, moment)
    if resolution is None:
        return []
    out = []
    sync = [s for s in g["shapes"] if s[1] == "sync"]
    if resolution.rates.batch < 1 and sync and any(OFFLINE.search(str(v)) for v in values):
        batch_cost = sum(price_with(resolution, u, "batch").amount_nanos * n for u, _, n, _ in sync)
        saving = sum(s[3] for s in sync) - batch_cost
        if saving > 0:
            out.append(
                {
                    "type": "batch",
                    "workflow": workflow,
                    "model": f"{provider}/{model}",
                    **money("monthly_saving", saving * 30 // days),
                    "confidence": "medium",
                    "evidence": {
                        "sync_requests": sum(s[2] for s in sync),
                        "batch_multiplier": str(resolution.rates.batch),
                    },
                }
            )
    rates = resolution.rates
    fresh = sum(s[0].input_tokens * s[2] for s in g["shapes"])
    cached = sum(s[0].cache_read_tokens * s[2] for s in g["shapes"])
    if rates.cache_read is not None and rates.cache_read < rates.input and g["requests"]:
        average = (fresh + cached) // g["requests"]
        if average >= 1024 and cached * 10 < fresh + cached:
            # assume half the fresh input is a repeated prefix; low confidence by design
            saving = int(Decimal(fresh) / 2 * (rates.input - rates.cache_read) * 1000)
            out.append(
                {
                    "type": "prompt_caching",
                    "workflow": workflow,
                    "model": f"{provider}/{model}",
                    **money("monthly_saving", saving * 30 // days),
                    "confidence": "low",
                    "evidence": {
                        "avg_input_tokens": average,
                        "cached_share_percent": percent(cached, fresh + cached),
                        "assumed_cacheable_share": "0.5",
                    },
                }
            )
    return out
