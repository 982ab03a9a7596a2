"""Enforcement through a real nginx: admitted calls settle from the log at the exact cost,
denials reach the client with their real status and allotment's JSON body. Every test runs on
SQLite and PostgreSQL (the ``stack`` fixture starts once per backend).
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import orjson
import pytest
from nginx_harness import PROVIDER_KEY, stream_until

from allotment.testing.fake_upstream import FakeUsage, Script
from allotment.types import Outcome
from allotment_nginx.checkpoint import FileCheckpointStore
from allotment_nginx.ingest import LogIngester

pytestmark = pytest.mark.slow


def chat(
    url: str,
    key: str,
    *,
    model: str = "gpt-5.4-mini",
    stream: bool = False,
    max_tokens: int = 200,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return httpx.post(
        url + "/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    )


def log_lines(path: Path) -> dict[str, dict]:
    """The complete lines of an access log by request id (a worker may be mid-write on the last)."""
    out = {}
    text = path.read_bytes()
    for line in text[: text.rfind(b"\n") + 1].splitlines():
        data = orjson.loads(line)
        out[data["request_id"]] = data
    return out


def ingest(stack, tmp_path: Path, log: Path | None = None, aborted: str = "reserve") -> LogIngester:
    ingester = LogIngester(
        stack.runtime,
        str(log or stack.enforced.log),
        store=FileCheckpointStore(tmp_path / "ckpt.json"),
        rotate_wait=0,
        aborted=aborted,
    )
    ingester.poll()
    ingester.close()
    return ingester


def test_allowed_call_is_reserved_then_settled_from_the_log_at_the_exact_cost(stack, tmp_path):
    key, key_id = stack.key()
    stack.fake.default = Script(usage=FakeUsage(input_tokens=1000, cache_read_tokens=200, output_tokens=300))
    reply = chat(stack.enforced.url, key)
    assert reply.status_code == 200, reply.text
    headers = {k.lower(): v for k, v in stack.fake.requests[-1].headers.items()}
    request_id = headers["x-request-id"]
    assert headers["x-reservation-id"].startswith("res_")
    assert headers.get("accept-encoding", "") == ""  # gzip would hide the usage from the filter
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"  # the caller's key never leaves
    assert stack.runtime.reservation_state(request_id) == "open"  # reserved by the pre-check

    line = wait_for_line(stack.enforced.log, request_id)  # nginx logs after it has replied
    assert (line["prompt_tokens"], line["cached_tokens"], line["completion_tokens"]) == ("1200", "200", "300")
    assert line["usage_src"] == "json" and line["key_id"] == key_id
    assert line["reservation_id"] == headers["x-reservation-id"]

    ingest(stack, tmp_path)
    event = stack.runtime.event(request_id)
    assert event is not None and event.enforced and event.outcome is Outcome.SUCCESS
    # gpt-5.4-mini: 1000 fresh x $0.75/M + 200 cached x $0.075/M + 300 out x $4.50/M
    assert event.cost_nanos == 750_000 + 15_000 + 1_350_000
    assert stack.runtime.reservation_state(request_id) == "settled"


def wait_for_line(log: Path, request_id: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = log_lines(log).get(request_id)
        if line is not None:
            return line
        time.sleep(0.05)
    raise AssertionError(f"no log line for {request_id}")


def test_disallowed_model_gets_403_with_the_json_body(stack):
    key, _ = stack.key("sam@acme.example")  # the support tier may use gpt-5.4-mini only
    before = len(stack.fake.requests)
    reply = chat(stack.enforced.url, key, model="gpt-4o")
    assert reply.status_code == 403
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["code"] == "model_not_allowed"
    assert len(stack.fake.requests) == before  # refused before it left
    line = wait_for_line(stack.enforced.log, reply.headers["x-request-id"])
    assert (line["status"], line["deny_status"], line["deny_reason"]) == (403, "403", "model_not_allowed")


def test_exhausted_budget_gets_402_with_the_json_body_not_500(stack, tmp_path):
    key, _ = stack.key(budget="0.0001")
    reply = chat(stack.enforced.url, key, max_tokens=200)
    assert reply.status_code == 402
    error = reply.json()["error"]
    assert error["code"] == "budget_exceeded" and error["scope"] == "key"
    assert reply.headers["x-should-retry"] == "false"
    line = wait_for_line(stack.enforced.log, reply.headers["x-request-id"])
    assert (line["status"], line["deny_status"], line["reservation_id"]) == (402, "402", "")
    assert ingest(stack, tmp_path).stats.outcomes["denied"] >= 1


def test_unknown_key_gets_401(stack):
    reply = chat(stack.enforced.url, "sk-not-issued")
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"


def test_stream_usage_is_requested_and_settled_from_the_sse_reply(stack, tmp_path):
    key, _ = stack.key()
    stack.fake.default = Script(usage=FakeUsage(input_tokens=400, cache_read_tokens=100, output_tokens=8))
    with httpx.stream(
        "POST",
        stack.enforced.url + "/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ) as reply:
        assert reply.status_code == 200
        body = b"".join(reply.iter_bytes())
    assert body.rstrip().endswith(b"data: [DONE]")
    sent = stack.fake.requests[-1]
    assert sent.json["stream_options"] == {"include_usage": True}  # injected so the log has usage
    request_id = {k.lower(): v for k, v in sent.headers.items()}["x-request-id"]
    line = wait_for_line(stack.enforced.log, request_id)
    assert (line["usage_src"], line["stream"], line["prompt_tokens"]) == ("sse", "true", "500")
    ingest(stack, tmp_path)
    event = stack.runtime.event(request_id)
    # gpt-4o: 400 fresh x $2.50/M + 100 cached x $1.25/M + 8 out x $10.00/M
    assert event is not None and event.cost_nanos == 1_000_000 + 125_000 + 80_000
    assert event.endpoint_mode == "stream"


def leave_stream_early(stack, key: str, path: str, body: dict, enough) -> str:
    """Stream a call through the enforcing nginx and walk away once ``enough(received bytes)``;
    the call's request id (as the provider saw it)."""
    anthropic = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    headers = anthropic if path == "/v1/messages" else {"Authorization": f"Bearer {key}"}
    return stream_until(stack.enforced.url + path, headers, enough, stack.fake, json=body)


