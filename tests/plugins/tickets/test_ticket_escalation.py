"""Escalation end to end: an anomaly seeded into generated traffic opens one ticket per system.

Repeats become comments (Jira, GitHub), re-triggers of the same alert (PagerDuty) or signed updates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from ticket_fakes import GITHUB_TOKEN, REPO, ROUTING_KEY, WEBHOOK_SECRET, FakeTickets, serve

from allotment.anomaly import detect
from allotment.outbox import deliver
from allotment.plugins import create_plugin_manager, describe_plugins
from allotment.runtime import Runtime
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime
from allotment.types import Usage
from allotment_tickets import TicketEscalation

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
STEADY = Usage(input_tokens=10_000, output_tokens=1_000)


@pytest.fixture
def fake() -> Iterator[FakeTickets]:
    with serve(FakeTickets()) as tickets:
        yield tickets


def _config(fake: FakeTickets, jira_email: str = "ops@acme.example") -> str:
    return (
        SAMPLE_CONFIG
        + f"""
plugins:
  anomaly: {{min_spend_usd: 0, label_scopes: [feature]}}
  tickets:
    jira: {{base_url: '{fake.url}/jira', email: {jira_email}, api_token: env:TEST_JIRA_TOKEN, project: FIN}}
    github: {{api_base: '{fake.url}/github', repo: {REPO}, token: {GITHUB_TOKEN}}}
    pagerduty: {{url: '{fake.url}/pagerduty/v2/enqueue', routing_key: {ROUTING_KEY}}}
    webhook: {{url: '{fake.url}/hook', secret: {WEBHOOK_SECRET}}}
