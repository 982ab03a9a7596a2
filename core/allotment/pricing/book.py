"""The rate-card book: which card entry prices a model at an instant, and the exact price.

Resolution is cached because it sits on the request hot path; the arithmetic is exact Decimal.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path

from allotment.errors import ConfigError, PricingError
from allotment.money import NANOS_PER_DOLLAR, TOKENS_PER_MILLION
from allotment.pricing.cards import ModelRates, RateCard, Tier, iter_card_files, load_card
from allotment.service_tiers import BATCH, COMMITTED, COMMITTED_CAPACITY, SERVICE_TIER_UNPRICED, STANDARD
from allotment.types import MAX_TOKENS_PER_FIELD, Price, Usage

TOKEN_CLASSES = ("input", "cache_read", "cache_write", "cache_write_1h", "output")
COMPONENT_KEYS = (*TOKEN_CLASSES, "per_call")

# Tried only when a provider has no card of its own (LiteLLM and SDK spellings).
PROVIDER_ALIASES = {
    "gemini": "google",
    "vertex_ai": "google",
    "google_genai": "google",
    "bedrock_converse": "bedrock",
    "aws_bedrock": "bedrock",
    "amazon_bedrock": "bedrock",
}
# Bedrock cross-region inference-profile prefixes ("us.anthropic.claude-...").
_REGION_PREFIX = re.compile(r"^(?:us|us-gov|eu|apac|global|jp|au|ca)\.(?=[a-z0-9-]+\.)")
_BEDROCK_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:[^:]*:[^:]*:(?:inference-profile|foundation-model)/(?P<id>.+)$"
)
_NANOS = Decimal(NANOS_PER_DOLLAR)
_STANDARDS = frozenset({STANDARD, BATCH})
_ZERO = Decimal(0)
_CACHE_LIMIT = 50_000


@dataclass(frozen=True, slots=True)
class Resolution:
    """The card entry that prices ``model`` of ``provider`` at some instant."""

    card: RateCard
    rates: ModelRates
    model: str  # canonical name: the entry's name, or the requested id for a wildcard entry

    @property
    def version(self) -> str:
        return self.card.version


@dataclass(frozen=True, slots=True)
class UnitPrices:
    """The per-1M prices that apply to one request after tier selection (before batch)."""

    input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    output: Decimal
    tier: int | None  # the threshold of the tier in force, None for base prices
    service_tier: str | None = None  # the service tier whose prices apply; None for standard
    flags: tuple[str, ...] = ()  # ``service_tier_unpriced`` / ``committed_capacity``


def unit_prices(rates: ModelRates, total_input_tokens: int, service_tier: str | None = None) -> UnitPrices:
    """The prices of a request with this much input, served on ``service_tier`` (canonical).

    The context-tier rule: above a threshold the whole request uses that tier's prices. An
    absent cache price in a tier inherits the base entry's explicit price (LiteLLM's rule); an
    absent cache price anywhere falls back to the input price in force.

    The service-tier rule (docs/pricing.md, "Service tiers"): standard, None and ``batch`` (a batch
    discount, applied by the caller) use the prices above. A tier the entry prices by
    ``multiplier`` scales every token price in force; one with explicit prices replaces them,
    using its own context tier at the standard threshold in force. A tier the entry does not
    price (or, with explicit prices, not at this request's context tier) is priced at standard
    and flagged ``service_tier_unpriced`` (``committed_capacity`` for ``scale``/``reserved``).
    """
    tier: Tier | None = None
    for candidate in rates.tiers:
        if total_input_tokens > candidate.above_input_tokens:
            tier = candidate
    if tier is None:
        input_price, output_price = rates.input, rates.output
        read, write, write_1h = rates.cache_read, rates.cache_write, rates.cache_write_1h
    else:
        input_price, output_price = tier.input, tier.output
        read = tier.cache_read if tier.cache_read is not None else rates.cache_read
        write = tier.cache_write if tier.cache_write is not None else rates.cache_write
        write_1h = tier.cache_write_1h if tier.cache_write_1h is not None else rates.cache_write_1h
    threshold = None if tier is None else tier.above_input_tokens
    priced_tier: str | None = None
    flags: tuple[str, ...] = ()
    multiplier: Decimal | None = None
    if service_tier is not None and service_tier not in _STANDARDS:
        rated = rates.service_tiers.get(service_tier)
        own = None
        if rated is not None and rated.multiplier is None:
            own = rated if threshold is None else rated.tier_above(threshold)
        if rated is not None and rated.multiplier is not None:
            multiplier, priced_tier = rated.multiplier, service_tier
        elif rated is not None and own is not None:
            priced_tier = service_tier
            input_price, output_price = _given(own.input), _given(own.output)
            # within the service tier its context tiers inherit its own cache prices; a cache
            # price it never lists is the standard one in force
            read = _first(own.cache_read, rated.cache_read, read)
            write = _first(own.cache_write, rated.cache_write, write)
            write_1h = _first(own.cache_write_1h, rated.cache_write_1h, write_1h)
        else:
            flags = (COMMITTED_CAPACITY,) if service_tier in COMMITTED else (SERVICE_TIER_UNPRICED,)
    read = input_price if read is None else read
    write = input_price if write is None else write
    write_1h = write if write_1h is None else write_1h
    prices = [input_price, read, write, write_1h, output_price]
    if multiplier is not None:
        prices = [price * multiplier for price in prices]
    return UnitPrices(
        input=prices[0],
        cache_read=prices[1],
        cache_write=prices[2],
        cache_write_1h=prices[3],
        output=prices[4],
        tier=threshold,
        service_tier=priced_tier,
        flags=flags,
    )


def _given(price: Decimal | None) -> Decimal:
    assert price is not None  # the card validator requires input and output on explicit tiers
    return price


def _first(*prices: Decimal | None) -> Decimal | None:
    return next((price for price in prices if price is not None), None)


def _to_nanos(dollars: Decimal) -> int:
    return int((dollars * _NANOS).to_integral_value(rounding=ROUND_HALF_EVEN))


def is_batch(endpoint_mode: object, service_tier: str | None = None) -> bool:
    """Whether a call gets the batch price: the batch API's endpoint mode (an ``EndpointMode``
    or its value), or a provider reporting it served the call on its batch tier (Anthropic)."""
    return service_tier == BATCH or str(getattr(endpoint_mode, "value", endpoint_mode)).lower() == "batch"


def _instant(at: datetime) -> datetime:
    # A naive timestamp is taken as UTC, the ledger's convention.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


class _CardIndex:
    """One card's models, with every alias glob precompiled into a single regex."""

    def __init__(self, card: RateCard) -> None:
        self.card = card
        self.exact: dict[str, ModelRates] = {}
        patterns: list[tuple[str, ModelRates]] = []
        for rates in card.models.values():
            if rates.is_pattern:
                patterns.append((rates.name, rates))
            else:
                self.exact[rates.name] = rates
            patterns.extend((alias, rates) for alias in rates.aliases)
        self.pattern_rates = [rates for _, rates in patterns]
        self.pattern: re.Pattern[str] | None = None
        if patterns:
            # One alternation with a named group per glob: the first glob in file order wins.
            body = "|".join(
                f"(?P<g{i}>{fnmatch.translate(glob)[4:-3]})" for i, (glob, _) in enumerate(patterns)
            )
            self.pattern = re.compile(f"(?:{body})", re.DOTALL)

    def lookup(self, model_id: str) -> ModelRates | None:
        rates = self.exact.get(model_id)
        if rates is not None:
            return rates
        if self.pattern is not None:
            match = self.pattern.fullmatch(model_id)
            if match is not None and match.lastgroup is not None:
                return self.pattern_rates[int(match.lastgroup[1:])]
        return None


