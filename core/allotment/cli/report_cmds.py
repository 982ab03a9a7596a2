"""Report commands: ``report spend|workflows|dashboard|rollup``, ``recommend``, ``simulate``, ``export``.

Every report prints a table by default, ``--json``/``--format json``, CSV, or self-contained HTML.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import typer

from allotment.cli.common import DB_OPTION, JSON_OPTION, emit_json, emit_table, handle_errors, open_runtime
from allotment.errors import InvalidRequest

report_app = typer.Typer(help="Finance, workflow and dashboard reports.", no_args_is_help=True)
FORMATS = ("table", "json", "csv", "html")
FORMAT_OPTION = typer.Option("table", "--format", "-f", help="table, json, csv or html")
OUT_OPTION = typer.Option(None, "--out", "-o", help="write to this file instead of stdout")
PERIOD_OPTION = typer.Option(
    None, "--period", "-p", help="YYYY-MM in the org time zone (default: this month)"
)


def _format(fmt: str, as_json: bool) -> str:
    fmt = "json" if as_json else fmt.lower()
    if fmt not in FORMATS:
        raise InvalidRequest(f"--format is one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def _csv_text(rows: list[dict[str, Any]], columns: list[str] | tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


def _period(rt: Any, period: str | None) -> str:
    from allotment.reports.periods import current_period, parse_period

    if period is None:
        return current_period(rt.directory.timezone)
    parse_period(period)
    return period


def _split(values: str | None) -> list[str]:
    return [v.strip() for v in (values or "").split(",") if v.strip()]


@report_app.command("spend")
@handle_errors
def report_spend(
    period: str | None = PERIOD_OPTION,
    per_person: bool = typer.Option(False, "--per-person", help="add a line per person"),
    shared: str = typer.Option("bucket", "--shared", help="bucket (kept apart) or proportional"),
    fmt: str = FORMAT_OPTION,
    out: Path | None = OUT_OPTION,
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """The finance report: totals, teams and cost centers against budget, providers, models."""
    from allotment.reports.spend import ERP_COLUMNS, erp_rows, spend_report

    kind = _format(fmt, as_json)
    with open_runtime(database_url) as rt:
        p = _period(rt, period)
        if kind == "csv":
            return _write(_csv_text(erp_rows(rt, p, shared=shared), ERP_COLUMNS), out)
        report = spend_report(rt, p, per_person=per_person, shared=shared)
    if kind == "json":
        return emit_json(report) if out is None else _write(_json(report), out)
    if kind == "html":
        from allotment.reports.html import spend_html

        return _write(spend_html(report), out)
    typer.echo(
        f"{report['org'] or ''} AI spend {p}: ${report['total_usd']} "
        f"({_signed(report['change_percent'])} vs {report['previous_period']}); "
        f"remaining ${report['remaining_usd']} of ${report['budget_usd']}; "
        f"overages ${report['overage_usd']}; {report['enforced_percent'] or 0}% enforced; "
        f"{report['active_people']} active people"
    )
    emit_table(
        report["teams"],
        ["team_id", "cost_center", "spent_usd", "budget_usd", "used_percent", "status", "active_people"],
    )
    if report.get("shared_bucket", {}).get("spent_nanos"):
        typer.echo(f"shared (no team): ${report['shared_bucket']['spent_usd']}")
    emit_table(report["providers"], ["provider", "spent_usd", "share_percent", "requests", "tokens"])
    if per_person:
        emit_table(report["people"], ["email", "team_id", "spent_usd", "requests", "tokens"])


@report_app.command("workflows")
@handle_errors
def report_workflows(
    period: str | None = PERIOD_OPTION,
    group_by: str = typer.Option("feature", "--group-by", "-g", help="label keys, comma-separated"),
    release: str | None = typer.Option(
        None, "--release", help="YYYY-MM-DD: compare per-day spend before/after"
    ),
    success: str | None = typer.Option(
        None, "--success", help="outcomes that count as success, comma-separated"
    ),
    fmt: str = FORMAT_OPTION,
    out: Path | None = OUT_OPTION,
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Cost by workflow: spend per label group, model mix, trend, outcomes, retries, cache share."""
    from allotment.reports.outcomes import SUCCESS_OUTCOMES
    from allotment.reports.periods import parse_day
    from allotment.reports.workflows import workflow_report

    kind = _format(fmt, as_json)
    with open_runtime(database_url) as rt:
        report = workflow_report(
            rt,
            _period(rt, period),
            _split(group_by),
            release=parse_day(release) if release else None,
            success=frozenset(s.lower() for s in _split(success)) or SUCCESS_OUTCOMES,
        )
    rows = report["workflows"] + ([report["unlabeled"]] if report["unlabeled"] else [])
    if kind == "json":
        return emit_json(report) if out is None else _write(_json(report), out)
    if kind == "csv":
        return _write(_csv_text(rows, WORKFLOW_COLUMNS), out)
    if kind == "html":
        from allotment.reports.html import workflows_html

        return _write(workflows_html(report), out)
    typer.echo(
        f"cost by workflow {report['period']} ({', '.join(report['group_by'])}): "
        f"labeled ${report['labeled_usd']} of ${report['total_usd']}; "
        f"{report['labeled_enforced_share_percent'] or 0}% of enforced requests labeled"
    )
    emit_table(
        rows,
        [
            "workflow",
            "requests",
            "top_model",
            "spend_usd",
            "trend_percent",
            "cost_per_success_usd",
            "retry_rate_percent",
            "cached_share_percent",
        ],
    )


