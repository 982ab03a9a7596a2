"""The handler's hooks called in-process with LiteLLM-shaped arguments: robustness of settle.

Late events land, duplicate events count once, missing events expire, refusals reserve nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from allotment.audit import verify
from allotment.config import SAMPLE_CONFIG
from allotment.directory import hash_key
from allotment.errors import LedgerUnavailable
from allotment.runtime import Runtime
from allotment.testing import temporary_runtime
from allotment.types import Outcome
from allotment_litellm import AllotmentLogger
from allotment_litellm.errors import AllotmentRefusal
from allotment_litellm.identity import KEY_HASH_FIELD
from allotment_litellm.logger import check_hooks_declared
from helpers import write_locked

GPT4O_IN, GPT4O_OUT = 2_500, 10_000


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with temporary_runtime(tmp_path) as runtime:
        yield runtime


def _caller(rt: Runtime, email: str = "ada@acme.example", budget: str | None = None) -> Any:
    from decimal import Decimal

    key, _ = rt.admin.issue_key(email, name="t", monthly_budget=Decimal(budget) if budget else None)
    rt.refresh_directory()
    return SimpleNamespace(
        api_key=None,
        metadata={KEY_HASH_FIELD: hash_key(key)},
        user_id=None,
        user_email=None,
        end_user_id=None,
        user_role=None,
        token=None,
    )


def _data(**extra: Any) -> dict[str, Any]:
    data = {
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "litellm_call_id": str(uuid.uuid4()),
        "metadata": {},
    }
    data.update(extra)
    return data


def _success(call_id: str, prompt: int, completion: int, cost: float | None, **params: Any) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {
        "litellm_call_id": call_id,
        "response_cost": cost,
        "litellm_params": {"metadata": params},
        "standard_logging_object": {
            "litellm_call_id": call_id,
            "response_cost": cost,
            "metadata": {"usage_object": usage},
        },
    }


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_success_event_settles_once_even_when_delivered_twice(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data()
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    event = _success(data["litellm_call_id"], 100, 20, 0.00045)
    _run(handler.async_log_success_event(event, None, None, None))
    _run(handler.async_log_success_event(event, None, None, None))
    settled = rt.event(data["litellm_call_id"])
    assert settled is not None and settled.cost_nanos == 100 * GPT4O_IN + 20 * GPT4O_OUT
    assert sum(w.spent_nanos for w in rt.ledger.all_wallets() if w.scope == "org") == 450_000


def test_late_event_after_expiry_is_charged_once(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data()
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    assert rt.expire_reservations(datetime.now(UTC) + timedelta(days=1)) == 1
    org = next(w for w in rt.ledger.all_wallets() if w.scope == "org")
    assert org.reserved_nanos == 0
    _run(
        handler.async_log_success_event(_success(data["litellm_call_id"], 100, 20, 0.00045), None, None, None)
    )
    event = rt.event(data["litellm_call_id"])
    assert event is not None and "late_settle" in event.flags and event.cost_nanos == 450_000
    org = next(w for w in rt.ledger.all_wallets() if w.scope == "org")
    assert (org.spent_nanos, org.reserved_nanos) == (450_000, 0)


def test_missing_event_leaves_a_hold_that_expires(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data()
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    assert rt.reservation_state(data["litellm_call_id"]) == "open"
    assert rt.expire_reservations(datetime.now(UTC) + timedelta(days=1)) == 1
    assert rt.reservation_state(data["litellm_call_id"]) == "expired"
    assert all(w.reserved_nanos == 0 for w in rt.ledger.all_wallets())


def test_divergent_litellm_cost_is_flagged_not_hidden(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data()
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    _run(
        handler.async_log_success_event(_success(data["litellm_call_id"], 100, 20, 0.0009), None, None, None)
    )
    event = rt.event(data["litellm_call_id"])
    assert event is not None and event.cost_nanos == 450_000 and event.external_cost_nanos == 900_000
    assert "litellm_cost_diverges" in event.flags


def test_litellm_without_a_price_is_flagged_unpriced(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data()
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    _run(handler.async_log_success_event(_success(data["litellm_call_id"], 100, 20, None), None, None, None))
    event = rt.event(data["litellm_call_id"])
    assert event is not None and event.cost_nanos == 450_000 and event.external_cost_nanos is None
    assert "litellm_unpriced" in event.flags


def test_refused_call_reserves_nothing_and_its_failure_event_is_ignored(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data(max_tokens=10_000)
    with pytest.raises(AllotmentRefusal) as caught:
        _run(handler.async_pre_call_hook(_caller(rt, budget="0.0001"), None, data, "completion"))
    assert caught.value.code == "402" and caught.value.to_dict()["code"] == "budget_exceeded"
    assert caught.value.headers["x-should-retry"] == "false"
    _run(handler.async_log_failure_event({"litellm_call_id": data["litellm_call_id"]}, None, None, None))
    assert rt.reservation_state(data["litellm_call_id"]) is None
    assert rt.event(data["litellm_call_id"]) is None


def test_provider_failure_without_output_releases(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data()
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    failure = _success(data["litellm_call_id"], 9, 0, 0.0)
    _run(handler.async_log_failure_event(failure, None, None, None))
    event = rt.event(data["litellm_call_id"])
    assert event is not None and event.outcome is Outcome.ERROR and event.cost_nanos == 0


def test_mid_stream_failure_charges_what_was_streamed_as_estimated(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data(stream=True)
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    _run(handler.async_log_failure_event(_success(data["litellm_call_id"], 8, 11, 0.00013), None, None, None))
    event = rt.event(data["litellm_call_id"])
    assert event is not None and event.outcome is Outcome.ERROR
    assert event.cost_nanos == 8 * GPT4O_IN + 11 * GPT4O_OUT and "estimated_usage" in event.flags


def test_unreadable_event_changes_nothing_and_the_hold_stays(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data()
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    bad = _success(data["litellm_call_id"], -5, 20, 0.1)
    _run(handler.async_log_success_event(bad, None, None, None))
    assert rt.event(data["litellm_call_id"]) is None
    assert rt.reservation_state(data["litellm_call_id"]) == "open"


def test_labels_come_from_headers_body_metadata_and_key_value_tags(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data(
        proxy_server_request={"headers": {"x-allotment-label-feature": "search"}},
        metadata={
            "requester_metadata": {"team_project": "apollo"},
            "tags": ["environment=staging", "User-Agent: curl", "plain"],
        },
    )
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    _run(handler.async_log_success_event(_success(data["litellm_call_id"], 1, 1, 1.25e-5), None, None, None))
    event = rt.event(data["litellm_call_id"])
    assert event is not None
    assert event.labels == {"feature": "search", "team-project": "apollo", "environment": "staging"}


def test_unsupported_call_type_is_refused(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    with pytest.raises(AllotmentRefusal) as caught:
        _run(handler.async_pre_call_hook(_caller(rt), None, _data(), "image_generation"))
    assert caught.value.code == "400" and caught.value.to_dict()["code"] == "unsupported_endpoint"


def test_ledger_failure_fails_closed_with_503(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = AllotmentLogger(rt)

    def broken(intent: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(rt, "admit", broken)
    with pytest.raises(AllotmentRefusal) as caught:
        _run(handler.async_pre_call_hook(_caller(rt), None, _data(), "completion"))
    assert caught.value.code == "503" and caught.value.to_dict()["code"] == "ledger_unavailable"


OPEN_CONFIG = SAMPLE_CONFIG.replace("\npolicy:\n", "\npolicy:\n  ledger_unavailable: open\n")


def test_a_settle_refused_by_a_locked_ledger_is_retried_until_it_lands(tmp_path: Path) -> None:
    """Fail open: the call is admitted unrecorded, its one success event finds the ledger
    still locked, and the background retry records it once the lock is gone."""

    async def scenario(rt: Runtime, handler: AllotmentLogger, caller: Any) -> None:
        data = _data()
        call_id = data["litellm_call_id"]
        with write_locked(rt):
            await handler.async_pre_call_hook(caller, None, data, "completion")
            await handler.async_log_success_event(_success(call_id, 100, 20, 0.00045), None, None, None)
            assert rt.event(call_id) is None  # the first attempt was refused
            await asyncio.sleep(0.2)  # retries refused too, while the lock holds
            assert rt.event(call_id) is None
        await asyncio.gather(*handler._background)
        event = rt.event(call_id)
        assert event is not None and event.cost_nanos == 100 * GPT4O_IN + 20 * GPT4O_OUT
        assert event.enforced is False and "fail_open" in event.flags
        await handler.async_log_success_event(_success(call_id, 100, 20, 0.00045), None, None, None)
        assert sum(w.spent_nanos for w in rt.ledger.all_wallets() if w.scope == "org") == 450_000

    assert OPEN_CONFIG != SAMPLE_CONFIG
    with temporary_runtime(tmp_path, config=OPEN_CONFIG, ledger_wait_seconds=0.05) as rt:
        handler = AllotmentLogger(rt)
        handler.settle_retry_delays = (0.05,) * 40
        _run(scenario(rt, handler, _caller(rt)))
        assert verify(rt).ok


def test_custom_auth_answers_503_in_our_shape_when_the_ledger_cannot_be_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import allotment_litellm
    from allotment_litellm import custom_auth

    async def locked() -> Runtime:
        raise LedgerUnavailable("cannot migrate the database: database is locked")

    monkeypatch.setattr(allotment_litellm.handler.holder, "get_async", locked)
    monkeypatch.setattr(custom_auth, "_master_key", lambda: None)  # no proxy_server import (2 s)
    with pytest.raises(AllotmentRefusal) as caught:
        _run(allotment_litellm.auth(None, "sk-allot-anything"))
    assert caught.value.code == "503" and caught.value.to_dict()["code"] == "ledger_unavailable"


def test_a_log_event_never_opens_the_runtime_of_a_process_that_admitted_nothing() -> None:
    handler = AllotmentLogger()

    def refuse() -> Runtime:
        raise AssertionError("the log event opened the runtime")

    handler.holder.get = refuse  # type: ignore[method-assign]
    _run(handler.async_log_failure_event(_success(str(uuid.uuid4()), 9, 0, 0.0), None, None, None))
    assert handler.holder.opened is None


def test_an_inherited_hook_fails_the_self_check() -> None:
    class Leaf(AllotmentLogger):
        pass

    check_hooks_declared(AllotmentLogger)
    with pytest.raises(RuntimeError, match="LiteLLM skips inherited hooks"):
        check_hooks_declared(Leaf)


def test_a_priority_request_is_held_and_charged_at_priority(rt: Runtime) -> None:
    """gpt-4o priority: 4.25 / 17.00 per 1M tokens (standard 2.50 / 10.00)."""
    from allotment.intents import input_upper_bound

    handler = AllotmentLogger(rt)
    data = _data(service_tier="priority")
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    held = rt.ledger.reservation(data["litellm_call_id"])
    assert held is not None
    assert held.amount_nanos == input_upper_bound(data) * 4_250 + 50 * 17_000
    event = _success(data["litellm_call_id"], 100, 20, 0.000765)
    event["standard_logging_object"]["cost_breakdown"] = {"service_tier": "priority"}
    _run(handler.async_log_success_event(event, None, None, None))
    settled = rt.event(data["litellm_call_id"])
    assert settled is not None and settled.usage.service_tier == "priority"
    assert settled.cost_nanos == 100 * 4_250 + 20 * 17_000 == 765_000


def test_the_response_service_tier_wins_over_litellm_pricing_note(rt: Runtime) -> None:
    handler = AllotmentLogger(rt)
    data = _data()
    _run(handler.async_pre_call_hook(_caller(rt), None, data, "completion"))
    event = _success(data["litellm_call_id"], 100, 20, None)
    event["standard_logging_object"]["cost_breakdown"] = {"service_tier": "priority"}
    response = {"service_tier": "default", "usage": {"prompt_tokens": 100, "completion_tokens": 20}}
    _run(handler.async_log_success_event(event, response, None, None))
    settled = rt.event(data["litellm_call_id"])
    assert settled is not None and settled.usage.service_tier == "standard"
    assert settled.cost_nanos == 100 * GPT4O_IN + 20 * GPT4O_OUT
