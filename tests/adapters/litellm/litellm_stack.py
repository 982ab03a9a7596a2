"""What the LiteLLM tests share: the running stack (fake provider, proxy, ledger) and polling.

A module of its own, not the conftest, so the tests import it under one name whatever else runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from litellm_harness import Proxy

from allotment.runtime import Runtime
from allotment.testing.fake_upstream import FakeUpstream
from allotment.types import UsageEvent

SETTLE_GRACE_SECONDS = 3
LEDGER_WAIT_SECONDS = 1  # the proxy's ALLOTMENT_LEDGER_WAIT_SECONDS: how long it waits for a locked ledger


@dataclass
class Stack:
    fake: FakeUpstream
    proxy: Proxy
    runtime: Runtime  # the same database as the proxy: issues keys, reads the ledger
    workdir: Path
    clients: list[Any]  # openai clients opened by a test, closed after it

    def key(self, email: str = "ada@acme.example", budget: str | None = "10") -> tuple[str, str]:
        """A fresh key with its own budget, so each test reads its own key wallet."""
        key, key_id = self.runtime.admin.issue_key(
            email, name="litellm-test", monthly_budget=Decimal(budget) if budget else None
        )
        self.runtime.refresh_directory()
        return key, key_id

    def client(self, key: str, **options: Any) -> Any:
        import openai

        options.setdefault("max_retries", 0)
        client = openai.OpenAI(base_url=self.proxy.openai_base_url, api_key=key, **options)
        self.clients.append(client)
        return client

    def raw_chat(self, key: str, model: str = "gpt-4o", content: str = "hi", **options: Any) -> Any:
        """One user message through the proxy with the openai SDK; the raw response, for its headers."""
        return self.client(key).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": content}], **options
        )

    @contextmanager
    def stream(self, key: str, max_tokens: int) -> Iterator[httpx.Response]:
        """A streamed gpt-4o completion over plain HTTP, so a test can leave it mid-stream."""
        body = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "go"}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "POST",
                self.proxy.openai_base_url + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            ) as response,
        ):
            yield response

    def wait_event(self, request_id: str, timeout: float = 20.0) -> UsageEvent:
        """LiteLLM settles from its queued log events: poll until the event lands."""
        return wait_for(
            lambda: self.runtime.event(request_id),
            timeout,
            f"no usage event for {request_id}\n{self.proxy.log_tail()}",
        )

    def probe_records(self, call_id: str) -> list[dict[str, Any]]:
        """What the contract probe callback saw for one call, in hook order."""
        path = self.workdir / "probe.jsonl"
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in records if r.get("call_id") == call_id]

    def key_wallet(self, key_id: str) -> Any:
        for wallet in self.runtime.ledger.all_wallets():
            if wallet.scope == "key" and wallet.scope_id == key_id:
                return wallet
        return None


def token_counts(event: UsageEvent) -> tuple[int, int, int]:
    """An event's input, cache-read and output tokens."""
    return event.usage.input_tokens, event.usage.cache_read_tokens, event.usage.output_tokens


def wait_for(probe: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.1)
