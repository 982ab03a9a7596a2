"""Fixtures for gateway tests: one fake provider per session, a fresh ledger per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from allotment.gateway import create_app
from allotment.testing import temporary_runtime
from allotment.testing.fake_upstream import FakeUpstream

UPSTREAM_TIMEOUT = 2.0


def gateway_config(fake: FakeUpstream, *, dev_budget: str = "10", tiny_budget: str = "0.000001") -> str:
    return f"""
org: {{name: Test, timezone: UTC, monthly_budget: 1000}}
tiers:
  dev: {{monthly_budget: {dev_budget}, allow: ["openai/*", "anthropic/*"]}}
  openai-only: {{monthly_budget: 10, allow: ["openai/*"]}}
  tiny: {{monthly_budget: {tiny_budget}, allow: ["openai/*", "anthropic/*"]}}
teams:
  eng: {{monthly_budget: 500, cost_center: CC-1}}
people:
  - {{email: dev@acme.example, team: eng, tier: dev}}
  - {{email: oai@acme.example, team: eng, tier: openai-only}}
  - {{email: tiny@acme.example, team: eng, tier: tiny}}
labels:
  feature: {{required: false}}
upstreams:
  openai:
    api_key: sk-upstream
    api_base: "{fake.openai_base_url}"
    timeout_seconds: {UPSTREAM_TIMEOUT}
  anthropic:
    api_key: sk-ant-upstream
    api_base: "{fake.anthropic_base_url}"
    timeout_seconds: {UPSTREAM_TIMEOUT}
"""


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeUpstream) -> Iterator[None]:
    fake.reset()
    yield
    fake.reset()


@pytest.fixture
def rt(tmp_path: Path, fake: FakeUpstream) -> Iterator[Any]:
    with temporary_runtime(tmp_path, config=gateway_config(fake), admin_token="test-admin") as runtime:
        yield runtime


IMPATIENT = {"ledger_wait_seconds": 0.05}  # a locked database fails fast


@pytest.fixture
def impatient_rt(tmp_path: Path, fake: FakeUpstream) -> Iterator[Any]:
    """Like ``rt``, waiting only 50 ms for a locked database."""
    config = gateway_config(fake)
    with temporary_runtime(tmp_path, config=config, admin_token="test-admin", **IMPATIENT) as runtime:
        yield runtime


@pytest.fixture
def fail_open_rt(tmp_path: Path, fake: FakeUpstream) -> Iterator[Any]:
    """Like ``impatient_rt``, with ``policy.ledger_unavailable: open``."""
    config = gateway_config(fake) + "\npolicy:\n  ledger_unavailable: open\n"
    with temporary_runtime(tmp_path, config=config, admin_token="test-admin", **IMPATIENT) as runtime:
        yield runtime


@pytest.fixture
def client(rt: Any) -> Iterator[TestClient]:
    with TestClient(create_app(rt)) as test_client:
        yield test_client


@pytest.fixture
def key(rt: Any) -> str:
    secret, _ = rt.admin.issue_key("dev@acme.example")
    return str(secret)


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class LedgerView:
    """Read the ledger the way a test asserts on it: wallets by scope, events by request."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime

    def wallet(self, scope: str, scope_id: str | None = None) -> dict[str, Any]:
        found = [
            w
            for w in self.rt.admin.budgets()
            if w["scope"] == scope and (scope_id is None or w["scope_id"] == scope_id)
        ]
        assert len(found) == 1, found
        return dict(found[0])

    def person(self, email: str = "dev@acme.example") -> dict[str, Any]:
        person_id = next(p["person_id"] for p in self.rt.admin.people() if p["email"] == email)
        return self.wallet("person", person_id)

    def event(self, request_id: str) -> dict[str, Any]:
        found = self.rt.ledger.event(request_id)
        assert found is not None, f"no usage event for {request_id}"
        return dict(found[1])


@pytest.fixture
def ledger(rt: Any) -> LedgerView:
    return LedgerView(rt)
