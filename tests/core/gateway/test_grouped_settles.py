"""On SQLite, the settles that become ready in one turn of the event loop share one commit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from allotment.errors import LedgerUnavailable
from allotment.gateway.state import Call, GatewayState
from allotment.testing import intent
from allotment.types import Outcome, Usage

USAGE = Usage(input_tokens=100, cache_read_tokens=20, output_tokens=10)
# gpt-4o: $2.50 / 1M input, $1.25 / 1M cached input, $10 / 1M output, in nano-dollars per token
EXPECTED_NANOS = 100 * 2_500 + 20 * 1_250 + 10 * 10_000


def counted_batches(rt: Any) -> list[int]:
    """Count the transactions ``Runtime.batch`` opens (one commit each)."""
    real = rt.batch
    opened: list[int] = []

    @contextmanager
    def batch() -> Iterator[None]:
        opened.append(1)
        with real():
            yield

    rt.batch = batch
    return opened


def admitted(rt: Any, key: str, count: int) -> list[Call]:
    calls = []
    for _ in range(count):
        admission = rt.admit(intent(credential=key, provider="openai", model="gpt-4o", max_output_tokens=64))
        calls.append(Call(admission.request_id, "chat", "openai", "openai", "gpt-4o"))
    return calls


async def settle_all(state: GatewayState, calls: list[Call]) -> list[Any]:
    return await asyncio.gather(*(state.settle(call, USAGE, Outcome.SUCCESS, status=200) for call in calls))


def test_settles_ready_together_are_committed_together(rt: Any, key: str) -> None:
    opened = counted_batches(rt)
    calls = admitted(rt, key, 8)

    async def main() -> list[Any]:
        return await settle_all(GatewayState(rt), calls)

    events = asyncio.run(main())
    assert len(opened) == 1  # eight settles, one transaction
    assert [e.cost_nanos for e in events] == [EXPECTED_NANOS] * 8
    for call in calls:
        assert rt.event(call.request_id).cost_nanos == EXPECTED_NANOS
        assert rt.reservation_state(call.request_id) == "settled"


def test_a_settle_that_fails_inside_the_group_fails_alone(rt: Any, key: str) -> None:
    calls = admitted(rt, key, 3)
    unknown = Call("no-such-request", "chat", "openai", "openai", "gpt-4o")

    async def main() -> list[Any]:
        state = GatewayState(rt)
        state.settle_retry_delays = ()
        events = await settle_all(state, [calls[0], unknown, calls[1], calls[2]])
        await asyncio.gather(*list(state.pending))
        return events

    events = asyncio.run(main())
    assert events[1] is None  # the unknown request: nothing to charge it to
    assert [events[i].cost_nanos for i in (0, 2, 3)] == [EXPECTED_NANOS] * 3
    for call in calls:
        assert rt.event(call.request_id).cost_nanos == EXPECTED_NANOS


def test_a_failed_group_commit_settles_nothing_and_every_settle_is_retried(rt: Any, key: str) -> None:
    real = rt.batch
    failures = [1]

    @contextmanager
    def failing_once() -> Iterator[None]:
        with real():
            yield
            if failures:
                failures.pop()
                raise LedgerUnavailable("ledger commit failed: disk I/O error")

    rt.batch = failing_once
    calls = admitted(rt, key, 4)

    async def main() -> list[Any]:
        state = GatewayState(rt)
        state.settle_retry_delays = (0.01,)
        first = await settle_all(state, calls)
        await asyncio.gather(*list(state.pending))
        return first

    first = asyncio.run(main())
    assert first == [None] * 4  # the rolled-back group: nobody was told they were settled
    wallets = rt.ledger.all_wallets()
    for call in calls:  # each was retried and charged exactly once
        assert rt.event(call.request_id).cost_nanos == EXPECTED_NANOS
        assert rt.reservation_state(call.request_id) == "settled"
    assert all(w.reserved_nanos == 0 for w in wallets)
    person = next(w for w in wallets if w.scope == "person")
    assert person.spent_nanos == 4 * EXPECTED_NANOS
