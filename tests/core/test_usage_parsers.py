"""Usage normalizers: exact ``Usage`` per provider shape, and no cached token counted twice.

Includes the LiteLLM-verified worked examples priced end to end with the bundled cards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from allotment.errors import InvalidRequest
from allotment.pricing import RateCardBook, default_card_dirs
from allotment.types import Usage
from allotment.usage_parsers import (
    from_anthropic,
    from_bedrock_converse,
    from_bedrock_invocation_log,
    from_bedrock_invoke_headers,
    from_gemini,
    from_litellm,
    from_openai,
    merge_anthropic_stream,
    parse_usage,
)

AT = datetime(2026, 7, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def book() -> RateCardBook:
    return RateCardBook.load(default_card_dirs())


# --- OpenAI ---------------------------------------------------------------------------


def test_openai_chat_cached_tokens_are_a_subset_of_prompt_tokens() -> None:
    usage = from_openai(
        {
            "prompt_tokens": 111,
            "completion_tokens": 222,
            "total_tokens": 333,
            "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 20},
        }
    )
    assert usage == Usage(input_tokens=47, cache_read_tokens=64, output_tokens=222, reasoning_tokens=20)
    assert usage.total_input_tokens == 111  # never double counted


def test_openai_stream_example_prices_like_litellm(book: RateCardBook) -> None:
    usage = from_openai(
        {
            "prompt_tokens": 111,
            "completion_tokens": 222,
            "prompt_tokens_details": {"cached_tokens": 64},
        }
    )
    price = book.price("openai", "gpt-4o", usage, AT)
    # (111-64) x 2.5e-6 + 64 x 1.25e-6 + 222 x 1e-5 = $0.0024175
    expected = Decimal(47) * Decimal("2.5e-6") + 64 * Decimal("1.25e-6") + 222 * Decimal("1e-5")
    assert expected == Decimal("0.0024175")
    assert price.amount_nanos == 2_417_500


def test_openai_embeddings_and_nulls() -> None:
    assert from_openai({"prompt_tokens": 8, "total_tokens": 8}) == Usage(input_tokens=8)
    usage = from_openai({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None})
    assert usage == Usage(input_tokens=10, output_tokens=2)


def test_openai_responses_api_shape() -> None:
    usage = from_openai(
        {
            "input_tokens": 5_000,
            "input_tokens_details": {"cached_tokens": 4_000},
            "output_tokens": 900,
            "output_tokens_details": {"reasoning_tokens": 600},
            "total_tokens": 5_900,
        }
    )
    assert usage == Usage(
        input_tokens=1_000, cache_read_tokens=4_000, output_tokens=900, reasoning_tokens=600
    )


def test_openai_sdk_objects_are_accepted() -> None:
    class FakeSdkUsage:
        def model_dump(self) -> dict[str, Any]:
            return {"prompt_tokens": 3, "completion_tokens": 4}

    assert from_openai(FakeSdkUsage()) == Usage(input_tokens=3, output_tokens=4)


# --- Anthropic --------------------------------------------------------------------------


def test_anthropic_input_excludes_cache_and_ttls_split() -> None:
    usage = from_anthropic(
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 10_000,
            "cache_creation_input_tokens": 3_000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 1_000,
                "ephemeral_1h_input_tokens": 2_000,
            },
            "output_tokens": 400,
            "server_tool_use": {"web_search_requests": 2},
        }
    )
    assert usage == Usage(
        input_tokens=50,
        cache_read_tokens=10_000,
        cache_write_tokens=1_000,
        cache_write_1h_tokens=2_000,
        output_tokens=400,
        search_calls=2,
    )
    assert usage.total_input_tokens == 13_050


def test_anthropic_writes_without_breakdown_are_5_minute() -> None:
    usage = from_anthropic({"input_tokens": 5, "cache_creation_input_tokens": 700, "output_tokens": 1})
    assert usage == Usage(input_tokens=5, cache_write_tokens=700, output_tokens=1)


def test_anthropic_stream_merge() -> None:
    start = {
        "input_tokens": 472,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2_000,
        "output_tokens": 1,
    }
    delta = {
        "output_tokens": 503,
        "input_tokens": None,
        "server_tool_use": {"web_search_requests": 1},
    }
    merged = merge_anthropic_stream(start, delta)
    assert from_anthropic(merged) == Usage(
        input_tokens=472, cache_read_tokens=2_000, output_tokens=503, search_calls=1
    )
    # Delta counts are cumulative: they replace, never add to, the start's counts.
    assert merge_anthropic_stream(start, {"output_tokens": 1})["output_tokens"] == 1


def test_anthropic_breakdown_larger_than_total_is_garbage() -> None:
    with pytest.raises(InvalidRequest, match="breakdown"):
        from_anthropic(
            {
                "input_tokens": 1,
                "cache_creation_input_tokens": 10,
                "cache_creation": {"ephemeral_1h_input_tokens": 11},
                "output_tokens": 1,
            }
        )


def test_anthropic_cache_read_and_writes_priced(book: RateCardBook) -> None:
    usage = from_anthropic(
        {
            "input_tokens": 1_000,
            "cache_read_input_tokens": 10_000,
            "cache_creation_input_tokens": 5_000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 2_000,
                "ephemeral_1h_input_tokens": 3_000,
            },
            "output_tokens": 500,
        }
    )
    price = book.price("anthropic", "claude-sonnet-4-20250514", usage, AT)
    # 1000x3 + 10000x0.30 + 2000x3.75 + 3000x6.00 + 500x15 = 39,000 per 1M = $0.039
    assert price.amount_nanos == 39_000_000


# --- Bedrock ----------------------------------------------------------------------------


def test_bedrock_converse_cache_details() -> None:
    usage = from_bedrock_converse(
        {
            "inputTokens": 2,
            "outputTokens": 300,
            "totalTokens": 100_802,
            "cacheReadInputTokens": 95_500,
            "cacheWriteInputTokens": 5_000,
            "cacheDetails": [
                {"ttl": "5m", "inputTokens": 1_000},
                {"ttl": "1h", "inputTokens": 4_000},
            ],
        }
    )
    assert usage == Usage(
        input_tokens=2,
        cache_read_tokens=95_500,
        cache_write_tokens=1_000,
        cache_write_1h_tokens=4_000,
        output_tokens=300,
    )


def test_bedrock_converse_requires_counts() -> None:
    with pytest.raises(InvalidRequest, match="inputTokens"):
        from_bedrock_converse({"outputTokens": 1})
    with pytest.raises(InvalidRequest, match="ttl"):
        from_bedrock_converse(
            {"inputTokens": 1, "outputTokens": 1, "cacheDetails": [{"ttl": "1d", "inputTokens": 1}]}
        )


def test_bedrock_invoke_headers_case_insensitive() -> None:
    usage = from_bedrock_invoke_headers(
        {
            "X-Amzn-Bedrock-Input-Token-Count": "12",
            "x-amzn-bedrock-output-token-count": "34",
            "x-amzn-bedrock-cache-read-input-token-count": "56",
            "x-amzn-bedrock-cache-write-input-token-count": "78",
            "x-amzn-bedrock-invocation-latency": "900",
            "x-amzn-requestid": "6f1c-not-a-number",
            "content-type": "application/json",
        }
    )
    assert usage == Usage(input_tokens=12, output_tokens=34, cache_read_tokens=56, cache_write_tokens=78)
    with pytest.raises(InvalidRequest, match="integer"):
        from_bedrock_invoke_headers(
            {"x-amzn-bedrock-input-token-count": "-3", "x-amzn-bedrock-output-token-count": "1"}
        )


def test_bedrock_invocation_log_absent_cache_is_zero(book: RateCardBook) -> None:
    record = {
        "modelId": "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "input": {"inputTokenCount": 2, "cacheReadInputTokenCount": 95_500},
        "output": {"outputTokenCount": 446},
    }
    usage = from_bedrock_invocation_log(record)
    assert usage == Usage(input_tokens=2, cache_read_tokens=95_500, output_tokens=446)
    price = book.price("bedrock", record["modelId"], usage, AT)  # type: ignore[arg-type]
    assert price.amount_nanos == int((2 * 3 + Decimal(95_500) * Decimal("0.3") + 446 * 15) * 1000)
    with pytest.raises(InvalidRequest, match="input and output"):
        from_bedrock_invocation_log({"input": {"inputTokenCount": 1}})


# --- Gemini -----------------------------------------------------------------------------


def test_gemini_prompt_includes_cached_and_thoughts_are_output() -> None:
    usage = from_gemini(
        {
            "promptTokenCount": 10_000,
            "cachedContentTokenCount": 8_000,
            "candidatesTokenCount": 300,
            "thoughtsTokenCount": 700,
            "totalTokenCount": 11_000,
        }
    )
    assert usage == Usage(
        input_tokens=2_000, cache_read_tokens=8_000, output_tokens=1_000, reasoning_tokens=700
    )


# --- LiteLLM ----------------------------------------------------------------------------


def test_litellm_anthropic_normalised_usage(book: RateCardBook) -> None:
    usage = from_litellm(
        {
            "prompt_tokens": 1200,
            "completion_tokens": 50,
            "total_tokens": 1250,
            "prompt_tokens_details": {"cached_tokens": 1000},
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 0,
        }
    )
    # The 1000 cached tokens appear twice in the payload and are counted once.
    assert usage == Usage(input_tokens=200, cache_read_tokens=1000, output_tokens=50)
    price = book.price("anthropic", "claude-sonnet-4-5-20250929", usage, AT)
    expected = 200 * Decimal("3e-6") + 1000 * Decimal("3e-7") + 50 * Decimal("1.5e-5")
    assert expected == Decimal("0.00165")
    assert price.amount_nanos == 1_650_000


def test_litellm_cache_writes_are_inside_prompt_tokens() -> None:
    usage = from_litellm(
        {
            "prompt_tokens": 3_300,
            "completion_tokens": 10,
            "prompt_tokens_details": {
                "cached_tokens": 1_000,
                "cache_creation_tokens": 2_000,
                "cache_creation_token_details": {
                    "ephemeral_5m_input_tokens": 500,
                    "ephemeral_1h_input_tokens": 1_500,
                },
            },
            "cache_read_input_tokens": 1_000,
            "cache_creation_input_tokens": 2_000,
        }
    )
    assert usage == Usage(
        input_tokens=300,
        cache_read_tokens=1_000,
        cache_write_tokens=500,
        cache_write_1h_tokens=1_500,
        output_tokens=10,
    )


def test_litellm_logging_payloads() -> None:
    usage_object = {
        "prompt_tokens": 111,
        "completion_tokens": 222,
        "prompt_tokens_details": {"cached_tokens": 64},
    }
    slo = {
        "prompt_tokens": 111,
        "completion_tokens": 222,
        "metadata": {"usage_object": usage_object},
    }
    expected = Usage(input_tokens=47, cache_read_tokens=64, output_tokens=222)
    assert from_litellm(slo) == expected  # the SLO's top level has no cache fields
    assert from_litellm({"standard_logging_object": slo}) == expected
    assert from_litellm({"id": "x", "usage": usage_object}) == expected
    with pytest.raises(InvalidRequest, match="no usage"):
        from_litellm({"id": "x"})


def test_litellm_cached_more_than_prompt_is_garbage() -> None:
    with pytest.raises(InvalidRequest, match="exceeds"):
        from_litellm({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}})


# --- garbage and the dispatcher ---------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "data", "words"),
    [
        ("openai", {"prompt_tokens": -1}, "negative"),
        ("openai", {"prompt_tokens": "12"}, "integer"),
        ("openai", {"prompt_tokens": 1.0}, "integer"),
        ("openai", {"prompt_tokens": True}, "integer"),
        ("openai", {"prompt_tokens": 10**12}, "beyond"),
        ("openai", {"completion_tokens": 3}, "prompt_tokens"),
        ("openai", {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 6}}, "exceeds"),
        ("anthropic", {"output_tokens": 3}, "input_tokens"),
        ("anthropic", {"input_tokens": 1, "cache_read_input_tokens": -5}, "negative"),
        ("gemini", {"candidatesTokenCount": 1}, "promptTokenCount"),
        ("gemini", {"promptTokenCount": 1, "cachedContentTokenCount": 2}, "exceeds"),
        ("bedrock_invocation_log", "not a record", "object"),
        ("litellm", 42, "object"),
    ],
)
def test_garbage_is_rejected_with_a_clear_message(shape: str, data: Any, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_usage(shape, data)
    assert info.value.code == "invalid_usage"
    assert words in info.value.message


def test_dispatcher_routes_and_rejects_unknown_shapes() -> None:
    assert parse_usage("OpenAI", {"prompt_tokens": 1}) == Usage(input_tokens=1)
    assert parse_usage("bedrock", {"inputTokens": 1, "outputTokens": 2}) == Usage(
        input_tokens=1, output_tokens=2
    )
    assert parse_usage("anthropic", {"input_tokens": 1}, estimated=True).estimated
    with pytest.raises(InvalidRequest, match="unknown usage shape"):
        parse_usage("carrier-pigeon", {})
