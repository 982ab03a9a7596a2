"""Passive mode through a real nginx: no pre-check, yet every call is attributed from the log.

Runs on SQLite and PostgreSQL (the ``stack`` fixture starts once per backend).
"""

from __future__ import annotations

import httpx
import pytest
from nginx_harness import stream_until
from test_nginx_enforced import wait_for_line

from allotment.directory import person_id_for
from allotment.testing.fake_upstream import FakeUsage, Script
from allotment_nginx.checkpoint import FileCheckpointStore
from allotment_nginx.ingest import LogIngester

pytestmark = pytest.mark.slow


def test_passive_mode_attributes_calls_without_auth_request(stack, tmp_path):
    key, key_id = stack.key("grace@acme.example")
    stack.fake.default = Script(usage=FakeUsage(input_tokens=2000, cache_read_tokens=1000, output_tokens=100))
    reply = httpx.post(
        stack.passive.url + "/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "X-Allotment-Label-Feature": "search"},
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert reply.status_code == 200
    request_id = {k.lower(): v for k, v in stack.fake.requests[-1].headers.items()}["x-request-id"]
    line = wait_for_line(stack.passive.log, request_id)
    assert line["reservation_id"] == "" and line["model"] == "gpt-4o"  # the model came from the reply

    anonymous = httpx.post(
        stack.passive.url + "/v1/chat/completions",
        timeout=30,
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    )
    anonymous_id = {k.lower(): v for k, v in stack.fake.requests[-1].headers.items()}["x-request-id"]
    assert anonymous.status_code == 200
    wait_for_line(stack.passive.log, anonymous_id)

    ingester = LogIngester(stack.runtime, str(stack.passive.log), store=FileCheckpointStore(tmp_path / "c"))
    ingester.poll()
    ingester.close()
    event = stack.runtime.event(request_id)
    assert event is not None and not event.enforced
    assert (event.key_id, event.person_id) == (key_id, person_id_for("grace@acme.example"))
    assert event.labels["feature"] == "search"
    # gpt-4o: 2000 fresh x $2.50/M + 1000 cached x $1.25/M + 100 out x $10.00/M
    assert event.cost_nanos == 5_000_000 + 1_250_000 + 1_000_000
    stranger = stack.runtime.event(anonymous_id)
    assert stranger is not None and "unattributed" in stranger.flags and stranger.person_id is None


def test_passive_mode_reads_labels_and_trace_from_the_body_metadata(stack, tmp_path):
    """Clients that label calls in the body's ``metadata`` (as the gateway reads them) are
    attributed in passive mode too; a header of the same name wins, as in the gateway."""
    key, _ = stack.key("grace@acme.example")
    stack.fake.default = Script(usage=FakeUsage(input_tokens=300, output_tokens=30))
    reply = httpx.post(
        stack.passive.url + "/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "X-Allotment-Label-Feature": "search"},
        json={
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {
                "feature": "summarize",
                "Customer_Tier": "gold",
                "trace_id": "tr-passive-42",
                "attempt": 2,  # not a string: not a label
            },
        },
    )
    assert reply.status_code == 200
    request_id = {k.lower(): v for k, v in stack.fake.requests[-1].headers.items()}["x-request-id"]
    # the provider gets the body as the client sent it: passive mode changes nothing
    assert stack.fake.requests[-1].json["metadata"]["feature"] == "summarize"
    line = wait_for_line(stack.passive.log, request_id)
    assert line["trace_id"] == "tr-passive-42"

    ingester = LogIngester(stack.runtime, str(stack.passive.log), store=FileCheckpointStore(tmp_path / "c"))
    ingester.poll()
    ingester.close()
    event = stack.runtime.event(request_id)
    assert event is not None and not event.enforced
    # "environment" is the sample config's label default, merged as for any call
    assert event.labels == {"feature": "search", "customer-tier": "gold", "environment": "prod"}
    assert event.trace_id == "tr-passive-42"
    # gpt-4o: 300 in x $2.50/M + 30 out x $10.00/M
    assert event.cost_nanos == 750_000 + 300_000


def passive_stream(stack, key: str, body: bytes, enough) -> str:
    """Stream ``body`` (sent byte for byte) through the passive nginx, walk away once
    ``enough(received bytes)``; the call's request id, as the provider saw it."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = stack.passive.url + "/v1/chat/completions"
    return stream_until(url, headers, enough, stack.fake, content=body)


def test_passive_streams_without_usage_are_charged_an_estimate_not_zero(stack, tmp_path):
    """No reservation bounds a passive call's prompt: under ``--aborted estimate`` a stream that
    ended without usage is charged its request body's bytes / 4 as input and the answer bytes it
    delivered / 4 as output (rounded up), flagged, whether the client left mid-stream or never
    asked for usage (passive nginx forwards the body unchanged)."""
    key, _ = stack.key("grace@acme.example")
    # the role chunk and three words ("tok", " tok", " tok": 11 bytes); then the provider
    # stalls and the client walks away before the usage it asked for arrives
    stack.fake.default = Script(
        usage=FakeUsage(input_tokens=50, output_tokens=60), stall_after_chunks=3, stall_seconds=30
    )
    aborted_body = (
        b'{"model":"gpt-5.4-mini","stream":true,"stream_options":{"include_usage":true},'
        b'"messages":[{"role":"user","content":"hello there"}]}'
    )
    assert len(aborted_body) == 131
    aborted = passive_stream(stack, key, aborted_body, lambda got: got.count(b'"content":"') >= 4)
    # a whole stream of five words (19 bytes) whose client never asked for usage
    stack.fake.default = Script(usage=FakeUsage(input_tokens=50, output_tokens=5))
    unasked_body = (
        b'{"model":"gpt-5.4-mini","stream":true,"messages":[{"role":"user","content":"hello there"}]}'
    )
    assert len(unasked_body) == 91
    unasked = passive_stream(stack, key, unasked_body, lambda got: False)

    line = wait_for_line(stack.passive.log, aborted)
    assert (line["prompt_tokens"], line["delivered_bytes"], line["request_body_bytes"]) == ("", "11", "131")
    line = wait_for_line(stack.passive.log, unasked)
    assert (line["prompt_tokens"], line["delivered_bytes"], line["request_body_bytes"]) == ("", "19", "91")

    ingester = LogIngester(
        stack.runtime, str(stack.passive.log), store=FileCheckpointStore(tmp_path / "c"), aborted="estimate"
    )
    ingester.poll()
    ingester.close()
    first, second = stack.runtime.event(aborted), stack.runtime.event(unasked)
    assert first is not None and second is not None and not first.enforced
    # gpt-5.4-mini: 750 nanos an input token, 4,500 an output token
    # ceil(131 / 4) = 33 in, ceil(11 / 4) = 3 out
    assert (first.usage.input_tokens, first.usage.output_tokens) == (33, 3)
    assert first.cost_nanos == 33 * 750 + 3 * 4_500 == 38_250
    # ceil(91 / 4) = 23 in, ceil(19 / 4) = 5 out
    assert (second.usage.input_tokens, second.usage.output_tokens) == (23, 5)
    assert second.cost_nanos == 23 * 750 + 5 * 4_500 == 39_750
    for event in (first, second):
        assert set(event.flags) == {"usage_missing", "estimated_usage"}
        assert event.endpoint_mode == "stream"


@pytest.mark.parametrize("stream", [False, True])
def test_the_logged_service_tier_prices_the_call(stack, tmp_path, stream):
    """The njs filter logs OpenAI's top-level service_tier (reply or stream chunks); the tailer
    prices at it. gpt-4o priority: 1000 in x $4.25/M + 500 out x $17.00/M."""
    key, _ = stack.key("grace@acme.example")
    stack.fake.default = Script(usage=FakeUsage(input_tokens=1000, output_tokens=500))
    body = {"model": "gpt-4o", "service_tier": "priority", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    reply = httpx.post(
        stack.passive.url + "/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        json=body,
    )
    assert reply.status_code == 200
    request_id = {k.lower(): v for k, v in stack.fake.requests[-1].headers.items()}["x-request-id"]
    line = wait_for_line(stack.passive.log, request_id)
    assert line["service_tier"] == "priority"
    ingester = LogIngester(stack.runtime, str(stack.passive.log), store=FileCheckpointStore(tmp_path / "c"))
    ingester.poll()
    ingester.close()
    event = stack.runtime.event(request_id)
    assert event is not None and event.usage.service_tier == "priority"
    assert event.cost_nanos == 4_250_000 + 8_500_000
