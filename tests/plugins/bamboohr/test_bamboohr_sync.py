"""BambooHR sync against a local fake: full then changed-since syncs, auth, throttling, failures.

The gateway side is a second runtime on the same database, as a separate process would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_bamboohr import FakeBambooHR, serve

import allotment_bamboohr
import allotment_bamboohr.client as client_module
from allotment.errors import Denied
from allotment.runtime import Runtime
from allotment.sync import SyncFailed, run_sync
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = """
  sync:
    issue_keys: true
    rules:
      - {department: Engineering, min_level: 6, tier: eng-principal, team: engineering}
      - {department: Engineering, tier: eng-mid, team: engineering}
      - {department: Product, tier: product, team: product}
"""


def config(base_url: str) -> str:
    return (
        SAMPLE_CONFIG
        + f"""
plugins:
  bamboohr:
    base_url: {base_url}
    api_key: env:TEST_BAMBOOHR_KEY
    level_field: customLevel
    cost_center_field: customCostCenter
"""
        + RULES
    )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(client_module, "default_sleep", waited.append)
    return waited


@pytest.fixture
def bhr(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBambooHR]:
    monkeypatch.setenv("TEST_BAMBOOHR_KEY", "bhr-secret")
    fake = FakeBambooHR(clock=T0 - timedelta(days=30))
    fake.upsert(
        101,
        firstName="Zoe",
        lastName="Zed",
        workEmail="Zoe@Acme.example",
        department="Engineering",
        jobTitle="Staff Engineer",
        customLevel="L7",
        status="Active",
        hireDate="2024-01-15",
        terminationDate="0000-00-00",
        customCostCenter="CC-4100",
        supervisorEmail="ada@acme.example",
    )
    fake.upsert(
        102,
        firstName="Max",
        lastName="Mo",
        workEmail="max@acme.example",
        department="Product",
        jobTitle="PM",
        status="Active",
        hireDate="2025-05-01",
    )
    fake.upsert(
        103,
        firstName="Old",
        lastName="Timer",
        workEmail="old@acme.example",
        department="Engineering",
        status="Inactive",
        terminationDate="2025-12-31",
    )
    with serve(fake):
        yield fake


@pytest.fixture
def rt(database_url: str, tmp_path: Path, bhr: FakeBambooHR, sleeps: list[float]) -> Iterator[Runtime]:
    cfg = config(f"{bhr.url}/api/gateway.php/acme/v1")
    with temporary_runtime(
        tmp_path, database_url=database_url, config=cfg, plugins=[("bamboohr", allotment_bamboohr)]
    ) as runtime:
        yield runtime


@pytest.fixture
def gateway(database_url: str, tmp_path: Path, rt: Runtime) -> Iterator[Runtime]:
    with temporary_runtime(tmp_path, database_url=database_url, config=None) as runtime:
        yield runtime


def people(rt: Runtime) -> dict[str, dict[str, Any]]:
    return {p["email"]: p for p in rt.admin.people()}


def test_full_then_changed_since_joiner_mover_leaver(
    rt: Runtime, gateway: Runtime, bhr: FakeBambooHR
) -> None:
    first = run_sync(rt, now=T0)
    assert first.plan.sources["bamboohr"]["complete"] is True
    assert sorted((c.action, c.email) for c in first.plan.changes) == [
        ("join", "max@acme.example"),
        ("join", "zoe@acme.example"),
    ]
    assert first.plan.skipped == [
        {"source": "bamboohr", "email": "old@acme.example", "reason": "left before joining"}
    ]
    zoe = people(rt)["zoe@acme.example"]
    assert (zoe["tier"], zoe["team"], zoe["level"], zoe["source"]) == (
        "eng-principal",
        "engineering",
        7,
        "bamboohr",
    )
    keys = {k["email"]: k["key"] for k in first.issued_keys}
    assert gateway.admit(intent(keys["max@acme.example"])).principal.tier == "product"

    # an hour later: Max moves to Engineering, Zoe is terminated, a new hire appears
    bhr.tick(T0 + timedelta(hours=1))
    bhr.upsert(102, department="Engineering", customLevel="3")
    bhr.upsert(101, status="Inactive", terminationDate="2026-03-01")
    bhr.upsert(104, firstName="Nia", workEmail="nia@acme.example", department="Product", status="Active")
    second = run_sync(rt, now=T0 + timedelta(hours=2))
    assert second.plan.sources["bamboohr"]["complete"] is False
    assert sorted((c.action, c.email) for c in second.plan.changes) == [
        ("join", "nia@acme.example"),
        ("leave", "zoe@acme.example"),
        ("move", "max@acme.example"),
    ]
    changed = [r for r in bhr.log if r["path"].endswith("/employees/changed")]
    assert changed[-1]["query"]["since"] == ["2026-03-01T12:00:00Z"]
    report = [r for r in bhr.log if r["path"].endswith("/reports/custom")][-1]
    assert report["headers"]["Content-Type"] == "application/json"
    assert sorted(__import__("json").loads(report["body"])["filters"]["employeeIds"]) == [101, 102, 104]

    with pytest.raises(Denied) as refused:
        gateway.admit(intent(keys["zoe@acme.example"]))
    assert refused.value.status == 401
    assert gateway.admit(intent(keys["max@acme.example"])).principal.tier == "eng-mid"

    # a record deleted in BambooHR has no email left: it is matched by its id
    bhr.tick(T0 + timedelta(hours=3))
    bhr.delete(102)
    third = run_sync(rt, now=T0 + timedelta(hours=4))
    assert [(c.action, c.email) for c in third.plan.changes] == [("leave", "max@acme.example")]
    with pytest.raises(Denied):
        gateway.admit(intent(keys["max@acme.example"]))


def test_requests_carry_basic_auth_and_ask_for_json(rt: Runtime, bhr: FakeBambooHR) -> None:
    run_sync(rt, now=T0)
    request = bhr.log[-1]
    assert request["path"] == "/api/gateway.php/acme/v1/reports/custom"
    assert request["query"] == {"format": ["JSON"], "onlyCurrent": ["true"]}
    assert request["headers"]["Accept"] == "application/json"
    assert request["headers"]["Authorization"].startswith("Basic ")


def test_throttling_is_retried_after_the_given_delay(
    rt: Runtime, bhr: FakeBambooHR, sleeps: list[float]
) -> None:
    bhr.throttle = [(429, "2"), (503, "1")]  # 503 was BambooHR's throttle before 2026-09-16
    result = run_sync(rt, now=T0)
    assert result.plan.counts()["join"] == 2
    assert sleeps == [2.0, 1.0]


def test_a_refused_api_key_applies_nothing(rt: Runtime, bhr: FakeBambooHR) -> None:
    bhr.api_key = "rotated"
    with pytest.raises(SyncFailed, match="401"):
        run_sync(rt, now=T0)
    assert "zoe@acme.example" not in people(rt)


def test_a_failure_after_the_change_list_applies_nothing(
    rt: Runtime, gateway: Runtime, bhr: FakeBambooHR
) -> None:
    first = run_sync(rt, now=T0)
    keys = {k["email"]: k["key"] for k in first.issued_keys}
    bhr.tick(T0 + timedelta(hours=1))
    bhr.upsert(101, status="Inactive")
    bhr.upsert(104, firstName="Nia", workEmail="nia@acme.example", department="Product", status="Active")
    original = bhr.handle
    calls = []

    def fail_report(method: str, path: str, *args: Any) -> Any:
        calls.append(path)
        if path.endswith("/reports/custom"):
            return 500, {"X-BambooHR-Error-Message": "Internal error"}, b""
        return original(method, path, *args)

    bhr.handle = fail_report  # type: ignore[method-assign]
    with pytest.raises(SyncFailed, match="500"):
        run_sync(rt, now=T0 + timedelta(hours=2))
    assert "nia@acme.example" not in people(rt)
    assert people(rt)["zoe@acme.example"]["status"] == "active"
    assert gateway.admit(intent(keys["zoe@acme.example"])).principal.email == "zoe@acme.example"
    # the watermark did not move: the next run asks for the same window again and applies it
    bhr.handle = original  # type: ignore[method-assign]
    retry = run_sync(rt, now=T0 + timedelta(hours=3))
    assert sorted(c.action for c in retry.plan.changes) == ["join", "leave"]
    assert [r for r in bhr.log if r["path"].endswith("/changed")][-1]["query"]["since"] == [
        "2026-03-01T12:00:00Z"
    ]


def test_the_new_url_prefix_works_too(tmp_path: Path, bhr: FakeBambooHR, sleeps: list[float]) -> None:
    with temporary_runtime(
        tmp_path, config=config(f"{bhr.url}/api/v1"), plugins=[("bamboohr", allotment_bamboohr)]
    ) as runtime:
        assert run_sync(runtime, now=T0, dry_run=True).plan.counts()["join"] == 2
    assert bhr.log[-1]["path"] == "/api/v1/reports/custom"


def test_unconfigured_plugin_takes_no_part(tmp_path: Path) -> None:
    assert allotment_bamboohr.sync_directory(None, {}) is None
