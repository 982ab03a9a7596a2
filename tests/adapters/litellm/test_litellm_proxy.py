"""A real LiteLLM proxy with ``callbacks: allotment_litellm.handler``, driven by the openai SDK.

Costs are computed by hand from the bundled card: gpt-4o $2.50 in / $1.25 cached / $10.00 out per 1M.
"""

from __future__ import annotations

import openai
import pytest
from litellm_stack import SETTLE_GRACE_SECONDS, Stack, token_counts

from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script
from allotment.types import Outcome

pytestmark = pytest.mark.slow

GPT4O_IN, GPT4O_CACHED, GPT4O_OUT = 2_500, 1_250, 10_000  # nanos per token


def test_allowed_model_lands_in_the_ledger_with_exact_cost(stack: Stack, fake: FakeUpstream) -> None:
    key, key_id = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=100, output_tokens=20))
    raw = stack.raw_chat(
        key, content="hello", max_tokens=50, extra_headers={"X-Allotment-Label-Feature": "search"}
    )
    reply = raw.parse()
    assert reply.choices[0].message.content
    call_id = raw.headers["x-litellm-call-id"]
    event = stack.wait_event(call_id)
    assert event.cost_nanos == 100 * GPT4O_IN + 20 * GPT4O_OUT == 450_000
    assert event.external_cost_nanos == 450_000  # LiteLLM's response_cost, kept beside ours
    assert event.outcome is Outcome.SUCCESS
    assert event.enforced
    assert event.key_id == key_id
    assert event.provider == "openai" and event.model == "gpt-4o"
    assert event.labels["feature"] == "search"
    assert "litellm_cost_diverges" not in event.flags
    assert len(fake.requests) == 1
    wallet = stack.key_wallet(key_id)
    assert wallet is None or wallet.reserved_nanos == 0


def test_cache_tokens_are_priced_from_the_usage_object(stack: Stack, fake: FakeUpstream) -> None:
    key, _ = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=47, cache_read_tokens=64, output_tokens=222))
    raw = stack.raw_chat(key, max_tokens=300)
    event = stack.wait_event(raw.headers["x-litellm-call-id"])
    assert token_counts(event) == (47, 64, 222)
    assert event.cost_nanos == 47 * GPT4O_IN + 64 * GPT4O_CACHED + 222 * GPT4O_OUT == 2_417_500
    assert event.external_cost_nanos == 2_417_500


def test_disallowed_model_is_403_and_never_reaches_the_provider(stack: Stack, fake: FakeUpstream) -> None:
    key, _ = stack.key("sam@acme.example")  # support tier: openai/gpt-5.4-mini only
    with pytest.raises(openai.PermissionDeniedError) as caught:
        stack.client(key).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=10
        )
    error = caught.value.body
    assert caught.value.status_code == 403
    assert error["code"] == "model_not_allowed"
    assert error["type"] == "permission_error"
    assert fake.requests == []


def test_unknown_key_is_401(stack: Stack, fake: FakeUpstream) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        stack.client("sk-not-an-allotment-key").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"
    assert fake.requests == []


def test_exhausted_budget_is_402_before_any_upstream_call(stack: Stack, fake: FakeUpstream) -> None:
    key, key_id = stack.key(budget="0.0001")
    with pytest.raises(openai.APIStatusError) as caught:
        stack.client(key).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=1000
        )
    assert caught.value.status_code == 402
    error = caught.value.body
    assert error["code"] == "budget_exceeded"
    assert error["scope"] == "key" and error["scope_id"] == key_id
    assert error["limit"] == "0.0001"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert fake.requests == []
    wallet = stack.key_wallet(key_id)
    assert wallet.spent_nanos == 0 and wallet.reserved_nanos == 0


def test_stream_settles_with_the_providers_final_usage(stack: Stack, fake: FakeUpstream) -> None:
    key, key_id = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=111, cache_read_tokens=64, output_tokens=40))
    with stack.client(key).chat.completions.with_streaming_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "count"}],
        max_tokens=100,
        stream=True,
    ) as response:
        call_id = response.headers["x-litellm-call-id"]
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    assert text.count("tok") == 40
    # LiteLLM asked the provider for its usage chunk although the client did not
    assert fake.requests[0].json["stream_options"] == {"include_usage": True}
    event = stack.wait_event(call_id)
    assert event.endpoint_mode == "stream"
    assert token_counts(event) == (111, 64, 40)
    assert not event.usage.estimated
    assert event.cost_nanos == 111 * GPT4O_IN + 64 * GPT4O_CACHED + 40 * GPT4O_OUT
    assert stack.key_wallet(key_id).reserved_nanos == 0


