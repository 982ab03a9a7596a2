"""The month-end finance report: totals, budgets and status per team and cost center, providers.

Spend with no team (service calls, unattributed passive records) is a shared bucket, or allocated.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from allotment.errors import InvalidRequest
from allotment.reports.common import (
    allocate,
    budget_status,
    change_percent,
    money,
    percent,
    tokens,
    wallet_limits,
)
from allotment.reports.periods import period_days, previous_period
from allotment.reports.rollup import PERSON, TEAM, Fact, read_facts

if TYPE_CHECKING:
    from allotment.runtime import Runtime

SHARED = "shared"
SHARED_MODES = ("bucket", "proportional")
METRIC_NAMES = ("requests", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


def _sum(facts: list[Fact], **match: Any) -> int:
    return sum(f["cost_nanos"] for f in facts if all(f[k] == v for k, v in match.items()))


def spend_report(
    rt: Runtime, period: str, *, per_person: bool = False, shared: str = "bucket"
) -> dict[str, Any]:
    """Everything finance reads at month end, with amounts in exact nanos and USD strings."""
    if shared not in SHARED_MODES:
        raise InvalidRequest(f"--shared is one of {', '.join(SHARED_MODES)}, got {shared!r}")
    start, end = period_days(period)
    prev = previous_period(period)
    facts = read_facts(rt, TEAM, start, end)
    prev_facts = read_facts(rt, TEAM, *period_days(prev))
    people = [f for f in read_facts(rt, PERSON, start, end) if f["person_id"] and f["requests"]]
    directory = rt.directory
    limits = wallet_limits(rt, period)

    total = _sum(facts)
    enforced = _sum(facts, enforced=True)
    prev_total = _sum(prev_facts)

    by_team: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for f in facts:
        row = by_team[f["team_id"] or SHARED]
        row["spent"] += f["cost_nanos"]
        row["enforced"] += f["cost_nanos"] if f["enforced"] else 0
        row["tokens"] += tokens(f)
        row["requests"] += f["requests"]
    prev_by_team: dict[str, int] = defaultdict(int)
    for f in prev_facts:
        prev_by_team[f["team_id"] or SHARED] += f["cost_nanos"]
    active_by_team: dict[str, set[str]] = defaultdict(set)
    for p in people:
        active_by_team[p["team_id"] or SHARED].add(p["person_id"])

    team_ids = sorted(set(directory.teams) | set(by_team) - {SHARED})
    shared_nanos = by_team[SHARED]["spent"] if SHARED in by_team else 0
    allocation = (
        allocate(shared_nanos, {t: by_team[t]["spent"] if t in by_team else 0 for t in team_ids})
        if shared == "proportional"
        else {}
    )
    teams = []
    enforced_overage = passive_overage = 0
    for team_id in team_ids:
        info = directory.teams.get(team_id)
        row = by_team.get(team_id) or defaultdict(int)
        budget = limits.get(("team", team_id), info.monthly_budget_nanos if info else None)
        spent = row["spent"] + allocation.get(team_id, 0)
        over_all = max(0, spent - budget) if budget is not None else 0
        over_enforced = max(0, row["enforced"] - budget) if budget is not None else 0
        enforced_overage += over_enforced
        passive_overage += over_all - over_enforced
        teams.append(
            {
                "team_id": team_id,
                "name": info.name if info else team_id,
                "cost_center": info.cost_center if info else None,
                **money("spent", spent),
                **money("enforced", row["enforced"]),
                **money("passive", row["spent"] - row["enforced"]),
                **money("allocated_shared", allocation.get(team_id, 0)),
                "budget_nanos": budget,
                "budget_usd": None if budget is None else money("b", budget)["b_usd"],
                "used_percent": percent(spent, budget) if budget else None,
                "status": budget_status(spent, budget),
                **money("overage", over_all),
                "requests": row["requests"],
                "tokens": row["tokens"],
                "active_people": len(active_by_team.get(team_id, ())),
                "change_percent": change_percent(row["spent"], prev_by_team.get(team_id, 0)),
            }
        )

    org_budget = limits.get(("org", directory.org_id), directory.org_budget_nanos)
    if org_budget is None:
        org_budget = sum(t["budget_nanos"] or 0 for t in teams)
    report: dict[str, Any] = {
        "report": "spend",
        "period": period,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "timezone": directory.timezone.key,
        "org": directory.config.org.name if directory.config else None,
        "currency": "USD",
        **money("total", total),
        **money("enforced", enforced),
        **money("passive", total - enforced),
        "enforced_percent": percent(enforced, total),
        **money("previous_total", prev_total),
        "previous_period": prev,
        "change_percent": change_percent(total, prev_total),
        **money("budget", org_budget),
        **money("remaining", org_budget - total),
        **money("overage", enforced_overage + passive_overage),
        **money("enforced_overage", enforced_overage),
        **money("passive_overage", passive_overage),
        "active_people": len({p["person_id"] for p in people}),
        "active_teams": sum(1 for t in teams if t["requests"]),
        "unpriced_requests": sum(f["unpriced_requests"] for f in facts),
        "shared_mode": shared,
        **money("shared", shared_nanos),
        "teams": teams,
        "cost_centers": _cost_centers(facts, directory),
        "providers": _breakdown(facts, ("provider",), total),
        "models": _breakdown(facts, ("provider", "model"), total),
    }
    if shared == "bucket":
        row = by_team.get(SHARED) or defaultdict(int)
        report["shared_bucket"] = {
            "team_id": SHARED,
            **money("spent", row["spent"]),
            **money("enforced", row["enforced"]),
            "requests": row["requests"],
            "tokens": row["tokens"],
        }
    if per_person:
        report["people"] = _people(people, directory)
    return report


def _breakdown(facts: list[Fact], keys: tuple[str, ...], total: int) -> list[dict[str, Any]]:
    rows: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f in facts:
        row = rows[tuple(f[k] for k in keys)]
        row["spent"] += f["cost_nanos"]
        row["requests"] += f["requests"]
        row["tokens"] += tokens(f)
        for name in METRIC_NAMES[1:]:
            row[name] += f[name]
    out = [
        {
            **dict(zip(keys, key, strict=True)),
            **money("spent", row["spent"]),
            "share_percent": percent(row["spent"], total),
            "requests": row["requests"],
            "tokens": row["tokens"],
            **{name: row[name] for name in METRIC_NAMES[1:]},
        }
        for key, row in rows.items()
    ]
    return sorted(out, key=lambda r: (-r["spent_nanos"], *(r[k] for k in keys)))


def _cost_centers(facts: list[Fact], directory: Any) -> list[dict[str, Any]]:
    budgets: dict[str, int] = defaultdict(int)
    for team in directory.teams.values():
        if team.cost_center and team.monthly_budget_nanos is not None:
            budgets[team.cost_center] += team.monthly_budget_nanos
    spent: dict[str, int] = defaultdict(int)
    for f in facts:
        spent[f["cost_center"] or SHARED] += f["cost_nanos"]
    return [
        {
            "cost_center": cc,
            **money("spent", spent.get(cc, 0)),
            "budget_nanos": budgets.get(cc),
            "used_percent": percent(spent.get(cc, 0), budgets[cc]) if budgets.get(cc) else None,
            "status": budget_status(spent.get(cc, 0), budgets.get(cc)),
        }
        for cc in sorted(set(spent) | set(budgets))
    ]


def _people(people: list[Fact], directory: Any) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for p in people:
        row = rows[p["person_id"]]
        row["spent"] += p["cost_nanos"]
        row["requests"] += p["requests"]
        row["tokens"] += tokens(p)
    out = []
    for person_id, row in rows.items():
        info = directory.people.get(person_id)
        out.append(
            {
                "person_id": person_id,
                "email": info.email if info else None,
                "name": info.name if info else None,
                "team_id": info.team_id if info else None,
                **money("spent", row["spent"]),
                "requests": row["requests"],
                "tokens": row["tokens"],
            }
        )
    return sorted(out, key=lambda r: (-r["spent_nanos"], r["person_id"]))


ERP_COLUMNS = (
    "period",
    "period_start",
    "period_end",
    "cost_center",
    "team_id",
    "team_name",
    "provider",
    "model",
    "allocation",
    "requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "enforced_usd",
    "passive_usd",
    "amount_usd",
    "currency",
)


def erp_rows(rt: Runtime, period: str, *, shared: str = "bucket") -> list[dict[str, Any]]:
    """One line per cost center x team x provider x model: what AP/ERP imports as a journal."""
    from allotment.money import usd_string

    start, end = period_days(period)
    facts = read_facts(rt, TEAM, start, end)
    directory = rt.directory
    lines: dict[tuple[str, str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f in facts:
        team = f["team_id"] or SHARED
        cc = f["cost_center"] or (SHARED.upper() if team == SHARED else "")
        line = lines[(cc, team, f["provider"], f["model"])]
        line["amount"] += f["cost_nanos"]
        line["enforced"] += f["cost_nanos"] if f["enforced"] else 0
        for name in METRIC_NAMES:
            line[name] += f[name]
    shared_total = sum(v["amount"] for k, v in lines.items() if k[1] == SHARED)
    if shared == "proportional" and shared_total:
        weights: dict[str, int] = defaultdict(int)
        for (_, team, _, _), v in lines.items():
            if team != SHARED:
                weights[team] += v["amount"]
        lines = defaultdict(lambda: defaultdict(int), {k: v for k, v in lines.items() if k[1] != SHARED})
        for team, share in allocate(shared_total, weights).items():
            info = directory.teams.get(team)
            lines[((info.cost_center if info else "") or "", team, SHARED, "")]["amount"] += share
    last_day = end.fromordinal(end.toordinal() - 1)
    rows = []
    for (cc, team, provider, model), v in sorted(lines.items()):
        info = directory.teams.get(team)
        rows.append(
            {
                "period": period,
                "period_start": start.isoformat(),
                "period_end": last_day.isoformat(),
                "cost_center": cc,
                "team_id": team,
                "team_name": info.name if info else team,
                "provider": provider,
                "model": model,
                "allocation": "allocated-shared"
                if provider == SHARED
                else ("shared" if team == SHARED else "direct"),
                "requests": v["requests"],
                "input_tokens": v["input_tokens"],
                "cache_read_tokens": v["cache_read_tokens"],
                "cache_write_tokens": v["cache_write_tokens"],
                "output_tokens": v["output_tokens"],
                "enforced_usd": usd_string(v["enforced"]),
                "passive_usd": usd_string(v["amount"] - v["enforced"]),
                "amount_usd": usd_string(v["amount"]),
                "currency": "USD",
            }
        )
    return rows