def _candidates(provider: str, model: str) -> list[str]:
    """The ids tried in order: as given, without ``provider/``, then the Bedrock base id."""
    ids = [model]
    if model.startswith(f"{provider}/"):
        ids.append(model[len(provider) + 1 :])
    base = ids[-1]
    arn = _BEDROCK_ARN.match(base)
    if arn is not None:
        base = arn.group("id")
        ids.append(base)
    stripped = _REGION_PREFIX.sub("", base, count=1)
    if stripped != base:
        ids.append(stripped)
    return list(dict.fromkeys(ids))


class RateCardBook:
    """Every loaded card, grouped by provider, newest first; prices usage exactly."""

    def __init__(self, cards: Iterable[RateCard]) -> None:
        self.cards: list[RateCard] = list(cards)
        seen: dict[str, RateCard] = {}
        for card in self.cards:
            previous = seen.get(card.version)
            if previous is not None:
                raise ConfigError(
                    f"{card.where}: version {card.version!r} is already used by {previous.where}; "
                    "every card version must be unique",
                    code="invalid_rate_card",
                )
            seen[card.version] = card
        self._by_provider: dict[str, list[_CardIndex]] = {}
        for card in sorted(self.cards, key=lambda c: c.effective_from, reverse=True):
            self._by_provider.setdefault(card.provider, []).append(_CardIndex(card))
        self._cache: dict[tuple[str, str], tuple[tuple[datetime, Resolution], ...]] = {}
        self._providers = sorted(self._by_provider)
        # bare model id -> (provider, its resolutions) for the providers whose cards name it
        self._claims: dict[str, tuple[tuple[str, tuple[tuple[datetime, Resolution], ...]], ...]] = {}

    # --- loading ---------------------------------------------------------------------

    @classmethod
    def load(cls, locations: Iterable[Path | str]) -> RateCardBook:
        """Load every card under ``locations``; parsed books are cached per file set."""
        files = [file for location in locations for file in iter_card_files(location)]
        key = tuple(_file_signature(file) for file in files)
        with _LOAD_LOCK:
            book = _LOADED.get(key)
            if book is None:
                book = cls(load_card(file) for file in files)
                if len(_LOADED) >= 32:
                    _LOADED.clear()  # card sets are few; tests create many throwaway ones
                _LOADED[key] = book
        return book

    def providers(self) -> list[str]:
        """Every provider with at least one card, sorted."""
        return list(self._providers)

    def has_provider(self, name: str) -> bool:
        """Whether a card prices ``name`` (exactly as the cards spell it, lower case)."""
        return name in self._by_provider

    def models(self, at: datetime) -> list[tuple[str, str]]:
        """(provider, entry name) for every entry in force at ``at`` (newest card per name)."""
        when = _instant(at)
        found: set[tuple[str, str]] = set()
        for provider, indexes in self._by_provider.items():
            for index in indexes:
                if index.card.effective_from <= when:
                    found.update((provider, name) for name in index.card.models)
        return sorted(found)

    def provider_for(self, model: str, at: datetime) -> str | None:
        """The provider whose cards name a bare model id (wildcard entries never claim one)."""
        model = model.strip()
        claims = self._claims.get(model)
        if claims is None:
            claims = tuple(
                (provider, found)
                for provider in self._providers
                if (found := self._resolutions(provider, model))
            )
            if len(self._claims) >= _CACHE_LIMIT:
                self._claims.clear()  # unbounded model ids must not grow memory without limit
            self._claims[model] = claims
        when = _instant(at)
        for provider, resolutions in claims:
            for effective_from, resolution in resolutions:
                if effective_from <= when:
                    if not resolution.rates.is_pattern and resolution.card.bare_ids:
                        return provider
                    break
        return None

    # --- resolution ------------------------------------------------------------------

    def _provider(self, provider: str) -> str:
        name = provider.strip().lower()
        if name not in self._by_provider:
            name = PROVIDER_ALIASES.get(name, name)
        return name

    def _resolutions(self, provider: str, model: str) -> tuple[tuple[datetime, Resolution], ...]:
        key = (provider, model)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        found: list[tuple[datetime, Resolution]] = []
        ids = _candidates(provider, model)
        for index in self._by_provider.get(provider, ()):
            for model_id in ids:
                rates = index.lookup(model_id)
                if rates is not None:
                    canonical = model_id if rates.is_pattern else rates.name
                    found.append((index.card.effective_from, Resolution(index.card, rates, canonical)))
                    break
        result = tuple(found)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # unbounded model ids must not grow memory without limit
        self._cache[key] = result
        return result

    def find(self, provider: str, model: str, at: datetime) -> Resolution | None:
        """The newest card in force at ``at`` that knows ``model``, or ``None``."""
        name = self._provider(provider)
        when = _instant(at)
        for effective_from, resolution in self._resolutions(name, model.strip()):
            if effective_from <= when:
                return resolution
        return None

    def resolve(self, provider: str, model: str, at: datetime) -> Resolution:
        """Like ``find`` but raises ``PricingError(unpriced_model)`` naming provider and model."""
        resolution = self.find(provider, model, at)
        if resolution is None:
            raise PricingError(
                f"no rate card prices model {model!r} of provider {provider!r} at {_instant(at).isoformat()}",
                code="unpriced_model",
                details={"provider": provider, "model": model},
            )
        return resolution

    def entry(self, provider: str, model: str, at: datetime) -> ModelRates:
        """The card entry (prices, limits) for ``model`` at ``at``; raises when unpriced."""
        return self.resolve(provider, model, at).rates

    def max_output_tokens(self, provider: str, model: str, at: datetime) -> int | None:
        resolution = self.find(provider, model, at)
        return None if resolution is None else resolution.rates.max_output_tokens

    # --- pricing ---------------------------------------------------------------------

    def price(
        self,
        provider: str,
        model: str,
        usage: Usage,
        at: datetime,
        endpoint_mode: str = "sync",
    ) -> Price:
        """The exact price of ``usage``: one Decimal sum, rounded half-even to nanos once."""
        resolution = self.resolve(provider, model, at)
        return price_with(resolution, usage, endpoint_mode)

    def worst_case(
        self,
        provider: str,
        model: str,
        at: datetime,
        input_tokens: int,
        max_output_tokens: int | None,
        endpoint_mode: str = "sync",
        service_tier: str | None = None,
    ) -> Price:
        """The most a request can cost: all input as fresh input, and every output token,
        on ``service_tier`` (canonical; None for standard).

        Without ``max_output_tokens`` the entry's ``max_output_tokens`` is used, then the
        room left in its ``context_window``; with neither, the model cannot be bounded.
        """
        resolution = self.resolve(provider, model, at)
        output = max_output_tokens
        if output is None:
            output = resolution.rates.max_output_tokens
        if output is None and resolution.rates.context_window is not None:
            output = max(resolution.rates.context_window - input_tokens, 0)
        if output is None:
            raise PricingError(
                f"cannot bound the output of {provider}/{model}: the request has no max tokens "
                "and the rate card gives no max_output_tokens or context_window",
                code="unbounded_output",
                details={"provider": provider, "model": model},
            )
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=min(output, MAX_TOKENS_PER_FIELD),
            service_tier=service_tier,
        )
        return price_with(resolution, usage, endpoint_mode)

    def max_affordable_output_tokens(
        self,
        provider: str,
        model: str,
        at: datetime,
        input_tokens: int,
        budget_nanos: int,
        endpoint_mode: str = "sync",
        service_tier: str | None = None,
    ) -> int:
        """The largest output count whose exact price (with ``input_tokens`` fresh) fits the budget.

        The tier is the one the input puts the request in, on ``service_tier``. The result is capped at the
        entry's ``max_output_tokens`` (or the token ceiling); 0 if the input alone does not fit.
        """
        rates = self.entry(provider, model, at)
        prices = unit_prices(rates, input_tokens, service_tier)
        multiplier = rates.batch if is_batch(endpoint_mode, service_tier) else Decimal(1)
        cap = rates.max_output_tokens if rates.max_output_tokens is not None else MAX_TOKENS_PER_FIELD
        with localcontext() as ctx:
            ctx.prec = 60
            # Compare in nano-dollars x 1M tokens: exact cost <= budget implies rounded <= budget.
            budget = Decimal(budget_nanos) * TOKENS_PER_MILLION
            input_cost = Decimal(input_tokens) * prices.input * multiplier * _NANOS
            if input_cost > budget:
                return 0
            per_output_token = prices.output * multiplier * _NANOS
            if per_output_token == 0:
                return cap
            affordable = (budget - input_cost) / per_output_token
            return min(int(affordable.to_integral_value(ROUND_FLOOR)), cap)


