"""The anomaly detector: each rule fires on seeded traffic, stays quiet on steady traffic, dedups.

Traffic is recorded with explicit timestamps and the detector runs at an explicit ``now``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from allotment.anomaly import detect
from allotment.hookspecs import hookimpl
from allotment.outbox import deliver
from allotment.runtime import Runtime
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime
from allotment.types import Anomaly, Usage

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 10:00 in New York, Acme's time zone
CONFIG = (
    SAMPLE_CONFIG
    + """
plugins:
  anomaly: {min_spend_usd: 0, min_requests: 10, token_ceiling: 50000}
"""
)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Anomaly] = []

    @hookimpl
    def anomaly_detected(self, anomaly: Anomaly) -> None:
        self.seen.append(anomaly)


def _seed(rt: Runtime, key: str, at: datetime, n: int, usage: Usage, **extra: Any) -> int:
    """Record ``n`` calls a minute apart; returns the cost of one."""
    cost = 0
    for i in range(n):
        cost = rt.record(intent(key, at=at + timedelta(minutes=i), **extra), usage).cost_nanos
    return cost


STEADY = Usage(input_tokens=10_000, output_tokens=1_000)


@pytest.fixture
def acme(tmp_path: Path) -> Any:
    recorder = Recorder()
    with temporary_runtime(tmp_path, config=CONFIG, plugins=[("recorder", recorder)]) as rt:
        ada, _ = rt.admin.issue_key("ada@acme.example")
        grace, _ = rt.admin.issue_key("grace@acme.example")
        for day in range(1, 9):  # eight steady days before today
            at = NOW - timedelta(days=day, hours=2)
            _seed(rt, ada, at, 3, STEADY, labels={"feature": "search-rerank"})
            _seed(rt, grace, at, 3, STEADY)
        yield rt, ada, grace, recorder


def test_spend_spike_flags_the_spiking_team_key_and_workflow_but_not_the_steady_key(acme: Any) -> None:
    rt, ada, grace, _ = acme
    labels = {"feature": "search-rerank"}
    one = _seed(rt, ada, NOW - timedelta(hours=3), 12, STEADY, labels=labels, trace_id="tr-1")
    _seed(rt, grace, NOW - timedelta(hours=3), 3, STEADY)
    found = [a for a in detect(rt, NOW) if a.rule == "spend_spike"]
    scopes = sorted((a.scope, a.scope_id) for a in found)
    key_ids = {a.scope_id for a in found if a.scope == "key"}
    assert len(key_ids) == 1
    assert ("team", "engineering") in scopes and ("label", "feature=search-rerank") in scopes
    assert len(found) == 3
    label = next(a for a in found if a.scope == "label")
    # 12 requests today against 3 a day: 400%, the delta is 9 requests' cost
    assert label.details["cost_today_nanos"] == 12 * one
    assert label.details["baseline_nanos"] == 3 * one
    assert label.details["cost_delta_nanos"] == 9 * one
    assert label.severity == "critical"
    assert label.details["top_request_type"]["model"] == "gpt-5.4-mini"
    assert label.details["top_request_type"]["requests"] == 12
    assert label.details["trace_ids"] == ["tr-1"]
    team = next(a for a in found if a.scope == "team")
    assert team.details["cost_today_nanos"] == 15 * one and team.details["baseline_nanos"] == 6 * one


def test_steady_traffic_raises_nothing(acme: Any) -> None:
    rt, ada, grace, _ = acme
    _seed(rt, ada, NOW - timedelta(hours=3), 3, STEADY, labels={"feature": "search-rerank"})
    _seed(rt, grace, NOW - timedelta(hours=3), 4, STEADY)  # 133%: under the 150% line
    assert detect(rt, NOW) == []


def test_a_young_scope_is_not_compared_with_thirty_empty_days(tmp_path: Path) -> None:
    with temporary_runtime(tmp_path, config=CONFIG) as rt:
        ada, _ = rt.admin.issue_key("ada@acme.example")
        _seed(rt, ada, NOW - timedelta(days=2), 3, STEADY)
        _seed(rt, ada, NOW - timedelta(hours=1), 12, STEADY)
        assert [a for a in detect(rt, NOW) if a.rule == "spend_spike"] == []


def test_a_request_over_the_token_ceiling_is_one_anomaly_per_key(acme: Any) -> None:
    rt, ada, _, _ = acme
    big = Usage(input_tokens=60_000, output_tokens=2_000)
    _seed(rt, ada, NOW - timedelta(hours=1), 2, big, trace_id="tr-big")
    found = [a for a in detect(rt, NOW) if a.rule == "token_ceiling"]
    assert len(found) == 1
    assert found[0].scope == "key"
    assert found[0].details["offending_requests"] == 2
    assert found[0].details["max_tokens"] == 62_000
    assert found[0].details["trace_ids"] == ["tr-big"]


def test_retry_rate_over_ten_percent_for_a_prompt_version(acme: Any) -> None:
    rt, ada, grace, _ = acme
    small = Usage(input_tokens=100, output_tokens=10)
    _seed(rt, ada, NOW - timedelta(hours=2), 8, small, labels={"prompt_version": "v14"})
    _seed(rt, ada, NOW - timedelta(hours=1), 2, small, labels={"prompt_version": "v14"}, retry_of="req_x")
    _seed(rt, grace, NOW - timedelta(hours=2), 9, small, labels={"prompt_version": "v15"})
    _seed(rt, grace, NOW - timedelta(hours=1), 1, small, labels={"prompt_version": "v15"}, retry_of="req_y")
    found = [a for a in detect(rt, NOW) if a.rule == "retry_rate"]
    assert [(a.scope_id, a.details["retry_rate"]) for a in found] == [("prompt_version=v14", 0.2)]


def test_output_over_three_times_input_on_extraction(acme: Any) -> None:
    rt, ada, _, _ = acme
    verbose = Usage(input_tokens=200, output_tokens=800)
    _seed(rt, ada, NOW - timedelta(hours=2), 5, verbose, labels={"task": "extraction", "feature": "invoices"})
    _seed(rt, ada, NOW - timedelta(hours=2), 5, verbose, labels={"task": "drafting", "feature": "replies"})
    found = [a for a in detect(rt, NOW) if a.rule == "output_ratio"]
    assert [a.scope_id for a in found] == ["task=extraction,workflow=invoices"]
    assert found[0].details["ratio"] == 4.0


def test_a_persisting_anomaly_is_queued_once_per_bucket_with_a_stable_dedup_key(acme: Any) -> None:
    rt, ada, _, recorder = acme
    _seed(rt, ada, NOW - timedelta(hours=1), 1, Usage(input_tokens=60_000), trace_id="tr")
    first = detect(rt, NOW)
    assert len(first) == 1
    assert detect(rt, NOW + timedelta(minutes=30)) == []  # same bucket: nothing new
    later = detect(rt, NOW + timedelta(hours=6))
    assert [a.dedup_key for a in later] == [first[0].dedup_key]
    tomorrow = detect(rt, NOW + timedelta(days=1))
    assert tomorrow == []  # yesterday's request is not today's anomaly
    deliver(rt, now=NOW + timedelta(hours=7))
    assert [a.rule for a in recorder.seen] == ["token_ceiling", "token_ceiling"]
    assert recorder.seen[0].details == first[0].details
    assert recorder.seen[0].at == NOW


def test_detector_job_is_registered_and_settings_are_validated(tmp_path: Path) -> None:
    from allotment.errors import ConfigError
    from allotment.jobs import collect_jobs

    with temporary_runtime(tmp_path, config=SAMPLE_CONFIG + "plugins:\n  anomaly: {spike: 2}\n") as rt:
        assert "detect-anomalies" in [job.name for job in collect_jobs(rt).jobs()]
        with pytest.raises(ConfigError, match="unknown keys"):
            detect(rt, NOW)


def test_detector_runs_on_both_backends(runtime: Runtime) -> None:
    runtime.apply_config_text(CONFIG)
    ada, _ = runtime.admin.issue_key("ada@acme.example")
    _seed(runtime, ada, NOW - timedelta(hours=1), 1, Usage(input_tokens=60_000), trace_id="tr")
    assert [a.rule for a in detect(runtime, NOW)] == ["token_ceiling"]
    assert detect(runtime, NOW) == []


def _expire_all(rt: Runtime) -> datetime:
    """Let every open hold's TTL pass; returns an instant just after they expired."""
    later = datetime.now(UTC) + timedelta(seconds=rt.reservation_ttl_seconds + 1)
    rt.expire_reservations(now=later)
    return later + timedelta(seconds=1)


