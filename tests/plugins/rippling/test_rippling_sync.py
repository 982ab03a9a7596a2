"""Rippling sync against a local fake: paged workers joined to departments and levels, every sync complete.

Leavers (terminated or gone) lose their keys at once; a failing page applies nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_rippling import FakeRippling, serve

import allotment_rippling
import allotment_rippling.client as client_module
from allotment.errors import Denied
from allotment.runtime import Runtime
from allotment.sync import SyncFailed, run_sync
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime


def config(url: str) -> str:
    return (
        SAMPLE_CONFIG
        + f"""
plugins:
  rippling: {{api_key: env:TEST_RIPPLING_TOKEN, base_url: "{url}"}}
  sync:
    issue_keys: true
    rules:
      - {{department: "ML Platform", min_level: 6, tier: eng-principal, team: engineering}}
      - {{department: "ML Platform", tier: eng-mid, team: engineering}}
      - {{department: Product, tier: product, team: product}}
"""
    )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(client_module, "default_sleep", waited.append)
    return waited


@pytest.fixture
def rpl(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRippling]:
    monkeypatch.setenv("TEST_RIPPLING_TOKEN", "rpl-token")
    fake = FakeRippling()
    fake.department("dep_9", "ML Platform", "CC-4100")
    fake.department("dep_3", "Product", "CC-3000")
    fake.department("dep_5", "Legal", "CC-5000")
    fake.level("lvl_5", "L5", 5)
    fake.level("lvl_7", "L7", 7)
    fake.worker("wrk_01", "ada.r@acme.example", department_id="dep_9", level_id="lvl_7", title="Principal")
    fake.worker("wrk_02", "bo@acme.example", department_id="dep_9", level_id="lvl_5", manager_id="wrk_01")
    fake.worker("wrk_03", "cy@acme.example", department_id="dep_3")
    fake.worker("wrk_04", "di@acme.example", department_id="dep_5")
    fake.worker(
        "wrk_05",
        "ex@acme.example",
        department_id="dep_3",
        status="TERMINATED",
        end_date="2025-06-30",
        termination_details={"type": "VOLUNTARY"},
    )
    with serve(fake):
        yield fake


@pytest.fixture
def rt(database_url: str, tmp_path: Path, rpl: FakeRippling, sleeps: list[float]) -> Iterator[Runtime]:
    with temporary_runtime(
        tmp_path,
        database_url=database_url,
        config=config(rpl.url),
        plugins=[("rippling", allotment_rippling)],
    ) as runtime:
        yield runtime


@pytest.fixture
def gateway(database_url: str, tmp_path: Path, rt: Runtime) -> Iterator[Runtime]:
    with temporary_runtime(tmp_path, database_url=database_url, config=None) as runtime:
        yield runtime


def people(rt: Runtime) -> dict[str, dict[str, Any]]:
    return {p["email"]: p for p in rt.admin.people()}


def test_workers_are_placed_by_department_and_global_level(rt: Runtime, rpl: FakeRippling) -> None:
    result = run_sync(rt)
    assert sorted(c.email for c in result.plan.changes) == [
        "ada.r@acme.example",
        "bo@acme.example",
        "cy@acme.example",
    ]
    rows = people(rt)
    assert (rows["ada.r@acme.example"]["tier"], rows["bo@acme.example"]["tier"]) == (
        "eng-principal",
        "eng-mid",
    )
    joined = {c.email: c.after for c in result.plan.changes}
    assert joined["bo@acme.example"]["manager_email"] == "ada.r@acme.example"
    assert joined["ada.r@acme.example"]["cost_center"] == "CC-4100"  # department reference_code
    assert [u.email for u in result.plan.unplaced] == ["di@acme.example"]  # Legal: no rule, not guessed
    # every page of every collection was read, bearer token on each
    worker_pages = [r for r in rpl.log if r["path"] == "/workers/"]
    assert len(worker_pages) == 3
    assert all(r["headers"]["Authorization"] == "Bearer rpl-token" for r in rpl.log)
    assert worker_pages[0]["query"] == {"limit": ["100"], "order_by": ["id"]}


def test_joiner_mover_leaver_and_the_leavers_key_is_refused(
    rt: Runtime, gateway: Runtime, rpl: FakeRippling
) -> None:
    keys = {k["email"]: k["key"] for k in run_sync(rt).issued_keys}
    assert gateway.admit(intent(keys["cy@acme.example"])).principal.cost_center == "CC-3000"
    rpl.workers[2]["department_id"] = "dep_9"  # Cy moves to ML Platform
    rpl.workers[0]["status"] = "TERMINATED"  # Ada is terminated
    rpl.workers = [w for w in rpl.workers if w["id"] != "wrk_02"]  # Bo vanishes from the directory
    rpl.worker("wrk_06", "fy@acme.example", department_id="dep_3")
    result = run_sync(rt)
    assert sorted((c.action, c.email, c.reason) for c in result.plan.changes) == [
        ("join", "fy@acme.example", "new in rippling: rule Product -> product"),
        ("leave", "ada.r@acme.example", "terminated in rippling"),
        ("leave", "bo@acme.example", "absent from a complete sync"),
        ("move", "cy@acme.example", "moved in rippling"),
    ]
    assert result.revoked_keys == 2
    for leaver in ("ada.r@acme.example", "bo@acme.example"):
        with pytest.raises(Denied) as refused:
            gateway.admit(intent(keys[leaver]))
        assert refused.value.status == 401
    moved = gateway.admit(intent(keys["cy@acme.example"])).principal
    assert (moved.team_id, moved.tier, moved.cost_center) == ("engineering", "eng-mid", "CC-4100")


def test_a_failing_page_in_the_middle_applies_nothing(rt: Runtime, rpl: FakeRippling) -> None:
    run_sync(rt)
    rpl.workers[0]["status"] = "TERMINATED"
    rpl.fail_pages[("workers", 2)] = 10  # the last page keeps failing past every retry
    with pytest.raises(SyncFailed, match="500"):
        run_sync(rt)
    assert people(rt)["ada.r@acme.example"]["status"] == "active"


def test_throttling_and_transient_errors_are_retried(
    rt: Runtime, rpl: FakeRippling, sleeps: list[float]
) -> None:
    rpl.throttle = ["3"]
    rpl.fail_pages[("workers", 1)] = 1
    result = run_sync(rt)
    assert result.plan.counts()["join"] == 3
    assert sleeps[0] == 3.0 and len(sleeps) == 2


def test_an_expired_token_applies_nothing(rt: Runtime, rpl: FakeRippling) -> None:
    rpl.token = "rotated"
    with pytest.raises(SyncFailed, match="401"):
        run_sync(rt)
    assert "bo@acme.example" not in people(rt)


def test_a_redacted_email_is_reported_not_guessed(
    tmp_path: Path, rpl: FakeRippling, sleeps: list[float]
) -> None:
    rpl.redacted = ["work_email"]
    rpl.worker("wrk_07", "hidden@acme.example", department_id="dep_3")
    with temporary_runtime(
        tmp_path, config=config(rpl.url), plugins=[("rippling", allotment_rippling)]
    ) as rt:
        result = run_sync(rt)
    assert {"external_id": "wrk_07", "reason": "no work email"}.items() <= {
        k: v for u in result.plan.unplaced if u.external_id == "wrk_07" for k, v in u.to_dict().items()
    }.items()


def test_next_link_to_another_host_is_refused(rt: Runtime, rpl: FakeRippling) -> None:
    original = rpl.handle

    def hijack(*args: Any) -> Any:
        status, headers, body = original(*args)
        if "next_link" in body:
            body["next_link"] = body["next_link"].replace("127.0.0.1", "localhost")
        return status, headers, body

    rpl.handle = hijack  # type: ignore[method-assign]
    with pytest.raises(SyncFailed, match="points elsewhere"):
        run_sync(rt)
