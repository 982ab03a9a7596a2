"""OpenAI-shaped routes through the TestClient: admit → fake provider → settle, exact money."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.testclient import TestClient

from allotment.gateway import create_app
from allotment.testing.fake_upstream import FakeUsage, Script

HELLO = [{"role": "user", "content": "hello"}]


def chat(client: TestClient, auth: dict[str, str], **body: Any) -> Any:
    body.setdefault("model", "gpt-4o")
    body.setdefault("messages", HELLO)
    return client.post("/v1/chat/completions", headers=auth, json=body)


def test_chat_completion_is_charged_at_the_rate_card_price(client, auth, fake, ledger) -> None:
    fake.default = Script(usage=FakeUsage(input_tokens=1000, cache_read_tokens=200, output_tokens=300))
    response = chat(client, auth)
    assert response.status_code == 200
    # gpt-4o: 1000 fresh x $2.50/M + 200 cached x $1.25/M + 300 out x $10/M
    expected = 1000 * 2_500 + 200 * 1_250 + 300 * 10_000
    assert expected == 5_750_000
    assert response.headers["x-allotment-cost"] == "0.00575"
    request_id = response.headers["x-allotment-request-id"]
    assert ledger.event(request_id)["cost_nanos"] == expected
    wallet = ledger.person()
    assert (wallet["spent_nanos"], wallet["reserved_nanos"]) == (expected, 0)
    assert response.json()["usage"]["prompt_tokens"] == 1200  # the provider's shape, untouched


def test_the_provider_gets_its_own_key_and_the_bare_model_name(client, auth, fake) -> None:
    response = chat(client, auth, model="openai/gpt-4o", metadata={"feature": "search"})
    assert response.status_code == 200
    received = fake.requests_to("/v1/chat/completions")[-1]
    assert received.headers["Authorization"] == "Bearer sk-upstream"
    assert received.json["model"] == "gpt-4o"
    assert "metadata" not in received.json  # our labels are not the provider's business


def test_labels_trace_and_retry_links_reach_the_ledger(client, auth, ledger) -> None:
    headers = {
        **auth,
        "X-Allotment-Label-Feature": "content-gen",
        "X-Allotment-Trace-Id": "run-7",
        "X-Allotment-Retry-Of": "req_earlier",
    }
    response = chat(client, headers, metadata={"customer": "globex"}, user="u-42")
    event = ledger.event(response.headers["x-allotment-request-id"])
    assert orjson.loads(event["labels"]) == {"feature": "content-gen", "customer": "globex"}
    assert (event["trace_id"], event["retry_of"], event["end_user"]) == (
        "run-7",
        "req_earlier",
        "u-42",
    )


def test_stream_usage_is_requested_and_stripped_when_the_client_did_not_ask(
    client, auth, fake, ledger
) -> None:
    fake.default = Script(usage=FakeUsage(input_tokens=40, output_tokens=5))
    with client.stream(
        "POST",
        "/v1/chat/completions",
        headers=auth,
        json={"model": "gpt-4o", "messages": HELLO, "stream": True},
    ) as response:
        text = response.read().decode()
        request_id = response.headers["x-allotment-request-id"]
    assert fake.requests_to("/v1/chat/completions")[-1].json["stream_options"] == {"include_usage": True}
    chunks = [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert all(chunk["choices"] for chunk in chunks), "the usage-only chunk was not stripped"
    expected = 40 * 2_500 + 5 * 10_000
    assert text.rstrip().endswith(": x-allotment-cost 0.00015")
    assert ledger.event(request_id)["cost_nanos"] == expected == 150_000
    assert ledger.person()["reserved_nanos"] == 0


def test_stream_keeps_the_usage_chunk_when_the_client_asked(client, auth, fake) -> None:
    body = {
        "model": "gpt-4o",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", headers=auth, json=body) as response:
        text = response.read().decode()
    chunks = [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


def test_stream_without_provider_usage_is_estimated_and_flagged(client, auth, fake, ledger) -> None:
    fake.default = Script(text="alpha beta gamma", send_usage=False)
    with client.stream(
        "POST",
        "/v1/chat/completions",
        headers=auth,
        json={"model": "gpt-4o", "messages": HELLO, "stream": True},
    ) as response:
        response.read()
        request_id = response.headers["x-allotment-request-id"]
    event = ledger.event(request_id)
    # input: "user" + "hello" = 9 bytes -> 3 tokens; output: 16 bytes delivered -> 4 tokens
    assert (event["input_tokens"], event["output_tokens"], event["estimated"]) == (3, 4, True)
    assert event["cost_nanos"] == 3 * 2_500 + 4 * 10_000 == 47_500


def test_embeddings_are_charged_for_input_only(client, auth, fake, ledger) -> None:
    fake.default = Script(usage=FakeUsage(input_tokens=8, output_tokens=0))
    response = client.post(
        "/v1/embeddings", headers=auth, json={"model": "openai/gpt-4o", "input": ["a", "b"]}
    )
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    assert ledger.event(response.headers["x-allotment-request-id"])["cost_nanos"] == 8 * 2_500


def test_legacy_completions_are_forwarded_and_charged(client, auth, fake, ledger) -> None:
    fake.default = Script(usage=FakeUsage(input_tokens=10, output_tokens=10))
    response = client.post(
        "/v1/completions",
        headers=auth,
        json={"model": "gpt-4o", "prompt": "say hi", "max_tokens": 10},
    )
    assert response.status_code == 200 and response.json()["object"] == "text_completion"
    assert response.headers["x-allotment-cost"] == "0.000125"  # 10 x 2.5 + 10 x 10 per 1M


def test_provider_429_passes_through_and_charges_nothing(client, auth, fake, ledger) -> None:
    fake.enqueue(Script(status=429, retry_after=7))
    response = chat(client, auth)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.headers["x-allotment-cost"] == "0"
    wallet = ledger.person()
    assert (wallet["spent_nanos"], wallet["reserved_nanos"]) == (0, 0)


def test_provider_500_passes_through_and_charges_nothing(client, auth, fake, ledger) -> None:
    fake.enqueue(Script(status=500))
    response = chat(client, auth)
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
    event = ledger.event(response.headers["x-allotment-request-id"])
    assert (event["outcome"], event["cost_nanos"]) == ("error", 0)
    assert ledger.person()["reserved_nanos"] == 0


def test_provider_timeout_is_504_and_releases_the_reservation(client, auth, fake, ledger) -> None:
    fake.enqueue(Script(delay=4))
    response = chat(client, auth)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    wallet = ledger.person()
    assert (wallet["spent_nanos"], wallet["reserved_nanos"]) == (0, 0)


def test_malformed_json_is_400_and_reaches_nobody(client, auth, fake, rt) -> None:
    response = client.post(
        "/v1/chat/completions",
        headers={**auth, "content-type": "application/json"},
        content=b'{"model": "gpt-4o", "messages": [',
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert fake.requests == [] and rt.admin.budgets() == []


def test_oversized_body_is_413(rt, auth, fake) -> None:
    with TestClient(create_app(rt, max_body_bytes=1000)) as small:
        response = chat(small, auth, messages=[{"role": "user", "content": "x" * 2000}])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert fake.requests == []


def test_unknown_model_is_refused_before_the_provider(client, auth, fake) -> None:
    response = chat(client, auth, model="no-such-model")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unpriced_model"
    assert fake.requests == []


def test_missing_and_unknown_keys_are_401(client) -> None:
    assert chat(client, {}).status_code == 401
    response = chat(client, {"Authorization": "Bearer sk-nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_model_outside_the_tier_is_403(client, rt, fake) -> None:
    secret, _ = rt.admin.issue_key("oai@acme.example")
    response = chat(client, {"Authorization": f"Bearer {secret}"}, model="anthropic/claude-sonnet-4")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "model_not_allowed"
    assert fake.requests == []


def test_budget_exceeded_is_402_naming_the_wallet_and_final(client, rt, fake) -> None:
    secret, _ = rt.admin.issue_key("tiny@acme.example")
    response = chat(client, {"Authorization": f"Bearer {secret}"}, max_tokens=10)
    assert response.status_code == 402
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert (error["scope"], error["limit"], error["spent"]) == ("person", "0.000001", "0")
    # the worst case: 3 + 4 + 9 = 16 input tokens x $2.50/M + 10 output x $10/M
    assert error["estimate"] == "0.00014"
    assert fake.requests == []


def test_revoked_key_is_refused_on_the_next_request(client, rt, fake) -> None:
    secret, key_id = rt.admin.issue_key("dev@acme.example")
    auth = {"Authorization": f"Bearer {secret}"}
    assert chat(client, auth).status_code == 200
    admin = {"Authorization": "Bearer test-admin"}
    assert client.delete(f"/admin/keys/{key_id}", headers=admin).status_code == 200
    assert chat(client, auth).status_code == 401
    assert len(fake.requests) == 1


def test_models_lists_only_what_the_tier_allows(client, rt) -> None:
    secret, _ = rt.admin.issue_key("oai@acme.example")
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    ids = [m["id"] for m in response.json()["data"]]
    assert "openai/gpt-4o" in ids and all(i.startswith("openai/") for i in ids)
    anthropic_shape = client.get(
        "/v1/models", headers={"x-api-key": secret, "anthropic-version": "2023-06-01"}
    ).json()
    assert anthropic_shape["data"][0]["type"] == "model" and anthropic_shape["has_more"] is False
