"""The cost simulator: a workload profile priced on several models side by side, before launch.

A profile is typed in, or measured from a workflow's last N days of traffic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import TYPE_CHECKING, Any

from allotment.errors import InvalidRequest
from allotment.money import NANOS_PER_DOLLAR, usd_string
from allotment.pricing.book import unit_prices
from allotment.reports.periods import local_today, shift
from allotment.reports.rollup import LABELS, read_facts

if TYPE_CHECKING:
    from allotment.runtime import Runtime

DAYS_PER_MONTH = 30
MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Profile:
    input_tokens: Decimal  # average input tokens per call, cached ones included
    output_tokens: Decimal
    calls_per_day: Decimal
    cached_share: Decimal = Decimal(0)  # fraction of input tokens read from cache
    batch_share: Decimal = Decimal(0)  # fraction of calls sent through the batch API
    monthly_growth: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens", "calls_per_day"):
            if getattr(self, name) < 0:
                raise InvalidRequest(f"{name} cannot be negative")
        for name in ("cached_share", "batch_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidRequest(f"{name} is a fraction between 0 and 1")
        if self.monthly_growth <= -1:
            raise InvalidRequest("monthly_growth must be above -1")

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def _nanos(dollars: Decimal) -> int:
    return int((dollars * NANOS_PER_DOLLAR).to_integral_value(ROUND_HALF_EVEN))


def _money(name: str, dollars: Decimal) -> dict[str, Any]:
    nanos = _nanos(dollars)
    return {f"{name}_nanos": nanos, f"{name}_usd": usd_string(nanos)}


def simulate(
    rt: Runtime, profile: Profile, models: list[str], *, at: datetime | None = None, months: int = 3
) -> dict[str, Any]:
    """Daily, weekly and monthly cost of ``profile`` on each of ``models`` (``provider/model``)."""
    if not models:
        raise InvalidRequest("name at least one model to compare (provider/model)")
    when = at or datetime.now(UTC)
    book = rt.rate_book
    rows = []
    for name in models:
        provider, model = rt.resolve_model(name)
        resolution = book.resolve(provider, model, when)
        rates = resolution.rates
        with localcontext() as ctx:
            ctx.prec = 50
            unit = unit_prices(rates, int(profile.input_tokens))
            cached = profile.input_tokens * profile.cached_share
            fresh = profile.input_tokens - cached
            sync = (
                fresh * unit.input + cached * unit.cache_read + profile.output_tokens * unit.output
            ) / MILLION
            per_call = sync * ((1 - profile.batch_share) + profile.batch_share * rates.batch)
            daily = per_call * profile.calls_per_day
            monthly = daily * DAYS_PER_MONTH
            projection = [
                {"month": k + 1, **_money("cost", monthly * (1 + profile.monthly_growth) ** k)}
                for k in range(months)
            ]
        rows.append(
            {
                "provider": provider,
                "model": resolution.model,
                "card_version": resolution.version,
                **_money("per_call", per_call),
                **_money("daily", daily),
                **_money("weekly", daily * 7),
                **_money("monthly", monthly),
                "projection": projection,
            }
        )
    rows.sort(key=lambda r: (r["monthly_nanos"], r["model"]))
    return {
        "profile": profile.to_dict(),
        "days_per_month": DAYS_PER_MONTH,
        "at": when.isoformat(),
        "models": rows,
    }


def profile_from_workflow(
    rt: Runtime, labels: dict[str, str], days: int, growth: Decimal = Decimal(0)
) -> tuple[Profile, list[str]]:
    """The measured profile of calls carrying every label in ``labels`` over the last ``days`` days.

    Also returns the models that served it, so the comparison starts from what runs today.
    """
    import orjson

    if days < 1:
        raise InvalidRequest("--days must be at least 1")
    today = local_today(rt.directory.timezone)
    facts = [
        f
        for f in read_facts(rt, LABELS, shift(today, -days), today)
        if all(orjson.loads(f["labels"] or "{}").get(k) == v for k, v in labels.items())
    ]
    requests = sum(f["requests"] for f in facts)
    if not requests:
        raise InvalidRequest(f"no traffic labelled {labels} in the last {days} days")
    total_in = sum(f["input_tokens"] + f["cache_read_tokens"] + f["cache_write_tokens"] for f in facts)
    profile = Profile(
        input_tokens=Decimal(total_in) / requests,
        output_tokens=Decimal(sum(f["output_tokens"] for f in facts)) / requests,
        calls_per_day=Decimal(requests) / days,
        cached_share=Decimal(sum(f["cache_read_tokens"] for f in facts)) / total_in
        if total_in
        else Decimal(0),
        batch_share=Decimal(sum(f["batch_requests"] for f in facts)) / requests,
        monthly_growth=growth,
    )
    models = sorted({f"{f['provider']}/{f['model']}" for f in facts})
    return profile, models