def exact_costs(rates: ModelRates, usage: Usage, endpoint_mode: str = "sync") -> dict[str, Decimal]:
    """Unrounded USD per component ("input", ..., "per_call") for ``usage`` priced by ``rates``."""
    prices = unit_prices(rates, usage.total_input_tokens, usage.service_tier)
    multiplier = rates.batch if is_batch(endpoint_mode, usage.service_tier) else None
    counts = (
        ("input", usage.input_tokens, prices.input),
        ("cache_read", usage.cache_read_tokens, prices.cache_read),
        ("cache_write", usage.cache_write_tokens, prices.cache_write),
        ("cache_write_1h", usage.cache_write_1h_tokens, prices.cache_write_1h),
        ("output", usage.output_tokens, prices.output),
    )
    exact: dict[str, Decimal] = {}
    with localcontext() as ctx:
        ctx.prec = 60  # products of 9-digit counts and 17-digit imported prices stay exact
        for name, count, price in counts:
            # Most requests use two or three classes: an unused one costs exactly zero, so
            # its Decimal arithmetic (and a multiply by 1 outside batch) is skipped.
            if count == 0:
                exact[name] = _ZERO
                continue
            cost = Decimal(count) * price
            if multiplier is not None:
                cost = cost * multiplier
            exact[name] = cost / TOKENS_PER_MILLION
        # Per-call fees are flat USD per call; the batch multiplier is for token prices only.
        per_call = _ZERO
        if usage.tool_calls:
            per_call += Decimal(usage.tool_calls) * rates.per_call.get("tool_call", _ZERO)
        if usage.search_calls:
            per_call += Decimal(usage.search_calls) * rates.per_call.get("search_call", _ZERO)
        exact["per_call"] = per_call
    return exact


