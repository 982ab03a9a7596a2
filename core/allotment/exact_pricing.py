"""Rate-card prices as cached integer tables, for pricing thousands of log lines a second.

Equal to ``allotment.pricing.book.price_with`` to the nano-dollar: exact integers, one half-even rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from math import lcm

from allotment.money import NANOS_PER_DOLLAR
from allotment.pricing.book import RateCardBook, Resolution, unit_prices
from allotment.pricing.cards import ModelRates
from allotment.types import Usage

_CACHE_LIMIT = 4096
# USD per 1M tokens -> nano-dollars per token
_PER_TOKEN = Fraction(NANOS_PER_DOLLAR, 1_000_000)


@dataclass(frozen=True, slots=True)
class CardPrice:
    """What the ``price`` hook's default would return, minus the informational components."""

    amount_nanos: int
    card_version: str
    model: str
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Table:
    """Per-token prices of one entry, tier and mode as numerators over one common denominator."""

    rates: ModelRates  # held so the id() this table is cached under is never reused
    denominator: int
    input: int
    cache_read: int
    cache_write: int
    cache_write_1h: int
    output: int
    tool_call: int
    search_call: int


def _table(rates: ModelRates, total_input_tokens: int, batch: bool) -> _Table:
    prices = unit_prices(rates, total_input_tokens)
    multiplier = Fraction(rates.batch) if batch else Fraction(1)
    per_token = [
        Fraction(price) * multiplier * _PER_TOKEN
        for price in (
            prices.input,
            prices.cache_read,
            prices.cache_write,
            prices.cache_write_1h,
            prices.output,
        )
    ]
    # per-call fees are flat USD per call: the batch multiplier is for token prices only
    per_call = [
        Fraction(rates.per_call.get(name, Decimal(0))) * NANOS_PER_DOLLAR
        for name in ("tool_call", "search_call")
    ]
    fractions = per_token + per_call
    denominator = lcm(*(f.denominator for f in fractions))
    numerators = [int(f * denominator) for f in fractions]
    return _Table(rates, denominator, *numerators)


def _is_batch(endpoint_mode: object) -> bool:
    return str(getattr(endpoint_mode, "value", endpoint_mode)).lower() == "batch"


class PriceTables:
    """Resolves (provider, model, instant) to a card entry and prices usage with cached integers."""

    def __init__(self, book: RateCardBook) -> None:
        self.book = book
        self._resolutions: dict[tuple[str, str, datetime], Resolution | None] = {}
        self._tables: dict[tuple[int, int, bool], _Table] = {}

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
        total_input = (
            usage.input_tokens
            + usage.cache_read_tokens
            + usage.cache_write_tokens
            + usage.cache_write_1h_tokens
        )
        tier = -1
        for index, candidate in enumerate(rates.tiers):  # the last tier the input exceeds wins
            if total_input > candidate.above_input_tokens:
                tier = index
        batch = _is_batch(endpoint_mode)
        key = (id(rates), tier, batch)
        table = self._tables.get(key)
        if table is None or table.rates is not rates:
            if len(self._tables) >= _CACHE_LIMIT:
                self._tables.clear()
            table = self._tables[key] = _table(rates, total_input, batch)
        scaled = (
            usage.input_tokens * table.input
            + usage.cache_read_tokens * table.cache_read
            + usage.cache_write_tokens * table.cache_write
            + usage.cache_write_1h_tokens * table.cache_write_1h
            + usage.output_tokens * table.output
            + usage.tool_calls * table.tool_call
            + usage.search_calls * table.search_call
        )
        amount, remainder = divmod(scaled, table.denominator)
        twice = 2 * remainder  # round half to even, once
        if twice > table.denominator or (twice == table.denominator and amount & 1):
            amount += 1
        return CardPrice(
            amount,
            resolution.card.version,
            resolution.model,
            ("deprecated_model",) if rates.deprecated else (),
        )
