"""The directory sync engine: joiners, movers, leavers, dry runs, unplaced records, all-or-nothing.

An in-process HRIS plugin feeds it; the gateway side is a second runtime on the same database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import allotment.sync as sync_module
from allotment.errors import ConfigError, Denied
from allotment.hookspecs import hookimpl
from allotment.runtime import Runtime
from allotment.sync import SyncFailed, run_sync
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime
from allotment.types import DirectoryChanges, DirectoryPerson, Usage

RULES = """
plugins:
  fakehr: {token: t0k}
  sync:
    issue_keys: true
    rules:
      - {department: Engineering, min_level: 6, tier: eng-principal, team: engineering}
      - {department: Engineering, min_level: 4, tier: eng-senior, team: engineering}
      - {department: Engineering, tier: eng-mid, team: engineering}
      - {department: Product, tier: product, team: product, cost_center: CC-PROD-042}
"""
CONFIG = SAMPLE_CONFIG + RULES


class FakeHris:
    """An HR system in memory: what it reports is whatever the test sets."""

    def __init__(self) -> None:
        self.people: list[DirectoryPerson] = []
        self.complete = True
        self.fail: Exception | None = None
        self.calls: list[tuple[datetime | None, Any]] = []

    @hookimpl
    def sync_directory(self, since: datetime | None, config: dict[str, Any]) -> DirectoryChanges | None:
        self.calls.append((since, config.get("fakehr")))
        if self.fail is not None:
            raise self.fail
        return DirectoryChanges("fakehr", tuple(self.people), self.complete, cursor="c1")


def person(
    email: str, department: str = "Engineering", level: int | None = 3, **extra: Any
) -> DirectoryPerson:
    return DirectoryPerson(
        email=email,
        name=email.split("@")[0].title(),
        department=department,
        level=level,
        external_id=extra.pop("external_id", email.split("@")[0]),
        **extra,
    )


@pytest.fixture
def hr() -> FakeHris:
    return FakeHris()


@pytest.fixture
def rt(database_url: str, tmp_path: Path, hr: FakeHris) -> Iterator[Runtime]:
    with temporary_runtime(
        tmp_path, database_url=database_url, config=CONFIG, plugins=[("fakehr", hr)]
    ) as runtime:
        yield runtime


@pytest.fixture
def gateway(database_url: str, tmp_path: Path, rt: Runtime) -> Iterator[Runtime]:
    """Another process's view of the same database: it learns of changes only through the generation."""
    with temporary_runtime(tmp_path, database_url=database_url, config=None) as runtime:
        yield runtime


def people_rows(rt: Runtime) -> dict[str, dict[str, Any]]:
    return {p["email"]: p for p in rt.admin.people()}


def call(gw: Runtime, key: str) -> Any:
    admission = gw.admit(intent(key))
    gw.settle(admission.request_id, Usage(input_tokens=100, output_tokens=10))
    return admission


def test_joiner_mover_leaver_end_to_end(rt: Runtime, gateway: Runtime, hr: FakeHris) -> None:
    hr.people = [
        person("zoe@acme.example", level=7),
        person("max@acme.example", department="Product", level=None),
    ]
    joined = run_sync(rt)
    assert joined.plan.counts()["join"] == 2
    rows = people_rows(rt)
    assert rows["zoe@acme.example"]["tier"] == "eng-principal"
    assert rows["zoe@acme.example"]["source"] == "fakehr"
    assert rows["max@acme.example"]["team"] == "product"
    keys = {k["email"]: k["key"] for k in joined.issued_keys}
    assert set(keys) == {"zoe@acme.example", "max@acme.example"}
    assert call(gateway, keys["zoe@acme.example"]).principal.tier == "eng-principal"
    assert call(gateway, keys["max@acme.example"]).principal.cost_center == "CC-PROD-042"

    # mover: Zoe goes to Product; her next request is governed by the new tier and team
    hr.people = [person("zoe@acme.example", department="Product", level=7), hr.people[1]]
    moved = run_sync(rt)
    assert [(c.action, c.email) for c in moved.plan.changes] == [("move", "zoe@acme.example")]
    assert moved.plan.changes[0].after == {
        "team_id": "product",
        "tier_id": "product",
        "cost_center": "CC-PROD-042",
    }
    principal = call(gateway, keys["zoe@acme.example"]).principal
    assert (principal.team_id, principal.tier) == ("product", "product")

    # leaver: terminated; the very next request with her key is refused, no refresh needed
    hr.people = [
        person("zoe@acme.example", department="Product", level=7, status="terminated", end_date="2020-01-31"),
        hr.people[1],
    ]
    left = run_sync(rt)
    assert [(c.action, c.email) for c in left.plan.changes] == [("leave", "zoe@acme.example")]
    assert left.revoked_keys == 1
    with pytest.raises(Denied) as refused:
        gateway.admit(intent(keys["zoe@acme.example"]))
    assert refused.value.status == 401
    assert people_rows(rt)["zoe@acme.example"]["status"] == "inactive"
    assert call(gateway, keys["max@acme.example"]).principal.team_id == "product"