"""
    )


def _traffic(rt: Runtime) -> str:
    """Eight steady days (2 search calls, 1 content-gen call), then today content-gen takes over.

    The key and the team spend the same as every day; only the content-gen workflow spikes.
    """
    key, _ = rt.admin.issue_key("ada@acme.example")
    for day in range(1, 9):
        at = NOW - timedelta(days=day, hours=2)
        for i, feature in enumerate(("search", "search", "content-gen")):
            rt.record(intent(key, at=at + timedelta(minutes=i), labels={"feature": feature}), STEADY)
    for i in range(3):
        at = NOW - timedelta(hours=2, minutes=i)
        rt.record(intent(key, at=at, labels={"feature": "content-gen"}, trace_id=f"tr-{i}"), STEADY)
    return key


@pytest.fixture
def acme(tmp_path: Path, fake: FakeTickets, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("TEST_JIRA_TOKEN", "jira-token")
    with temporary_runtime(tmp_path, config=_config(fake), plugins=[("tickets", TicketEscalation())]) as rt:
        _traffic(rt)
        yield rt


def test_one_anomaly_opens_exactly_one_ticket_per_system_carrying_delta_top_type_and_traces(
    acme: Runtime, fake: FakeTickets
) -> None:
    (anomaly,) = detect(acme, NOW)
    assert (anomaly.rule, anomaly.scope_id) == ("spend_spike", "feature=content-gen")
    report = deliver(acme, now=NOW)
    assert report.errors == [] and report.delivered == 1

    (jira,) = fake.jira_issues.values()
    assert jira["labels"] == ["ai-spend-anomaly", f"allot-{anomaly.dedup_key}"]
    assert jira["summary"].startswith("[AI spend] label feature=content-gen spent $0.04 today, 300%")
    jira_text = json.dumps(jira["description"])
    (github,) = fake.github_issues
    (pd_event,) = fake.pd_events
    (hook,) = fake.webhook_deliveries
    for body in (jira_text, github["body"], json.dumps(pd_event["payload"]["custom_details"])):
        assert "Cost delta" in body and "$0.02" in body
        assert "openai/gpt-5.4-mini (sync, content-gen)" in body  # the top-cost request type
        assert "tr-0, tr-1, tr-2" in body
    assert f"<!-- allotment:dedup={anomaly.dedup_key} -->" in github["body"]
    assert pd_event["dedup_key"] == f"allotment:acme:{anomaly.dedup_key}"
    assert pd_event["payload"]["severity"] == "critical" and pd_event["payload"]["class"] == "spend_spike"
    assert hook["type"] == "anomaly.opened" and hook["anomaly"]["details"]["trace_ids"] == [
        "tr-0",
        "tr-1",
        "tr-2",
    ]


def test_a_repeat_comments_on_the_same_ticket_and_retriggers_the_same_alert(
    acme: Runtime, fake: FakeTickets
) -> None:
    first = detect(acme, NOW)
    deliver(acme, now=NOW)
    later = NOW + timedelta(hours=6)
    key, _ = acme.admin.issue_key("ada@acme.example")
    acme.record(intent(key, at=later - timedelta(minutes=5), labels={"feature": "content-gen"}), STEADY)
    repeat = detect(acme, later)
    assert [a.dedup_key for a in repeat] == [a.dedup_key for a in first]
    deliver(acme, now=later)
    deliver(acme, now=later + timedelta(minutes=1))  # nothing new: nothing sent again
    assert len(fake.jira_issues) == 1 and len(fake.github_issues) == 1
    (comments,) = fake.jira_comments.values()
    assert len(comments) == 1 and "still present" in json.dumps(comments[0])
    assert [len(c) for c in fake.github_comments.values()] == [1]
    assert list(fake.pd_alerts.values()) == [2]  # two triggers, one alert
    assert [h["type"] for h in fake.webhook_deliveries] == ["anomaly.opened", "anomaly.repeated"]


def test_rate_limits_delay_escalation_without_duplicating_any_ticket(
    acme: Runtime, fake: FakeTickets
) -> None:
    detect(acme, NOW)
    fake.rate_limit("/jira/", 2, retry_after="1")
    first = deliver(acme, now=NOW)
    assert first.failed == 1 and "429" in first.errors[0]
    # the systems that succeeded are recorded: the retries below must not reopen them
    assert len(fake.github_issues) == 1 and len(fake.pd_events) == 1 and fake.jira_issues == {}
    deliver(acme, now=NOW + timedelta(seconds=3))
    deliver(acme, now=NOW + timedelta(seconds=30))
    assert len(fake.jira_issues) == 1
    assert len(fake.github_issues) == 1 and len(fake.pd_events) == 1 and len(fake.webhook_deliveries) == 1


def test_a_create_whose_answer_was_lost_is_found_by_its_label_not_created_twice(
    acme: Runtime, fake: FakeTickets
) -> None:
    detect(acme, NOW)
    fake.lose_answer("/github/", 1)
    fake.lose_answer("/jira/rest/api/3/issue", 1)
    assert deliver(acme, now=NOW).failed == 1
    assert len(fake.github_issues) == 1 and len(fake.jira_issues) == 1  # created, answers lost
    assert deliver(acme, now=NOW + timedelta(seconds=5)).errors == []
    assert len(fake.github_issues) == 1 and len(fake.jira_issues) == 1
    with acme.engine.connect() as conn:
        rows = conn.execute(text("SELECT name, data FROM checkpoints WHERE name LIKE 'tickets:%'")).fetchall()
    links = {name.split(":")[1]: json.loads(data) for name, data in rows}
    assert links["github"]["remote_id"] == "1" and links["jira"]["remote_id"] == "FIN-42"
    assert {link["state"] for link in links.values()} == {"open"}


def test_refused_credentials_are_reported_and_open_nothing(
    tmp_path: Path, fake: FakeTickets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_JIRA_TOKEN", "wrong")
    config = _config(fake).replace(f"token: {GITHUB_TOKEN}", "token: nope").replace(ROUTING_KEY, "short")
    with temporary_runtime(tmp_path, config=config, plugins=[("tickets", TicketEscalation())]) as rt:
        _traffic(rt)
        detect(rt, NOW)
        report = deliver(rt, now=NOW)
    assert report.failed == 1 and "jira refused the request (401)" in report.errors[0]
    assert fake.jira_issues == {} and fake.github_issues == [] and fake.pd_events == []
    assert len(fake.webhook_deliveries) == 1  # the one correctly configured system still escalates


def test_the_webhook_signature_is_hmac_sha256_over_timestamp_and_body(
    acme: Runtime, fake: FakeTickets
) -> None:
    config = _config(fake).replace(f"secret: {WEBHOOK_SECRET}", "secret: other-secret")
    acme.apply_config_text(config)
    detect(acme, NOW)
    report = deliver(acme, now=NOW)
    assert "webhook refused the request (401)" in report.errors[0]
    assert fake.webhook_deliveries == []


def test_the_entry_point_loads_tickets_and_the_environment_can_disable_it() -> None:
    hooks = {info.name: info.hooks for info in describe_plugins(create_plugin_manager(environ={}))}
    assert set(hooks["tickets"]) == {"anomaly_detected", "runtime_opened"}
    off = create_plugin_manager(environ={"ALLOTMENT_DISABLE_PLUGINS": "tickets,slack"})
    assert not {"tickets", "slack"} & {info.name for info in describe_plugins(off)}
