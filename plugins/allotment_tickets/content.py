"""What a ticket says: title, markdown body and Jira ADF, built from one anomaly.

Every ticket carries the cost delta, the top-cost request type and the trace ids.
"""

from __future__ import annotations

from typing import Any

from allotment.money import format_usd
from allotment.types import Anomaly

TITLE_MAX = 240


def label(anomaly: Anomaly) -> str:
    """The dedup marker: Jira and GitHub labels cannot contain spaces."""
    return f"allot-{anomaly.dedup_key}"


def title(anomaly: Anomaly) -> str:
    text = f"[AI spend] {anomaly.summary}"
    return text if len(text) <= TITLE_MAX else text[: TITLE_MAX - 1] + "…"


def facts(anomaly: Anomaly) -> list[tuple[str, str]]:
    """(name, value) lines shared by every system's ticket body."""
    d = anomaly.details
    out = [
        ("Rule", anomaly.rule),
        ("Scope", f"{anomaly.scope} {anomaly.scope_id}"),
        ("Severity", anomaly.severity),
    ]
    if "cost_delta_nanos" in d:
        out.append(("Cost delta", format_usd(int(d["cost_delta_nanos"]), 2)))
    if "cost_today_nanos" in d and "baseline_nanos" in d:
        today, base = format_usd(int(d["cost_today_nanos"]), 2), format_usd(int(d["baseline_nanos"]), 2)
        out.append(("Spend today vs daily average", f"{today} vs {base}"))
    top = d.get("top_request_type")
    if top:
        out.append(
            (
                "Top-cost request type",
                f"{top['provider']}/{top['model']} ({top['endpoint_mode']}, {top['task']}): "
                f"{format_usd(int(top['cost_nanos']), 2)} over {top['requests']} requests",
            )
        )
    out.append(("Trace ids", ", ".join(d.get("trace_ids") or []) or "none recorded"))
    if d.get("request_ids"):
        out.append(("Costliest requests", ", ".join(d["request_ids"])))
    window = d.get("window") or {}
    if window:
        out.append(("Window", f"{window.get('start')} to {window.get('end')}"))
    out.append(("Dedup key", anomaly.dedup_key))
    return out


def markdown(anomaly: Anomaly, repeat: bool = False) -> str:
    head = "The anomaly is still present:" if repeat else anomaly.summary
    lines = [head, ""] + [f"- **{name}:** {value}" for name, value in facts(anomaly)]
    return "\n".join(lines)


def adf(anomaly: Anomaly, repeat: bool = False) -> dict[str, Any]:
    """Atlassian Document Format: Jira Cloud v3 accepts no plain-text description."""
    items = [
        {
            "type": "listItem",
            "content": [
                {
                    "type": "paragraph",
                    "content": [
                        {"type": "text", "text": f"{name}: ", "marks": [{"type": "strong"}]},
                        {"type": "text", "text": value},
                    ],
                }
            ],
        }
        for name, value in facts(anomaly)
    ]
    head = "The anomaly is still present." if repeat else anomaly.summary
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": head}]},
            {"type": "bulletList", "content": items},
        ],
    }


def event(anomaly: Anomaly) -> dict[str, Any]:
    """The anomaly as JSON for the PagerDuty custom details and the generic webhook."""
    return {
        "rule": anomaly.rule,
        "scope": anomaly.scope,
        "scope_id": anomaly.scope_id,
        "dedup_key": anomaly.dedup_key,
        "severity": anomaly.severity,
        "summary": anomaly.summary,
        "details": anomaly.details,
        "at": anomaly.at.isoformat() if anomaly.at else None,
    }
