"""Scheduled report jobs: rollups, the monthly finance pack, the weekly workflow scoreboard.

Schedules and options come from ``allotment.yaml`` ``jobs:``; each pack is written once per period.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from allotment.runtime import Runtime

DEFAULT_DESTINATION = "reports"


def _options(rt: Runtime, name: str) -> dict[str, Any]:
    config = rt.directory.config
    found = config.jobs.get(name) if config is not None else None
    return dict(found) if isinstance(found, dict) else {}


def rollup_usage(rt: Runtime) -> dict[str, Any]:
    from allotment.reports.rollup import refresh

    return refresh(rt)


def finance_report(rt: Runtime, period: str) -> dict[str, Any]:
    """The month-end pack: report JSON and HTML, the ERP CSV and the FOCUS export."""
    from allotment.reports.delivery import deliver
    from allotment.reports.exports import build
    from allotment.reports.html import spend_html
    from allotment.reports.rollup import refresh
    from allotment.reports.spend import spend_report

    options = _options(rt, "finance-report")
    destination = str(options.get("destination", DEFAULT_DESTINATION))
    shared = str(options.get("shared", "bucket"))
    refresh(rt)
    report = spend_report(rt, period, per_person=bool(options.get("per_person", False)), shared=shared)
    files = {
        f"spend-{period}.json": orjson.dumps(report, option=orjson.OPT_INDENT_2),
        f"spend-{period}.html": spend_html(report).encode(),
    }
    for kind in options.get("exports", ["csv", "focus"]):
        fmt = str(options.get("focus_format", "csv")) if kind == "focus" else "csv"
        files.update(build(rt, str(kind), period, {"shared": shared, "format": fmt})[0])
    return {"period": period, "files": deliver(destination, files), "total_usd": report["total_usd"]}


def workflow_scoreboard(rt: Runtime, week: str) -> dict[str, Any]:
    """Cost by workflow for the month the finished ISO week ends in."""
    from allotment.reports.delivery import deliver
    from allotment.reports.html import workflows_html
    from allotment.reports.periods import period_of
    from allotment.reports.workflows import workflow_report

    options = _options(rt, "workflow-scoreboard")
    year, number = week.split("-W")
    sunday = date.fromisocalendar(int(year), int(number), 7)
    group_by = options.get("group_by", ["feature"])
    report = workflow_report(rt, period_of(sunday), [str(g) for g in group_by])
    report["week"] = week
    files = {
        f"workflows-{week}.json": orjson.dumps(report, option=orjson.OPT_INDENT_2),
        f"workflows-{week}.html": workflows_html(report).encode(),
    }
    return {"week": week, "files": deliver(str(options.get("destination", DEFAULT_DESTINATION)), files)}


def register(scheduler: Any) -> None:
    scheduler.add(
        "rollup-usage",
        rollup_usage,
        cron="*/15 * * * *",
        description="fold new usage events into the daily report rollups",
    )
    scheduler.add(
        "finance-report",
        finance_report,
        cron="0 6 1 * *",
        period="month",
        description="last month's finance report, ERP CSV and FOCUS export, once per month",
    )
    scheduler.add(
        "workflow-scoreboard",
        workflow_scoreboard,
        cron="0 8 * * 1",
        period="week",
        description="cost by workflow for the week just ended, once per week",
    )
