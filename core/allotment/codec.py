"""Conversions between the waist's values and their stored forms (JSON contexts, event rows).

A reservation stores its intent and principal so any process can settle it later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from allotment.db.ledger import parse_ts
from allotment.types import CallIntent, EndpointMode, Outcome, Principal, Usage, UsageEvent


def principal_to_dict(principal: Principal | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    return {
        "person_id": principal.person_id,
        "email": principal.email,
        "team_id": principal.team_id,
        "tier": principal.tier,
        "key_id": principal.key_id,
        "cost_center": principal.cost_center,
        "level": principal.level,
        "default_labels": dict(principal.default_labels),
        "kind": principal.kind,
    }


def principal_from_dict(data: dict[str, Any] | None) -> Principal | None:
    if data is None:
        return None
    return Principal(**data)


def intent_to_dict(intent: CallIntent) -> dict[str, Any]:
    return {
        "request_id": intent.request_id,
        "provider": intent.provider,
        "model": intent.model,
        "endpoint_mode": intent.endpoint_mode.value,
        "input_tokens": intent.input_tokens,
        "max_output_tokens": intent.max_output_tokens,
        "labels": dict(intent.labels),
        "trace_id": intent.trace_id,
        "retry_of": intent.retry_of,
        "end_user": intent.end_user,
        "at": intent.at.isoformat() if intent.at else None,
        "service_tier": intent.service_tier,
    }


def intent_from_dict(data: dict[str, Any], principal: Principal | None = None) -> CallIntent:
    return CallIntent(
        request_id=data["request_id"],
        provider=data["provider"],
        model=data["model"],
        endpoint_mode=EndpointMode(data.get("endpoint_mode", "sync")),
        input_tokens=int(data.get("input_tokens") or 0),
        max_output_tokens=data.get("max_output_tokens"),
        labels=dict(data.get("labels") or {}),
        trace_id=data.get("trace_id"),
        retry_of=data.get("retry_of"),
        end_user=data.get("end_user"),
        at=datetime.fromisoformat(data["at"]) if data.get("at") else None,
        principal=principal,
        service_tier=data.get("service_tier"),
    )


def event_from_columns(
    event_id: int,
    row: dict[str, Any],
    *,
    usage: Usage | None = None,
    labels: dict[str, str] | None = None,
) -> UsageEvent:
    """An event from its stored columns. ``usage`` and ``labels``, when the caller already has
    them as written (it just wrote this row), are used instead of decoding the columns again."""
    if labels is None:
        labels = row["labels"]
        if isinstance(labels, str):
            labels = orjson.loads(labels)
    if usage is None:
        usage = Usage(
            input_tokens=int(row["input_tokens"]),
            cache_read_tokens=int(row["cache_read_tokens"]),
            cache_write_tokens=int(row["cache_write_tokens"]),
            cache_write_1h_tokens=int(row["cache_write_1h_tokens"]),
            output_tokens=int(row["output_tokens"]),
            reasoning_tokens=int(row["reasoning_tokens"]),
            tool_calls=int(row["tool_calls"]),
            search_calls=int(row["search_calls"]),
            estimated=bool(row["estimated"]),
            service_tier=row.get("service_tier"),
        )
    return UsageEvent(
        id=event_id,
        request_id=row["request_id"],
        kind=row["kind"],
        person_id=row["person_id"],
        team_id=row["team_id"],
        key_id=row["key_id"],
        provider=row["provider"],
        model=row["model"],
        usage=usage,
        cost_nanos=int(row["cost_nanos"]),
        card_version=row["card_version"],
        outcome=Outcome(row["outcome"]),
        enforced=bool(row["enforced"]),
        labels=labels,
        trace_id=row["trace_id"],
        at=parse_ts(row["ts"]),
        reservation_id=row["reservation_id"],
        estimate_nanos=int(row["estimate_nanos"]),
        flags=tuple(f for f in (row["flags"] or "").split(",") if f),
        cost_center=row["cost_center"],
        endpoint_mode=row["endpoint_mode"],
        retry_of=row["retry_of"],
        end_user=row["end_user"],
        external_cost_nanos=None if row["external_cost_nanos"] is None else int(row["external_cost_nanos"]),
    )


def event_to_dict(event: UsageEvent) -> dict[str, Any]:
    """A JSON-ready view of an event (money as nanos and as a USD string)."""
    from allotment.money import usd_string

    return {
        "id": event.id,
        "request_id": event.request_id,
        "kind": event.kind,
        "person_id": event.person_id,
        "team_id": event.team_id,
        "key_id": event.key_id,
        "cost_center": event.cost_center,
        "provider": event.provider,
        "model": event.model,
        "endpoint_mode": event.endpoint_mode,
        "usage": event.usage.to_dict(),
        "cost_nanos": event.cost_nanos,
        "cost_usd": usd_string(event.cost_nanos),
        "estimate_nanos": event.estimate_nanos,
        "external_cost_nanos": event.external_cost_nanos,
        "card_version": event.card_version,
        "outcome": event.outcome.value,
        "enforced": event.enforced,
        "labels": event.labels,
        "trace_id": event.trace_id,
        "retry_of": event.retry_of,
        "end_user": event.end_user,
        "reservation_id": event.reservation_id,
        "flags": list(event.flags),
        "at": event.at.isoformat(),
    }
