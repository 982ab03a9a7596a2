"""Concurrent calls against a wallet that pays for exactly ten: never overspent.

The provider reports exactly the worst case the gateway reserved, so a settled call frees
nothing and exactly ten calls fit however the 64 interleave.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "x" * 33}]
MAX_TOKENS = 100
# the gateway's input bound: 3 (reply priming) + 4 (message overhead) + 4 ("user") + 33 bytes
INPUT_BOUND = 3 + 4 + 4 + 33
COST = INPUT_BOUND * 2_500 + MAX_TOKENS * 10_000  # gpt-4o nanos per token: $2.50 / $10 per 1M
TEN_CALLS_USD = "0.0111"


async def _call(url: str, key: str) -> int:
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        try:
            await client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
            )
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200


async def _burst(urls: list[str], key: str, n: int = 64) -> list[int]:
    return await asyncio.gather(*(_call(urls[i % len(urls)], key) for i in range(n)))


def _assert_ten(statuses: list[int], wallet: dict[str, Any], fake: FakeUpstream) -> None:
    assert COST == 1_110_000 and 10 * COST == 11_100_000
    assert statuses.count(200) == 10
    assert statuses.count(402) == 54
    assert (wallet["limit_nanos"], wallet["spent_nanos"], wallet["reserved_nanos"]) == (
        11_100_000,
        11_100_000,
        0,
    )
    assert len(fake.requests_to("/v1/chat/completions")) == 10


def test_64_concurrent_calls_against_a_wallet_for_ten(gateway, fake) -> None:
    fake.default = Script(usage=FakeUsage(input_tokens=INPUT_BOUND, output_tokens=MAX_TOKENS), delay=0.05)
    secret, key_id = gateway.issue_key(TEN_CALLS_USD)
    statuses = asyncio.run(_burst([gateway.url], secret))
    _assert_ten(statuses, gateway.settled_wallet(key_id), fake)


@pytest.mark.postgres
def test_two_gateways_sharing_postgres_never_overspend(start_gateway_process, postgres_url, fake) -> None:
    first = start_gateway_process(database_url=postgres_url, name="pg-a")
    second = start_gateway_process(database_url=postgres_url, name="pg-b")
    fake.default = Script(usage=FakeUsage(input_tokens=INPUT_BOUND, output_tokens=MAX_TOKENS), delay=0.05)
    secret, key_id = first.issue_key(TEN_CALLS_USD)
    statuses = asyncio.run(_burst([first.url, second.url], secret))
    _assert_ten(statuses, first.settled_wallet(key_id), fake)
    # both processes served traffic and agree on the ledger
    with httpx.Client(headers={"Authorization": "Bearer e2e-admin-token"}) as admin:
        other = admin.get(second.url + "/admin/budgets").json()["data"]
    assert [w for w in other if w["scope_id"] == key_id][0]["spent_nanos"] == 10 * COST
