"""The finance report over seeded traffic: totals, teams, overages, providers, people, ERP CSV."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import Decimal

from allotment.money import usd_string
from allotment.reports import rollup
from allotment.reports.spend import ERP_COLUMNS, erp_rows, spend_report
from allotment.runtime import Runtime

from .seed import Ev, in_july, in_june


def _july(events: list[Ev]) -> list[Ev]:
    return [e for e in events if in_july(e)]


def test_totals_change_and_enforced_split(seeded: Runtime, events: list[Ev]) -> None:
    july = _july(events)
    june = [e for e in events if in_june(e)]
    total = sum(e.cost for e in july)
    passive = sum(e.cost for e in july if not e.enforced)
    report = spend_report(seeded, "2026-07")
    assert report["total_nanos"] == total
    assert report["total_usd"] == usd_string(total)
    assert report["passive_nanos"] == passive
    assert report["enforced_nanos"] == total - passive
    assert report["previous_total_nanos"] == sum(e.cost for e in june)
    expected_change = Decimal(total - report["previous_total_nanos"]) * 100 / report["previous_total_nanos"]
    assert report["change_percent"] == str(expected_change.quantize(Decimal("0.1")))
    # the org budget is $50,000 (sample config) and nothing else caps it
    assert report["budget_nanos"] == 50_000 * 10**9
    assert report["remaining_nanos"] == 50_000 * 10**9 - total
    assert report["active_people"] == len({e.who for e in july if e.who})


def test_time_zone_edges_follow_the_org_month(seeded: Runtime, events: list[Ev]) -> None:
    # 2026-08-01 02:00Z is 31 July in New York; 2026-07-01 03:00Z is still 30 June there
    late = next(e for e in events if e.at.month == 8)
    early = next(e for e in events if e.at.month == 7 and e.at.day == 1 and e.at.hour == 3)
    assert in_july(late) and not in_july(early)
    july = spend_report(seeded, "2026-07")
    august = spend_report(seeded, "2026-08")
    assert august["total_nanos"] == 0
    assert july["total_nanos"] == sum(e.cost for e in _july(events))


def test_teams_budgets_status_and_overages(seeded: Runtime, events: list[Ev]) -> None:
    july = _july(events)
    spent: dict[str, int] = defaultdict(int)
    for e in july:
        spent[e.team or "shared"] += e.cost
    report = spend_report(seeded, "2026-07")
    teams = {t["team_id"]: t for t in report["teams"]}
    for team in ("engineering", "product", "design", "support"):
        assert teams[team]["spent_nanos"] == spent[team], team
    # support: $0.132 of $0.145 is 91.0% -> near limit; design is passive-only and over
    assert spent["support"] == 132_000_000
    assert teams["support"]["used_percent"] == "91.0"
    assert teams["support"]["status"] == "near limit"
    assert teams["design"]["status"] == "over"
    assert teams["design"]["overage_nanos"] == spent["design"] - 50_000_000
    assert teams["engineering"]["status"] == "on track"
    assert report["enforced_overage_nanos"] == 0
    assert report["passive_overage_nanos"] == spent["design"] - 50_000_000
    assert teams["support"]["cost_center"] == "CC-SUP-001"
    # unattributed passive spend stays in an explicit shared bucket
    assert report["shared_bucket"]["spent_nanos"] == spent["shared"] > 0


def test_proportional_sharing_allocates_every_nano(seeded: Runtime, events: list[Ev]) -> None:
    july = _july(events)
    direct: dict[str, int] = defaultdict(int)
    for e in july:
        if e.team:
            direct[e.team] += e.cost
    shared = sum(e.cost for e in july if not e.team)
    report = spend_report(seeded, "2026-07", shared="proportional")
    allocated = {t["team_id"]: t["allocated_shared_nanos"] for t in report["teams"]}
    assert sum(allocated.values()) == shared
    whole = sum(direct.values())
    for team, amount in allocated.items():
        assert abs(amount - shared * direct[team] / whole) < 1, team
    assert sum(t["spent_nanos"] for t in report["teams"]) == sum(e.cost for e in july)


def test_providers_models_and_people(seeded: Runtime, events: list[Ev]) -> None:
    july = _july(events)
    by_provider: dict[str, int] = defaultdict(int)
    by_model: dict[tuple[str, str], int] = defaultdict(int)
    for e in july:
        by_provider[e.provider] += e.cost
        by_model[(e.provider, e.model)] += e.cost
    report = spend_report(seeded, "2026-07", per_person=True)
    assert {p["provider"]: p["spent_nanos"] for p in report["providers"]} == by_provider
    assert {(m["provider"], m["model"]): m["spent_nanos"] for m in report["models"]} == by_model
    people = {p["email"]: p["spent_nanos"] for p in report["people"]}
    assert people["pat@acme.example"] == sum(e.cost for e in july if e.who == "pat")
    assert people["sam@acme.example"] == 132_000_000


def test_rollups_give_the_same_report_as_raw_events(seeded: Runtime) -> None:
    before = spend_report(seeded, "2026-07", per_person=True)
    rollup.refresh(seeded)
    assert spend_report(seeded, "2026-07", per_person=True) == before
    rollup.refresh(seeded)  # nothing new: folding again changes nothing
    assert spend_report(seeded, "2026-07", per_person=True) == before


def test_erp_csv_round_trips_to_the_total(seeded: Runtime, events: list[Ev]) -> None:
    july = _july(events)
    rows = erp_rows(seeded, "2026-07")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ERP_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    parsed = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert parsed == [{k: str(v) for k, v in row.items()} for row in rows]
    assert sum(Decimal(r["amount_usd"]) for r in parsed) * 10**9 == sum(e.cost for e in july)
    cc = defaultdict(Decimal)
    for r in parsed:
        cc[r["cost_center"]] += Decimal(r["amount_usd"])
    assert cc["CC-SUP-001"] == Decimal("0.132")
    assert cc["SHARED"] * 10**9 == sum(e.cost for e in july if not e.team)
    assert {r["period_start"] for r in parsed} == {"2026-07-01"}
    assert {r["period_end"] for r in parsed} == {"2026-07-31"}
    shared = erp_rows(seeded, "2026-07", shared="proportional")
    assert sum(Decimal(r["amount_usd"]) for r in shared) * 10**9 == sum(e.cost for e in july)
    assert not any(r["team_id"] == "shared" for r in shared)
