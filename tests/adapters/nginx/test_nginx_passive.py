"""Passive mode through a real nginx: no pre-check, yet every call is attributed from the log.

Runs on SQLite and PostgreSQL (the ``stack`` fixture starts once per backend).
"""

from __future__ import annotations

import httpx
import pytest
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
