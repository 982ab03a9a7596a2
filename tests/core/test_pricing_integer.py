"""The integer pricing paths equal exact Decimal arithmetic to the nano-dollar, for every card.

``price_with`` prices with integers over a power of ten; ``exact_costs`` is the plain Decimal
statement of the rule. Both are run on every model of the bundled cards and of the cards
generated from LiteLLM's price map, across usage shapes that hit tiers, batch and fees.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path

import pytest

from allotment.defaults.pricing import default_card_dirs
from allotment.errors import ConfigError
from allotment.exact_pricing import PriceTables
from allotment.pricing import RateCardBook, parse_card
from allotment.pricing import litellm_import as li
from allotment.pricing.book import Resolution, amount_nanos, exact_costs, price_with
from allotment.types import Usage

AT = datetime(2026, 7, 1, tzinfo=UTC)


def decimal_nanos(resolution: Resolution, usage: Usage, mode: str) -> tuple[int, dict[str, int]]:
    exact = exact_costs(resolution.rates, usage, mode)
    with localcontext() as ctx:
        ctx.prec = 60

        def nanos(usd: Decimal) -> int:
            return int((usd * 1_000_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))

        return nanos(sum(exact.values(), Decimal(0))), {k: nanos(v) for k, v in exact.items()}


def usages(rng: random.Random) -> list[Usage]:
    shapes = [
        Usage(input_tokens=1),
        Usage(output_tokens=1),
        Usage(input_tokens=999_999, output_tokens=333_333),
        Usage(input_tokens=1_000, cache_read_tokens=200, output_tokens=120),
        Usage(input_tokens=250_001, cache_write_tokens=7, cache_write_1h_tokens=3, output_tokens=9),
        Usage(input_tokens=3, tool_calls=2, search_calls=5),
    ]
    for _ in range(4):
        shapes.append(
            Usage(
                input_tokens=rng.randrange(0, 400_000),
                cache_read_tokens=rng.randrange(0, 50_000),
                cache_write_tokens=rng.randrange(0, 5_000),
                cache_write_1h_tokens=rng.randrange(0, 5_000),
                output_tokens=rng.randrange(0, 64_000),
                tool_calls=rng.randrange(0, 3),
                search_calls=rng.randrange(0, 3),
            )
        )
    return shapes


def check_book(book: RateCardBook, seed: int) -> int:
    rng = random.Random(seed)
    checked = 0
    tables = PriceTables(book)  # the bulk path's cached entries, reused across every usage
    for provider, model in book.models(AT):
        resolution = book.find(provider, model, AT)
        assert resolution is not None
        for usage in usages(rng):
            for mode in ("sync", "batch"):
                price = price_with(resolution, usage, mode)
                amount, components = decimal_nanos(resolution, usage, mode)
                assert (price.amount_nanos, price.components) == (amount, components), (
                    provider,
                    model,
                    usage,
                    mode,
                )
                assert amount_nanos(resolution.rates, usage, mode) == amount
                entry = tables.entry(provider, model, AT, mode)  # the bulk path's
                assert entry is not None and entry.amount_nanos(usage) == amount, (provider, model, usage)
                assert (entry.card_version, entry.model, entry.flags) == (
                    price.card_version,
                    price.model,
                    price.flags,
                )
                checked += 1
    return checked


def test_bundled_cards_price_identically_with_integers_and_decimals() -> None:
    assert check_book(RateCardBook.load(default_card_dirs()), seed=1) > 500


CARD = """\
provider: acme
version: acme-2026-01-01
effective_from: 2026-01-01
source: "test card"
models:
  m1:
    input: 0.0375
    output: 0.15
    cache_read: 0.00375
    batch: 0.5
    tiers:
      - above_input_tokens: 1000
        input: 0.075
        output: 0.3
"""


def acme() -> Resolution:
    book = RateCardBook([parse_card(CARD, "acme.yaml")])
    resolution = book.find("acme", "m1", AT)
    assert resolution is not None
    return resolution


def test_half_a_nano_rounds_to_even() -> None:
    # $0.0375 per 1M input tokens is 37.5 nano-dollars per token
    assert price_with(acme(), Usage(input_tokens=1)).amount_nanos == 38  # 37.5 -> 38 (even)
    assert price_with(acme(), Usage(input_tokens=3)).amount_nanos == 112  # 112.5 -> 112 (even)
    # cache reads: 3.75 nanos per token; 2 tokens are 7.5 -> 8, 6 tokens 22.5 -> 22
    assert price_with(acme(), Usage(input_tokens=0, cache_read_tokens=2)).amount_nanos == 8
    assert price_with(acme(), Usage(input_tokens=0, cache_read_tokens=6)).amount_nanos == 22


def test_rounded_once_per_request_not_per_class() -> None:
    # input 1 token = 37.5, cache read 2 tokens = 7.5: 45 exactly (per class would give 38 + 8)
    price = price_with(acme(), Usage(input_tokens=1, cache_read_tokens=2))
    assert price.amount_nanos == 45
    assert price.components["input"] == 38 and price.components["cache_read"] == 8


def test_tier_reprices_the_whole_request_and_batch_halves_it() -> None:
    # 1,001 input tokens cross the 1,000 threshold: 1,001 x 75 + 10 x 300 = 78,075 nanos
    assert price_with(acme(), Usage(input_tokens=1_001, output_tokens=10)).amount_nanos == 78_075
    # batch: 1 x 18.75 + 1 x 75 = 93.75 -> 94
    assert price_with(acme(), Usage(input_tokens=1, output_tokens=1), "batch").amount_nanos == 94


def test_cards_generated_from_litellm_price_identically(tmp_path: Path) -> None:
    try:
        li.price_map_path()
    except ConfigError:
        pytest.fail("litellm is part of the test extra; its price map must be importable")
    li.import_litellm(tmp_path, effective_from=AT.date())
    assert check_book(RateCardBook.load([tmp_path]), seed=2) > 20_000


def test_cached_tables_pick_the_tier_of_each_request() -> None:
    book = RateCardBook([parse_card(CARD, "acme.yaml")])
    tables = PriceTables(book)
    entry = tables.entry("acme", "m1", AT, "sync")
    assert entry is not None and entry is tables.entry("acme", "m1", AT, "sync")
    # below, above, below again: each request priced at its own tier from the same entry
    for usage, nanos in [
        (Usage(input_tokens=1_000, output_tokens=10), 1_000 * 37.5 + 10 * 150),
        (Usage(input_tokens=1_001, output_tokens=10), 78_075),
        (Usage(input_tokens=3), 112),
        (Usage(input_tokens=500, cache_read_tokens=501), 500 * 75 + 501 * 3.75),  # 1,001 in all
    ]:
        assert entry.amount_nanos(usage) == price_with(acme(), usage).amount_nanos == round(nanos)
    batch = tables.entry("acme", "m1", AT, "batch")
    assert batch is not None and batch.amount_nanos(Usage(input_tokens=1, output_tokens=1)) == 94
    assert tables.entry("acme", "m9", AT, "sync") is None
    assert tables.entry("acme", "m1", datetime(2025, 1, 1, tzinfo=UTC), "sync") is None  # before the card