WORKFLOW_COLUMNS = (
    "workflow",
    "requests",
    "enforced_requests",
    "spend_usd",
    "trend_percent",
    "top_model",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "errors",
    "retries",
    "retry_rate_percent",
    "outcomes",
    "successful_outcomes",
    "cost_per_success_usd",
    "retries_per_outcome",
    "cached_share_percent",
    "batch_share_percent",
    "output_input_ratio",
)


@report_app.command("dashboard")
@handle_errors
def report_dashboard(database_url: str | None = DB_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Usage dashboard data: today, this month, velocity, providers, wallets, costliest calls."""
    from allotment.reports.dashboard import dashboard

    with open_runtime(database_url) as rt:
        data = dashboard(rt)
    if as_json:
        return emit_json(data)
    typer.echo(
        f"today ${data['today']['spend_usd']}, this month ${data['month']['spend_usd']}; "
        f"7-day ${data['last_7_days']['spend_usd']}, 30-day ${data['last_30_days']['spend_usd']}"
    )
    emit_table(data["providers"], ["provider", "spend_usd", "share_percent", "tokens"])
    emit_table(data["wallets"], ["scope", "scope_id", "spent_usd", "limit_usd", "used_percent", "status"])
    emit_table(data["costliest"], ["request_id", "trace_id", "model", "cost_usd", "ts"])


@report_app.command("rollup")
@handle_errors
def report_rollup(
    rebuild: bool = typer.Option(False, "--rebuild", help="drop the rollups and fold the ledger again"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Fold new ledger events into the daily rollups (what the nightly job does)."""
    from allotment.reports import rollup

    with open_runtime(database_url) as rt:
        if rebuild:
            rollup.reset(rt)
        result = rollup.refresh(rt)
    emit_json(result) if as_json else typer.echo(f"rollups folded up to event {result['watermark']}")


def _json(data: Any) -> str:
    import orjson

    return orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n"


def _signed(value: str | None) -> str:
    if value is None:
        return "n/a"
    return value + "%" if value.startswith("-") else f"+{value}%"


@handle_errors
def recommend_cmd(
    days: int = typer.Option(30, "--days", help="look at the last N days of traffic"),
    group_by: str = typer.Option("feature", "--group-by", "-g", help="label keys naming a workflow"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Routing, batch and caching recommendations with their evidence (nothing is changed)."""
    from allotment.reports.recommend import recommend

    with open_runtime(database_url) as rt:
        data = recommend(rt, days=days, group_by=_split(group_by))
    if as_json:
        return emit_json(data)
    for rec in data["recommendations"]:
        target = rec.get("summary") or f"{rec['type']} on {rec['model']}"
        typer.echo(f"[{rec['confidence']}] {rec['workflow']}: {target} (${rec['monthly_saving_usd']}/month)")
    if not data["recommendations"]:
        typer.echo("no recommendations for this window")


@handle_errors
def simulate_cmd(
    models: str = typer.Option("", "--models", "-m", help="provider/model list, comma-separated"),
    input_tokens: str | None = typer.Option(None, "--input", help="average input tokens per call"),
    output_tokens: str | None = typer.Option(None, "--output", help="average output tokens per call"),
    calls_per_day: str | None = typer.Option(None, "--calls-per-day", help="calls per day"),
    cached_share: str = typer.Option("0", "--cached-share", help="fraction of input read from cache"),
    batch_share: str = typer.Option("0", "--batch-share", help="fraction of calls sent as batch"),
    growth: str = typer.Option("0", "--growth", help="monthly growth, e.g. 0.1 for +10%"),
    workflow: list[str] = typer.Option([], "--workflow", "-w", help="label key=value: measure this workflow"),
    days: int = typer.Option(14, "--days", help="with --workflow: the last N days"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Compare models side by side for a workload profile: daily, weekly and monthly cost."""
    from decimal import Decimal, InvalidOperation

    from allotment.reports.simulate import Profile, profile_from_workflow, simulate

    def number(name: str, value: str | None) -> Decimal:
        if value is None:
            raise InvalidRequest(f"--{name} is required without --workflow")
        try:
            return Decimal(value)
        except InvalidOperation:
            raise InvalidRequest(f"--{name} must be a number, got {value!r}") from None

    with open_runtime(database_url) as rt:
        chosen = _split(models)
        if workflow:
            labels = dict(item.split("=", 1) for item in workflow if "=" in item)
            profile, seen = profile_from_workflow(rt, labels, days, number("growth", growth))
            chosen = chosen or seen
        else:
            profile = Profile(
                number("input", input_tokens),
                number("output", output_tokens),
                number("calls-per-day", calls_per_day),
                number("cached-share", cached_share),
                number("batch-share", batch_share),
                number("growth", growth),
            )
        data = simulate(rt, profile, chosen)
    if as_json:
        return emit_json(data)
    emit_table(
        data["models"], ["provider", "model", "card_version", "daily_usd", "weekly_usd", "monthly_usd"]
    )


@handle_errors
def export_cmd(
    kind: str = typer.Option(..., "--kind", "-k", help="csv, focus, or a plugin's kind"),
    period: str | None = PERIOD_OPTION,
    out: str = typer.Option(..., "--out", "-o", help="a directory or s3://bucket/prefix"),
    shared: str = typer.Option("bucket", "--shared", help="csv: bucket or proportional"),
    fmt: str = typer.Option("csv", "--format", "-f", help="focus: csv or parquet"),
    database_url: str | None = DB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Write an export for a period through the export hook (built in: csv, focus)."""
    with open_runtime(database_url) as rt:
        p = _period(rt, period)
        # plugins (netsuite ...) read their settings and the ledger through the runtime
        options = {"destination": out, "shared": shared, "format": fmt, "runtime": rt}
        result = rt.hooks.export(kind, p, options)
    if result is None:
        raise InvalidRequest(f"no plugin exports {kind!r}")
    summary = {
        "kind": result.kind,
        "period": result.period,
        "rows": result.rows,
        "location": result.location,
        **result.details,
    }
    emit_json(summary) if as_json else typer.echo(f"{kind} {p}: {result.rows} rows -> {result.location}")


def register(cli: typer.Typer) -> None:
    cli.add_typer(report_app, name="report")
    cli.command("recommend")(recommend_cmd)
    cli.command("simulate")(simulate_cmd)
    cli.command("export")(export_cmd)
