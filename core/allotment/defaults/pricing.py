"""The default ``price`` hook: dated rate cards from the bundled and configured directories.

It returns ``None`` for a model no card prices, so the runtime applies the unpriced-model policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from allotment.hookspecs import hookimpl
from allotment.pricing.book import RateCardBook, price_with
from allotment.pricing.cards import default_card_dirs
from allotment.types import Price, Usage


class RateCardPricer:
    """Prices usage from a ``RateCardBook``; runs last so any plugin can override a price."""

    def __init__(
        self, book: RateCardBook | None = None, card_dirs: Iterable[Path | str] | None = None
    ) -> None:
        self._book = book
        self._dirs = None if card_dirs is None else list(card_dirs)

    @property
    def book(self) -> RateCardBook:
        # Loaded on first use so importing or registering the plugin stays cheap.
        if self._book is None:
            self._book = RateCardBook.load(self._dirs if self._dirs is not None else default_card_dirs())
        return self._book

    @hookimpl(trylast=True)
    def price(
        self, provider: str, model: str, usage: Usage, at: datetime, endpoint_mode: str
    ) -> Price | None:
        resolution = self.book.find(provider, model, at)
        if resolution is None:
            return None  # never $0 for an unknown model: the runtime's policy decides
        return price_with(resolution, usage, endpoint_mode)
