"""Cost by workflow: spend grouped by label dimensions, model mix, trend, outcomes and retries.

Calls missing any grouping label are reported as ``unlabeled``, never spread over workflows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

import orjson

from allotment.errors import InvalidRequest
from allotment.reports.common import change_percent, money, percent, ratio
from allotment.reports.outcomes import SUCCESS_OUTCOMES, outcome_rows
from allotment.reports.periods import day_start_utc, days_between, period_days, previous_period
from allotment.reports.rollup import LABELS, Fact, read_facts

if TYPE_CHECKING:
    from allotment.runtime import Runtime

SUMMED = (
    "requests",
    "errors",
    "retries",
    "batch_requests",
    "tool_requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_nanos",
)
Key = tuple[str, ...]


class _Labels:
    """Parses each distinct label JSON text once (a month holds few distinct label sets)."""

    def __init__(self) -> None:
        self._cache: dict[str, dict[str, str]] = {}

    def __call__(self, raw: str) -> dict[str, str]:
        found = self._cache.get(raw)
        if found is None:
            try:
                value = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                value = {}
            found = self._cache[raw] = value if isinstance(value, dict) else {}
        return found


def _key(labels: dict[str, str], dims: list[str]) -> Key | None:
    values = tuple(labels.get(d) for d in dims)
    return None if any(v is None or v == "" for v in values) else tuple(str(v) for v in values)


def _group(facts: Iterable[Fact], dims: list[str], parse: _Labels) -> dict[Key | None, dict[str, Any]]:
    groups: dict[Key | None, dict[str, Any]] = {}
    for f in facts:
        key = _key(parse(f["labels"]), dims)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {name: 0 for name in SUMMED}
            g["enforced_requests"] = 0
            g["models"] = defaultdict(lambda: {"cost_nanos": 0, "requests": 0})
        for name in SUMMED:
            g[name] += f[name]
        if f["enforced"]:
            g["enforced_requests"] += f["requests"]
        m = g["models"][(f["provider"], f["model"])]
        m["cost_nanos"] += f["cost_nanos"]
        m["requests"] += f["requests"]
    return groups


def workflow_report(
    rt: Runtime,
    period: str,
    group_by: list[str],
    *,
    release: date | None = None,
    success: frozenset[str] = SUCCESS_OUTCOMES,
) -> dict[str, Any]:
    """Workflows of ``period`` grouped by ``group_by`` label keys.

    The trend compares with the previous period, or with ``release``: spend per day after
    the release date against spend per day before it, inside the period.
    """
    dims = [d.strip().lower() for d in group_by if d.strip()]
    if not dims:
        raise InvalidRequest("group by at least one label key (e.g. feature)")
    start, end = period_days(period)
    if release is not None and not start < release < end:
        raise InvalidRequest(f"the release date must fall inside {period}")
    parse = _Labels()
    tz = rt.directory.timezone
    facts = read_facts(rt, LABELS, start, end)
    groups = _group(facts, dims, parse)
    trend: dict[Key | None, tuple[int, int]] = {}
    if release is None:
        prev = _group(read_facts(rt, LABELS, *period_days(previous_period(period))), dims, parse)
        for key, g in groups.items():
            trend[key] = (g["cost_nanos"], prev[key]["cost_nanos"] if key in prev else 0)
        basis: dict[str, Any] = {"compare": "previous_period", "previous_period": previous_period(period)}
    else:
        before = _group(read_facts(rt, LABELS, start, release), dims, parse)
        after = _group(read_facts(rt, LABELS, release, end), dims, parse)
        days_before, days_after = days_between(start, release), days_between(release, end)
        for key in groups:
            b = before[key]["cost_nanos"] if key in before else 0
            a = after[key]["cost_nanos"] if key in after else 0
            # windows differ in length: compare spend per day, scaled to whole nanos
            trend[key] = (a * days_before, b * days_after)
        basis = {
            "compare": "release",
            "release": release.isoformat(),
            "days_before": days_before,
            "days_after": days_after,
        }

    outcomes: dict[Key | None, list[int]] = defaultdict(lambda: [0, 0])
    for row in outcome_rows(rt, day_start_utc(start, tz), day_start_utc(end, tz)):
        counts = outcomes[_key(parse(row.labels), dims)]
        counts[0] += 1
        counts[1] += row.outcome.lower() in success

    enforced_total = sum(g["enforced_requests"] for g in groups.values())
    unlabeled = groups.pop(None, None)
    rows = [_row(dims, key, g, trend[key], outcomes.get(key, [0, 0])) for key, g in groups.items()]
    rows.sort(key=lambda r: (-r["spend_nanos"], r["workflow"]))
    labeled_enforced = sum(g["enforced_requests"] for g in groups.values())
    labeled_spend = sum(g["cost_nanos"] for g in groups.values())
    total_spend = labeled_spend + (unlabeled["cost_nanos"] if unlabeled else 0)
    return {
        "report": "workflows",
        "period": period,
        "group_by": dims,
        "timezone": tz.key,
        **basis,
        **money("total", total_spend),
        **money("labeled", labeled_spend),
        "labeled_requests": sum(g["requests"] for g in groups.values()),
        "labeled_enforced_share_percent": percent(labeled_enforced, enforced_total),
        "workflows": rows,
        "unlabeled": None
        if unlabeled is None
        else _row(dims, None, unlabeled, trend[None], outcomes.get(None, [0, 0])),
        "success_outcomes": sorted(success),
    }


def _row(
    dims: list[str], key: Key | None, g: dict[str, Any], trend: tuple[int, int], outcomes: list[int]
) -> dict[str, Any]:
    cost = g["cost_nanos"]
    total_input = g["input_tokens"] + g["cache_read_tokens"] + g["cache_write_tokens"]
    models = sorted(
        (
            {
                "provider": p,
                "model": m,
                **money("spend", v["cost_nanos"]),
                "requests": v["requests"],
                "share_percent": percent(v["cost_nanos"], cost),
            }
            for (p, m), v in g["models"].items()
        ),
        key=lambda r: (-r["spend_nanos"], r["provider"], r["model"]),
    )
    total_outcomes, successes = outcomes
    per_success = None
    if successes:
        per_success = int((Decimal(cost) / successes).to_integral_value(ROUND_HALF_EVEN))
    return {
        "workflow": "unlabeled"
        if key is None
        else ", ".join(f"{d}={v}" for d, v in zip(dims, key, strict=True)),
        "labels": None if key is None else dict(zip(dims, key, strict=True)),
        "requests": g["requests"],
        "enforced_requests": g["enforced_requests"],
        **money("spend", cost),
        "trend_percent": change_percent(*trend),
        "top_model": models[0]["model"] if models else None,
        "models": models,
        "input_tokens": g["input_tokens"],
        "cache_read_tokens": g["cache_read_tokens"],
        "cache_write_tokens": g["cache_write_tokens"],
        "output_tokens": g["output_tokens"],
        "tokens": total_input + g["output_tokens"],
        "errors": g["errors"],
        "retries": g["retries"],
        "retry_rate_percent": percent(g["retries"], g["requests"]),
        "outcomes": total_outcomes,
        "successful_outcomes": successes,
        "cost_per_success_nanos": per_success,
        "cost_per_success_usd": None if per_success is None else money("x", per_success)["x_usd"],
        "retries_per_outcome": ratio(g["retries"], total_outcomes),
        "cached_share_percent": percent(g["cache_read_tokens"], total_input),
        "batch_share_percent": percent(g["batch_requests"], g["requests"]),
        "tool_share_percent": percent(g["tool_requests"], g["requests"]),
        "output_input_ratio": ratio(g["output_tokens"], total_input),
    }
