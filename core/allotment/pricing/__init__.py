"""Pricing from dated rate cards: load and validate cards, resolve a model, price usage exactly.

``RateCardBook.load(default_card_dirs())`` is the entry point; money is integer nano-dollars.
"""

from __future__ import annotations

from allotment.pricing.book import (
    PROVIDER_ALIASES,
    RateCardBook,
    Resolution,
    UnitPrices,
    exact_costs,
    price_with,
    unit_prices,
)
from allotment.pricing.cards import (
    ENV_CARD_DIRS,
    ModelRates,
    RateCard,
    Tier,
    default_card_dirs,
    iter_card_files,
    load_card,
    load_cards,
    parse_card,
)

__all__ = [
    "ENV_CARD_DIRS",
    "PROVIDER_ALIASES",
    "ModelRates",
    "RateCard",
    "RateCardBook",
    "Resolution",
    "Tier",
    "UnitPrices",
    "default_card_dirs",
    "exact_costs",
    "iter_card_files",
    "load_card",
    "load_cards",
    "parse_card",
    "price_with",
    "unit_prices",
]