def price_with(resolution: Resolution, usage: Usage, endpoint_mode: str = "sync") -> Price:
    """Price ``usage`` with an already-resolved entry (see ``RateCardBook.price``).

    Exact integer arithmetic: every unit price is a whole number over a power of ten, so the
    sum is exact and rounded half-even once, equal to the Decimal computation of
    ``exact_costs`` to the nano-dollar (``tests/core/test_pricing_integer.py`` checks both).
    """
    rates = resolution.rates
    tier = usage.service_tier
    scaled = scaled_prices(rates, usage.total_input_tokens, is_batch(endpoint_mode, tier), tier)
    scale = scaled.scale
    total = 0
    components = dict.fromkeys(COMPONENT_KEYS, 0)
    for name, count, numerator in (
        ("input", usage.input_tokens, scaled.input),
        ("cache_read", usage.cache_read_tokens, scaled.cache_read),
        ("cache_write", usage.cache_write_tokens, scaled.cache_write),
        ("cache_write_1h", usage.cache_write_1h_tokens, scaled.cache_write_1h),
        ("output", usage.output_tokens, scaled.output),
    ):
        if count:
            part = count * numerator
            total += part
            # Informational: each class rounded on its own, so their sum may differ by a nano.
            components[name] = _round_half_even(part, scale)
    if usage.tool_calls or usage.search_calls:
        fee = usage.tool_calls * scaled.tool_call + usage.search_calls * scaled.search_call
        total += fee
        components["per_call"] = _round_half_even(fee, scale)
    return Price(
        amount_nanos=_round_half_even(total, scale),
        card_version=resolution.card.version,
        provider=resolution.card.provider,
        model=resolution.model,
        components=components,
        flags=_flags(rates, scaled),
    )


