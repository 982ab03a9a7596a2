"""A settlement the ledger refuses is retried after the answer, then spooled (loudly), never lost."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from allotment.audit import verify
from allotment.errors import LedgerUnavailable
from allotment.money import usd_string
from allotment.settle_spool import replay, spool_path
from helpers import metric

BODY = {"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def flaky_settle(rt: Any, failures: int) -> list[str]:
    """Make the runtime's next ``failures`` settles fail as a locked database would."""
    real = rt.settle
    calls: list[str] = []

    def settle(request_id: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(request_id)
        if len(calls) <= failures:
            raise LedgerUnavailable("ledger database unavailable: database is locked")
        return real(request_id, *args, **kwargs)

    rt.settle = settle
    return calls


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_a_refused_settlement_is_retried_until_the_ledger_answers(rt: Any, client: TestClient, auth) -> None:
    client.app.state.gateway.settle_retry_delays = (0.05, 0.05, 0.05)  # type: ignore[attr-defined]
    calls = flaky_settle(rt, failures=2)
    response = client.post("/v1/chat/completions", json=BODY, headers=auth)
    assert response.status_code == 200
    request_id = response.headers["x-allotment-request-id"]
    wait_for(lambda: rt.event(request_id) is not None)
    event = rt.event(request_id)
    assert usd_string(event.cost_nanos) == response.headers["x-allotment-cost"]
    assert event.cost_nanos == 12 * 2_500 + 6 * 10_000  # the fake's default usage (12 in, 6 out), gpt-4o
    assert rt.reservation_state(request_id) == "settled"
    assert calls == [request_id] * 3  # two refusals, then the settlement
    assert metric(client, "allotment_gateway_settle_failures_total") == 2
    assert metric(client, "allotment_gateway_settles_abandoned_total") == 0


def test_a_settlement_that_keeps_failing_is_spooled_counted_and_replayed_once(
    rt: Any, client: TestClient, auth, tmp_path: Path
) -> None:
    rt.settings = rt.settings.model_copy(update={"settle_spool": tmp_path / "spool.jsonl"})
    client.app.state.gateway.settle_retry_delays = (0.02, 0.02)  # type: ignore[attr-defined]
    real = rt.settle
    calls = flaky_settle(rt, failures=10)
    response = client.post("/v1/chat/completions", json=BODY, headers=auth)
    assert response.status_code == 200  # the client has its answer whatever the ledger does
    request_id = response.headers["x-allotment-request-id"]
    wait_for(lambda: metric(client, "allotment_gateway_settles_abandoned_total") == 1)
    assert calls == [request_id] * 3  # the first attempt and one per retry delay
    assert metric(client, "allotment_gateway_settle_failures_total") == 3
    # nothing was charged yet: the hold stays, and the settle waits in the spool, not lost
    assert rt.event(request_id) is None
    assert rt.reservation_state(request_id) == "open"
    spooled = [json.loads(line) for line in spool_path(rt.settings).read_text().splitlines()]
    assert [(e["request_id"], e["reason"]) for e in spooled] == [(request_id, "settle retries exhausted")]

    rt.settle = real  # the ledger answers again
    assert replay(rt).to_dict() == {"settled": 1, "kept": 0, "refused": 0}
    event = rt.event(request_id)
    assert event is not None and usd_string(event.cost_nanos) == response.headers["x-allotment-cost"]
    assert rt.reservation_state(request_id) == "settled"
    assert replay(rt).to_dict() == {"settled": 0, "kept": 0, "refused": 0}  # nothing twice
    assert verify(rt).ok


def test_a_running_gateway_replays_its_spool_once_the_ledger_answers_again(
    rt: Any, tmp_path: Path, key: str
) -> None:
    """No restart needed: the spool is replayed on a timer while it holds anything."""
    from allotment.gateway import create_app

    rt.settings = rt.settings.model_copy(update={"settle_spool": tmp_path / "spool.jsonl"})
    real = rt.settle
    flaky_settle(rt, failures=10**6)
    with TestClient(create_app(rt, spool_replay_seconds=0.05)) as client:
        client.app.state.gateway.settle_retry_delays = (0.02,)  # type: ignore[attr-defined]
        response = client.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})
        request_id = response.headers["x-allotment-request-id"]
        wait_for(lambda: metric(client, "allotment_gateway_settles_abandoned_total") == 1)
        time.sleep(0.2)  # several replays while the ledger still refuses: kept, not lost
        assert rt.event(request_id) is None and spool_path(rt.settings).stat().st_size > 0
        rt.settle = real  # the ledger answers again
        wait_for(lambda: rt.event(request_id) is not None)
        assert usd_string(rt.event(request_id).cost_nanos) == response.headers["x-allotment-cost"]
        assert spool_path(rt.settings).stat().st_size == 0
    assert verify(rt).ok
