"""The offline mock upstream (``serve --demo``) and the tokenizer-free input bound."""

from __future__ import annotations

from fastapi.testclient import TestClient

from allotment.gateway import create_app
from allotment.intents import IMAGE_ALLOWANCE, estimate_tokens, extract_tags, input_upper_bound


def test_mock_upstream_reports_a_repeated_prefix_as_cached(rt, auth, fake, ledger) -> None:
    system = {"role": "system", "content": "You are terse. " * 40}
    with TestClient(create_app(rt, force_mock=True)) as client:
        first = client.post(
            "/v1/chat/completions",
            headers=auth,
            json={"model": "gpt-4o", "messages": [system, {"role": "user", "content": "one"}]},
        )
        second = client.post(
            "/v1/chat/completions",
            headers=auth,
            json={"model": "gpt-4o", "messages": [system, {"role": "user", "content": "two"}]},
        )
    assert first.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    # the system message: "system" + 600 bytes of text -> 152 tokens at 4 bytes a token
    assert cached == estimate_tokens(6 + 15 * 40) == 152
    usage = second.json()["usage"]
    event = ledger.event(second.headers["x-allotment-request-id"])
    fresh = usage["prompt_tokens"] - cached
    expected = fresh * 2_500 + cached * 1_250 + usage["completion_tokens"] * 10_000
    assert event["cost_nanos"] == expected
    assert fake.requests == []  # nothing left the process


def test_input_bound_counts_bytes_overheads_schemas_and_images() -> None:
    body = {"messages": [{"role": "user", "content": "héllo"}]}  # é is two bytes
    assert input_upper_bound(body) == 3 + 4 + len("user") + len("héllo".encode())
    with_image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}},
                ],
            }
        ]
    }
    # priming 3 + message 4 + "user" + the part type "text" + "what is this" + one image
    assert input_upper_bound(with_image) == 3 + 4 + 4 + 4 + 12 + IMAGE_ALLOWANCE
    tools = {"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert input_upper_bound(tools) == 3 + len(b'[{"type":"function","function":{"name":"f"}}]')
    assert input_upper_bound({"input": [[1, 2, 3], [4]]}) == 3 + 4  # token ids count one each


def test_labels_headers_win_over_metadata() -> None:
    tags = extract_tags(
        {"X-Allotment-Label-Feature": "a", "x-allotment-trace-id": "t1"},
        {"metadata": {"feature": "b", "Cost_Center": "cc", "user_id": "u", "retry_of": "r0"}},
    )
    assert tags.labels == {"feature": "a", "cost-center": "cc"}
    assert (tags.trace_id, tags.retry_of) == ("t1", "r0")
