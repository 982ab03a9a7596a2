"""Cached card resolution and integer pricing for pricing thousands of log lines a second.

The arithmetic is ``allotment.pricing.book.amount_nanos``: the same integer tables as
``price_with``, so both agree to the nano-dollar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from allotment.pricing.book import RateCardBook, Resolution, amount_nanos
from allotment.types import Usage

_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class CardPrice:
    """What the ``price`` hook's default would return, minus the informational components."""

    amount_nanos: int
    card_version: str
    model: str
    flags: tuple[str, ...]


class PriceTables:
    """Resolves (provider, model, instant) to a card entry and prices usage with cached integers."""

    def __init__(self, book: RateCardBook) -> None:
        self.book = book
        self._resolutions: dict[tuple[str, str, datetime], Resolution | None] = {}

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

    def price(self, resolution: Resolution, usage: Usage, endpoint_mode: str) -> CardPrice:
        rates = resolution.rates
        return CardPrice(
            amount_nanos(rates, usage, endpoint_mode),
            resolution.card.version,
            resolution.model,
            ("deprecated_model",) if rates.deprecated else (),
        )