def _flags(rates: ModelRates, scaled: ScaledPrices) -> tuple[str, ...]:
    if rates.deprecated:
        return ("deprecated_model", *scaled.flags)
    return scaled.flags


def amount_nanos(rates: ModelRates, usage: Usage, endpoint_mode: str = "sync") -> int:
    """``price_with(...).amount_nanos`` without the informational components (bulk ingestion)."""
    tier = usage.service_tier
    return scaled_prices(rates, usage.total_input_tokens, is_batch(endpoint_mode, tier), tier).amount(usage)


@dataclass(frozen=True, slots=True)
class ScaledPrices:
    """Nano-dollars per token (per call for fees), each as an integer numerator over ``scale``."""

    scale: int
    input: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    output: int
    tool_call: int
    search_call: int
    flags: tuple[str, ...] = ()  # the service tier's pricing flags (see ``unit_prices``)

    def amount(self, usage: Usage) -> int:
        """What ``usage`` costs at these prices, in nanos: summed exactly, rounded half-even once."""
        return _round_half_even(
            usage.input_tokens * self.input
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
            + usage.cache_write_1h_tokens * self.cache_write_1h
            + usage.output_tokens * self.output
            + usage.tool_calls * self.tool_call
            + usage.search_calls * self.search_call,
            self.scale,
        )


