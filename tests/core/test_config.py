"""allotment.yaml: validated whole, errors name the line, a bad file changes nothing."""

from __future__ import annotations

import pytest

from allotment.config import SAMPLE_CONFIG, parse_config
from allotment.errors import ConfigError
from allotment.runtime import Runtime


def test_sample_config_is_the_acme_org() -> None:
    config = parse_config(SAMPLE_CONFIG)
    assert config.org.name == "Acme"
    assert {t: str(c.monthly_budget) for t, c in config.tiers.items()} == {
        "eng-principal": "3000",
        "eng-senior": "2000",
        "eng-mid": "1200",
        "product": "1500",
        "design": "800",
        "support": "200",
    }
    assert config.tiers["support"].allow == ["openai/gpt-5.4-mini"]
    assert {t.cost_center for t in config.teams.values()} == {
        "CC-ENG-001",
        "CC-PROD-001",
        "CC-DES-001",
        "CC-SUP-001",
    }


def test_unknown_tier_is_named_with_its_line() -> None:
    bad = SAMPLE_CONFIG.replace("team: support, tier: support}", "team: support, tier: astronaut}")
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "allotment.yaml")
    assert "people[5] (sam@acme.example): unknown tier 'astronaut'" in info.value.message
    assert "allotment.yaml:" in info.value.message


def test_negative_budget_names_the_field_and_line() -> None:
    bad = SAMPLE_CONFIG.replace("    monthly_budget: 800\n", "    monthly_budget: -5\n")
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "allotment.yaml")
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if "monthly_budget: -5" in text)
    assert f"allotment.yaml:{line}: tiers.design.monthly_budget" in info.value.message
    assert "negative" in info.value.message


def test_misspelled_key_is_refused() -> None:
    bad = SAMPLE_CONFIG.replace(
        "  timezone: America/New_York", "  timezone: America/New_York\n  timzone: UTC"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "allotment.yaml")
    assert "org.timzone" in info.value.message


@pytest.mark.parametrize(
    "document, fragment",
    [
        ("org: [", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("org: {name: X, timezone: Mars/Olympus}", "unknown time zone"),
        ("org: {name: X}\npolicy: {unpriced: fallback}", "fallback_price"),
    ],
)
def test_malformed_documents_get_clear_errors(document: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    assert fragment in info.value.message


def test_bad_file_applies_no_part_of_itself(runtime: Runtime) -> None:
    before_people = runtime.admin.people()
    before_tiers = runtime.admin.tiers()
    bad = SAMPLE_CONFIG.replace("monthly_budget: 3000", "monthly_budget: 9000").replace(
        "tier: support}", "tier: nope}"
    )
    with pytest.raises(ConfigError):
        runtime.apply_config_text(bad)
    assert runtime.admin.people() == before_people
    assert runtime.admin.tiers() == before_tiers


def test_reapplying_changes_budgets_and_keeps_spend(runtime: Runtime) -> None:
    from allotment import Usage
    from allotment.testing import intent

    key, _ = runtime.admin.issue_key("sam@acme.example")
    admission = runtime.admit(intent(key))
    runtime.settle(admission.request_id, Usage(input_tokens=1000, output_tokens=1000))
    runtime.apply_config_text(SAMPLE_CONFIG.replace("monthly_budget: 200", "monthly_budget: 250"))
    runtime.admit(intent(key))  # wallets pick up the new limit
    person = next(w for w in runtime.admin.budgets() if w["scope"] == "person")
    assert person["limit_usd"] == "250"
    assert person["spent_nanos"] == 750_000 + 4_500_000  # history is never reset
