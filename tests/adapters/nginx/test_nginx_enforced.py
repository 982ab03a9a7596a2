"""Enforcement through a real nginx: admitted calls settle from the log at the exact cost,
denials reach the client with their real status and allotment's JSON body.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import orjson
import pytest

from allotment.testing.fake_upstream import FakeUsage, Script
from allotment.types import Outcome

from allotment_nginx.checkpoint import FileCheckpointStore
from allotment_nginx.ingest import LogIngester
from nginx_harness import PROVIDER_KEY

pytestmark = pytest.mark.slow


def chat(url: str, key: str, *, model: str = "gpt-5.4-mini", stream: bool = False, max_tokens: int = 200,
         headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return httpx.post(
        url + "/v1/chat/completions", json=body, timeout=30,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    )


def log_lines(path: Path) -> dict[str, dict]:
    out = {}
    for line in path.read_bytes().splitlines():
        data = orjson.loads(line)
        out[data["request_id"]] = data
    return out


def ingest(stack, tmp_path: Path, log: Path | None = None) -> LogIngester:
    ingester = LogIngester(stack.runtime, str(log or stack.enforced.log),
                           store=FileCheckpointStore(tmp_path / "ckpt.json"), rotate_wait=0)
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

    line = log_lines(stack.enforced.log)[request_id]
    assert (line["prompt_tokens"], line["cached_tokens"], line["completion_tokens"]) == ("1200", "200", "300")
    assert line["usage_src"] == "json" and line["key_id"] == key_id
    assert line["reservation_id"] == headers["x-reservation-id"]

    ingest(stack, tmp_path)
    event = stack.runtime.event(request_id)
    assert event is not None and event.enforced and event.outcome is Outcome.SUCCESS
    # gpt-5.4-mini: 1000 fresh x $0.75/M + 200 cached x $0.075/M + 300 out x $4.50/M
    assert event.cost_nanos == 750_000 + 15_000 + 1_350_000
    assert stack.runtime.reservation_state(request_id) == "settled"
