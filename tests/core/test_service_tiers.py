"""Service tiers: cards, pricing at the served tier, holds at the asked tier, the ledger column.

Every expected amount is worked out by hand here from published prices (USD per 1M tokens):
gpt-4o standard 2.50 in / 10.00 out / 1.25 cached; priority 4.25 / 17.00 / 2.125.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from allotment.audit import verify
from allotment.config import SAMPLE_CONFIG
from allotment.errors import ConfigError
from allotment.pricing import RateCardBook, default_card_dirs
from allotment.pricing.cards import parse_card
from allotment.pricing.litellm_import import convert_entry
from allotment.reports.focus import focus_rows
from allotment.runtime import Runtime
from allotment.service_tiers import canonical_tier
from allotment.testing import intent, temporary_runtime
from allotment.types import EndpointMode, Outcome, Usage
from allotment.usage_parsers import from_anthropic, from_bedrock_converse, from_litellm, from_openai

AT = datetime(2026, 12, 1, tzinfo=UTC)  # the OpenAI service-tier prices start 2026-11-23


@pytest.fixture(scope="module")
def book() -> RateCardBook:
    return RateCardBook.load(default_card_dirs())


CARD = """
provider: acme
version: acme-1
effective_from: 2026-01-01
models:
  big:
    input: 2.00
    output: 8.00
    cache_read: 0.50
    batch: 0.5
    tiers:
      - above_input_tokens: 200000
        input: 4.00
        output: 12.00
    service_tiers:
      priority:
        input: 3.00
        output: 14.00
        tiers:
          - above_input_tokens: 200000
            input: 7.00
            output: 21.00
      flex: {multiplier: 0.5}
  small:
    input: 1.00
    output: 2.00
    tiers:
      - above_input_tokens: 100000
        input: 2.00
        output: 4.00
    service_tiers:
      priority: {input: 1.70, output: 3.40}
