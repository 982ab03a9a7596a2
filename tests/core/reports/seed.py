"""Generated traffic for report tests, with every event's cost known by construction.

Prices are the bundled cards' per-token nanos; no report code is used to compute expectations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from allotment import Outcome, Usage
from allotment.testing import SAMPLE_CONFIG, intent
from allotment.types import EndpointMode

# nanos per token on the 2026-06 cards (USD per 1M x 1000)
NANOS = {
    ("openai", "gpt-5.4"): {"input": 2500, "cache_read": 250, "output": 15000},
    ("openai", "gpt-5.4-mini"): {"input": 750, "cache_read": 75, "output": 4500},
    ("anthropic", "claude-sonnet-4"): {"input": 3000, "cache_read": 300, "output": 15000},
}
EMAILS = {
    "ada": "ada@acme.example",
    "grace": "grace@acme.example",
    "pat": "pat@acme.example",
    "dee": "dee@acme.example",
    "sam": "sam@acme.example",
}
TEAM_OF = {"ada": "engineering", "grace": "engineering", "pat": "product", "dee": "design", "sam": "support"}
# small budgets so statuses differ: support ends near its limit, design (passive) goes over
CONFIG = SAMPLE_CONFIG.replace("monthly_budget: 4000}", "monthly_budget: 0.05}").replace(
    "cost_center: CC-SUP-001, monthly_budget: 2000}", "cost_center: CC-SUP-001, monthly_budget: 0.145}"
)


@dataclass
class Ev:
    who: str | None
    model: str
    usage: Usage
    labels: dict[str, str]
    at: datetime
    enforced: bool = True
    outcome: Outcome = Outcome.SUCCESS
    mode: EndpointMode = EndpointMode.SYNC
    retry_of: str | None = None
    trace: str | None = None
    rid: str = ""
    business: str | None = None  # a /v1/outcomes value attached by request id
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def provider(self) -> str:
        return "anthropic" if self.model.startswith("claude") else "openai"

    @property
    def cost(self) -> int:
        p = NANOS[(self.provider, self.model)]
        u = self.usage
        cost = (
            u.input_tokens * p["input"]
            + u.cache_read_tokens * p["cache_read"]
            + u.output_tokens * p["output"]
        )
        if self.mode is EndpointMode.BATCH:
            assert cost % 2 == 0
            cost //= 2
        return cost

    @property
    def team(self) -> str:
        return TEAM_OF[self.who] if self.who else ""

    @property
    def all_labels(self) -> dict[str, str]:
        return {"environment": "prod", **self.labels}


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


# the two prompt versions of pat's content generation, and sam's cache-heavy support copilot
V1_USAGE = Usage(input_tokens=3000, output_tokens=800)
V2_USAGE = Usage(input_tokens=3400, output_tokens=1200)
COPILOT_USAGE = Usage(input_tokens=2000, cache_read_tokens=6000, output_tokens=300)


def content_gen(prompt_version: str, usage: Usage, when: datetime, **options: Any) -> Ev:
    """A content-generation call of pat's on gpt-5.4; ``options`` are further ``Ev`` fields."""
    labels = {"feature": "content-gen", "prompt_version": prompt_version}
    return Ev("pat", "gpt-5.4", usage, labels, when, **options)


def support_copilot(when: datetime, **options: Any) -> Ev:
    """A support-copilot call of sam's on gpt-5.4-mini."""
    return Ev("sam", "gpt-5.4-mini", COPILOT_USAGE, {"feature": "support-copilot"}, when, **options)


def search_rerank(usage: Usage, when: datetime, **options: Any) -> Ev:
    """A search-rerank call of grace's on claude-sonnet-4."""
    return Ev("grace", "claude-sonnet-4", usage, {"feature": "search-rerank"}, when, **options)


