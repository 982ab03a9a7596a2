"""``/v1/messages`` in Anthropic's shape: cache classes priced apart, Anthropic-shaped errors."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from allotment.testing.fake_upstream import FakeUsage, Script

CACHED = FakeUsage(
    input_tokens=100,
    cache_read_tokens=1000,
    cache_write_tokens=200,
    cache_write_1h_tokens=100,
    output_tokens=50,
)
# claude-sonnet-4 per 1M: input 3.00, cache read 0.30, 5-min write 3.75, 1-h write 6.00, out 15
CACHED_COST = 100 * 3_000 + 1000 * 300 + 200 * 3_750 + 100 * 6_000 + 50 * 15_000


def messages(client: TestClient, key: str, **body: Any) -> Any:
    body.setdefault("model", "claude-sonnet-4")
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", [{"role": "user", "content": "hello"}])
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return client.post("/v1/messages", headers=headers, json=body)


def test_message_prices_every_cache_class_apart(client, key, fake, ledger) -> None:
    fake.default = Script(usage=CACHED)
    response = messages(client, key)
    assert response.status_code == 200 and response.json()["type"] == "message"
    assert CACHED_COST == 2_700_000
    assert response.headers["x-allotment-cost"] == "0.0027"
    event = ledger.event(response.headers["x-allotment-request-id"])
    assert (event["cache_write_tokens"], event["cache_write_1h_tokens"]) == (200, 100)
    received = fake.requests_to("/v1/messages")[-1]
    assert received.headers["x-api-key"] == "sk-ant-upstream"
    assert received.headers["anthropic-version"] == "2023-06-01"


def test_streamed_message_is_settled_from_start_and_delta_usage(client, key, fake, ledger) -> None:
    fake.default = Script(usage=CACHED)
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    body = {
        "model": "claude-sonnet-4",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }
    with client.stream("POST", "/v1/messages", headers=headers, json=body) as response:
        text = response.read().decode()
        request_id = response.headers["x-allotment-request-id"]
    assert "event: message_stop" in text
    assert ledger.event(request_id)["cost_nanos"] == CACHED_COST
    assert ledger.person()["reserved_nanos"] == 0


def test_metadata_keeps_only_user_id_for_anthropic(client, key, fake, ledger) -> None:
    response = messages(client, key, metadata={"user_id": "u-1", "feature": "chat"})
    assert fake.requests_to("/v1/messages")[-1].json["metadata"] == {"user_id": "u-1"}
    event = ledger.event(response.headers["x-allotment-request-id"])
    assert event["end_user"] == "u-1" and '"feature":"chat"' in event["labels"]


def test_errors_are_in_anthropic_shape(client, rt) -> None:
    response = messages(client, "sk-nope")
    assert response.status_code == 401
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "code": "invalid_api_key",
            "message": "invalid, revoked or unknown API key",
        },
    }
    secret, _ = rt.admin.issue_key("tiny@acme.example")
    refused = messages(client, secret)
    assert refused.status_code == 402 and refused.headers["x-should-retry"] == "false"
    assert refused.json()["error"]["type"] == "billing_error"
    assert refused.json()["error"]["scope"] == "person"


def test_provider_429_passes_through_in_anthropic_shape(client, key, fake, ledger) -> None:
    fake.enqueue(Script(status=429))
    response = messages(client, key)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert ledger.person()["spent_nanos"] == 0 and ledger.person()["reserved_nanos"] == 0


def test_openai_models_are_not_served_on_messages(client, key, fake) -> None:
    response = messages(client, key, model="gpt-4o")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == []
