"""Admin report routes, the simulator, recommendations, dashboard, HTML and the report CLI."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from allotment.reports.dashboard import dashboard
from allotment.reports.html import spend_html, workflows_html
from allotment.reports.recommend import recommend
from allotment.reports.simulate import Profile, simulate
from allotment.reports.spend import spend_report
from allotment.reports.workflows import workflow_report
from allotment.runtime import Runtime

from .seed import EMAILS, Ev, in_july

ADMIN = {"authorization": "Bearer dev-admin-token"}


@pytest.fixture(scope="module")
def client(seeded: Runtime) -> TestClient:
    from allotment.gateway import create_app

    return TestClient(create_app(seeded))


def test_report_routes_need_the_admin_token(client: TestClient) -> None:
    assert client.get("/admin/reports/spend?period=2026-07").status_code == 401
    wrong = client.get("/admin/reports/spend?period=2026-07", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_report_routes_serve_the_reports(client: TestClient, seeded: Runtime, events: list[Ev]) -> None:
    total = sum(e.cost for e in events if in_july(e))
    spend = client.get("/admin/reports/spend?period=2026-07", headers=ADMIN).json()
    assert spend["total_nanos"] == total
    flows = client.get("/admin/reports/workflows?period=2026-07&group_by=feature", headers=ADMIN).json()
    assert flows["total_nanos"] == total
    csv_body = client.get("/admin/reports/exports/csv?period=2026-07", headers=ADMIN)
    assert csv_body.status_code == 200 and csv_body.text.startswith("period,period_start")
    assert client.get("/admin/reports/spend?period=2026-13", headers=ADMIN).status_code == 400
    assert client.get("/admin/reports/dashboard", headers=ADMIN).status_code == 200


def test_simulate_prices_a_profile_exactly(seeded: Runtime, client: TestClient) -> None:
    # gpt-5.4-mini: 3,400 input of which 25% cached, 920 output, 2,600 calls a day, 10% batch
    profile = Profile(Decimal(3400), Decimal(920), Decimal(2600), Decimal("0.25"), Decimal("0.1"))
    at = datetime(2026, 7, 1, tzinfo=UTC)
    data = simulate(seeded, profile, ["openai/gpt-5.4-mini", "openai/gpt-5.4"], at=at)
    per_call = (
        Decimal(2550) * Decimal("0.75") + Decimal(850) * Decimal("0.075") + Decimal(920) * Decimal("4.50")
    ) / 10**6
    per_call *= Decimal("0.9") + Decimal("0.1") * Decimal("0.5")
    daily = per_call * 2600
    mini = data["models"][0]
    assert mini["model"] == "gpt-5.4-mini" and mini["card_version"] == "openai-2026-06-08"
    assert mini["daily_nanos"] == int(daily * 10**9)
    assert mini["monthly_nanos"] == int(daily * 30 * 10**9)
    assert mini["weekly_nanos"] == int(daily * 7 * 10**9)
    body = {
        "models": ["openai/gpt-5.4-mini"],
        "profile": {
            "input_tokens": 3400,
            "output_tokens": 920,
            "calls_per_day": 2600,
            "cached_share": "0.25",
            "batch_share": "0.1",
        },
    }
    served = client.post("/admin/simulate", json=body, headers=ADMIN).json()
    assert served["models"][0]["daily_nanos"] == mini["daily_nanos"]
    assert client.post("/admin/simulate", json={"models": []}, headers=ADMIN).status_code == 400


def test_recommendations_respect_every_callers_policy(seeded: Runtime, events: list[Ev]) -> None:
    data = recommend(seeded, days=40, now=datetime(2026, 8, 2, 12, tzinfo=UTC))
    routes = [r for r in data["recommendations"] if r["type"] == "route"]
    assert routes, "the seed holds overpriced short-output traffic"
    tiers = {
        w: seeded.directory.people[seeded.directory.person_by_email(e).id].tier_id for w, e in EMAILS.items()
    }  # type: ignore[union-attr]
    for rec in routes:
        provider, model = rec["to"].split("/", 1)
        callers = {
            e.who
            for e in events
            if in_july(e)
            and f"feature={e.labels.get('feature')}" == rec["workflow"]
            and f"{e.provider}/{e.model}" == rec["from"]
        }
        assert callers
        for who in callers:
            assert who is not None
            assert seeded.directory.tiers[tiers[who]].allowlist.allows(provider, model), (rec, who)
        assert rec["monthly_saving_nanos"] > 0 and rec["evidence"]["eligible_requests"] > 0
    # support's tier allows only gpt-5.4-mini, which it already uses: nothing to move
    assert not any(r["workflow"] == "feature=support-copilot" for r in routes)


def test_recommended_saving_is_priced_from_actual_tokens(seeded: Runtime, events: list[Ev]) -> None:
    now = datetime(2026, 8, 2, 12, tzinfo=UTC)
    rerank = next(
        r
        for r in recommend(seeded, days=40, now=now)["recommendations"]
        if r["type"] == "route" and r["workflow"] == "feature=search-rerank"
    )
    provider, model = rerank["to"].split("/", 1)
    mine = [e for e in events if in_july(e) and e.labels.get("feature") == "search-rerank"]
    candidate = sum(
        seeded.rate_book.price(provider, model, e.usage, now, e.mode.value).amount_nanos for e in mine
    )
    assert rerank["evidence"]["candidate_cost_nanos"] == candidate
    assert rerank["saving_nanos"] == sum(e.cost for e in mine) - candidate
    assert rerank["move_percent"] == "100" and rerank["confidence"] == "medium"


def test_dashboard_windows(seeded: Runtime, events: list[Ev]) -> None:
    data = dashboard(seeded, now=datetime(2026, 7, 20, 18, tzinfo=UTC))
    in_month = [e for e in events if in_july(e) and e.at < datetime(2026, 7, 21, 4, tzinfo=UTC)]
    assert data["month"]["spend_nanos"] == sum(e.cost for e in in_month)
    today = [e for e in in_month if e.at >= datetime(2026, 7, 20, 4, tzinfo=UTC)]
    assert data["today"]["spend_nanos"] == sum(e.cost for e in today)
    top = max(in_month, key=lambda e: e.cost)
    assert data["costliest"][0]["cost_nanos"] == top.cost
    assert {w["scope"] for w in data["wallets"]} >= {"org", "team", "person"}


def test_html_is_self_contained(seeded: Runtime) -> None:
    for page in (
        spend_html(spend_report(seeded, "2026-07")),
        workflows_html(workflow_report(seeded, "2026-07", ["feature"])),
    ):
        assert page.startswith("<!doctype html>") and "<svg" in page
        assert (
            "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
        )
        assert "<script" not in page


def test_cli_reports_and_export(seeded: Runtime, tmp_path: Path, events: list[Ev]) -> None:
    from allotment.cli import build_app

    app = build_app()

    url = seeded.settings.database_url
    runner = CliRunner()
    result = runner.invoke(app, ["report", "spend", "--period", "2026-07", "--json", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["total_nanos"] == sum(e.cost for e in events if in_july(e))
    result = runner.invoke(
        app, ["report", "workflows", "-p", "2026-07", "-g", "feature", "-f", "csv", "--database-url", url]
    )
    assert result.exit_code == 0 and result.stdout.startswith("workflow,requests")
    result = runner.invoke(
        app, ["export", "--kind", "focus", "-p", "2026-07", "--out", str(tmp_path), "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "focus-2026-07.csv").exists()
    result = runner.invoke(
        app,
        [
            "simulate",
            "-m",
            "openai/gpt-5.4",
            "--input",
            "1200000",
            "--output",
            "300000",
            "--calls-per-day",
            "1",
            "--json",
            "--database-url",
            url,
        ],
    )
    assert orjson.loads(result.stdout)["models"][0]["daily_usd"] == "7.5"  # the worked example
    bad = runner.invoke(app, ["report", "spend", "--period", "March", "--database-url", url])
    assert bad.exit_code == 2 and "YYYY-MM" in bad.output


def test_route_and_cli_export_focus_as_parquet(
    seeded: Runtime, client: TestClient, tmp_path: Path, events: list[Ev]
) -> None:
    import pyarrow.parquet as pq

    from allotment.cli import build_app

    total = sum(e.cost for e in events if in_july(e))
    answer = client.get("/admin/reports/exports/focus?period=2026-07&format=parquet", headers=ADMIN)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/vnd.apache.parquet"
    assert answer.headers["content-disposition"] == 'attachment; filename="focus-2026-07.parquet"'
    table = pq.read_table(io.BytesIO(answer.content))
    assert table.num_rows == int(answer.headers["x-allotment-rows"]) > 0
    assert sum(table.column("EffectiveCost").to_pylist()) * 10**9 == total
    csv_answer = client.get("/admin/reports/exports/focus?period=2026-07", headers=ADMIN)
    assert csv_answer.headers["content-type"].startswith("text/csv")
    assert csv_answer.text.startswith("BilledCost,EffectiveCost")
    bad = client.get("/admin/reports/exports/focus?period=2026-07&format=xlsx", headers=ADMIN)
    assert bad.status_code == 400 and "'xlsx'" in bad.text

    url = seeded.settings.database_url
    runner = CliRunner()
    out = tmp_path / "out"

    def export(folder: Path, *extra: str) -> Any:
        args = ["export", "--kind", "focus", "-p", "2026-07", "--out", str(folder), "--database-url", url]
        return runner.invoke(build_app(), [*args, *extra])

    result = export(out, "--format", "parquet", "--json")
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["format"] == "parquet" and summary["effective_cost_nanos"] == total
    assert pq.read_table(out / "focus-2026-07.parquet").num_rows == summary["rows"]
    assert not (out / "focus-2026-07.csv").exists()
    refused = export(tmp_path / "bad", "-f", "xlsx")
    assert refused.exit_code == 2 and "'xlsx'" in refused.output
    assert not (tmp_path / "bad").exists()