STREAM_BODY = {"stream": True, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def cut_after_three_words(stack, path: str, model: str, marker: bytes, count: int) -> str:
    """A stream whose provider stalls after three words ("tok", " tok", " tok": 11 bytes), left
    by the client once ``marker`` has arrived ``count`` times; its request id."""
    key, _ = stack.key()
    stack.fake.default = Script(
        usage=FakeUsage(input_tokens=50, output_tokens=60), stall_after_chunks=3, stall_seconds=30
    )
    body = {"model": model, **STREAM_BODY}
    return leave_stream_early(stack, key, path, body, lambda received: received.count(marker) >= count)


def test_aborted_stream_without_usage_is_charged_its_reservation(stack, tmp_path):
    key, _ = stack.key()
    stack.fake.default = Script(usage=FakeUsage(input_tokens=50, output_tokens=60), chunk_delay=0.05)
    body = {"model": "gpt-5.4-mini", **STREAM_BODY}
    # the first chunk, then the client walks away
    request_id = leave_stream_early(stack, key, "/v1/chat/completions", body, lambda received: True)
    line = wait_for_line(stack.enforced.log, request_id)
    assert line["prompt_tokens"] == "" and line["upstream_status"] == "200"
    reserved = stack.runtime.ledger.reservation(request_id).amount_nanos
    ingest(stack, tmp_path)
    event = stack.runtime.event(request_id)
    assert event is not None and event.outcome in (Outcome.CANCELLED, Outcome.SUCCESS)
    assert event.cost_nanos == reserved  # the documented default policy: keep the maximum
    assert "usage_missing" in event.flags and event.usage.estimated


def test_an_aborted_stream_is_charged_what_it_delivered_with_the_estimate_policy(stack, tmp_path):
    """The njs filter logs the answer bytes a stream delivered; ``--aborted estimate`` charges
    them / 4 as output and the reservation's input bound / 4 as input, not the worst case."""
    # the role chunk and three words; then the provider stalls and the client walks away
    request_id = cut_after_three_words(stack, "/v1/chat/completions", "gpt-5.4-mini", b'"content":"', 4)
    line = wait_for_line(stack.enforced.log, request_id)
    # "tok", " tok", " tok": 3 + 4 + 4 bytes of answer reached the client
    assert (line["prompt_tokens"], line["delivered_bytes"]) == ("", "11")  # no usage: cut short
    state = stack.runtime.ledger.reservation(request_id)
    bound = state.context["intent"]["input_tokens"]
    ingest(stack, tmp_path, aborted="estimate")
    event = stack.runtime.event(request_id)
    assert event is not None and event.outcome == Outcome.CANCELLED
    in_tokens = -(-bound // 4)
    assert (event.usage.input_tokens, event.usage.output_tokens) == (in_tokens, 3)
    # gpt-5.4-mini: $0.75 in and $4.50 out per 1M tokens = 750 and 4,500 nanos a token
    assert event.cost_nanos == in_tokens * 750 + 3 * 4_500 < state.amount_nanos
    assert {"usage_missing", "estimated_usage"} <= set(event.flags)


def test_an_anthropic_stream_cut_before_its_final_count_is_charged_what_it_delivered(stack, tmp_path):
    """Anthropic's message_start carries the input and a placeholder output count; a stream cut
    before message_delta logs ``sse:partial``, and the delivered bytes / 4 stand in for output."""
    request_id = cut_after_three_words(stack, "/v1/messages", "claude-sonnet-4", b"text_delta", 3)
    line = wait_for_line(stack.enforced.log, request_id)
    assert (line["prompt_tokens"], line["completion_tokens"]) == ("50", "1")  # message_start's
    assert (line["usage_src"], line["delivered_bytes"]) == ("sse:partial", "11")
    ingest(stack, tmp_path)  # any aborted policy: the line has usage
    event = stack.runtime.event(request_id)
    assert event is not None
    assert (event.usage.input_tokens, event.usage.output_tokens) == (50, 3)  # ceil(11 / 4)
    # claude-sonnet-4: $3 in and $15 out per 1M tokens = 3,000 and 15,000 nanos a token
    assert event.cost_nanos == 50 * 3_000 + 3 * 15_000
    assert "estimated_usage" in event.flags


def test_forty_concurrent_calls_never_overspend(stack, tmp_path):
    key, key_id = stack.key(budget="0.05")
    stack.fake.default = Script(usage=FakeUsage(input_tokens=100, output_tokens=50))

    def call(_: int) -> httpx.Response:
        return chat(stack.enforced.url, key, max_tokens=1000)

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        replies = list(pool.map(call, range(40)))
    statuses = sorted(r.status_code for r in replies)
    ok = statuses.count(200)
    assert set(statuses) == {200, 402}
    admitted = [
        {k.lower(): v for k, v in r.headers.items()}
        for r in stack.fake.requests
        if r.headers.get("Authorization", "").endswith(PROVIDER_KEY)
    ]
    wallet = next(w for w in stack.runtime.ledger.all_wallets() if w.scope == "key" and w.scope_id == key_id)
    # every admitted call still holds the same worst case, so exactly what fits was admitted
    ids = [h["x-request-id"] for h in admitted[-ok:]]
    hold = stack.runtime.ledger.reservation(ids[0]).amount_nanos
    assert ok == 50_000_000 // hold
    assert wallet.reserved_nanos == ok * hold <= wallet.limit_nanos
    for request_id in ids:  # nginx writes each line after replying: wait for all of them
        wait_for_line(stack.enforced.log, request_id)
    ingest(stack, tmp_path)
    wallet = next(w for w in stack.runtime.ledger.all_wallets() if w.scope == "key" and w.scope_id == key_id)
    # 100 in x $0.75/M + 50 out x $4.50/M = 75,000 + 225,000 nanos per call
    assert (wallet.spent_nanos, wallet.reserved_nanos) == (ok * 300_000, 0)


def test_a_request_asking_for_priority_is_held_at_the_priority_price(stack):
    """The auth subrequest hands the body (with its service_tier) to /v1/authorize: a key whose
    $0.003 covers gpt-4o's standard worst case (about 20 input tokens x $2.50/M + 200 out x
    $10/M = $0.00205) but not its priority one ($4.25 / $17 per 1M: about $0.0035) is refused the
    priority call with 402 before anything is sent, and allowed the standard one."""
    key, _ = stack.key(budget="0.003")
    before = len(stack.fake.requests)
    body = {"model": "gpt-4o", "max_tokens": 200, "messages": [{"role": "user", "content": "hello there"}]}
    url = stack.enforced.url + "/v1/chat/completions"
    auth = {"Authorization": f"Bearer {key}"}
    priority = httpx.post(url, json={**body, "service_tier": "priority"}, headers=auth, timeout=30)
    assert priority.status_code == 402, priority.text
    assert priority.json()["error"]["code"] == "budget_exceeded"
    assert len(stack.fake.requests) == before
    standard = httpx.post(url, json=body, headers=auth, timeout=30)
    assert standard.status_code == 200, standard.text
    assert len(stack.fake.requests) == before + 1
