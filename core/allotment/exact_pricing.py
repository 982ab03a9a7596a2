"""Cached card resolution and integer pricing for pricing thousands of log lines a second.

The arithmetic is ``allotment.pricing.book.amount_nanos``: the same integer tables as
``price_with``, so both agree to the nano-dollar. What repeats from line to line is kept: which
card entry prices a (provider, model, instant), and, per entry and endpoint mode, the scaled
integer prices of each tier, so a line costs a tier pick, five products and one rounding.

Everything is cached per ``RateCardBook``: a runtime whose book changes (new cards loaded) gets
new tables, so no price of the old book is ever used for the new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from allotment.pricing.book import RateCardBook, Resolution, is_batch, scaled_prices
from allotment.types import Usage

if TYPE_CHECKING:
    from allotment.pricing.book import ScaledPrices

_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class CardPrice:
    """What the ``price`` hook's default would return, minus the informational components."""

    amount_nanos: int
    card_version: str
    model: str
    flags: tuple[str, ...]


class PricedEntry:
    """One card entry in one endpoint mode: what every line it prices shares.

    ``amount_nanos(usage)`` equals ``amount_nanos(resolution.rates, usage, endpoint_mode)`` and
    ``flags_for(usage)`` the flags ``price_with`` gives (the service tier's depend on the line).
    """

    __slots__ = (
        "resolution",
        "card_version",
        "model",
        "flags",
        "_rates",
        "_mode",
        "_batch",
        "_tiers",
        "_scaled",
    )

    def __init__(self, resolution: Resolution, endpoint_mode: str) -> None:
        rates = resolution.rates
        self.resolution = resolution
        self.card_version = resolution.card.version
        self.model = resolution.model
        self.flags: tuple[str, ...] = ("deprecated_model",) if rates.deprecated else ()
        self._rates = rates
        self._mode = endpoint_mode
        self._batch = is_batch(endpoint_mode)
        # the tier rule of ``unit_prices``: the last tier whose threshold the input exceeds
        self._tiers = tuple(tier.above_input_tokens for tier in rates.tiers)
        self._scaled: dict[tuple[int | None, str | None], ScaledPrices] = {}

    def _prices(self, usage: Usage) -> ScaledPrices:
        total_input = usage.total_input_tokens
        tier = None
        for above in self._tiers:
            if total_input > above:
                tier = above
        key = (tier, usage.service_tier)
        scaled = self._scaled.get(key)
        if scaled is None:
            if len(self._scaled) >= _CACHE_LIMIT:
                self._scaled.clear()  # service-tier names come from providers: keep it bounded
            batch = is_batch(self._mode, usage.service_tier)
            scaled = self._scaled[key] = scaled_prices(self._rates, total_input, batch, usage.service_tier)
        return scaled

    def amount_nanos(self, usage: Usage) -> int:
        return self._prices(usage).amount(usage)

    def flags_for(self, usage: Usage) -> tuple[str, ...]:
        """The entry's flags, then the service tier's (``service_tier_unpriced`` ...)."""
        if usage.service_tier is None:
            return self.flags
        tier_flags = self._prices(usage).flags
        return (*self.flags, *tier_flags) if tier_flags else self.flags


class PriceTables:
    """Resolves (provider, model, instant) to a card entry and prices usage with cached integers."""

    def __init__(self, book: RateCardBook) -> None:
        self.book = book
        self._resolutions: dict[tuple[str, str, datetime], Resolution | None] = {}
        self._entries: dict[tuple[str, str, datetime, str], PricedEntry | None] = {}
        self._by_resolution: dict[tuple[int, str], PricedEntry] = {}

    def resolve(self, provider: str, model: str, at: datetime) -> Resolution | None:
        key = (provider, model, at)
        try:
            return self._resolutions[key]
        except KeyError:
            pass
        found = self.book.find(provider, model, at)
        if len(self._resolutions) >= _CACHE_LIMIT:
            self._resolutions.clear()
        self._resolutions[key] = found
        return found

    def entry(self, provider: str, model: str, at: datetime, endpoint_mode: str) -> PricedEntry | None:
        """The priced entry for a call, or None when no card prices the model at ``at``."""
        key = (provider, model, at, endpoint_mode)
        try:
            return self._entries[key]
        except KeyError:
            pass
        resolution = self.resolve(provider, model, at)
        found = None if resolution is None else self.entry_for(resolution, endpoint_mode)
        if len(self._entries) >= _CACHE_LIMIT:
            self._entries.clear()
        self._entries[key] = found
        return found

    def entry_for(self, resolution: Resolution, endpoint_mode: str) -> PricedEntry:
        key = (id(resolution), endpoint_mode)
        entry = self._by_resolution.get(key)
        if entry is None or entry.resolution is not resolution:
            if len(self._by_resolution) >= _CACHE_LIMIT:
                self._by_resolution.clear()
            entry = self._by_resolution[key] = PricedEntry(resolution, endpoint_mode)
        return entry

    def price(self, resolution: Resolution, usage: Usage, endpoint_mode: str) -> CardPrice:
        entry = self.entry_for(resolution, endpoint_mode)
        return CardPrice(entry.amount_nanos(usage), entry.card_version, entry.model, entry.flags_for(usage))