"""


@pytest.fixture(scope="module")
def acme() -> RateCardBook:
    return RateCardBook([parse_card(CARD, "acme.yaml")])


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "served", "asked"),
    [
        ("default", "standard", "standard"),  # OpenAI, Bedrock
        ("standard", "standard", "standard"),  # Anthropic
        ("standard_only", "standard", "standard"),  # Anthropic's request value
        ("auto", "standard", "auto"),  # a served "auto" never happens; asked, the provider picks
        ("Priority", "priority", "priority"),
        ("flex", "flex", "flex"),
        ("scale", "scale", "scale"),
        ("reserved", "reserved", "reserved"),
        ("", None, None),
        (None, None, None),
        (7, None, None),
        ("no spaces allowed", None, None),
    ],
)
def test_provider_spellings_map_to_one_name(raw: object, served: str | None, asked: str | None) -> None:
    assert canonical_tier(raw) == served
    assert canonical_tier(raw, requested=True) == asked


# --- pricing at the served tier --------------------------------------------------------


def test_gpt_4o_priority_is_priced_at_priority(book: RateCardBook) -> None:
    price = book.price(
        "openai", "gpt-4o", Usage(input_tokens=1000, output_tokens=500, service_tier="priority"), AT
    )
    # 1000 x 4.25e-6 + 500 x 17e-6 = 0.00425 + 0.0085 USD
    assert price.amount_nanos == 4_250_000 + 8_500_000 == 12_750_000
    assert price.flags == ()
    cached = Usage(input_tokens=1000, cache_read_tokens=2000, output_tokens=500, service_tier="priority")
    # + 2000 cached x 2.125e-6 = 0.00425 USD
    assert book.price("openai", "gpt-4o", cached, AT).amount_nanos == 12_750_000 + 4_250_000


def test_a_priority_call_before_the_tier_card_is_standard_and_flagged(book: RateCardBook) -> None:
    """The tier prices came as a new card (openai-2026-11-23); the older versions are not
    edited, so an earlier call is priced by the card then in force: standard, flagged."""
    usage = Usage(input_tokens=1000, output_tokens=500, service_tier="priority")
    before = book.price("openai", "gpt-4o", usage, datetime(2026, 11, 22, tzinfo=UTC))
    assert before.amount_nanos == 2_500_000 + 5_000_000
    assert before.flags == ("service_tier_unpriced",)
    assert before.card_version == "openai-2025-07-01"
    assert book.price("openai", "gpt-4o", usage, AT).card_version == "openai-2026-11-23"


def test_standard_spellings_price_at_standard(book: RateCardBook) -> None:
    for tier in (None, "default", "standard", "auto"):
        usage = Usage(input_tokens=1000, output_tokens=500, service_tier=tier)
        price = book.price("openai", "gpt-4o", usage, AT)
        assert price.amount_nanos == 2_500_000 + 5_000_000 and price.flags == ()


def test_gpt_5_4_mini_flex_and_priority(book: RateCardBook) -> None:
    usage = Usage(input_tokens=8_000, cache_read_tokens=2_000, output_tokens=1_200, service_tier="flex")
    # 8000 x 0.375 + 2000 x 0.0375 + 1200 x 2.25 per 1M = 0.003 + 0.000075 + 0.0027 USD
    assert book.price("openai", "gpt-5.4-mini", usage, AT).amount_nanos == 5_775_000
    usage = Usage(input_tokens=8_000, cache_read_tokens=2_000, output_tokens=1_200, service_tier="priority")
    # 8000 x 1.50 + 2000 x 0.15 + 1200 x 9.00 per 1M = 0.012 + 0.0003 + 0.0108 USD
    assert book.price("openai", "gpt-5.4-mini", usage, AT).amount_nanos == 23_100_000


def test_a_tier_the_card_does_not_price_is_standard_and_flagged(book: RateCardBook) -> None:
    # gpt-4o has no flex price in the card
    price = book.price(
        "openai", "gpt-4o", Usage(input_tokens=1000, output_tokens=500, service_tier="flex"), AT
    )
    assert price.amount_nanos == 7_500_000
    assert price.flags == ("service_tier_unpriced",)


def test_committed_capacity_is_standard_and_flagged(book: RateCardBook) -> None:
    for tier in ("scale", "reserved"):
        usage = Usage(input_tokens=1000, output_tokens=500, service_tier=tier)
        price = book.price("openai", "gpt-4o", usage, AT)
        assert price.amount_nanos == 7_500_000 and price.flags == ("committed_capacity",)


def test_anthropic_batch_tier_gets_the_batch_discount(book: RateCardBook) -> None:
    usage = Usage(input_tokens=8_000, output_tokens=1_200, service_tier="batch")
    # claude-sonnet-4: (8000 x 3 + 1200 x 15) / 1M = 0.042 USD, halved
    assert book.price("anthropic", "claude-sonnet-4", usage, AT).amount_nanos == 21_000_000


def test_multiplier_and_explicit_forms_combine_with_context_tiers(acme: RateCardBook) -> None:
    small = Usage(input_tokens=1000, cache_read_tokens=1000, output_tokens=100)
    large = Usage(input_tokens=250_000, cache_read_tokens=1000, output_tokens=100)

    def nanos(usage: Usage, tier: str | None, mode: str = "sync") -> int:
        priced = Usage(**{**usage.to_dict(), "service_tier": tier})
        return acme.price("acme", "big", priced, AT, mode).amount_nanos

    # explicit priority below the threshold: 1000 x 3 + 1000 x 0.50 (standard cache) + 100 x 14
    assert nanos(small, "priority") == 3_000_000 + 500_000 + 1_400_000
    # above it, the priority tier's own long-context prices; the cache read keeps standard's
    # 0.50 (no cache price at either context tier): 250000 x 7 + 1000 x 0.50 + 100 x 21
    assert nanos(large, "priority") == 1_750_000_000 + 500_000 + 2_100_000
    # flex multiplies the prices in force: below, (1000 x 2 + 1000 x 0.5 + 100 x 8) x 0.5
    assert nanos(small, "flex") == (2_000_000 + 500_000 + 800_000) // 2
    # above, the standard context tier (cache read: standard's 0.50) x 0.5
    assert nanos(large, "flex") == (1_000_000_000 + 500_000 + 1_200_000) // 2
    # batch on top of a tier: (1000 x 3 + 1000 x 0.50 + 100 x 14) x 0.5
    assert nanos(small, "priority", "batch") == (3_000_000 + 500_000 + 1_400_000) // 2


def test_explicit_tier_without_prices_at_the_context_tier_is_flagged(acme: RateCardBook) -> None:
    large = Usage(input_tokens=150_000, output_tokens=100, service_tier="priority")
    price = acme.price("acme", "small", large, AT)
    # small's priority lists no >100k prices: standard long context, 150000 x 2 + 100 x 4
    assert price.amount_nanos == 300_000_000 + 400_000
    assert price.flags == ("service_tier_unpriced",)
    below = acme.price(
        "acme", "small", Usage(input_tokens=1000, output_tokens=100, service_tier="priority"), AT
    )
    assert below.amount_nanos == 1_700_000 + 340_000 and below.flags == ()


def test_worst_case_and_affordable_output_use_the_tier(book: RateCardBook) -> None:
    held = book.worst_case("openai", "gpt-4o", AT, 1000, 500, service_tier="priority")
    assert held.amount_nanos == 12_750_000
    # $0.01275 affords exactly 500 output tokens at priority with 1000 input
    assert (
        book.max_affordable_output_tokens("openai", "gpt-4o", AT, 1000, 12_750_000, "sync", "priority") == 500
    )


# --- strict card validation -------------------------------------------------------------


def _model(body: str) -> str:
    return f"""provider: acme
