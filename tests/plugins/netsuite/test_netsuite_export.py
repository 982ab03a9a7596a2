"""NetSuite export against a local SuiteTalk fake that verifies every TBA signature.

Spend is seeded through admit/settle; journals must match the ledger to the cent and never duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from fake_netsuite import FakeNetSuite, serve

import allotment_netsuite
import allotment_netsuite.client as client_module
from allotment.directory import period_bounds
from allotment.errors import ConfigError
from allotment.runtime import Runtime
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime
from allotment.types import Usage
from allotment_netsuite.client import NetSuiteError
from allotment_netsuite.oauth1 import sign, signature_base_string


def config(url: str, **overrides: str) -> str:
    mapping = overrides.get(
        "mapping",
        """
      CC-ENG-001: {account: "672", account_name: "6720 Software - AI APIs", department: "12",
                   department_name: "R&D : ML Platform", class: "3", class_name: AI Tools}
      CC-PROD-001: {account: "673", department: "14", subsidiary: "2"}""",
    )
    return (
        SAMPLE_CONFIG
        + f"""
plugins:
  netsuite:
    account_id: 1234567_SB1
    base_url: "{url}"
    consumer_key: env:TEST_NS_CK
    consumer_secret: env:TEST_NS_CS
    token_id: env:TEST_NS_TK
    token_secret: env:TEST_NS_TS
    subsidiaries:
      "1": {{name: "Parent Co : US", currency: "1", currency_name: USD, credit_account: "215",
            credit_account_name: "2150 Accrued Liabilities"}}
      "2": {{name: "Parent Co : UK", currency: "2", currency_name: GBP, credit_account: "215"}}
    cost_centers:{mapping}