def test_client_disconnect_mid_stream_is_charged_and_released(stack: Stack, fake: FakeUpstream) -> None:
    key, key_id = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=20, output_tokens=200), chunk_delay=0.05)
    with stack.stream(key, max_tokens=400) as response:
        call_id = response.headers["x-litellm-call-id"]
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen += 1
            if seen >= 5:
                break  # leave mid-stream: closing the connection is the disconnect
    event = stack.wait_event(call_id)
    assert event.outcome is Outcome.CANCELLED
    assert "client_disconnected" in event.flags and "estimated_usage" in event.flags
    assert event.usage.estimated and 0 < event.usage.output_tokens < 200
    expected = (
        event.usage.input_tokens * GPT4O_IN
        + event.usage.cache_read_tokens * GPT4O_CACHED
        + event.usage.output_tokens * GPT4O_OUT
    )
    assert event.cost_nanos == expected > 0
    wallet = stack.key_wallet(key_id)
    assert wallet.reserved_nanos == 0 and wallet.spent_nanos == event.cost_nanos
    assert stack.runtime.reservation_state(call_id) == "settled"


def test_provider_500_releases_the_reservation(stack: Stack, fake: FakeUpstream) -> None:
    key, key_id = stack.key()
    fake.enqueue(Script(status=500))
    with pytest.raises(openai.InternalServerError) as caught:
        stack.client(key).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=50
        )
    call_id = caught.value.response.headers["x-litellm-call-id"]
    assert len(fake.requests) == 1  # LiteLLM did not retry (num_retries: 0)
    event = stack.wait_event(call_id, timeout=SETTLE_GRACE_SECONDS + 20)
    assert event.outcome is Outcome.ERROR and event.cost_nanos == 0
    wallet = stack.key_wallet(key_id)
    assert wallet.reserved_nanos == 0 and wallet.spent_nanos == 0


def test_mock_model_with_cache_reads_prices_like_litellm(stack: Stack) -> None:
    key, _ = stack.key()
    raw = stack.raw_chat(key, "claude-mock-cache", max_tokens=100)
    event = stack.wait_event(raw.headers["x-litellm-call-id"])
    # claude-sonnet-4-5: $3 in, $0.30 cache read, $15 out per 1M
    assert token_counts(event) == (200, 1000, 50)
    assert event.cost_nanos == 200 * 3_000 + 1000 * 300 + 50 * 15_000 == 1_650_000
    assert event.external_cost_nanos == 1_650_000
    assert event.provider == "anthropic"


def test_master_key_with_an_end_user_is_attributed_to_that_person(stack: Stack) -> None:
    raw = stack.raw_chat(stack.proxy.master_key, "gpt-4o-mock", max_tokens=30, user="grace@acme.example")
    event = stack.wait_event(raw.headers["x-litellm-call-id"])
    grace = stack.runtime.directory.person_by_email("grace@acme.example")
    assert event.person_id == grace.id and event.end_user == "grace@acme.example"
    assert event.key_id is None
    assert event.cost_nanos == 10 * GPT4O_IN + 20 * GPT4O_OUT  # the string mock's 10/20 tokens


def test_master_key_without_a_known_person_is_refused(stack: Stack, fake: FakeUpstream) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        stack.client(stack.proxy.master_key).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            user="mallory@example.com",
        )
    assert caught.value.body["code"] == "invalid_api_key"
    assert fake.requests == []


def test_revoked_key_is_refused(stack: Stack) -> None:
    key, key_id = stack.key()
    stack.runtime.admin.revoke_key(key_id)
    with pytest.raises(openai.AuthenticationError):
        stack.client(key).chat.completions.create(
            model="gpt-4o-mock", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )


SONNET_IN, SONNET_OUT = 3_000, 15_000  # claude-sonnet-4: $3 in / $15 out per 1M, nanos per token


def test_a_load_balanced_group_is_charged_as_the_deployment_that_answered(
    stack: Stack, fake: FakeUpstream
) -> None:
    """Group ``mixed`` spreads calls over openai/gpt-4o and anthropic/claude-sonnet-4: each
    event names the deployment that answered and is priced by its card, whichever it was."""
    key, key_id = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=100, output_tokens=20))
    served: list[str] = []
    while len(set(served)) < 2 or len(served) < 8:  # the router picks at random
        assert len(served) < 60, f"the router sent every call to {served[0]}"
        before = len(fake.requests)
        raw = stack.raw_chat(key, model="mixed", max_tokens=50)
        assert raw.parse().choices[0].message.content
        (request,) = fake.requests[before:]
        event = stack.wait_event(raw.headers["x-litellm-call-id"])
        if request.path.endswith("/messages"):
            assert (event.provider, event.model) == ("anthropic", "claude-sonnet-4")
            assert event.cost_nanos == 100 * SONNET_IN + 20 * SONNET_OUT == 600_000
        else:
            assert (event.provider, event.model) == ("openai", "gpt-4o")
            assert event.cost_nanos == 100 * GPT4O_IN + 20 * GPT4O_OUT == 450_000
            # compared with LiteLLM's own price of the same deployment, not the group's first
            # (LiteLLM's map has no bare claude-sonnet-4, so it prices that deployment at $0)
            assert event.external_cost_nanos == 450_000 and "litellm_cost_diverges" not in event.flags
        served.append(event.provider)
    wallet = stack.key_wallet(key_id)
    assert wallet is None or wallet.reserved_nanos == 0