def test_holds_that_expired_without_a_settle_are_one_anomaly_per_key(runtime: Runtime) -> None:
    """A call that was admitted and never settled (a lost log event, a crashed adapter) may
    have been served uncharged: the detector names the key, the holds and the request ids.
    A settled call and a late settle after expiry are not listed. Both databases."""
    runtime.apply_config_text(CONFIG)
    ada, ada_key_id = runtime.admin.issue_key("ada@acme.example")
    lost = runtime.admit(intent(ada))
    settled = runtime.admit(intent(ada))
    runtime.settle(settled.request_id, Usage(input_tokens=1000, output_tokens=100))
    late = runtime.admit(intent(ada))
    now = _expire_all(runtime)
    assert runtime.reservation_state(lost.request_id) == "expired"
    runtime.settle(late.request_id, Usage(input_tokens=1000, output_tokens=100))  # a late settle

    (found,) = [a for a in detect(runtime, now) if a.rule == "unsettled_holds"]
    assert (found.scope, found.scope_id) == ("key", ada_key_id)
    assert found.details["holds"] == 1
    assert found.details["request_ids"] == [lost.request_id]
    assert found.details["held_nanos"] == lost.reservation.amount_nanos > 0
    assert found.details["cost_delta_nanos"] == lost.reservation.amount_nanos
    assert found.details["models"] == ["openai/gpt-5.4-mini"]
    assert "1 call(s) admitted" in found.summary
    assert [a for a in detect(runtime, now) if a.rule == "unsettled_holds"] == []  # deduplicated


def test_unsettled_holds_reach_observers_and_can_be_disabled(tmp_path: Path) -> None:
    recorder = Recorder()
    with temporary_runtime(tmp_path, config=CONFIG, plugins=[("recorder", recorder)]) as rt:
        ada, _ = rt.admin.issue_key("ada@acme.example")
        rt.admit(intent(ada))
        now = _expire_all(rt)
        assert [a.rule for a in detect(rt, now)] == ["unsettled_holds"]
        deliver(rt)
        assert [a.rule for a in recorder.seen] == ["unsettled_holds"]
        rt.apply_config_text(
            CONFIG.replace("token_ceiling: 50000}", "token_ceiling: 50000, disabled: [unsettled_holds]}")
        )
        grace, _ = rt.admin.issue_key("grace@acme.example")  # a new scope: not a repeat
        rt.admit(intent(grace))
        assert detect(rt, _expire_all(rt)) == []