_SCALED: dict[tuple[int, int | None, bool, str | None], tuple[ModelRates, ScaledPrices]] = {}


def scaled_prices(
    rates: ModelRates, total_input_tokens: int, batch: bool, service_tier: str | None = None
) -> ScaledPrices:
    """The entry's integer prices for a call with this many input tokens (its tier) on this
    service tier, cached."""
    if service_tier in _STANDARDS:
        service_tier = None  # one cache entry for standard however it was reported
    prices = unit_prices(rates, total_input_tokens, service_tier)
    key = (id(rates), prices.tier, batch, service_tier)
    hit = _SCALED.get(key)
    if hit is not None and hit[0] is rates:
        return hit[1]
    with localcontext() as ctx:
        ctx.prec = 60
        scaled = _scale(rates, prices, batch)
    if len(_SCALED) > _CACHE_LIMIT:
        _SCALED.clear()
    _SCALED[key] = (rates, scaled)
    return scaled


def _scale(rates: ModelRates, prices: UnitPrices, batch: bool) -> ScaledPrices:
    multiplier = rates.batch if batch else Decimal(1)
    # USD per 1M tokens x 1e9 nanos / 1e6 tokens = nanos per token: x 1000, times the multiplier
    per_token = [
        p * multiplier * 1000
        for p in (prices.input, prices.cache_read, prices.cache_write, prices.cache_write_1h, prices.output)
    ]
    # per-call fees are flat USD per call; the batch multiplier is for token prices only
    per_call = [rates.per_call.get(name, _ZERO) * _NANOS for name in ("tool_call", "search_call")]
    values = [*per_token, *per_call]
    exponent = max(0, *(-int(v.as_tuple().exponent) for v in values))
    scale = 10**exponent
    numerators = [int(v.scaleb(exponent)) for v in values]
    if any(Decimal(n) != v.scaleb(exponent) for n, v in zip(numerators, values, strict=True)):
        raise PricingError(f"a price of {rates.name} cannot be represented exactly")
    input_, read, write, write_1h, output, tool_call, search_call = numerators
    return ScaledPrices(scale, input_, read, write, write_1h, output, tool_call, search_call, prices.flags)


def _round_half_even(numerator: int, scale: int) -> int:
    quotient, remainder = divmod(numerator, scale)
    twice = 2 * remainder
    if twice > scale or (twice == scale and quotient % 2):
        quotient += 1
    return quotient


def _file_signature(file: Path) -> tuple[str, int, int]:
    stat = file.stat()
    return (str(file.resolve()), stat.st_mtime_ns, stat.st_size)


_LOAD_LOCK = threading.Lock()
_LOADED: dict[tuple[tuple[str, int, int], ...], RateCardBook] = {}


__all__: Sequence[str] = (
    "COMPONENT_KEYS",
    "PROVIDER_ALIASES",
    "RateCardBook",
    "Resolution",
    "ScaledPrices",
    "UnitPrices",
    "amount_nanos",
    "exact_costs",
    "is_batch",
    "price_with",
    "scaled_prices",
    "unit_prices",
)
