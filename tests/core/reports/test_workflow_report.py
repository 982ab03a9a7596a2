"""Cost by workflow over seeded traffic: groups, unlabeled spend, outcomes, retries, trends."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from allotment.reports.workflows import workflow_report
from allotment.runtime import Runtime

from .seed import Ev, in_july, in_june


def _pct(part: int, whole: int) -> str:
    return str((Decimal(part) * 100 / whole).quantize(Decimal("0.1"), ROUND_HALF_EVEN))


def test_groups_by_feature_and_keeps_unlabeled_apart(seeded: Runtime, events: list[Ev]) -> None:
    july = [e for e in events if in_july(e)]
    report = workflow_report(seeded, "2026-07", ["feature"])
    rows = {r["workflow"]: r for r in report["workflows"]}
    features = {e.labels["feature"] for e in july if "feature" in e.labels}
    assert set(rows) == {f"feature={f}" for f in features}
    for f in features:
        mine = [e for e in july if e.labels.get("feature") == f]
        assert rows[f"feature={f}"]["spend_nanos"] == sum(e.cost for e in mine)
        assert rows[f"feature={f}"]["requests"] == len(mine)
    unlabeled = [e for e in july if "feature" not in e.labels]
    assert report["unlabeled"]["spend_nanos"] == sum(e.cost for e in unlabeled)
    assert report["unlabeled"]["requests"] == len(unlabeled) == 4
    enforced = [e for e in july if e.enforced]
    labeled = [e for e in enforced if "feature" in e.labels]
    assert report["labeled_enforced_share_percent"] == _pct(len(labeled), len(enforced))
    assert report["total_nanos"] == sum(e.cost for e in july)


def test_model_mix_outcomes_retries_and_shares(seeded: Runtime, events: list[Ev]) -> None:
    july = [e for e in events if in_july(e)]
    rows = {r["workflow"]: r for r in workflow_report(seeded, "2026-07", ["feature"])["workflows"]}
    cg = [e for e in july if e.labels.get("feature") == "content-gen"]
    row = rows["feature=content-gen"]
    assert row["top_model"] == "gpt-5.4"
    mix = {m["model"]: m["spend_nanos"] for m in row["models"]}
    assert mix == {
        "gpt-5.4": sum(e.cost for e in cg if e.model == "gpt-5.4"),
        "gpt-5.4-mini": sum(e.cost for e in cg if e.model == "gpt-5.4-mini"),
    }
    successes = sum(1 for e in cg if e.business == "accepted")
    outcomes = sum(1 for e in cg if e.business)
    assert (row["successful_outcomes"], row["outcomes"]) == (successes, outcomes)
    per_success = (Decimal(sum(e.cost for e in cg)) / successes).to_integral_value(ROUND_HALF_EVEN)
    assert row["cost_per_success_nanos"] == int(per_success)
    assert row["retries"] == 1 and row["errors"] == 1
    assert row["retry_rate_percent"] == _pct(1, len(cg))
    # support: outcomes per trace, resolved on even days of 20
    support = rows["feature=support-copilot"]
    assert (support["successful_outcomes"], support["outcomes"]) == (10, 20)
    assert support["cost_per_success_nanos"] == 132_000_000 // 10
    assert support["cached_share_percent"] == "75.0"  # 6000 of 8000 input tokens read from cache
    rerank = rows["feature=search-rerank"]
    assert rerank["batch_share_percent"] == _pct(4, 14)
    rerank_in = sum(e.usage.input_tokens for e in july if e.labels.get("feature") == "search-rerank")
    rerank_out = sum(e.usage.output_tokens for e in july if e.labels.get("feature") == "search-rerank")
    assert rerank["output_input_ratio"] == str((Decimal(rerank_out) / rerank_in).quantize(Decimal("0.0001")))


def test_trend_against_previous_period(seeded: Runtime, events: list[Ev]) -> None:
    rows = {r["workflow"]: r for r in workflow_report(seeded, "2026-07", ["feature"])["workflows"]}
    now = sum(e.cost for e in events if in_july(e) and e.labels.get("feature") == "support-copilot")
    then = sum(e.cost for e in events if in_june(e) and e.labels.get("feature") == "support-copilot")
    assert rows["feature=support-copilot"]["trend_percent"] == _pct(now - then, then)
    assert rows["feature=search-rerank"]["trend_percent"] is None  # nothing last month


def test_release_comparison_per_day_and_label_combinations(seeded: Runtime, events: list[Ev]) -> None:
    report = workflow_report(seeded, "2026-07", ["feature", "prompt_version"], release=date(2026, 7, 10))
    rows = {r["workflow"]: r for r in report["workflows"]}
    assert set(rows) == {"feature=content-gen, prompt_version=v1", "feature=content-gen, prompt_version=v2"}
    # everything without a prompt_version (support, rerank, passive content-gen ...) is unlabeled here
    july = [e for e in events if in_july(e)]
    assert report["unlabeled"]["spend_nanos"] == sum(e.cost for e in july if "prompt_version" not in e.labels)
    assert report["days_before"] == 9 and report["days_after"] == 22
    whole = workflow_report(seeded, "2026-07", ["feature"], release=date(2026, 7, 10))
    cg = [e for e in july if e.labels.get("feature") == "content-gen"]
    ny = ZoneInfo("America/New_York")
    before = sum(e.cost for e in cg if e.at.astimezone(ny).date() < date(2026, 7, 10))
    after = sum(e.cost for e in cg if e.at.astimezone(ny).date() >= date(2026, 7, 10))
    row = next(r for r in whole["workflows"] if r["workflow"] == "feature=content-gen")
    assert row["trend_percent"] == _pct(after * 9 - before * 22, before * 22)