"""
    )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(client_module, "default_sleep", waited.append)
    return waited


@pytest.fixture
def ns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNetSuite]:
    for name, value in {
        "TEST_NS_CK": "ck-1",
        "TEST_NS_CS": "cs-1",
        "TEST_NS_TK": "tk-1",
        "TEST_NS_TS": "ts-1",
    }.items():
        monkeypatch.setenv(name, value)
    with serve(FakeNetSuite()) as fake:
        yield fake


@pytest.fixture
def rt(database_url: str, tmp_path: Path, ns: FakeNetSuite, sleeps: list[float]) -> Iterator[Runtime]:
    with temporary_runtime(
        tmp_path, database_url=database_url, config=config(ns.url), plugins=[("netsuite", allotment_netsuite)]
    ) as runtime:
        yield runtime


def spend(rt: Runtime, email: str, calls: int = 1, output: int = 15_777) -> int:
    key, _ = rt.admin.issue_key(email)
    total = 0
    for _ in range(calls):
        admission = rt.admit(intent(key, input_tokens=120_000, max_output_tokens=output))
        total += rt.settle(admission.request_id, Usage(input_tokens=111_111, output_tokens=output)).cost_nanos
    assert total > 10**7  # over a cent, so every journal has lines
    return total


def cents(nanos: int) -> float:
    return float((Decimal(nanos) / Decimal(10**9)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def period_now(rt: Runtime) -> str:
    return period_bounds(datetime.now(UTC), rt.directory.timezone)[0]


def export(rt: Runtime, **options: Any) -> Any:
    return rt.hooks.export("netsuite", period_now(rt), {"runtime": rt, **options})


def test_signer_matches_the_oauth_core_specification_example() -> None:
    params = [
        ("file", "vacation.jpg"),
        ("size", "original"),
        ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
        ("oauth_token", "nnch734d00sl2jdk"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "1191242096"),
        ("oauth_nonce", "kllo9940pd9333jh"),
        ("oauth_version", "1.0"),
    ]
    base = signature_base_string("GET", "http://photos.example.net/photos", params)
    assert sign(base, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00", digest="sha1") == "tR3+Ty81lMeYAr/Fid0kMTYa/WM="


def test_a_month_posts_one_balanced_journal_per_subsidiary(rt: Runtime, ns: FakeNetSuite) -> None:
    eng = spend(rt, "ada@acme.example", calls=3) + spend(rt, "grace@acme.example")
    prod = spend(rt, "pat@acme.example", calls=2)
    result = export(rt)
    period = period_now(rt)
    assert result.details["posted"] is True
    assert sorted(ns.journals) == [f"aispend-{period}-1", f"aispend-{period}-2"]
    us = ns.journals[f"aispend-{period}-1"]["body"]
    assert us["subsidiary"] == {"id": "1"} and us["currency"] == {"id": "1"}
    assert us["line"]["items"] == [
        {
            "account": {"id": "672"},
            "debit": cents(eng),
            "memo": "LLM usage - CC-ENG-001",
            "department": {"id": "12"},
            "class": {"id": "3"},
        },
        {
            "account": {"id": "215"},
            "credit": cents(eng),
            "memo": "Accrued AI vendor spend",
            "department": {"id": "12"},
            "class": {"id": "3"},
        },
    ]
    uk = ns.journals[f"aispend-{period}-2"]["body"]
    assert uk["line"]["items"][0]["debit"] == cents(prod)
    assert result.details["journals"][0]["internal_id"] == ns.journals[f"aispend-{period}-1"]["id"]
    # every request was signed, and the SuiteQL checks ran before the first PUT
    methods = [r["method"] for r in ns.log]
    assert methods.index("PUT") > max(i for i, m in enumerate(methods) if m == "POST")


def test_a_re_export_updates_the_same_journals_and_never_duplicates(rt: Runtime, ns: FakeNetSuite) -> None:
    first = spend(rt, "ada@acme.example")
    export(rt)
    ids = {k: v["id"] for k, v in ns.journals.items()}
    more = spend(rt, "ada@acme.example", calls=2)
    export(rt)
    assert {k: v["id"] for k, v in ns.journals.items()} == ids
    journal = next(iter(ns.journals.values()))
    assert journal["puts"] == 2
    assert journal["body"]["line"]["items"][0]["debit"] == cents(first + more)


def test_a_bad_token_secret_is_refused_by_the_signature_check(
    rt: Runtime, ns: FakeNetSuite, monkeypatch: pytest.MonkeyPatch
) -> None:
    spend(rt, "ada@acme.example")
    monkeypatch.setenv("TEST_NS_TS", "not-the-secret")
    with pytest.raises(NetSuiteError, match="INVALID_LOGIN"):
        export(rt)
    assert ns.journals == {}


def test_an_unmapped_cost_center_is_refused_before_any_request(rt: Runtime, ns: FakeNetSuite) -> None:
    spend(rt, "dee@acme.example")  # design: CC-DES-001 has no mapping
    with pytest.raises(ConfigError, match="CC-DES-001"):
        export(rt)
    assert ns.log == []


def test_ids_unknown_to_netsuite_are_refused_before_posting(
    tmp_path: Path, ns: FakeNetSuite, sleeps: list[float]
) -> None:
    bad = config(ns.url, mapping='\n      CC-ENG-001: {account: "999", department: "12"}')
    with temporary_runtime(tmp_path, config=bad, plugins=[("netsuite", allotment_netsuite)]) as runtime:
        spend(runtime, "ada@acme.example")
        with pytest.raises(ConfigError, match="'account': \\['999'\\]"):
            export(runtime)
    assert ns.journals == {} and all(r["method"] == "POST" for r in ns.log)


def test_csv_fallback_writes_the_import_file_without_calling_netsuite(
    rt: Runtime, ns: FakeNetSuite, tmp_path: Path
) -> None:
    eng = spend(rt, "ada@acme.example")
    result = export(rt, mode="csv", destination=str(tmp_path / "out"))
    lines = result.content.decode().splitlines()
    assert lines[0].startswith("External ID,Date,Posting Period,Subsidiary,Currency")
    period = period_now(rt)
    debit, credit = lines[1].split(","), lines[2].split(",")
    assert debit[0] == credit[0] == f"aispend-{period}-1"
    assert debit[3] == "Parent Co : US" and debit[7] == "6720 Software - AI APIs"
    assert debit[8] == credit[9] == f"{cents(eng):.2f}"
    assert debit[11] == "R&D : ML Platform" and debit[12] == "AI Tools"
    assert Path(result.location).read_bytes() == result.content
    assert ns.log == [] and result.details["posted"] is False


def test_throttling_is_retried_and_still_upserts_once(
    rt: Runtime, ns: FakeNetSuite, sleeps: list[float]
) -> None:
    spend(rt, "ada@acme.example")
    ns.throttle = ["2", "1"]
    export(rt)
    assert sleeps == [2.0, 1.0]
    assert [j["puts"] for j in ns.journals.values()] == [1]


def test_other_kinds_are_left_to_other_plugins(rt: Runtime) -> None:
    assert allotment_netsuite.export("focus", "2026-03", {"runtime": rt}) is None


def test_the_installed_plugin_is_listed_and_can_be_disabled(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    allotment = str(Path(sys.executable).with_name("allotment"))
    env = {**os.environ, "ALLOTMENT_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}"}
    listed = json.loads(
        subprocess.run([allotment, "plugins"], env=env, capture_output=True, text=True, timeout=60).stdout
    )
    assert {p["name"]: p["hooks"] for p in listed}["netsuite"] == ["export", "runtime_opened"]
    env["ALLOTMENT_DISABLE_PLUGINS"] = "netsuite"
    listed = json.loads(
        subprocess.run([allotment, "plugins"], env=env, capture_output=True, text=True, timeout=60).stdout
    )
    assert "netsuite" not in {p["name"] for p in listed}
