"""The gateway when its ledger cannot be reached: 503 in the route's shape, or (opt-in) the
call goes through and is recorded unenforced, flagged ``fail_open``, once the ledger is back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from allotment.audit import verify
from allotment.gateway import create_app
from allotment.money import usd_string
from allotment.settle_spool import replay, spool_path
from allotment.testing.fake_upstream import FakeUpstream
from helpers import metric, write_locked

BODY = {"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
FAKE_COST = 12 * 2_500 + 6 * 10_000  # the fake's default usage (12 in, 6 out) on gpt-4o


def test_an_unreachable_ledger_is_a_503_in_each_routes_shape_and_nothing_goes_upstream(
    impatient_rt: Any, fake: FakeUpstream
) -> None:
    rt = impatient_rt
    key, _ = rt.admin.issue_key("dev@acme.example")
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(rt)) as client:
        client.post("/v1/chat/completions", json=BODY, headers=auth)  # wallets exist
        calls_before = len(fake.requests)
        with write_locked(rt):
            openai = client.post("/v1/chat/completions", json=BODY, headers=auth)
            anthropic = client.post(
                "/v1/messages",
                json={
                    "model": "claude-sonnet-4",
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"x-api-key": auth["Authorization"].removeprefix("Bearer ")},
            )
        assert openai.status_code == 503
        assert openai.json()["error"]["code"] == "ledger_unavailable"
        assert anthropic.status_code == 503
        assert anthropic.json()["type"] == "error"
        assert len(fake.requests) == calls_before  # fail closed: the provider saw nothing


def test_fail_open_answers_and_records_the_call_when_the_ledger_is_back(fail_open_rt: Any) -> None:
    rt = fail_open_rt
    key, _ = rt.admin.issue_key("dev@acme.example")
    with TestClient(create_app(rt)) as client:
        client.app.state.gateway.settle_retry_delays = (0.05,) * 20  # type: ignore[attr-defined]
        with write_locked(rt):
            response = client.post(
                "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200
            assert response.json()["usage"]["completion_tokens"] == 6
            assert response.headers["x-allotment-cost"] == usd_string(FAKE_COST)
            request_id = response.headers["x-allotment-request-id"]
            time.sleep(0.2)
            assert rt.event(request_id) is None  # the ledger is still down
        deadline = time.monotonic() + 5
        while rt.event(request_id) is None:
            assert time.monotonic() < deadline, "the call was never recorded"
            time.sleep(0.02)
        event = rt.event(request_id)
        assert event.cost_nanos == FAKE_COST
        assert event.enforced is False and "fail_open" in event.flags
        assert metric(client, "allotment_gateway_fail_open_total") == 1
        assert metric(client, "allotment_gateway_settles_abandoned_total") == 0


def test_authorize_fails_open_without_a_reservation_and_settle_records_the_call(fail_open_rt: Any) -> None:
    rt = fail_open_rt
    key, _ = rt.admin.issue_key("dev@acme.example")
    with TestClient(create_app(rt)) as client:
        with write_locked(rt):
            authorized = client.post(
                "/v1/authorize",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": "gpt-4o",
                    "input_tokens": 1000,
                    "max_output_tokens": 200,
                    "request_id": "ngx-7",
                },
            )
        assert authorized.status_code == 200
        body = authorized.json()
        # no reservation: an nginx log line for it is recorded passively by the tailer
        assert body["reservation_id"] is None and body["fail_open"] is True
        settled = client.post(
            "/v1/settle",
            headers={"Authorization": "Bearer test-admin"},
            json={"request_id": "ngx-7", "usage": {"input_tokens": 900, "output_tokens": 100}},
        )
        assert settled.status_code == 200
        assert settled.json()["cost_nanos"] == 900 * 2_500 + 100 * 10_000
        event = rt.event("ngx-7")
        assert event.enforced is False and "fail_open" in event.flags
        assert metric(client, "allotment_gateway_fail_open_total") == 1


def test_healthz_takes_a_fail_closed_gateway_out_of_rotation_but_not_a_fail_open_one(
    impatient_rt: Any, fail_open_rt: Any
) -> None:
    for rt, status in ((impatient_rt, 503), (fail_open_rt, 200)):
        with TestClient(create_app(rt)) as client:
            assert client.get("/healthz").json()["status"] == "ok"
            rt.ledger.executor.close()  # the ledger is gone
            health = client.get("/healthz")
            assert health.status_code == status
            assert health.json()["status"] == "degraded"
            assert health.json()["fail_open"] is (status == 200)


def test_a_fail_open_call_still_unrecorded_at_shutdown_is_spooled_and_replay_records_it_once(
    fail_open_rt: Any, tmp_path: Path
) -> None:
    """Only this process knew the let-through call (the ledger holds no reservation for it):
    the spool keeps its admission, and the replay records it unenforced, flagged, exactly once."""
    rt = fail_open_rt
    rt.settings = rt.settings.model_copy(update={"settle_spool": tmp_path / "spool.jsonl"})
    key, _ = rt.admin.issue_key("dev@acme.example")
    with write_locked(rt):
        with TestClient(create_app(rt)) as client:
            client.app.state.gateway.settle_retry_delays = (60.0,)  # type: ignore[attr-defined]
            response = client.post(
                "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200
            request_id = response.headers["x-allotment-request-id"]
        # leaving the client shut the gateway down while its retry still waited
        assert rt.event(request_id) is None
        spooled = [json.loads(line) for line in spool_path(rt.settings).read_text().splitlines()]
        assert [(e["request_id"], e["reason"]) for e in spooled] == [(request_id, "gateway shutting down")]
        assert spooled[0]["let_through"]["intent"]["request_id"] == request_id
        kept = replay(rt).to_dict()
        assert kept == {"settled": 0, "kept": 1, "refused": 0}  # still locked: kept, not lost
    assert replay(rt).to_dict() == {"settled": 1, "kept": 0, "refused": 0}
    event = rt.event(request_id)
    assert event is not None and event.cost_nanos == FAKE_COST
    assert event.enforced is False and "fail_open" in event.flags
    assert replay(rt).to_dict() == {"settled": 0, "kept": 0, "refused": 0}  # nothing twice
    assert verify(rt).ok
