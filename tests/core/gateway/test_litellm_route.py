"""OpenAI-shaped calls for providers without an OpenAI API go through the litellm SDK, budgeted."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from allotment.testing.fake_upstream import FakeUsage, Script

HELLO = [{"role": "user", "content": "hello"}]


def test_anthropic_model_on_the_openai_route_goes_through_litellm_and_is_charged(
    client: TestClient, auth: dict[str, str], fake: Any, rt: Any
) -> None:
    fake.default = Script(
        usage=FakeUsage(input_tokens=1000, cache_read_tokens=400, cache_write_tokens=200, output_tokens=50)
    )
    response = client.post(
        "/v1/chat/completions",
        headers=auth,
        json={"model": "anthropic/claude-sonnet-4", "max_tokens": 100, "messages": HELLO},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"  # rendered in OpenAI's shape by litellm
    assert body["choices"][0]["message"]["content"]
    sent = fake.requests_to("/v1/messages")  # litellm spoke Anthropic's own API to the provider
    assert len(sent) == 1 and sent[0].json["max_tokens"] == 100
    event = rt.event(response.headers["x-allotment-request-id"])
    # claude-sonnet-4: 1000 fresh x $3/M + 400 cache reads x $0.30/M + 200 cache writes x $3.75/M
    # + 50 output x $15/M, every cached token counted once
    assert event.usage.input_tokens == 1000
    assert event.usage.cache_read_tokens == 400
    assert event.usage.cache_write_tokens == 200
    assert event.cost_nanos == 3_000_000 + 120_000 + 750_000 + 750_000
    assert response.headers["x-allotment-cost"] == "0.00462"


def test_a_provider_error_through_litellm_is_passed_on_and_charges_nothing(
    client: TestClient, auth: dict[str, str], fake: Any, rt: Any
) -> None:
    fake.enqueue(Script(status=400))
    response = client.post(
        "/v1/chat/completions",
        headers=auth,
        json={"model": "anthropic/claude-sonnet-4", "max_tokens": 100, "messages": HELLO},
    )
    assert response.status_code == 400
    assert all(w["spent_nanos"] == 0 and w["reserved_nanos"] == 0 for w in rt.admin.budgets())
