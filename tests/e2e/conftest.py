"""A real ``allotment serve`` process on 127.0.0.1 in front of the fake provider.

Servers are slow to start, so one gateway (SQLite) serves the whole session; each test
issues its own keys with their own key budgets, so money assertions never interfere.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from allotment.testing.fake_upstream import FakeUpstream
from allotment.testing.serve import ServeProcess, start_serve

ADMIN_TOKEN = "e2e-admin-token"
UPSTREAM_TIMEOUT = 1.5

pytestmark = pytest.mark.slow


def e2e_config(fake: FakeUpstream) -> str:
    return f"""
org: {{name: E2E, timezone: UTC, monthly_budget: 100000}}
tiers:
  dev: {{monthly_budget: 10000, allow: ["openai/*", "anthropic/*"]}}
teams:
  eng: {{monthly_budget: 100000}}
people:
  - {{email: dev@acme.example, team: eng, tier: dev}}
upstreams:
  openai:
    api_key: env:E2E_OPENAI_KEY
    api_base: "{fake.openai_base_url}"
    timeout_seconds: {UPSTREAM_TIMEOUT}
  anthropic:
    api_key: env:E2E_ANTHROPIC_KEY
    api_base: "{fake.anthropic_base_url}"
    timeout_seconds: {UPSTREAM_TIMEOUT}
"""


@dataclass
class Gateway:
    """A running ``allotment serve`` and the helpers tests use against it."""

    serve: ServeProcess
    database_url: str
    admin: httpx.Client = field(init=False)

    @property
    def url(self) -> str:
        return self.serve.url

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.serve.process

    def __post_init__(self) -> None:
        self.admin = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        )

    def issue_key(self, budget: str = "100", email: str = "dev@acme.example") -> tuple[str, str]:
        response = self.admin.post(
            "/admin/keys", json={"email": email, "monthly_budget": budget, "name": "e2e"}
        )
        response.raise_for_status()
        return response.json()["key"], response.json()["key_id"]

    def key_wallet(self, key_id: str) -> dict[str, Any] | None:
        for wallet in self.admin.get("/admin/budgets").json()["data"]:
            if wallet["scope"] == "key" and wallet["scope_id"] == key_id:
                return dict(wallet)
        return None

    def settled_wallet(self, key_id: str, timeout: float = 10) -> dict[str, Any]:
        """The key's wallet once nothing is reserved on it (settlement after a disconnect)."""
        deadline = time.monotonic() + timeout
        while True:
            wallet = self.key_wallet(key_id)
            if wallet is not None and wallet["reserved_nanos"] == 0:
                return wallet
            if time.monotonic() > deadline:
                raise AssertionError(f"key {key_id} still has a reservation: {wallet}")
            time.sleep(0.05)

    def event(self, request_id: str) -> dict[str, Any]:
        """The usage event of ``request_id``, read straight from the gateway's database."""
        from allotment.runtime import Runtime
        from allotment.settings import Settings

        with Runtime.open(
            Settings(database_url=self.database_url), load_entrypoints=False, migrate=False
        ) as runtime:
            found = runtime.ledger.event(request_id)
        assert found is not None, f"no usage event for {request_id}"
        return dict(found[1])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.admin.close()
        return self.serve.stop(sig, timeout)


def start_gateway(
    workdir: Path,
    config: str,
    *,
    database_url: str | None = None,
    args: tuple[str, ...] = (),
    name: str = "gateway",
) -> Gateway:
    database_url = database_url or f"sqlite:///{workdir / 'allotment.db'}"
    serve = start_serve(
        workdir,
        config,
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        env={"E2E_OPENAI_KEY": "sk-e2e-openai", "E2E_ANTHROPIC_KEY": "sk-e2e-anthropic"},
        args=args,
        name=name,
    )
    return Gateway(serve, database_url)


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeUpstream) -> Iterator[None]:
    fake.reset()
    yield
    fake.reset()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Gateway]:
    server = start_gateway(tmp_path_factory.mktemp("e2e"), e2e_config(fake), args=("--max-body-mb", "1"))
    yield server
    server.stop()


@pytest.fixture
def start_gateway_process(tmp_path: Path, fake: FakeUpstream) -> Iterator[Any]:
    """Start extra gateways for one test: ``start(args=..., database_url=..., name=...)``."""
    started: list[Gateway] = []

    def start(
        *, args: tuple[str, ...] = (), database_url: str | None = None, name: str = "gateway"
    ) -> Gateway:
        server = start_gateway(
            tmp_path / name, e2e_config(fake), database_url=database_url, args=args, name=name
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def key(gateway: Gateway) -> tuple[str, str]:
    """A fresh key with its own $100 budget: (secret, key_id)."""
    return gateway.issue_key("100")
