"""50 parallel requests through the real proxy against a key budget that pays for exactly 5.

The fake provider reports usage equal to the reservation, so no settle frees room for a sixth.
"""

from __future__ import annotations

import asyncio

import openai
import pytest
from litellm_stack import Stack, wait_for
from sqlalchemy import text

from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "hi"}]
# the core's safe input bound for MESSAGES: 3 priming + 4 per message + len("user") + len("hi")
INPUT_BOUND = 3 + 4 + 4 + 2
MAX_TOKENS = 100
PER_CALL = INPUT_BOUND * 2_500 + MAX_TOKENS * 10_000  # gpt-4o: $2.50 / $10.00 per 1M


async def _fire(stack: Stack, key: str, n: int) -> list[object]:
    async with openai.AsyncOpenAI(base_url=stack.proxy.openai_base_url, api_key=key, max_retries=0) as client:
        calls = [
            client.chat.completions.with_raw_response.create(
                model="gpt-4o",
                messages=MESSAGES,
                max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
            )
            for _ in range(n)
        ]
        return list(await asyncio.gather(*calls, return_exceptions=True))


def test_fifty_parallel_requests_never_overspend(stack: Stack, fake: FakeUpstream) -> None:
    assert PER_CALL == 1_032_500
    key, key_id = stack.key(budget="0.0056")  # 5.6M nanos: 5 calls fit (5.1625M), 6 do not
    fake.default = Script(usage=FakeUsage(input_tokens=INPUT_BOUND, output_tokens=MAX_TOKENS), delay=0.3)
    results = asyncio.run(_fire(stack, key, 50))

    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code == 402]
    assert len(ok) == 5, [repr(r) for r in results if isinstance(r, BaseException)][:3]
    assert len(refused) == 45
    assert all(r.body["code"] == "budget_exceeded" for r in refused)
    assert len(fake.requests) == 5

    call_ids = [r.headers["x-litellm-call-id"] for r in ok]  # type: ignore[attr-defined]
    for call_id in call_ids:
        stack.wait_event(call_id)
    wallet = wait_for(
        lambda: (w := stack.key_wallet(key_id)) and w.reserved_nanos == 0 and w, 10, "holds were not released"
    )
    assert wallet.spent_nanos == 5 * PER_CALL <= wallet.limit_nanos
    with stack.runtime.engine.connect() as conn:
        count, total = conn.execute(
            text("SELECT COUNT(*), COALESCE(SUM(cost_nanos), 0) FROM usage_events WHERE key_id = :k"),
            {"k": key_id},
        ).one()
        entries = conn.execute(
            text("SELECT COALESCE(SUM(amount_nanos), 0) FROM ledger_entries WHERE wallet_id = :w"),
            {"w": wallet.id},
        ).scalar_one()
    assert (count, total) == (5, 5 * PER_CALL)
    assert entries == wallet.spent_nanos  # the wallet counter equals the sum of its entries