def test_a_group_with_a_deployment_the_tier_does_not_allow_is_403(stack: Stack, fake: FakeUpstream) -> None:
    """Either deployment may answer, so the caller must be allowed both: the design tier may
    use gpt-5.4-mini but not claude-sonnet-4, and the group is refused before any upstream call."""
    key, _ = stack.key("dee@acme.example")
    before = len(fake.requests)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        stack.client(key).chat.completions.create(
            model="mini-or-sonnet", messages=[{"role": "user", "content": "hi"}], max_tokens=10
        )
    assert caught.value.status_code == 403
    assert "claude-sonnet-4" in str(caught.value.body)
    assert len(fake.requests) == before


AZURE_MINI_EU_IN, AZURE_MINI_EU_OUT = 165, 660  # Azure Data Zone gpt-4o-mini: $0.165 / $0.66 per 1M


def test_an_azure_deployment_is_priced_as_its_base_model(stack: Stack, fake: FakeUpstream) -> None:
    """``azure/prod-gpt4o`` is named by its owner; ``model_info.base_model: azure/gpt-4o`` says
    what it serves, and the call is checked, held and priced as Azure's gpt-4o."""
    key, _ = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=100, output_tokens=20))
    before = len(fake.requests)
    raw = stack.raw_chat(key, model="azure-gpt4o", max_tokens=50)
    assert raw.parse().choices[0].message.content
    (request,) = fake.requests[before:]
    assert request.path == "/openai/deployments/prod-gpt4o/chat/completions"
    event = stack.wait_event(raw.headers["x-litellm-call-id"])
    assert (event.provider, event.model) == ("azure", "gpt-4o")
    assert event.card_version == "azure-2026-06-08"
    assert event.cost_nanos == 100 * GPT4O_IN + 20 * GPT4O_OUT == 450_000


def test_a_group_of_azure_deployments_is_charged_as_the_one_that_answered(
    stack: Stack, fake: FakeUpstream
) -> None:
    """Group ``azure-any``: prod-gpt4o (base azure/gpt-4o) and eu-mini (base eu/gpt-4o-mini,
    taken as Azure's Data Zone entry). Each call is priced as the deployment that served it."""
    key, _ = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=100, output_tokens=20))
    served: set[str] = set()
    calls = 0
    while len(served) < 2 or calls < 6:
        assert calls < 60, f"the router sent every call to {served}"
        before = len(fake.requests)
        raw = stack.raw_chat(key, model="azure-any", max_tokens=50)
        calls += 1
        (request,) = fake.requests[before:]
        event = stack.wait_event(raw.headers["x-litellm-call-id"])
        if "/eu-mini/" in request.path:
            assert (event.provider, event.model) == ("azure", "us/gpt-4o-mini")
            assert event.cost_nanos == 100 * AZURE_MINI_EU_IN + 20 * AZURE_MINI_EU_OUT == 29_700
        else:
            assert request.path == "/openai/deployments/prod-gpt4o/chat/completions"
            assert (event.provider, event.model) == ("azure", "gpt-4o")
            assert event.cost_nanos == 450_000
        served.add(request.path)


GPT4O_PRIORITY_IN, GPT4O_PRIORITY_OUT = 4_250, 17_000  # openai-2026-11-23: $4.25 / $17 per 1M


def test_a_priority_call_is_charged_and_recorded_at_the_priority_price(
    stack: Stack, fake: FakeUpstream
) -> None:
    """``service_tier: priority`` goes through LiteLLM to the provider, the provider says it
    served the call on Priority, and the ledger charges and records that tier."""
    key, key_id = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=1000, output_tokens=500))
    before = len(fake.requests)
    raw = stack.raw_chat(key, max_tokens=600, service_tier="priority")
    assert raw.parse().service_tier == "priority"
    (request,) = fake.requests[before:]
    assert request.json["service_tier"] == "priority"  # LiteLLM passed the ask on
    event = stack.wait_event(raw.headers["x-litellm-call-id"])
    assert event.usage.service_tier == "priority"
    assert event.cost_nanos == 1000 * GPT4O_PRIORITY_IN + 500 * GPT4O_PRIORITY_OUT == 12_750_000
    assert "service_tier_unpriced" not in event.flags
    wallet = stack.key_wallet(key_id)
    assert wallet is None or wallet.reserved_nanos == 0


def test_a_call_served_on_a_tier_the_card_does_not_price_is_flagged(stack: Stack, fake: FakeUpstream) -> None:
    key, _ = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=1000, output_tokens=500), service_tier="flex")
    raw = stack.raw_chat(key, max_tokens=600)
    event = stack.wait_event(raw.headers["x-litellm-call-id"])
    # gpt-4o has no flex price: standard ($2.50 / $10 per 1M), flagged, never silent
    assert event.usage.service_tier == "flex"
    assert event.cost_nanos == 1000 * GPT4O_IN + 500 * GPT4O_OUT == 7_500_000
    assert "service_tier_unpriced" in event.flags
