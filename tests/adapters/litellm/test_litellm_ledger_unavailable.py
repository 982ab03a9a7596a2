"""The real LiteLLM proxy when its ledger cannot be written (the SQLite file is locked by
another process past the proxy's ``ALLOTMENT_LEDGER_WAIT_SECONDS``).

``policy.ledger_unavailable: closed`` (the default): 503 ``ledger_unavailable``, nothing goes
upstream. ``open``: the call goes through and, once the ledger answers again, is recorded
unenforced and flagged ``fail_open``. A settle that finds the ledger locked is retried in
the background: LiteLLM delivers its success event once, so a dropped settle is lost usage.

The session's proxy is reused: the policy is switched by applying a config to its database
(a fresh key makes the proxy reload its directory), and the lock is taken from this process.
gpt-4o: $2.50 in / $10.00 out per 1M tokens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from litellm_stack import LEDGER_WAIT_SECONDS, Stack, wait_for
from sqlalchemy import text

from allotment.audit import verify
from allotment.config import SAMPLE_CONFIG
from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script
from allotment.types import Outcome
from helpers import write_locked

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_stack]  # locks the SQLite ledger file

GPT4O_IN, GPT4O_OUT = 2_500, 10_000  # nanos per token
COST = 100 * GPT4O_IN + 20 * GPT4O_OUT  # the fake provider's usage below: 100 in, 20 out
assert SAMPLE_CONFIG.count("\npolicy:\n") == 1
OPEN_CONFIG = SAMPLE_CONFIG.replace("\npolicy:\n", "\npolicy:\n  ledger_unavailable: open\n")


@pytest.fixture(scope="module", autouse=True)
def _runtime_open(stack: Stack) -> None:
    """The proxy opens its runtime (migrating the database) at its first call: not under a lock."""
    key, _ = stack.key()
    stack.raw_chat(key, "gpt-4o-mock", max_tokens=5)


@pytest.fixture
def fail_open(stack: Stack) -> Iterator[None]:
    """``policy.ledger_unavailable: open`` in the proxy's database for one test, then closed again."""
    stack.runtime.apply_config_text(OPEN_CONFIG, "allotment.yaml")
    assert stack.runtime.fails_open()
    try:
        yield
    finally:
        stack.runtime.apply_config_text(SAMPLE_CONFIG, "allotment.yaml")
        assert not stack.runtime.fails_open()
        # an unknown key makes the proxy reload its directory: later tests see the closed policy
        with pytest.raises(openai.AuthenticationError):
            stack.client("sk-reload-the-directory").models.list()


def _settle_attempted(stack: Stack, call_id: str) -> None:
    """LiteLLM ran its success callbacks for ``call_id``: allotment's first (listed before the
    contract probe, and awaited before it) has made its first settle attempt by then."""
    wait_for(
        lambda: any(r["hook"] == "log_success" for r in stack.probe_records(call_id)),
        20,
        f"LiteLLM never logged the success of {call_id}\n{stack.proxy.log_tail()}",
    )


def _events_and_entries(stack: Stack, call_id: str) -> tuple[int, list[tuple[int, int]]]:
    with stack.runtime.engine.connect() as conn:
        events = conn.execute(
            text("SELECT COUNT(*) FROM usage_events WHERE request_id = :r"), {"r": call_id}
        ).scalar_one()
        entries = conn.execute(
            text(
                "SELECT e.wallet_id, e.amount_nanos FROM ledger_entries e "
                "JOIN usage_events u ON u.id = e.event_id WHERE u.request_id = :r ORDER BY e.wallet_id"
            ),
            {"r": call_id},
        ).all()
    return int(events), [(int(w), int(a)) for w, a in entries]


