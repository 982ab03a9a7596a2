"""Service tiers through a real ``allotment serve``: the fake provider answers on the tier asked
for, in each provider's own field, and the ledger charges and records that tier.

gpt-4o per 1M tokens: standard 2.50 in / 10.00 out; priority 4.25 / 17.00 (the bundled card).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import httpx
import pytest

from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script
from allotment.testing.serve import allotment_command

pytestmark = pytest.mark.slow

USAGE = FakeUsage(input_tokens=1000, output_tokens=500)
PRIORITY_NANOS = 1000 * 4_250 + 500 * 17_000  # 12,750,000
STANDARD_NANOS = 1000 * 2_500 + 500 * 10_000  # 7,500,000


def chat(url: str, secret: str, **extra: Any) -> httpx.Response:
    body = {"model": "gpt-4o", "max_tokens": 600, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(
        url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def audit_verify(database_url: str) -> dict[str, Any]:
    done = subprocess.run(
        [*allotment_command(), "audit", "verify", "--json"],
        env={**os.environ, "ALLOTMENT_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def test_a_priority_call_is_charged_and_recorded_at_priority(gateway, fake: FakeUpstream) -> None:
    secret, key_id = gateway.issue_key("10")
    fake.default = Script(usage=USAGE)
    response = chat(gateway.url, secret, service_tier="priority")
    assert response.status_code == 200, response.text
    assert response.json()["service_tier"] == "priority"  # the provider's own answer, passed on
    assert fake.requests[-1].json["service_tier"] == "priority"  # and the ask, forwarded
    event = gateway.event(response.headers["x-allotment-request-id"])
    assert (event["cost_nanos"], event["service_tier"]) == (PRIORITY_NANOS, "priority")
    assert gateway.settled_wallet(key_id)["spent_nanos"] == 12_750_000


def test_a_priority_stream_is_charged_at_priority(gateway, fake: FakeUpstream) -> None:
    secret, _ = gateway.issue_key("10")
    fake.default = Script(usage=USAGE)
    body = {
        "model": "gpt-4o",
        "max_tokens": 600,
        "stream": True,
        "service_tier": "priority",
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=headers) as response:
        request_id = response.headers["x-allotment-request-id"]
        chunks = [line for line in response.iter_lines() if line.startswith("data: {")]
    assert all(json.loads(line[6:])["service_tier"] == "priority" for line in chunks)
    event = gateway.event(request_id)
    assert (event["cost_nanos"], event["service_tier"]) == (PRIORITY_NANOS, "priority")


def test_the_provider_saying_default_is_standard(gateway, fake: FakeUpstream) -> None:
    secret, _ = gateway.issue_key("10")
    fake.default = Script(usage=USAGE)
    response = chat(gateway.url, secret)
    assert response.json()["service_tier"] == "default"
    event = gateway.event(response.headers["x-allotment-request-id"])
    assert (event["cost_nanos"], event["service_tier"]) == (STANDARD_NANOS, "standard")


def test_an_unpriced_tier_is_charged_standard_and_flagged(gateway, fake: FakeUpstream) -> None:
    secret, _ = gateway.issue_key("10")
    fake.default = Script(usage=USAGE)
    response = chat(gateway.url, secret, service_tier="flex")  # gpt-4o has no flex price
    event = gateway.event(response.headers["x-allotment-request-id"])
    assert (event["cost_nanos"], event["service_tier"]) == (STANDARD_NANOS, "flex")
    assert "service_tier_unpriced" in event["flags"].split(",")


def test_anthropic_usage_service_tier_is_read(gateway, fake: FakeUpstream) -> None:
    secret, _ = gateway.issue_key("10")
    fake.default = Script(usage=FakeUsage(input_tokens=1000, output_tokens=500), service_tier="priority")
    body = {"model": "claude-sonnet-4", "max_tokens": 600, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(gateway.url + "/v1/messages", json=body, headers={"x-api-key": secret}, timeout=30)
    assert response.json()["usage"]["service_tier"] == "priority"
    event = gateway.event(response.headers["x-allotment-request-id"])
    # the bundled Anthropic card has no priority prices: standard 1000 x 3 + 500 x 15, flagged
    assert (event["cost_nanos"], event["service_tier"]) == (1000 * 3_000 + 500 * 15_000, "priority")
    assert "service_tier_unpriced" in event["flags"].split(",")


def test_the_hold_covers_the_priority_price(gateway, fake: FakeUpstream) -> None:
    secret, _ = gateway.issue_key("10")
    headers = {"Authorization": f"Bearer {secret}"}
    ask = {"model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 500}
    held = httpx.post(
        gateway.url + "/v1/authorize", json={**ask, "service_tier": "priority"}, headers=headers
    )
    assert held.status_code == 200, held.text
    assert held.json()["reserved_nanos"] == PRIORITY_NANOS
    plain = httpx.post(gateway.url + "/v1/authorize", json=ask, headers=headers)
    assert plain.json()["reserved_nanos"] == STANDARD_NANOS
    # a budget that covers the standard worst case but not the priority one
    tight, _ = gateway.issue_key("0.15")
    fake.default = Script(usage=USAGE)
    big = {"max_tokens": 10_000}
    assert chat(gateway.url, tight, **big).status_code == 200  # ~10000 x 10e-6 = $0.10 held
    refused = chat(gateway.url, tight, service_tier="priority", **big)  # ~10000 x 17e-6 = $0.17
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "budget_exceeded"


def test_tiered_events_verify_on_postgres(
    start_gateway_process, fake: FakeUpstream, postgres_url: str
) -> None:
    """The admitting process's settle is PostgreSQL's allotment_settle, recreated by 0005."""
    gateway = start_gateway_process(database_url=postgres_url, name="pg")
    secret, _ = gateway.issue_key("10")
    fake.default = Script(usage=USAGE)
    ids = []
    for tier in ("priority", None, "flex"):
        response = chat(gateway.url, secret, **({"service_tier": tier} if tier else {}))
        assert response.status_code == 200, response.text
        ids.append(response.headers["x-allotment-request-id"])
    events = [gateway.event(rid) for rid in ids]
    assert [(e["cost_nanos"], e["service_tier"]) for e in events] == [
        (PRIORITY_NANOS, "priority"),
        (STANDARD_NANOS, "standard"),
        (STANDARD_NANOS, "flex"),
    ]
    report = audit_verify(postgres_url)
    assert report["ok"] is True and report["events"] == 3, report
