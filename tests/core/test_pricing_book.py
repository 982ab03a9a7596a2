"""Pricing conformance: exact amounts for the published examples, tiers, cache, batch, dates.

Every expected amount is worked out by hand in the test from the card's prices (USD per 1M).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from allotment.defaults.pricing import RateCardPricer
from allotment.errors import ConfigError, InvalidRequest, PricingError
from allotment.plugins import Hooks, create_plugin_manager
from allotment.pricing import RateCardBook, default_card_dirs
from allotment.types import EndpointMode, Usage

AT = datetime(2026, 7, 1, tzinfo=UTC)
NANO = Decimal(1_000_000_000)
M = Decimal(1_000_000)


def nanos(dollars: Decimal) -> int:
    """Hand conversion for expectations: every example here is a whole number of nanos."""
    value = dollars * NANO
    assert value == value.to_integral_value(), "pick examples that land on whole nanos"
    return int(value)


@pytest.fixture(scope="module")
def book() -> RateCardBook:
    return RateCardBook.load(default_card_dirs())


# --- the published worked examples ----------------------------------------------------


def test_gpt_5_4_mini_fresh_cached_output(book: RateCardBook) -> None:
    usage = Usage(input_tokens=8_000, cache_read_tokens=2_000, output_tokens=1_200)
    price = book.price("openai", "gpt-5.4-mini", usage, AT)
    expected = (8_000 * Decimal("0.75") + 2_000 * Decimal("0.075") + 1_200 * Decimal("4.50")) / M
    assert expected == Decimal("0.01155")
    assert price.amount_nanos == nanos(expected) == 11_550_000
    assert price.card_version == "openai-2026-06-08"
    assert price.model == "gpt-5.4-mini"
    assert price.provider == "openai"
    assert price.components == {
        "input": 6_000_000,
        "cache_read": 150_000,
        "cache_write": 0,
        "cache_write_1h": 0,
        "output": 5_400_000,
        "per_call": 0,
    }


def test_claude_sonnet_4_base_and_long_context_tier(book: RateCardBook) -> None:
    base = book.price("anthropic", "claude-sonnet-4", Usage(input_tokens=8_000, output_tokens=1_200), AT)
    assert base.amount_nanos == nanos((8_000 * Decimal(3) + 1_200 * Decimal(15)) / M) == 42_000_000

    # Above 200,000 input tokens the WHOLE request is priced at the tier (no marginal split).
    long = book.price("anthropic", "claude-sonnet-4", Usage(input_tokens=250_000, output_tokens=2_000), AT)
    expected = (250_000 * Decimal("6.00") + 2_000 * Decimal("22.50")) / M
    assert expected == Decimal("1.545")
    assert long.amount_nanos == nanos(expected) == 1_545_000_000

    # Exactly at the threshold stays at the base price (the rule is strictly greater).
    edge = book.price("anthropic", "claude-sonnet-4", Usage(input_tokens=200_000, output_tokens=2_000), AT)
    assert edge.amount_nanos == nanos((200_000 * Decimal(3) + 2_000 * Decimal(15)) / M)
    assert edge.amount_nanos == 630_000_000


def test_tier_threshold_counts_cached_input_too(book: RateCardBook) -> None:
    usage = Usage(input_tokens=150_000, cache_read_tokens=60_000, output_tokens=0)
    price = book.price("anthropic", "claude-sonnet-4", usage, AT)
    # 210,000 total input > 200,000: fresh at 6.00 and cache reads at the tier's 0.60.
    assert price.amount_nanos == nanos((150_000 * Decimal("6.00") + 60_000 * Decimal("0.60")) / M)
    assert price.amount_nanos == 936_000_000


def test_gpt_4o_gpt_4_1_and_gpt_5_4(book: RateCardBook) -> None:
    gpt4o = book.price("openai", "gpt-4o", Usage(input_tokens=2_000, output_tokens=500), AT)
    assert gpt4o.amount_nanos == nanos((2_000 * Decimal("2.50") + 500 * Decimal("10.00")) / M)
    assert gpt4o.amount_nanos == 10_000_000  # $0.0100

    usage = Usage(input_tokens=20_000_000, output_tokens=4_000_000)
    sync = book.price("openai", "gpt-4.1", usage, AT)
    assert sync.amount_nanos == nanos((20_000_000 * Decimal(2) + 4_000_000 * Decimal(8)) / M)
    assert sync.amount_nanos == 72_000_000_000
    batch = book.price("openai", "gpt-4.1", usage, AT, "batch")
    assert batch.amount_nanos == 36_000_000_000
    # The enum works as the endpoint mode too; stream is priced like sync.
    assert book.price("openai", "gpt-4.1", usage, AT, EndpointMode.BATCH).amount_nanos == 36 * 10**9
    assert book.price("openai", "gpt-4.1", usage, AT, "stream").amount_nanos == 72 * 10**9

    gpt54 = book.price("openai", "gpt-5.4", Usage(input_tokens=1_200_000, output_tokens=300_000), AT)
    assert gpt54.amount_nanos == nanos((1_200_000 * Decimal("2.50") + 300_000 * Decimal(15)) / M)
    assert gpt54.amount_nanos == 7_500_000_000
    assert gpt54.card_version == "openai-2026-06-07"


def test_gemini_2_5_pro_long_context_matches_litellm(book: RateCardBook) -> None:
    # Verified with LiteLLM 1.106.2: 250k prompt tokens -> 250,000 x 2.5e-6 = $0.625.
    price = book.price("google", "gemini-2.5-pro", Usage(input_tokens=250_000), AT)
    assert price.amount_nanos == nanos(250_000 * Decimal("2.50") / M) == 625_000_000


# --- cache classes --------------------------------------------------------------------


def test_anthropic_cache_read_and_both_write_ttls(book: RateCardBook) -> None:
    usage = Usage(
        input_tokens=1_000,
        cache_read_tokens=10_000,
        cache_write_tokens=2_000,
        cache_write_1h_tokens=3_000,
        output_tokens=500,
    )
    price = book.price("anthropic", "claude-sonnet-4", usage, AT)
    expected = (
        1_000 * Decimal("3.00")
        + 10_000 * Decimal("0.30")
        + 2_000 * Decimal("3.75")
        + 3_000 * Decimal("6.00")
        + 500 * Decimal("15.00")
    ) / M
    assert price.amount_nanos == nanos(expected) == 39_000_000
    assert price.components["cache_write_1h"] == 18_000_000
    assert price.components["cache_write"] == 7_500_000


def test_bedrock_cache_fields_and_cross_region_ids(book: RateCardBook) -> None:
    usage = Usage(input_tokens=100, cache_read_tokens=95_500, cache_write_tokens=1_000, output_tokens=200)
    expected = (100 * Decimal(3) + 95_500 * Decimal("0.3") + 1_000 * Decimal("3.75") + 200 * Decimal(15)) / M
    for model_id in (
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "global.anthropic.claude-sonnet-4-20250514-v1:0",
        "apac.anthropic.claude-sonnet-4-20250514-v1:0",
        "bedrock/eu.anthropic.claude-sonnet-4-20250514-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0",
        "arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-sonnet-4-20250514-v1:0",
    ):
        price = book.price("bedrock", model_id, usage, AT)
        assert price.amount_nanos == nanos(expected) == 35_700_000, model_id
        assert price.model == "anthropic.claude-sonnet-4-20250514-v1:0"
        assert price.card_version == "bedrock-2026-06-08"


def test_bedrock_regional_entries_beat_prefix_stripping(book: RateCardBook) -> None:
    usage = Usage(input_tokens=1_000_000, cache_write_1h_tokens=1_000_000)
    base = book.price("bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", usage, AT)
    # 2,000,000 total input > 200k: tier prices 6 and 12 for the global (base) profile.
    assert base.amount_nanos == nanos((1_000_000 * Decimal(6) + 1_000_000 * Decimal(12)) / M)
    eu = book.price("bedrock", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0", usage, AT)
    assert eu.amount_nanos == nanos((1_000_000 * Decimal("6.6") + 1_000_000 * Decimal("13.2")) / M)
    assert eu.model == "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def test_titan_embeddings_and_nova(book: RateCardBook) -> None:
    titan = book.price("bedrock", "amazon.titan-embed-text-v2:0", Usage(input_tokens=1_000_000), AT)
    assert titan.amount_nanos == nanos(1_000_000 * Decimal("0.02") / M) == 20_000_000
    nova = book.price(
        "bedrock",
        "us.amazon.nova-micro-v1:0",
        Usage(input_tokens=1_000, cache_read_tokens=1_000),
        AT,
    )
    assert nova.amount_nanos == nanos((1_000 * Decimal("0.035") + 1_000 * Decimal("0.00875")) / M)


def test_absent_cache_price_falls_back_to_input(book: RateCardBook) -> None:
    # claude-3-5-sonnet's card lists no cache price: reads and writes are priced as input.
    usage = Usage(cache_read_tokens=1_000, cache_write_tokens=1_000, cache_write_1h_tokens=1_000)
    price = book.price("anthropic", "claude-3-5-sonnet-20241022", usage, AT)
    assert price.amount_nanos == nanos(3_000 * Decimal(3) / M) == 9_000_000
    assert price.flags == ("deprecated_model",)


def test_ollama_is_priced_at_zero_explicitly(book: RateCardBook) -> None:
    price = book.price("ollama", "llama3.1:8b", Usage(input_tokens=50_000, output_tokens=9_000), AT)
    assert price.amount_nanos == 0
    assert price.card_version == "ollama-2024-01-01"
    assert price.model == "llama3.1:8b"  # a wildcard entry reports the id it priced


# --- resolution -----------------------------------------------------------------------


def test_aliases_provider_prefix_and_case(book: RateCardBook) -> None:
    assert book.resolve("anthropic", "claude-sonnet-4-20250514", AT).model == "claude-sonnet-4"
    assert book.resolve("anthropic", "claude-sonnet-4-5-20250929", AT).model == "claude-sonnet-4-5"
    assert book.resolve("OpenAI", "openai/gpt-4o", AT).model == "gpt-4o"
    assert book.resolve("openai", "gpt-4.1-mini-2025-04-14", AT).model == "gpt-4.1-mini"
    assert book.resolve("openai", "gpt-4.1-2025-04-14", AT).model == "gpt-4.1"
    assert book.resolve("gemini", "gemini-2.5-pro", AT).card.provider == "google"


def test_unknown_model_is_never_zero(book: RateCardBook) -> None:
    with pytest.raises(PricingError) as info:
        book.price("openai", "gpt-9-ultra", Usage(input_tokens=1), AT)
    assert info.value.code == "unpriced_model"
    assert "gpt-9-ultra" in info.value.message and "openai" in info.value.message
    with pytest.raises(PricingError):
        book.price("nobody", "gpt-4o", Usage(input_tokens=1), AT)
    pricer = RateCardPricer(book)
    assert pricer.price("openai", "gpt-9-ultra", Usage(input_tokens=1), AT, "sync") is None


def test_a_time_before_any_card_is_unpriced(book: RateCardBook) -> None:
    before = datetime(2020, 1, 1, tzinfo=UTC)
    assert book.find("openai", "gpt-4o", before) is None
    with pytest.raises(PricingError, match="unpriced|no rate card"):
        book.price("openai", "gpt-4o", Usage(input_tokens=1), before)


CARD = """\
provider: acme
version: {version}
effective_from: {date}
source: test
models:
  widget:
    input: {price}
    output: 1
    aliases: ["widget-*"]
{extra}"""


def write_card(root: Path, version: str, date: str, price: str, extra: str = "") -> None:
    (root / f"{version}.yaml").write_text(CARD.format(version=version, date=date, price=price, extra=extra))


def test_a_dated_card_change(tmp_path: Path) -> None:
    write_card(tmp_path, "acme-1", "2026-01-01", "1.00", "  legacy:\n    input: 5\n    output: 5\n")
    write_card(tmp_path, "acme-2", "2026-03-01T12:00:00Z", "2.00")
    book = RateCardBook.load([tmp_path])
    usage = Usage(input_tokens=1_000_000)
    change = datetime(2026, 3, 1, 12, tzinfo=UTC)
    before = book.price("acme", "widget", usage, change - timedelta(microseconds=1))
    after = book.price("acme", "widget", usage, change)
    assert (before.amount_nanos, before.card_version) == (1_000_000_000, "acme-1")
    assert (after.amount_nanos, after.card_version) == (2_000_000_000, "acme-2")
    # A naive timestamp is UTC.
    assert book.price("acme", "widget-x", usage, datetime(2026, 2, 1)).card_version == "acme-1"
    # The newest card that HAS the model wins: legacy only exists in the older card.
    assert book.price("acme", "legacy", usage, change).card_version == "acme-1"
    with pytest.raises(PricingError):
        book.price("acme", "widget", usage, datetime(2025, 12, 31, tzinfo=UTC))


def test_rounding_is_half_even_once_per_request(tmp_path: Path) -> None:
    # 0.0005 USD per 1M tokens = 0.5 nano per token.
    write_card(tmp_path, "acme-r", "2026-01-01", "0.0005", "")
    (tmp_path / "acme-r.yaml").write_text(
        (tmp_path / "acme-r.yaml").read_text().replace("output: 1", "output: 0.0005")
    )
    book = RateCardBook.load([tmp_path])
    one = book.price("acme", "widget", Usage(input_tokens=1), AT)
    assert one.amount_nanos == 0  # 0.5 -> 0 (even)
    assert book.price("acme", "widget", Usage(input_tokens=3), AT).amount_nanos == 2  # 1.5 -> 2
    assert book.price("acme", "widget", Usage(input_tokens=5), AT).amount_nanos == 2  # 2.5 -> 2
    assert book.price("acme", "widget", Usage(input_tokens=7), AT).amount_nanos == 4  # 3.5 -> 4
    # Rounded once: 0.5 + 0.5 = exactly 1 nano, though each component alone rounds to 0.
    both = book.price("acme", "widget", Usage(input_tokens=1, output_tokens=1), AT)
    assert both.amount_nanos == 1
    assert both.components["input"] == 0 and both.components["output"] == 0


def test_per_call_fees_and_batch_only_on_tokens(tmp_path: Path) -> None:
    extra = "    batch: 0.5\n    per_call: {tool_call: 0.001, search_call: 0.01}\n"
    write_card(tmp_path, "acme-f", "2026-01-01", "2", extra)
    book = RateCardBook.load([tmp_path])
    usage = Usage(input_tokens=1_000_000, tool_calls=3, search_calls=2)
    sync = book.price("acme", "widget", usage, AT)
    assert sync.amount_nanos == nanos(Decimal(2) + 3 * Decimal("0.001") + 2 * Decimal("0.01"))
    batch = book.price("acme", "widget", usage, AT, "batch")
    expected = Decimal(2) * Decimal("0.5") + 3 * Decimal("0.001") + 2 * Decimal("0.01")
    assert batch.amount_nanos == nanos(expected) == 1_023_000_000
    assert batch.components["per_call"] == 23_000_000


def test_absurd_and_negative_counts_are_rejected() -> None:
    with pytest.raises(InvalidRequest) as info:
        Usage(input_tokens=-1)
    assert info.value.code == "invalid_usage"
    with pytest.raises(InvalidRequest):
        Usage(output_tokens=10**12)
    with pytest.raises(InvalidRequest):
        Usage(input_tokens=1.5)  # type: ignore[arg-type]


def test_resolution_is_cached(book: RateCardBook) -> None:
    book.resolve("openai", "gpt-4o", AT)
    cached = book._cache[("openai", "gpt-4o")]
    book.resolve("openai", "gpt-4o", AT + timedelta(days=1))
    assert book._cache[("openai", "gpt-4o")] is cached


# --- estimates --------------------------------------------------------------------------


def test_worst_case_prices_all_input_fresh_and_every_output_token(book: RateCardBook) -> None:
    explicit = book.worst_case("openai", "gpt-5.4-mini", AT, 10_000, 1_000)
    assert explicit.amount_nanos == nanos((10_000 * Decimal("0.75") + 1_000 * Decimal("4.50")) / M)
    # No max_tokens: the card's max_output_tokens (128,000) bounds the output.
    default = book.worst_case("openai", "gpt-5.4-mini", AT, 10_000, None)
    assert default.amount_nanos == nanos((10_000 * Decimal("0.75") + 128_000 * Decimal("4.50")) / M)
    assert book.max_output_tokens("openai", "gpt-5.4-mini", AT) == 128_000
    assert book.max_output_tokens("openai", "nope", AT) is None
    with pytest.raises(PricingError) as info:
        book.worst_case("ollama", "llama3", AT, 10, None)
    assert info.value.code == "unbounded_output"


def test_max_affordable_output_tokens(book: RateCardBook) -> None:
    # gpt-4o: 1,000 input = 2,500,000 nanos; each output token = 10,000 nanos.
    budget = 2_500_000 + 10_000 * 123 + 9_999
    assert book.max_affordable_output_tokens("openai", "gpt-4o", AT, 1_000, budget) == 123
    assert book.max_affordable_output_tokens("openai", "gpt-4o", AT, 1_000, 2_499_999) == 0
    assert book.max_affordable_output_tokens("openai", "gpt-4o", AT, 1_000, 2_500_000) == 0
    # Batch halves both prices.
    assert (
        book.max_affordable_output_tokens("openai", "gpt-4o", AT, 1_000, budget, "batch")
        == (budget - 1_250_000) // 5_000
    )
    # Capped at the card's max_output_tokens; free output is capped the same way.
    assert book.max_affordable_output_tokens("openai", "gpt-4o", AT, 0, 10**15) == 16_384
    # Long-context input moves the request to the tier: output then costs 22.50 per 1M.
    tiered = book.max_affordable_output_tokens(
        "anthropic", "claude-sonnet-4", AT, 250_000, 1_500_000_000 + 22_500 * 10
    )
    assert tiered == 10
    # The affordable count really fits, one more does not.
    usage = Usage(input_tokens=1_000, output_tokens=123)
    assert book.price("openai", "gpt-4o", usage, AT).amount_nanos <= budget
    over = Usage(input_tokens=1_000, output_tokens=124)
    assert book.price("openai", "gpt-4o", over, AT).amount_nanos > budget


def test_pricer_through_the_plugin_manager(book: RateCardBook) -> None:
    pm = create_plugin_manager([("allotment.defaults.pricing", RateCardPricer(book))], load_entrypoints=False)
    hooks = Hooks(pm)
    price = hooks.price("openai", "gpt-4o", Usage(input_tokens=2_000, output_tokens=500), AT, "sync")
    assert price is not None and price.amount_nanos == 10_000_000
    assert hooks.price("openai", "unknown", Usage(input_tokens=1), AT, "sync") is None


def test_models_and_provider_for(book: RateCardBook) -> None:
    models = book.models(AT)
    assert ("openai", "gpt-5.4-mini") in models
    assert ("openai", "gpt-5.4-mini") not in book.models(datetime(2026, 6, 1, tzinfo=UTC))
    assert book.provider_for("claude-sonnet-4", AT) == "anthropic"
    assert book.provider_for("gpt-4o-2024-08-06", AT) == "openai"
    # Ollama's wildcard never claims an unknown bare id.
    assert book.provider_for("who-knows", AT) is None


def test_provider_for_answers_by_date_each_time_it_is_asked() -> None:
    """A bare id is claimed only from its card's effective date: asking about a later day
    first must not change the answer for an earlier one (the lookup is cached per model)."""
    book = RateCardBook.load(default_card_dirs())
    before, after = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
    assert book.provider_for("gpt-5.4-mini", after) == "openai"
    assert book.provider_for("gpt-5.4-mini", before) is None
    assert book.provider_for(" gpt-5.4-mini ", after) == "openai"
    assert book.has_provider("openai") and not book.has_provider("OpenAI")


def test_azure_card_prices_global_and_data_zone_deployments_but_claims_no_bare_id(
    book: RateCardBook,
) -> None:
    usage = Usage(input_tokens=1_000_000, cache_read_tokens=1_000_000, output_tokens=1_000_000)
    # Global/Standard gpt-4o: the same prices as OpenAI's own API
    assert book.price("azure", "gpt-4o-2024-11-20", usage, AT).amount_nanos == nanos(
        Decimal("2.50") + Decimal("1.25") + Decimal("10.00")
    )
    # Data Zone (EU or US): 10 % more; eu/ and us/ share one entry
    for model in ("eu/gpt-4o-2024-08-06", "us/gpt-4o"):
        assert book.price("azure", model, usage, AT).amount_nanos == nanos(
            Decimal("2.75") + Decimal("1.375") + Decimal("11.00")
        )
    # the dearer first gpt-4o release is not caught by another entry's alias
    assert book.price("azure", "gpt-4o-2024-05-13", usage, AT).amount_nanos == nanos(
        Decimal("5.00") * 2 + Decimal("15.00")  # no cache price: cache reads at input
    )
    # Priority processing, on a Data Zone deployment and above gpt-5.4's 272k context tier
    later = datetime(2026, 12, 1, tzinfo=UTC)
    priority = Usage(input_tokens=1_000_000, service_tier="priority")
    assert book.price("azure", "eu/gpt-4.1", priority, later).amount_nanos == nanos(Decimal("3.85"))
    long = Usage(input_tokens=300_000, output_tokens=1_000, service_tier="priority")
    assert book.price("azure", "gpt-5.4", long, later).amount_nanos == nanos(
        300_000 * Decimal("10.00") / M + 1_000 * Decimal("45.00") / M
    )
    # a bare id still belongs to OpenAI; an owner-named deployment is unknown until mapped
    assert book.provider_for("gpt-4o", AT) == "openai"
    assert book.provider_for("gpt-4.1-nano", AT) is None  # only Azure's card has it
    assert book.find("azure", "prod-gpt4o", AT) is None


def test_bare_ids_false_keeps_a_card_from_claiming_bare_ids(tmp_path: Path) -> None:
    write_card(tmp_path, "acme-1", "2026-01-01", "1.00")
    host = CARD.format(version="host-1", date="2026-01-01", price="2.00", extra="")
    host = host.replace("provider: acme", "provider: a-host").replace(
        "effective_from:", "bare_ids: false\neffective_from:"
    )
    (tmp_path / "host-1.yaml").write_text(host)
    book = RateCardBook.load([tmp_path])
    assert book.provider_for("widget", AT) == "acme"  # though "a-host" sorts first
    assert book.find("a-host", "widget", AT) is not None  # still priced when named
    (tmp_path / "host-1.yaml").write_text(host.replace("bare_ids: false", "bare_ids: maybe"))
    with pytest.raises(ConfigError, match="bare_ids"):
        RateCardBook.load([tmp_path])