def test_closed_a_locked_ledger_is_a_503_and_the_provider_sees_nothing(
    stack: Stack, fake: FakeUpstream
) -> None:
    key, key_id = stack.key()
    started = time.monotonic()
    with write_locked(stack.runtime), pytest.raises(openai.APIStatusError) as caught:
        stack.client(key).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=50
        )
    # the proxy waited its ALLOTMENT_LEDGER_WAIT_SECONDS for the lock, then refused
    assert 0.9 * LEDGER_WAIT_SECONDS <= time.monotonic() - started < LEDGER_WAIT_SECONDS + 10
    assert caught.value.status_code == 503
    assert caught.value.body == {
        "type": "server_error",
        "code": "ledger_unavailable",
        "message": caught.value.body["message"],
        "param": None,
    }
    assert "ledger database unavailable" in caught.value.body["message"]
    assert "x-should-retry" not in caught.value.response.headers  # transient: a retry may work
    call_id = caught.value.response.headers["x-allotment-request-id"]
    assert fake.requests == []
    assert stack.runtime.reservation_state(call_id) is None
    assert stack.runtime.event(call_id) is None
    wallet = stack.key_wallet(key_id)
    assert wallet is None or (wallet.spent_nanos, wallet.reserved_nanos) == (0, 0)


def test_open_the_call_goes_through_and_lands_unenforced_once_the_ledger_is_back(
    stack: Stack, fake: FakeUpstream, fail_open: None
) -> None:
    key, key_id = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=100, output_tokens=20))
    with write_locked(stack.runtime):
        raw = stack.raw_chat(key, content="hello", max_tokens=50)
        reply = raw.parse()
        call_id = raw.headers["x-litellm-call-id"]
        _settle_attempted(stack, call_id)
        assert stack.runtime.event(call_id) is None  # the ledger is still locked
    # the client had the normal answer; the provider had the call, once
    assert raw.status_code == 200
    assert reply.choices[0].message.content
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (100, 20)
    assert len(fake.requests) == 1

    event = stack.wait_event(call_id)  # the settle retried in the background
    assert event.cost_nanos == COST == 450_000
    assert event.enforced is False
    assert "fail_open" in event.flags
    assert event.outcome is Outcome.SUCCESS
    assert event.key_id == key_id
    assert event.person_id == stack.runtime.directory.person_by_email("ada@acme.example").id
    assert event.external_cost_nanos == COST  # LiteLLM's response_cost agrees
    assert stack.runtime.reservation_state(call_id) is None  # nothing was ever held
    events, entries = _events_and_entries(stack, call_id)
    assert events == 1
    # charged to the same wallets an enforced call would use: org, team, person and key
    assert len(entries) == 4 and all(amount == COST for _, amount in entries)
    wallet = stack.key_wallet(key_id)
    assert (wallet.spent_nanos, wallet.reserved_nanos) == (COST, 0)
    assert verify(stack.runtime).ok, verify(stack.runtime).problems


def test_closed_an_admitted_call_whose_settle_finds_the_ledger_locked_is_charged_later(
    stack: Stack, fake: FakeUpstream
) -> None:
    key, key_id = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=100, output_tokens=20), delay=0.5)
    replies: list[Any] = []
    caller = threading.Thread(target=lambda: replies.append(stack.raw_chat(key, max_tokens=50)))
    caller.start()
    try:
        wait_for(lambda: fake.requests, 20, "the call never reached the provider")  # admitted
        with write_locked(stack.runtime):
            caller.join(20)
            call_id = replies[0].headers["x-litellm-call-id"]
            _settle_attempted(stack, call_id)
            assert stack.runtime.event(call_id) is None
            assert stack.runtime.reservation_state(call_id) == "open"  # the hold stays meanwhile
    finally:
        caller.join(20)
    assert replies[0].status_code == 200
    event = stack.wait_event(call_id)
    assert event.cost_nanos == COST and event.enforced is True
    assert "fail_open" not in event.flags and "late_settle" not in event.flags
    assert stack.runtime.reservation_state(call_id) == "settled"
    wallet = stack.key_wallet(key_id)
    assert (wallet.spent_nanos, wallet.reserved_nanos) == (COST, 0)
    assert _events_and_entries(stack, call_id)[0] == 1