def test_person_wallet_follows_a_mover_and_the_old_team_keeps_its_spend(rt: Runtime, hr: FakeHris) -> None:
    hr.people = [person("zoe@acme.example", level=7)]
    key = run_sync(rt).issued_keys[0]["key"]
    call(rt, key)
    hr.people = [person("zoe@acme.example", department="Product", level=7)]
    run_sync(rt)
    call(rt, key)
    wallets = {(w["scope"], w["scope_id"]): w for w in rt.admin.budgets()}
    person_wallet = wallets[("person", rt.directory.person_by_email("zoe@acme.example").id)]  # type: ignore[union-attr]
    assert person_wallet["limit_nanos"] == 1500 * 10**9  # the new tier's budget...
    engineering, product = wallets[("team", "engineering")], wallets[("team", "product")]
    assert engineering["spent_nanos"] > 0 and product["spent_nanos"] > 0
    # ...and one person wallet carrying both calls: it re-homes, it is not reset
    assert person_wallet["spent_nanos"] == engineering["spent_nanos"] + product["spent_nanos"]


def test_dry_run_shows_the_diff_and_writes_nothing(rt: Runtime, hr: FakeHris) -> None:
    hr.people = [person("zoe@acme.example", level=7)]
    generation = rt.ledger.generation()
    result = run_sync(rt, dry_run=True)
    assert result.dry_run and [c.action for c in result.plan.changes] == ["join"]
    assert result.to_dict()["changes"][0]["after"]["tier_id"] == "eng-principal"
    assert "zoe@acme.example" not in people_rows(rt)
    assert result.issued_keys == []
    assert rt.ledger.generation() == generation
    assert run_sync(rt).plan.counts()["join"] == 1  # the real run does what the dry run showed


def test_a_failing_hris_applies_nothing(rt: Runtime, hr: FakeHris) -> None:
    hr.people = [person("zoe@acme.example")]
    hr.fail = RuntimeError("page 2 of 3 timed out")
    with pytest.raises(SyncFailed, match="nothing applied"):
        run_sync(rt)
    assert "zoe@acme.example" not in people_rows(rt)
    hr.fail = None
    run_sync(rt)
    assert hr.calls[-1][0] is None  # the failed run did not advance the watermark


def test_a_failure_half_way_through_applying_rolls_everything_back(
    rt: Runtime, hr: FakeHris, monkeypatch: pytest.MonkeyPatch
) -> None:
    hr.people = [person("zoe@acme.example"), person("max@acme.example")]
    real = sync_module._issue_key
    calls = []

    def flaky(*args: Any) -> dict[str, str]:
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return real(*args)

    monkeypatch.setattr(sync_module, "_issue_key", flaky)
    with pytest.raises(RuntimeError):
        run_sync(rt)
    assert not {"zoe@acme.example", "max@acme.example"} & set(people_rows(rt))
    with rt.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM checkpoints")).scalar_one() == 0


def test_records_the_rules_cannot_place_are_reported_not_guessed(rt: Runtime, hr: FakeHris) -> None:
    hr.people = [
        person("lee@acme.example", department="Legal"),
        DirectoryPerson(email="", department="Engineering", external_id="e9"),
    ]
    result = run_sync(rt)
    reasons = {u.email: u.reason for u in result.plan.unplaced}
    assert "department='Legal'" in reasons["lee@acme.example"]
    assert reasons[None] == "no work email"
    assert "lee@acme.example" not in people_rows(rt)


