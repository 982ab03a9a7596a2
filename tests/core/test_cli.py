"""The core CLI as a user runs it: real processes, real exit codes, JSON on every listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ALLOTMENT = str(Path(sys.executable).with_name("allotment"))


def run(tmp: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ALLOTMENT_DATABASE_URL=f"sqlite:///{tmp / 'cli.db'}")
    result = subprocess.run([ALLOTMENT, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    run(tmp, "init")
    run(tmp, "apply", "-f", "allotment.yaml")
    return tmp


def test_init_refuses_to_overwrite(org: Path) -> None:
    result = run(org, "init", ok=False)
    assert result.returncode == 2
    assert "exists" in result.stderr


def test_keys_issue_list_revoke(org: Path) -> None:
    issued = json.loads(run(org, "keys", "issue", "--person", "grace@acme.example", "--json").stdout)
    assert issued["key"].startswith("sk-allot-") and issued["key_id"].startswith("key_")
    listed = json.loads(run(org, "keys", "list", "--json").stdout)
    mine = [k for k in listed if k["key_id"] == issued["key_id"]]
    assert mine and mine[0]["status"] == "active" and mine[0]["email"] == "grace@acme.example"
    assert issued["key"] not in run(org, "keys", "list", "--json").stdout  # never shown again
    run(org, "keys", "revoke", issued["key_id"])
    listed = json.loads(run(org, "keys", "list", "--json").stdout)
    assert next(k for k in listed if k["key_id"] == issued["key_id"])["status"] == "revoked"


def test_unknown_person_and_unknown_key_fail_clearly(org: Path) -> None:
    result = run(org, "keys", "issue", "--person", "nobody@acme.example", ok=False)
    assert result.returncode == 2 and "no person" in result.stderr
    result = run(org, "keys", "revoke", "key_doesnotexist", ok=False)
    assert result.returncode == 2 and "no key" in result.stderr


def test_bad_config_names_the_line_and_changes_nothing(org: Path) -> None:
    before = run(org, "keys", "list", "--json").stdout
    text = (org / "allotment.yaml").read_text().replace("tier: support}", "tier: nope}")
    (org / "bad.yaml").write_text(text)
    result = run(org, "apply", "-f", "bad.yaml", ok=False)
    assert result.returncode == 2
    assert "bad.yaml:" in result.stderr and "unknown tier 'nope'" in result.stderr
    assert run(org, "keys", "list", "--json").stdout == before


def test_budgets_and_audit_after_traffic(org: Path) -> None:
    from allotment import Usage
    from allotment.runtime import Runtime
    from allotment.settings import Settings
    from allotment.testing import intent

    key = json.loads(run(org, "keys", "issue", "--person", "pat@acme.example", "--json").stdout)["key"]
    with Runtime.open(Settings(database_url=f"sqlite:///{org / 'cli.db'}"), load_entrypoints=False) as rt:
        admission = rt.admit(intent(key))
        rt.settle(admission.request_id, Usage(input_tokens=8000, cache_read_tokens=2000, output_tokens=1200))
    wallets = json.loads(run(org, "budgets", "--json").stdout)
    person = next(w for w in wallets if w["scope"] == "person")
    assert person["spent_usd"] == "0.01155" and person["limit_usd"] == "1500"
    audit = json.loads(run(org, "audit", "verify", "--seal", "--json").stdout)
    assert audit["ok"] and audit["events"] == 1 and audit["entries"] == 3


def test_plugins_lists_every_builtin_with_its_hooks(org: Path) -> None:
    plugins = {p["name"]: p for p in json.loads(run(org, "plugins").stdout)}
    assert plugins["allotment.defaults.ledger"]["hooks"] == ["reconcile", "reserve"]
    assert plugins["allotment.defaults.pricing"]["hooks"] == ["price"]
    assert "check_policy" in plugins["allotment.defaults.policy"]["hooks"]


def test_disabled_builtin_disappears(org: Path) -> None:
    env = dict(os.environ, ALLOTMENT_DISABLE_PLUGINS="allotment.defaults.jobs")
    result = subprocess.run(
        [ALLOTMENT, "plugins"], cwd=org, env=env, capture_output=True, text=True, timeout=60
    )
    names = {p["name"] for p in json.loads(result.stdout)}
    assert "allotment.defaults.jobs" not in names and "allotment.defaults.ledger" in names


def test_jobs_list_and_run(org: Path) -> None:
    jobs = {j["name"] for j in json.loads(run(org, "jobs", "list", "--json").stdout)}
    assert {"expire-reservations", "deliver-outbox", "seal-ledger"} <= jobs
    assert json.loads(run(org, "jobs", "run", "expire-reservations", "--json").stdout)["result"] == 0
    result = run(org, "jobs", "run", "no-such-job", ok=False)
    assert result.returncode == 2 and "no job named" in result.stderr


def test_db_upgrade_is_idempotent(org: Path) -> None:
    assert "revision 0" in run(org, "db", "upgrade").stdout
    assert "revision 0" in run(org, "db", "upgrade").stdout
