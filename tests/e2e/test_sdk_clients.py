"""The real ``openai`` and ``anthropic`` SDKs against ``allotment serve`` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import anthropic
import httpx
import httpx2
import openai
import pytest

from allotment.testing.fake_upstream import FakeUsage, Script

pytestmark = pytest.mark.slow
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Closes the SDK clients a test opens (their sockets must not leak)."""
    with ExitStack() as exits:
        yield exits


def counting_openai(gateway, key: str, hits: list[str], retries: int = 2) -> openai.OpenAI:
    client = httpx.Client(event_hooks={"request": [lambda r: hits.append(r.url.path)]})
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=retries, http_client=client)


def counting_anthropic(gateway, key: str, hits: list[str], retries: int = 2) -> anthropic.Anthropic:
    client = anthropic.DefaultHttpxClient(event_hooks={"request": [lambda r: hits.append(r.url.path)]})
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=retries, http_client=client)


def test_openai_sdk_call_is_charged_exactly(stack, gateway, key, fake) -> None:
    secret, key_id = key
    fake.default = Script(usage=FakeUsage(input_tokens=500, cache_read_tokens=100, output_tokens=40))
    client = stack.enter_context(openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret))
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    completion = raw.parse()
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    expected = 500 * 2_500 + 100 * 1_250 + 40 * 10_000  # gpt-4o per-token nanos
    assert raw.headers["x-allotment-cost"] == "0.001775" and expected == 1_775_000
    assert gateway.settled_wallet(key_id)["spent_nanos"] == expected  # settled just after the answer
    assert fake.requests[-1].headers["Authorization"] == "Bearer sk-e2e-openai"


def test_openai_sdk_does_not_retry_a_402(stack, gateway, fake) -> None:
    secret, _ = gateway.issue_key("0.000001")
    hits: list[str] = []
    with pytest.raises(openai.APIStatusError) as caught:
        stack.enter_context(counting_openai(gateway, secret, hits)).chat.completions.create(
            model="gpt-4o", messages=HELLO, max_tokens=10
        )
    assert caught.value.status_code == 402
    assert caught.value.body["code"] == "budget_exceeded"
    assert caught.value.body["scope"] == "key"
    assert hits == ["/v1/chat/completions"]
    assert fake.requests == []


def test_anthropic_sdk_does_not_retry_a_402(stack, gateway, fake) -> None:
    secret, _ = gateway.issue_key("0.000001")
    hits: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        stack.enter_context(counting_anthropic(gateway, secret, hits)).messages.create(
            model="claude-sonnet-4", max_tokens=10, messages=HELLO
        )
    assert caught.value.status_code == 402
    assert caught.value.body["error"]["type"] == "billing_error"
    assert hits == ["/v1/messages"]
    assert fake.requests == []


def test_anthropic_sdk_stream_is_settled_on_close(stack, gateway, key, fake) -> None:
    secret, key_id = key
    fake.default = Script(usage=FakeUsage(input_tokens=20, cache_read_tokens=300, output_tokens=12))
    client = stack.enter_context(anthropic.Anthropic(base_url=gateway.url, api_key=secret))
    with client.messages.stream(model="claude-sonnet-4", max_tokens=50, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 300
    # claude-sonnet-4: 20 x $3/M + 300 x $0.30/M + 12 x $15/M
    wallet = gateway.settled_wallet(key_id)
    assert (wallet["spent_nanos"], wallet["reserved_nanos"]) == (
        20 * 3_000 + 300 * 300 + 12 * 15_000,
        0,
    )


def test_openai_sdk_stream_is_settled_on_close(stack, gateway, key, fake) -> None:
    secret, key_id = key
    fake.default = Script(usage=FakeUsage(input_tokens=30, output_tokens=8))
    client = stack.enter_context(openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret))
    stream = client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "tok" + " tok" * 7
    wallet = gateway.settled_wallet(key_id)
    assert (wallet["spent_nanos"], wallet["reserved_nanos"]) == (30 * 2_500 + 8 * 10_000, 0)


@pytest.mark.parametrize("status", [429, 500])
def test_provider_errors_pass_through_without_charge(stack, gateway, key, fake, status) -> None:
    secret, key_id = key
    fake.enqueue(Script(status=status))
    client = stack.enter_context(openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.status_code == status
    wallet = gateway.settled_wallet(key_id)
    assert (wallet["spent_nanos"], wallet["reserved_nanos"]) == (0, 0)


def test_anthropic_429_reaches_the_sdk_as_a_rate_limit(stack, gateway, key, fake) -> None:
    secret, key_id = key
    fake.enqueue(Script(status=429))
    client = stack.enter_context(anthropic.Anthropic(base_url=gateway.url, api_key=secret, max_retries=0))
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="claude-sonnet-4", max_tokens=10, messages=HELLO)
    assert gateway.settled_wallet(key_id)["spent_nanos"] == 0


def test_upstream_timeout_is_504_and_charges_nothing(stack, gateway, key, fake) -> None:
    secret, key_id = key
    fake.enqueue(Script(delay=3))
    client = stack.enter_context(openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.status_code == 504
    wallet = gateway.settled_wallet(key_id)
    assert (wallet["spent_nanos"], wallet["reserved_nanos"]) == (0, 0)


def test_unknown_model_is_a_400(stack, gateway, key, fake) -> None:
    client = stack.enter_context(openai.OpenAI(base_url=gateway.url + "/v1", api_key=key[0], max_retries=0))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert caught.value.body["code"] == "unpriced_model"
    assert fake.requests == []


def test_malformed_and_oversized_bodies(gateway, key) -> None:
    auth = {"Authorization": f"Bearer {key[0]}", "content-type": "application/json"}
    bad = httpx.post(gateway.url + "/v1/chat/completions", headers=auth, content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
    big = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=auth,
        content=b'{"model": "gpt-4o", "x": "' + b"x" * (2 * 1024 * 1024) + b'"}',
    )
    assert big.status_code == 413


def test_revoked_key_is_refused_on_the_next_request(stack, gateway, fake) -> None:
    secret, key_id = gateway.issue_key("1")
    client = stack.enter_context(openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0))
    client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert gateway.admin.delete(f"/admin/keys/{key_id}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert len(fake.requests) == 1


def test_models_through_both_sdks(stack, gateway, key) -> None:
    oai = stack.enter_context(openai.OpenAI(base_url=gateway.url + "/v1", api_key=key[0]))
    ids = [m.id for m in oai.models.list()]
    assert "openai/gpt-4o" in ids and "anthropic/claude-sonnet-4" in ids
    ant = stack.enter_context(anthropic.Anthropic(base_url=gateway.url, api_key=key[0]))
    page = ant.models.list()
    assert "anthropic/claude-sonnet-4" in [m.id for m in page.data]
    assert httpx2  # the anthropic SDK's transport; imported so a missing extra fails loudly
