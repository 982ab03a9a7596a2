"""Session fixtures: one fake provider and one real LiteLLM proxy with allotment's callback.

The proxy and the tests share one SQLite ledger; tests isolate themselves with fresh keys.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("litellm") is None:
    pytest.skip("litellm is not installed (pip install -e '.[litellm]')", allow_module_level=True)
# the test process imports litellm too (contract tests): never let it fetch the price map
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from allotment.config import SAMPLE_CONFIG  # noqa: E402
from allotment.runtime import Runtime  # noqa: E402
from allotment.settings import Settings  # noqa: E402
from allotment.testing.fake_upstream import FakeUpstream  # noqa: E402
from allotment.types import UsageEvent  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from litellm_harness import Proxy, proxy_config, start_proxy, stop_proxy  # noqa: E402

SETTLE_GRACE_SECONDS = 3


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


def wait_for(probe: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.1)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("litellm-stack")
    database_url = f"sqlite:///{workdir / 'allotment.db'}"
    (workdir / "allotment.yaml").write_text(SAMPLE_CONFIG)
    runtime = Runtime.open(Settings(database_url=database_url), load_entrypoints=False)
    runtime.apply_config_text(SAMPLE_CONFIG, "allotment.yaml")
    fake = FakeUpstream().start()
    proxy = None
    (workdir / "proxy").mkdir()
    shutil.copy(Path(__file__).parent / "contract_probe.py", workdir / "proxy" / "contract_probe.py")
    try:
        proxy = start_proxy(
            workdir / "proxy",
            proxy_config(fake.openai_base_url, probe=True),
            env={
                "ALLOTMENT_DATABASE_URL": database_url,
                "ALLOTMENT_CONFIG": str(workdir / "allotment.yaml"),
                "ALLOTMENT_LITELLM_SETTLE_GRACE_SECONDS": str(SETTLE_GRACE_SECONDS),
                "ALLOTMENT_LITELLM_SWEEP_SECONDS": "1",
                "ALLOTMENT_CONTRACT_PROBE_FILE": str(workdir / "probe.jsonl"),
            },
        )
        yield Stack(fake, proxy, runtime, workdir, [])
    finally:
        if proxy is not None:
            stop_proxy(proxy)
        fake.stop()
        runtime.close()


@pytest.fixture(autouse=True)
def _close_clients(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        while stack.clients:
            stack.clients.pop().close()


@pytest.fixture
def fake(stack: Stack) -> Iterator[FakeUpstream]:
    stack.fake.reset()
    yield stack.fake
    stack.fake.reset()
