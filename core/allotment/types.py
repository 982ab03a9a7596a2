"""The values that cross the admit/settle waist: intents, usage, principals, prices, events.

Adapters build ``CallIntent`` and ``Usage``; the core returns ``Admission`` and ``UsageEvent``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from allotment.errors import InvalidRequest
from allotment.service_tiers import canonical_tier

MAX_TOKENS_PER_FIELD = 100_000_000  # far above any context window; anything larger is garbage


class Outcome(str, enum.Enum):
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"


class EndpointMode(str, enum.Enum):
    SYNC = "sync"
    STREAM = "stream"
    BATCH = "batch"


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer, got {value!r}", code="invalid_usage")
    if value < 0:
        raise InvalidRequest(f"{name} must not be negative, got {value}", code="invalid_usage")
    if value > MAX_TOKENS_PER_FIELD:
        raise InvalidRequest(
            f"{name}={value} is beyond any model's limits ({MAX_TOKENS_PER_FIELD})",
            code="invalid_usage",
        )


# Usage's counts, in field order: each an int in [0, MAX_TOKENS_PER_FIELD]
USAGE_COUNT_FIELDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "tool_calls",
    "search_calls",
)


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalized token counts. ``input_tokens`` is *fresh* (uncached) input only.

    Cache reads and writes are separate and never overlap with ``input_tokens``;
    ``output_tokens`` includes reasoning tokens (``reasoning_tokens`` is informational).
    ``service_tier`` is the tier the provider reported serving the call on, in its canonical
    name (``allotment.service_tiers``); None when the provider did not say (priced as standard).
    """

    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0  # 5-minute cache writes (the default TTL)
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: int = 0
    search_calls: int = 0
    estimated: bool = False  # True when counts were estimated, not reported by the provider
    service_tier: str | None = None

    def __post_init__(self) -> None:
        if self.service_tier is not None:
            object.__setattr__(self, "service_tier", canonical_tier(self.service_tier))
        # Usage is built several times per request: accept the usual case (plain ints in
        # range) in one pass, and only otherwise run the checks that name the bad field.
        for value in (
            self.input_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cache_write_1h_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.tool_calls,
            self.search_calls,
        ):
            if type(value) is not int or not 0 <= value <= MAX_TOKENS_PER_FIELD:
                break
        else:
            return
        for name in USAGE_COUNT_FIELDS:
            _check_count(name, getattr(self, name))

    @property
    def total_input_tokens(self) -> int:
        """Every input token the provider processed: fresh + cache read + cache writes."""
        return (
            self.input_tokens + self.cache_read_tokens + self.cache_write_tokens + self.cache_write_1h_tokens
        )

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "tool_calls": self.tool_calls,
            "search_calls": self.search_calls,
            "estimated": self.estimated,
            "service_tier": self.service_tier,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise InvalidRequest(f"unknown usage fields: {sorted(unknown)}", code="invalid_usage")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the person behind a key, with the team and tier that govern them."""

    person_id: str
    email: str | None = None
    team_id: str | None = None
    tier: str | None = None
    key_id: str | None = None
    cost_center: str | None = None
    level: int | None = None
    default_labels: dict[str, str] = field(default_factory=dict)
    kind: str = "person"  # person | service


@dataclass(frozen=True, slots=True)
class CallIntent:
    """What a caller wants to do, as known before the provider is called."""

    request_id: str
    provider: str
    model: str
    credential: str | None = None
    endpoint_mode: EndpointMode = EndpointMode.SYNC
    input_tokens: int = 0  # an upper bound of the input tokens (all classes together)
    max_output_tokens: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    trace_id: str | None = None
    retry_of: str | None = None
    end_user: str | None = None
    principal: Principal | None = None  # set when the adapter already authenticated the caller
    at: datetime | None = None  # request time; defaults to now
    clamp_max_tokens: bool = False  # opt-in: shrink max tokens to what the budget can pay for
    # the tier the request asks for (``service_tier`` in OpenAI and Anthropic bodies), canonical;
    # ``auto`` or None: the provider decides (see ``Runtime.worst_case``)
    service_tier: str | None = None

    def __post_init__(self) -> None:
        if self.service_tier is not None:
            object.__setattr__(self, "service_tier", canonical_tier(self.service_tier, requested=True))
        if not self.request_id or len(self.request_id) > 200:
            raise InvalidRequest("request_id must be 1-200 characters", code="invalid_request")
        if not self.model:
            raise InvalidRequest("model is required", code="invalid_request")
        _check_count("input_tokens", self.input_tokens)
        if self.max_output_tokens is not None:
            _check_count("max_output_tokens", self.max_output_tokens)

    def with_changes(self, **changes: Any) -> CallIntent:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy verdict. ``allowed=False`` carries the HTTP status and stable code."""

    allowed: bool
    status: int = 200
    code: str = "ok"
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def allow(cls) -> Decision:
        return _ALLOW

    @classmethod
    def deny(cls, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Decision:
        return cls(False, status, code, message, dict(details or {}))


_ALLOW = Decision(True)


@dataclass(frozen=True, slots=True)
class Price:
    """An exact cost with the rate card that produced it."""

    amount_nanos: int
    card_version: str
    provider: str
    model: str  # the card's canonical model name
    components: dict[str, int] = field(default_factory=dict)  # nanos per token class
    flags: tuple[str, ...] = ()  # e.g. ("fallback_price",)


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    request_id: str
    amount_nanos: int
    wallet_ids: tuple[int, ...]
    expires_at: datetime
    state: str = "open"


# ``Reservation.state`` of a call let through while the ledger could not be reached
# (``policy.ledger_unavailable: open``): nothing is held; settle records it unenforced.
UNRECORDED = "unrecorded"


@dataclass(frozen=True, slots=True)
class Admission:
    """The result of a successful ``admit``: the call may go to the provider."""

    request_id: str
    principal: Principal
    reservation: Reservation
    labels: dict[str, str]
    estimate: Price
    provider: str
    model: str
    max_output_tokens: int | None  # possibly clamped to the budget (opt-in)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One settled (or passively recorded) call, as stored in the append-only ledger."""

    id: int
    request_id: str
    kind: str  # usage | correction
    person_id: str | None
    team_id: str | None
    key_id: str | None
    provider: str
    model: str
    usage: Usage
    cost_nanos: int
    card_version: str
    outcome: Outcome
    enforced: bool
    labels: dict[str, str]
    trace_id: str | None
    at: datetime
    reservation_id: str | None = None
    estimate_nanos: int = 0
    flags: tuple[str, ...] = ()
    cost_center: str | None = None
    endpoint_mode: str = "sync"
    retry_of: str | None = None
    end_user: str | None = None
    external_cost_nanos: int | None = None  # e.g. LiteLLM's response_cost, kept beside ours


@dataclass(frozen=True, slots=True)
class Wallet:
    id: int
    scope: str  # org | team | person | key | label
    scope_id: str
    period: str  # e.g. "2026-11"
    limit_nanos: int
    spent_nanos: int
    reserved_nanos: int
    period_start: datetime
    period_end: datetime

    @property
    def available_nanos(self) -> int:
        return self.limit_nanos - self.spent_nanos - self.reserved_nanos


@dataclass(frozen=True, slots=True)
class ExportResult:
    kind: str
    period: str
    rows: int
    location: str | None = None
    content: bytes | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Anomaly:
    rule: str
    scope: str
    scope_id: str
    dedup_key: str
    severity: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DirectoryPerson:
    email: str
    name: str | None = None
    department: str | None = None
    title: str | None = None
    level: int | None = None
    manager_email: str | None = None
    cost_center: str | None = None
    status: str = "active"  # active | terminated
    start_date: str | None = None
    end_date: str | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class DirectoryChanges:
    """What an HR system reports: current people (full sync) or changed people (incremental)."""

    source: str
    people: tuple[DirectoryPerson, ...]
    complete: bool  # True: absent people have left; False: incremental
    cursor: str | None = None


def usage_flags(usage: Usage, flags: Iterable[str]) -> list[str]:
    """The caller's flags, then ``estimated_usage`` when the counts were estimated."""
    out = list(flags)
    if usage.estimated and "estimated_usage" not in out:
        out.append("estimated_usage")
    return out
