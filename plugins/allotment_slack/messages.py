"""Block Kit messages for budget thresholds, anomalies and the monthly summary.

Every message carries a top-level ``text`` (the notification fallback) and respects Slack's limits.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from allotment.money import format_usd
from allotment.types import Anomaly, Wallet

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _usd(nanos: int) -> str:
    return format_usd(nanos, 2)


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(f"*{label}:*\n{value}", FIELD_MAX)}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _cut(text, HEADER_MAX), "emoji": True}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(text, SECTION_MAX)}]}


def _button(text: str, url: str, action_id: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text[:75]},
        "url": url,
        "action_id": action_id,
    }


def threshold_message(wallet: Wallet, fraction: str, name: str, dashboard_url: str | None) -> dict[str, Any]:
    """``name`` is the wallet's human name, e.g. ``team Engineering`` or ``person sam@acme.example``."""
    pct = int((Decimal(fraction) * 100).to_integral_value())
    used = wallet.spent_nanos * 100 // wallet.limit_nanos if wallet.limit_nanos else 0
    icon = ":no_entry:" if Decimal(fraction) >= 1 else ":warning:"
    text = (
        f"AI budget {pct}% reached: {name} spent {_usd(wallet.spent_nanos)} "
        f"of {_usd(wallet.limit_nanos)} ({wallet.period})"
    )
    blocks: list[dict[str, Any]] = [
        _header(f"{icon} AI budget {pct}% reached - {name}"),
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _cut(
                    f"*{_usd(wallet.spent_nanos)}* spent of *{_usd(wallet.limit_nanos)}* limit ({used}%).",
                    SECTION_MAX,
                ),
            },
            "fields": [
                _field("Wallet", f"{wallet.scope} `{wallet.scope_id}`"),
                _field("Period", wallet.period),
                _field("Reserved in flight", _usd(wallet.reserved_nanos)),
                _field("Available", _usd(max(wallet.available_nanos, 0))),
                _field("Resets", wallet.period_end.strftime("%Y-%m-%d %H:%M UTC")),
            ],
        },
        _context(f"threshold `{fraction}` | wallet `{wallet.id}`"),
    ]
    if dashboard_url:
        blocks.append(
            {"type": "actions", "elements": [_button("Open dashboard", dashboard_url, "open_dashboard")]}
        )
    return {"text": text, "blocks": blocks}


def anomaly_message(anomaly: Anomaly, repeat: bool, dashboard_url: str | None) -> dict[str, Any]:
    details = anomaly.details
    icon = ":rotating_light:" if anomaly.severity == "critical" else ":warning:"
    prefix = "Still ongoing: " if repeat else ""
    text = f"{prefix}AI spend anomaly ({anomaly.rule}): {anomaly.summary}"
    fields = [_field("Scope", f"{anomaly.scope} `{anomaly.scope_id}`"), _field("Severity", anomaly.severity)]
    if "cost_delta_nanos" in details:
        fields.append(_field("Cost delta", _usd(int(details["cost_delta_nanos"]))))
    top = details.get("top_request_type")
    if top:
        share = f"{top['provider']}/{top['model']} ({top['endpoint_mode']}, {top['task']})"
        fields.append(
            _field("Top request type", f"{share}: {_usd(int(top['cost_nanos']))}, {top['requests']} req")
        )
    if details.get("trace_ids"):
        fields.append(_field("Trace ids", ", ".join(f"`{t}`" for t in details["trace_ids"][:5])))
    window = details.get("window") or {}
    if window:
        fields.append(_field("Window", f"{window.get('start', '')[:16]} to {window.get('end', '')[:16]} UTC"))
    blocks: list[dict[str, Any]] = [
        _header(f"{icon} {prefix}AI spend anomaly - {anomaly.scope} {anomaly.scope_id}"),
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(anomaly.summary, SECTION_MAX)},
            "fields": fields[:10],
        },
        _context(f"rule `{anomaly.rule}` | dedup `{anomaly.dedup_key}`"),
    ]
    if dashboard_url:
        blocks.append(
            {"type": "actions", "elements": [_button("Open dashboard", dashboard_url, "open_dashboard")]}
        )
    return {"text": _cut(text, SECTION_MAX), "blocks": blocks}


def summary_message(period: str, org: str, rows: list[tuple[str, int, int]]) -> dict[str, Any]:
    """``rows`` are (team name, spent, limit) for the closed month, biggest spend first."""
    total = sum(spent for _, spent, _ in rows)
    lines = [
        f"• *{name}*: {_usd(spent)}" + (f" of {_usd(limit)} ({spent * 100 // limit}%)" if limit else "")
        for name, spent, limit in rows[:20]
    ]
    return {
        "text": f"AI spend for {period}: {_usd(total)} at {org}",
        "blocks": [
            _header(f":bar_chart: AI spend summary - {period}"),
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_usd(total)}* spent across {org}."}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut("\n".join(lines) or "No spend.", SECTION_MAX)},
            },
        ],
    }