version: v
effective_from: 2026-01-01
models:
  m:
    input: 1
    output: 2
    tiers:
      - above_input_tokens: 1000
        input: 2
        output: 4
{body}"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    service_tiers:\n      priority: {multiplier: 1.7, input: 2}\n", "both a multiplier and input"),
        ("    service_tiers:\n      priority: {input: 2}\n", "missing 'output'"),
        (
            "    service_tiers:\n      default: {multiplier: 2}\n",
            "'default' of model 'm': the name means standard",
        ),
        ("    service_tiers:\n      batch: {multiplier: 2}\n", "priced by the model's `batch` multiplier"),
        ("    service_tiers:\n      Priority: {multiplier: 2}\n", "must be lower-case"),
        ("    service_tiers:\n      priority: {multiplier: -1}\n", "multiplier of service tier 'priority'"),
        ("    service_tiers:\n      priority: {multiplier: fast}\n", "must be a decimal number"),
        ("    service_tiers:\n      priority: {multiplier: 2, speed: 3}\n", "unknown key 'speed'"),
        (
            "    service_tiers:\n      priority:\n        input: 2\n        output: 4\n        tiers:\n"
            "          - {above_input_tokens: 5000, input: 3, output: 5}\n",
            "tier above_input_tokens 5000 matches none of the model's own tiers (1000)",
        ),
        ("    service_tiers: [priority]\n", "service_tiers of model 'm' must be a mapping"),
    ],
)
def test_bad_service_tiers_are_refused_naming_file_model_and_field(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_card(_model(body), "cards/acme.yaml")
    assert caught.value.code == "invalid_rate_card"
    assert "cards/acme.yaml:" in caught.value.message
    assert message in caught.value.message
    assert "'m'" in caught.value.message


def test_a_bad_card_in_a_directory_loads_nothing(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(_model(""))
    (tmp_path / "zbad.yaml").write_text(
        _model("    service_tiers:\n      priority: {input: 2}\n").replace("version: v", "version: v2")
    )
    with pytest.raises(ConfigError, match="zbad.yaml"):
        RateCardBook.load([tmp_path])


# --- admission holds the asked tier -------------------------------------------------------


@pytest.fixture
def rt(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    with temporary_runtime(tmp_path, database_url=database_url) as runtime:
        yield runtime


def _key(rt: Runtime) -> str:
    key, _ = rt.admin.issue_key("ada@acme.example", name="t", monthly_budget=Decimal("100"))
    rt.refresh_directory()
    return key


def test_a_priority_request_holds_the_priority_worst_case(rt: Runtime) -> None:
    key = _key(rt)
    asked = intent(key, model="gpt-4o", input_tokens=1000, max_output_tokens=500, service_tier="priority")
    admission = rt.admit(asked)
    assert admission.reservation.amount_nanos == 12_750_000
    plain = rt.admit(intent(key, model="gpt-4o", input_tokens=1000, max_output_tokens=500))
    assert plain.reservation.amount_nanos == 7_500_000


def test_auto_is_held_at_the_policy_auto_tier(rt: Runtime) -> None:
    key = _key(rt)
    auto = intent(key, model="gpt-4o", input_tokens=1000, max_output_tokens=500, service_tier="auto")
    assert rt.admit(auto).reservation.amount_nanos == 7_500_000
    # an OpenAI project that serves "auto" at priority: say so, and auto is held at priority
    rt.apply_config_text(
        SAMPLE_CONFIG.replace(
            "  clamp_max_tokens: false", "  clamp_max_tokens: false\n  auto_service_tier: priority"
        ),
        "policy.yaml",
    )
    for tier in ("auto", None):
        asked = intent(key, model="gpt-4o", input_tokens=1000, max_output_tokens=500, service_tier=tier)
        assert rt.admit(asked).reservation.amount_nanos == 12_750_000


def test_a_bad_auto_service_tier_changes_nothing(rt: Runtime) -> None:
    before = rt.config
    with pytest.raises(ConfigError, match="auto_service_tier"):
        rt.apply_config_text(
            SAMPLE_CONFIG.replace(
                "  clamp_max_tokens: false", "  clamp_max_tokens: false\n  auto_service_tier: 5 x"
            ),
            "policy.yaml",
        )
    assert rt.config == before


# --- settle, the ledger column, audit, FOCUS ---------------------------------------------


def test_settle_records_the_served_tier_and_its_price(rt: Runtime) -> None:
    key = _key(rt)
    admitted = rt.admit(intent(key, model="gpt-4o", input_tokens=1000, max_output_tokens=500))
    # asked for nothing, served on priority anyway (a project set to priority): priced as served
    event = rt.settle(
        admitted.request_id, Usage(input_tokens=1000, output_tokens=500, service_tier="priority")
    )
    assert event.cost_nanos == 12_750_000
    assert event.usage.service_tier == "priority"
    stored = rt.event(admitted.request_id)
    assert stored is not None and stored.usage.service_tier == "priority" and stored.cost_nanos == 12_750_000
    assert rt.settle(admitted.request_id, Usage()).cost_nanos == 12_750_000  # idempotent

    flex = rt.admit(
        intent(key, model="gpt-4o", input_tokens=1000, max_output_tokens=500, service_tier="flex")
    )
    event = rt.settle(flex.request_id, Usage(input_tokens=1000, output_tokens=500, service_tier="flex"))
    assert event.cost_nanos == 7_500_000 and "service_tier_unpriced" in event.flags
    assert rt.event(flex.request_id).usage.service_tier == "flex"  # type: ignore[union-attr]

    untold = rt.admit(intent(key, model="gpt-4o", input_tokens=1000, max_output_tokens=500))
    rt.settle(untold.request_id, Usage(input_tokens=1000, output_tokens=500))
    assert rt.event(untold.request_id).usage.service_tier is None  # type: ignore[union-attr]

    rt.record(
        intent(model="gpt-4o", mode=EndpointMode.SYNC),
        Usage(input_tokens=10, output_tokens=10, service_tier="priority"),
        Outcome.SUCCESS,
    )
    report = verify(rt)
    assert report.ok, report.problems
    assert report.events == 4


def test_focus_names_the_tier_in_the_price_id_and_its_column(rt: Runtime) -> None:
    key = _key(rt)
    at = datetime.now(UTC)
    for tier in ("priority", "flex", None):
        admitted = rt.admit(intent(key, model="gpt-4o", input_tokens=1000, max_output_tokens=500, at=at))
        rt.settle(admitted.request_id, Usage(input_tokens=1000, output_tokens=500, service_tier=tier))
    rows = focus_rows(rt, at.strftime("%Y-%m"))
    by_price = {(row["SkuPriceId"], row["x_ServiceTier"]): row for row in rows}
    assert set(by_price) == {
        ("gpt-4o-input-priority", "priority"),
        ("gpt-4o-output-priority", "priority"),
        # flex is not priced for gpt-4o: the standard price id, the served tier still said
        ("gpt-4o-input-ondemand", "flex"),
        ("gpt-4o-output-ondemand", "flex"),
        ("gpt-4o-input-ondemand", None),
        ("gpt-4o-output-ondemand", None),
    }
    assert by_price[("gpt-4o-input-priority", "priority")]["ListUnitPrice"] == "4.25"
    assert by_price[("gpt-4o-output-priority", "priority")]["EffectiveCost"] == "0.0085"
    assert sum(Decimal(row["EffectiveCost"]) for row in rows) == Decimal("0.01275") + 2 * Decimal("0.0075")


# --- parsers read each provider's field ---------------------------------------------------


def test_parsers_read_the_served_tier() -> None:
    openai_usage = {"prompt_tokens": 10, "completion_tokens": 2}
    assert from_openai(openai_usage, service_tier="priority").service_tier == "priority"
    assert from_openai(openai_usage, service_tier="default").service_tier == "standard"
    assert from_openai(openai_usage).service_tier is None
    anthropic = {"input_tokens": 10, "output_tokens": 2, "service_tier": "priority"}
    assert from_anthropic(anthropic).service_tier == "priority"
    bedrock = {"inputTokens": 10, "outputTokens": 2, "totalTokens": 12}
    assert from_bedrock_converse(bedrock, service_tier={"type": "flex"}).service_tier == "flex"
    assert from_bedrock_converse(bedrock, service_tier={"type": "default"}).service_tier == "standard"
    logged = {
        "standard_logging_object": {
            "metadata": {"usage_object": {"prompt_tokens": 10, "completion_tokens": 2}},
            "cost_breakdown": {"service_tier": "priority", "total_cost": 0.1},
        }
    }
    assert from_litellm(logged).service_tier == "priority"
    assert from_litellm({"usage": openai_usage, "service_tier": "flex"}).service_tier == "flex"


# --- the LiteLLM importer -----------------------------------------------------------------


def test_litellm_import_brings_service_tier_prices() -> None:
    entry = {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": Decimal("2.5e-06"),
        "output_cost_per_token": Decimal("1.5e-05"),
        "cache_read_input_token_cost": Decimal("2.5e-07"),
        "input_cost_per_token_above_272k_tokens": Decimal("5e-06"),
        "output_cost_per_token_above_272k_tokens": Decimal("2.25e-05"),
        "input_cost_per_token_priority": Decimal("5e-06"),
        "output_cost_per_token_priority": Decimal("3e-05"),
        "cache_read_input_token_cost_priority": Decimal("5e-07"),
        "input_cost_per_token_flex": Decimal("1.25e-06"),
        "output_cost_per_token_flex": Decimal("7.5e-06"),
        "input_cost_per_token_above_272k_tokens_flex": Decimal("2.5e-06"),
        "output_cost_per_token_above_272k_tokens_flex": Decimal("1.125e-05"),
        "input_cost_per_token_ultrafast": Decimal("1e-05"),  # no output price: left out
        "input_cost_per_token_batches": Decimal("1.25e-06"),
    }
    _, card, reason = convert_entry("openai", "gpt-x", entry, AT.date())
    assert reason is None and card is not None
    assert card["service_tiers"] == {
        "flex": {
            "input": Decimal("1.25"),
            "output": Decimal("7.5"),
            "tiers": [{"above_input_tokens": 272_000, "input": Decimal("2.5"), "output": Decimal("11.25")}],
        },
        "priority": {"input": Decimal("5"), "output": Decimal("30"), "cache_read": Decimal("0.5")},
    }
