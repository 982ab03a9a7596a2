"""Streams through a real gateway: disconnects, provider failures and shutdown mid-stream."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import openai
import pytest

from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script

pytestmark = pytest.mark.slow


def read_deltas(lines: Iterator[str], count: int, anthropic: bool = False) -> list[str]:
    """Read SSE lines until ``count`` text deltas arrived; returns them."""
    deltas: list[str] = []
    for line in lines:
        if not line.startswith("data: {"):
            continue
        data = json.loads(line[6:])
        if anthropic:
            text = (data.get("delta") or {}).get("text") if data["type"] == "content_block_delta" else None
        else:
            text = data["choices"][0]["delta"].get("content") if data.get("choices") else None
        if text:
            deltas.append(text)
        if len(deltas) == count:
            break
    return deltas


@contextmanager
def open_stream(
    url: str, headers: dict[str, str], body: dict[str, Any], timeout: float = 10
) -> Iterator[httpx.Response]:
    """POST ``body`` and hold the streamed response open, so a test can stop reading mid-stream."""
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("POST", url, headers=headers, json=body) as response,
    ):
        yield response


def open_chat_stream(
    base_url: str, secret: str, content: str, timeout: float = 10
) -> AbstractContextManager[httpx.Response]:
    """A streamed gpt-4o chat completion of one user message, held open as ``open_stream`` does."""
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": content}]}
    headers = {"Authorization": f"Bearer {secret}"}
    return open_stream(base_url + "/v1/chat/completions", headers, body, timeout)


def wait_cancelled(fake: FakeUpstream, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not (fake.requests and fake.requests[-1].cancelled):
        assert time.monotonic() < deadline, "the provider call was not cancelled"
        time.sleep(0.05)


def test_client_disconnect_cancels_upstream_and_charges_delivered(gateway, fake) -> None:
    secret, key_id = gateway.issue_key("1")
    fake.default = Script(text="alpha beta gamma delta epsilon", stall_after_chunks=3)
    with open_chat_stream(gateway.url, secret, "hello there") as response:
        request_id = response.headers["x-allotment-request-id"]
        assert read_deltas(response.iter_lines(), 3) == ["alpha", " beta", " gamma"]
    wait_cancelled(fake)
    wallet = gateway.settled_wallet(key_id)
    # no provider usage yet: input "user"+"hello there" = 15 bytes -> 4 tokens (bytes/4 up),
    # output "alpha beta gamma" = 16 bytes -> 4 tokens; gpt-4o $2.50 / $10 per 1M
    assert wallet["spent_nanos"] == 4 * 2_500 + 4 * 10_000 == 50_000
    event = gateway.event(request_id)
    assert (event["outcome"], event["estimated"]) == ("cancelled", True)


def test_anthropic_disconnect_keeps_the_reported_input(gateway, fake) -> None:
    secret, key_id = gateway.issue_key("1")
    fake.default = Script(
        text="alpha beta gamma delta",
        stall_after_chunks=2,
        usage=FakeUsage(input_tokens=25, cache_read_tokens=100, output_tokens=99),
    )
    body = {
        "model": "claude-sonnet-4",
        "max_tokens": 200,
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
    }
    with open_stream(gateway.url + "/v1/messages", {"x-api-key": secret}, body) as response:
        assert read_deltas(response.iter_lines(), 2, anthropic=True) == ["alpha", " beta"]
    wait_cancelled(fake)
    wallet = gateway.settled_wallet(key_id)
    # message_start: 25 fresh + 100 cache read (exact); output "alpha beta" 10 bytes -> 3
    assert wallet["spent_nanos"] == 25 * 3_000 + 100 * 300 + 3 * 15_000 == 150_000


def test_provider_failure_mid_stream_settles_error_with_partial_usage(gateway, fake) -> None:
    secret, key_id = gateway.issue_key("1")
    fake.default = Script(text="alpha beta gamma delta", fail_after_chunks=2)
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "hello"}]
        )
        received: list[str] = []
        with pytest.raises(openai.APIError):
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    assert received == ["alpha", " beta"]
    wallet = gateway.settled_wallet(key_id)
    # input "user"+"hello" 9 bytes -> 3 tokens; output "alpha beta" 10 bytes -> 3 tokens
    assert wallet["spent_nanos"] == 3 * 2_500 + 3 * 10_000 == 37_500


def test_graceful_shutdown_settles_streams_in_flight(start_gateway_process, fake) -> None:
    server = start_gateway_process(args=("--graceful-timeout", "0.5"), name="shutdown")
    try:
        secret, key_id = server.issue_key("1")
        fake.default = Script(text="alpha beta gamma", stall_after_chunks=2)
        with open_chat_stream(server.url, secret, "hello", timeout=30) as response:
            request_id = response.headers["x-allotment-request-id"]
            lines = response.iter_lines()
            assert read_deltas(lines, 2) == ["alpha", " beta"]
            server.process.send_signal(signal.SIGTERM)
            rest = list(lines)  # the server ends the stream
        assert not any("gamma" in line for line in rest)
        # uvicorn re-raises the signal after a clean shutdown
        assert server.process.wait(30) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    event = server.event(request_id)
    assert (event["outcome"], event["cost_nanos"]) == ("cancelled", 3 * 2_500 + 3 * 10_000)