def test_a_level_rule_never_places_someone_without_a_level(rt: Runtime, hr: FakeHris) -> None:
    hr.people = [person("kim@acme.example", level=None)]
    result = run_sync(rt)
    # the catch-all Engineering rule has no level bound, so it places Kim; a level-bound one could not
    assert people_rows(rt)["kim@acme.example"]["tier"] == "eng-mid"
    assert result.plan.unplaced == []


def test_absent_from_a_complete_sync_means_left(rt: Runtime, gateway: Runtime, hr: FakeHris) -> None:
    hr.people = [person("zoe@acme.example"), person("max@acme.example")]
    keys = {k["email"]: k["key"] for k in run_sync(rt).issued_keys}
    hr.people = [person("max@acme.example")]
    result = run_sync(rt)
    assert [(c.action, c.reason) for c in result.plan.changes] == [("leave", "absent from a complete sync")]
    with pytest.raises(Denied):
        gateway.admit(intent(keys["zoe@acme.example"]))
    # an incremental batch says nothing about absent people
    hr.complete, hr.people = False, []
    assert run_sync(rt).plan.changes == []
    assert people_rows(rt)["max@acme.example"]["status"] == "active"


def test_config_people_are_left_to_the_config_but_a_termination_still_revokes(
    rt: Runtime, gateway: Runtime, hr: FakeHris
) -> None:
    key, _ = rt.admin.issue_key("ada@acme.example")
    hr.people = [person("ada@acme.example", department="Product")]
    result = run_sync(rt)
    assert result.plan.skipped == [
        {"source": "fakehr", "email": "ada@acme.example", "reason": "managed by allotment.yaml"}
    ]
    assert people_rows(rt)["ada@acme.example"]["team"] == "engineering"
    hr.people = [person("ada@acme.example", status="terminated")]
    assert run_sync(rt).revoked_keys == 1
    with pytest.raises(Denied) as refused:
        gateway.admit(intent(key))
    assert refused.value.status == 401


def test_incremental_syncs_pass_the_last_start_and_the_plugin_settings(rt: Runtime, hr: FakeHris) -> None:
    first = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    run_sync(rt, now=first)
    run_sync(rt)
    run_sync(rt, full=True)
    assert [c[0] for c in hr.calls] == [None, first, None]
    assert hr.calls[0][1] == {"token": "t0k"}


def test_future_starters_wait_for_their_start_date(rt: Runtime, hr: FakeHris) -> None:
    hr.people = [person("new@acme.example", start_date="2099-01-05")]
    result = run_sync(rt)
    assert result.plan.skipped[0]["reason"] == "starts on 2099-01-05"
    assert "new@acme.example" not in people_rows(rt)


def test_rejoiner_is_reactivated_without_old_keys(rt: Runtime, hr: FakeHris, gateway: Runtime) -> None:
    hr.people = [person("zoe@acme.example")]
    old_key = run_sync(rt).issued_keys[0]["key"]
    hr.people = [person("zoe@acme.example", status="terminated")]
    run_sync(rt)
    hr.people = [person("zoe@acme.example")]
    result = run_sync(rt)
    assert [c.action for c in result.plan.changes] == ["rejoin"]
    assert people_rows(rt)["zoe@acme.example"]["status"] == "active"
    with pytest.raises(Denied):
        gateway.admit(intent(old_key))


def test_rules_naming_unknown_tiers_are_refused_before_fetching(tmp_path: Path, hr: FakeHris) -> None:
    bad = (
        SAMPLE_CONFIG
        + "plugins:\n  sync:\n    rules:\n      - {department: X, tier: nope, team: engineering}\n"
    )
    with (
        temporary_runtime(tmp_path, config=bad, plugins=[("fakehr", hr)]) as runtime,
        pytest.raises(ConfigError, match="unknown tier 'nope'"),
    ):
        run_sync(runtime)
    assert hr.calls == []


def test_sync_job_is_registered_and_hides_secrets(rt: Runtime, hr: FakeHris) -> None:
    from allotment.jobs import collect_jobs

    hr.people = [person("zoe@acme.example")]
    job = collect_jobs(rt).get("sync-directory")
    summary = job.func(rt)
    assert summary["counts"]["join"] == 1
    assert "key" not in summary["issued_keys"][0] and summary["issued_keys"][0]["key_id"].startswith("key_")