def traffic() -> list[Ev]:
    evs: list[Ev] = []
    for d in range(3, 10):  # before the v2 release: 14 calls, 10 accepted
        for i in range(2):
            business = "accepted" if (d + i) % 7 < 5 else "rejected"
            evs.append(content_gen("v1", V1_USAGE, at(7, d, 12 + i), business=business))
    for d in range(10, 20):  # after: 30 calls, longer outputs
        for i in range(3):
            evs.append(content_gen("v2", V2_USAGE, at(7, d, 12 + i), business="accepted" if i < 2 else None))
    # a failed attempt and its retry
    failed = Usage(input_tokens=3400)
    evs.append(content_gen("v2", failed, at(7, 12, 20), outcome=Outcome.ERROR, rid="req_failed_1"))
    evs.append(content_gen("v2", V2_USAGE, at(7, 12, 21), retry_of="req_failed_1", business="accepted"))
    for d in range(1, 21):  # support copilot: cache-heavy, one trace a day
        for i in range(2):
            evs.append(support_copilot(at(7, d, 14 + i), trace=f"t-support-{d}"))
    for d in range(5, 15):
        evs.append(search_rerank(Usage(input_tokens=1000, output_tokens=50), at(7, d, 9)))
    for d in range(15, 19):
        batch = Usage(input_tokens=10000, output_tokens=200)
        evs.append(search_rerank(batch, at(7, d, 9), mode=EndpointMode.BATCH))
    for d in (2, 4, 6):  # unlabeled engineering traffic
        evs.append(Ev("ada", "gpt-5.4", Usage(input_tokens=500, output_tokens=100), {}, at(7, d, 10)))
    for d in range(21, 25):  # passive records from a log, over design's budget
        evs.append(
            Ev(
                "dee",
                "gpt-5.4-mini",
                Usage(input_tokens=10000, output_tokens=2000),
                {"feature": "content-gen"},
                at(7, d, 15),
                enforced=False,
            )
        )
    evs.append(
        Ev(
            None,
            "gpt-5.4-mini",
            Usage(input_tokens=4000, output_tokens=1000),
            {"feature": "batch-eval"},
            at(7, 22, 3),
            enforced=False,
        )
    )
    # time-zone edges (org is America/New_York): 31 July local, and 30 June local
    evs.append(Ev("ada", "gpt-5.4", Usage(input_tokens=700, output_tokens=70), {}, at(8, 1, 2)))
    evs.append(Ev("ada", "gpt-5.4", Usage(input_tokens=900, output_tokens=90), {}, at(7, 1, 3)))
    # the previous month
    evs.extend(content_gen("v1", V1_USAGE, at(6, 20, 10 + i)) for i in range(4))
    evs.extend(support_copilot(at(6, 20, 10 + i)) for i in range(5))
    for n, ev in enumerate(evs):
        ev.rid = ev.rid or f"req_{n:04d}"
    return evs


def in_july(ev: Ev) -> bool:
    """July in New York: [2026-07-01 04:00Z, 2026-08-01 04:00Z)."""
    return at(7, 1, 4) <= ev.at < at(8, 1, 4)


def in_june(ev: Ev) -> bool:
    return at(6, 1, 4) <= ev.at < at(7, 1, 4)


def seed(rt: object, evs: list[Ev]) -> None:
    from allotment.runtime import Runtime

    assert isinstance(rt, Runtime)
    rt.apply_config_text(CONFIG, "reports-test.yaml")
    for ev in evs:
        principal = None
        if ev.who:
            person = rt.directory.person_by_email(EMAILS[ev.who])
            assert person is not None
            principal = rt.directory.principal_for_person(person)
        it = intent(
            None,
            ev.model,
            ev.provider,
            input_tokens=ev.usage.total_input_tokens,
            max_output_tokens=max(ev.usage.output_tokens, 1),
            labels=ev.labels,
            mode=ev.mode,
            request_id=ev.rid,
            at=ev.at,
            trace_id=ev.trace,
            retry_of=ev.retry_of,
            principal=principal,
        )
        if ev.enforced:
            rt.admit(it)
            event = rt.settle(ev.rid, ev.usage, ev.outcome)
        else:
            event = rt.record(it.with_changes(principal=None), ev.usage, ev.outcome, principal=principal)
        assert event.cost_nanos == ev.cost, (ev.rid, event.cost_nanos, ev.cost)
        if ev.business:
            rt.admin.record_outcome(request_id=ev.rid, outcome=ev.business)
    for d in range(1, 21):  # support outcomes per trace: resolved on even days, failed on odd
        rt.admin.record_outcome(trace_id=f"t-support-{d}", outcome="resolved" if d % 2 == 0 else "failed")
