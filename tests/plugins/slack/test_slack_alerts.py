"""The Slack plugin end to end: ledger thresholds and anomalies through the outbox to a loopback Slack.

Outages (5xx, 429 + Retry-After) delay alerts and never lose or duplicate them, even across a restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_fake import BOT_TOKEN, FakeSlack
from sqlalchemy import text

from allotment.anomaly import detect
from allotment.directory import person_id_for
from allotment.errors import ConfigError
from allotment.outbox import deliver, enqueue
from allotment.plugins import create_plugin_manager, describe_plugins
from allotment.runtime import Runtime
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime
from allotment.types import Anomaly, Usage
from allotment_slack import SlackAlerts

SAM = person_id_for("sam@acme.example")
# $22.50 a call on gpt-5.4-mini: sam's $200 wallet crosses 50% on call 5, 80% on 8, 100% on 9
BIG = Usage(output_tokens=5_000_000)


def _config(settings: str) -> str:
    return SAMPLE_CONFIG + "plugins:\n  slack: " + settings + "\n"


def _slack_runtime(tmp_path: Path, clock: Any, config: str | None) -> AbstractContextManager[Runtime]:
    """A runtime with a fresh Slack plugin on ``clock``; ``config`` as ``temporary_runtime`` takes it."""
    return temporary_runtime(tmp_path, config=config, plugins=[("slack", SlackAlerts(clock))])


@pytest.fixture
def webhook_rt(tmp_path: Path, slack: FakeSlack, clock: Any) -> Iterator[Runtime]:
    config = _config(f"{{webhook_url: '{slack.webhook_url}', scopes: [person]}}")
    with _slack_runtime(tmp_path, clock, config) as rt:
        yield rt


def _spend(rt: Runtime, key: str, calls: int, clock: Any) -> None:
    for _ in range(calls):
        rt.record(intent(key, at=clock.now - timedelta(hours=1)), BIG)


def _spend_as_sam(rt: Runtime, calls: int, clock: Any) -> str:
    """A new key for sam (a $200 person wallet) that makes ``calls`` big calls; the key."""
    key, _ = rt.admin.issue_key("sam@acme.example")
    _spend(rt, key, calls, clock)
    return key


def _threshold_texts(slack: FakeSlack) -> list[str]:
    return [m["text"] for m in slack.delivered]


def test_fifty_eighty_hundred_percent_are_exactly_three_messages_naming_wallet_spend_and_limit(
    webhook_rt: Runtime, slack: FakeSlack, clock: Any
) -> None:
    rt = webhook_rt
    key = _spend_as_sam(rt, 12, clock)  # well past 100%: passive spend may exceed the limit
    deliver(rt, now=clock.now)
    deliver(rt, now=clock.advance(60))
    # each message shows the wallet at its crossing: every call adds $22.50 ($270 / 12), so
    # 50% ($100) is crossed by the 5th call, 80% ($160) by the 8th, 100% ($200) by the 9th
    assert _threshold_texts(slack) == [
        f"AI budget {pct}% reached: person sam@acme.example spent {spent} of $200.00 (2026-11)"
        for pct, spent in ((50, "$112.50"), (80, "$180.00"), (100, "$202.50"))
    ]
    for message in slack.delivered:
        assert "sam@acme.example" in message["blocks"][0]["text"]["text"]
        section = message["blocks"][1]
        assert "of *$200.00* limit" in section["text"]["text"]
        assert {"type": "mrkdwn", "text": f"*Wallet:*\nperson `{SAM}`"} in section["fields"]
    _spend(rt, key, 2, clock)  # further spend in the same period crosses nothing new
    deliver(rt, now=clock.advance(60))
    assert len(slack.delivered) == 3


def test_outage_then_recovery_delivers_each_alert_exactly_once_honouring_retry_after(
    webhook_rt: Runtime, slack: FakeSlack, clock: Any
) -> None:
    rt = webhook_rt
    _spend_as_sam(rt, 9, clock)
    slack.fail(1, 500)
    report = deliver(rt, now=clock.now)
    assert report.failed == 1 and slack.delivered == []
    slack.rate_limit(1, retry_after="30")
    report = deliver(rt, now=clock.advance(3))  # the outbox's 2 s back-off has passed
    assert report.failed == 1 and "429" in report.errors[0]
    asked = len(slack.requests)
    report = deliver(rt, now=clock.advance(10))  # outbox due again, but Slack said 30 s
    assert report.failed == 1 and len(slack.requests) == asked  # Retry-After honoured: no request
    report = deliver(rt, now=clock.advance(60))
    assert report.delivered == 3
    assert [m["text"].split(":")[0] for m in slack.delivered] == [
        "AI budget 50% reached",
        "AI budget 80% reached",
        "AI budget 100% reached",
    ]
    assert deliver(rt, now=clock.advance(60)).delivered == 0
    assert len(slack.delivered) == 3


def test_a_restart_after_sending_but_before_the_cursor_moved_never_double_sends(
    tmp_path: Path, slack: FakeSlack, clock: Any
) -> None:
    config = _config(f"{{webhook_url: '{slack.webhook_url}', scopes: [person]}}")
    with _slack_runtime(tmp_path, clock, config) as rt:
        _spend_as_sam(rt, 9, clock)
        deliver(rt, now=clock.now)
        assert len(slack.delivered) == 3
        # simulate a crash between Slack's "ok" and the outbox saving its cursor
        with rt.write_engine.begin() as conn:
            conn.execute(text("DELETE FROM checkpoints WHERE name = 'outbox:outbox:slack'"))
    with _slack_runtime(tmp_path, clock, config=None) as rt:
        report = deliver(rt, now=clock.advance(5))
        assert report.errors == []
    assert len(slack.delivered) == 3


def test_a_long_outage_parks_the_alert_instead_of_dead_lettering_and_the_retry_job_sends_it_once(
    tmp_path: Path, slack: FakeSlack, clock: Any
) -> None:
    config = _config(f"{{webhook_url: '{slack.webhook_url}', scopes: [person], park_after: 3}}")
    with _slack_runtime(tmp_path, clock, config) as rt:
        _spend_as_sam(rt, 5, clock)  # only the 50% threshold
        slack.fail(100, 503)
        for _ in range(4):
            deliver(rt, now=clock.advance(3600))
        with rt.engine.connect() as conn:
            dead = conn.execute(text("SELECT count(*) FROM outbox_deliveries WHERE state = 'dead'")).scalar()
        assert dead == 0 and slack.delivered == []
        from allotment.jobs import run_job

        assert run_job(rt, "slack-retry-parked") == {"sent": 0, "left": 1, "failed": 0}
        slack._failures.clear()
        assert run_job(rt, "slack-retry-parked") == {"sent": 1, "left": 0, "failed": 0}
        assert run_job(rt, "slack-retry-parked") == {"sent": 0, "left": 0, "failed": 0}
        deliver(rt, now=clock.advance(3600))
    assert [m["text"].split(":")[0] for m in slack.delivered] == ["AI budget 50% reached"]


def _anomaly(at: Any, **changes: Any) -> dict[str, Any]:
    anomaly = Anomaly(
        "spend_spike",
        "team",
        "engineering",
        "a1b2c3d4e5f6a7b8",
        "critical",
        "team engineering spent $60.00 today, 400% of its 30-day daily average $15.00",
        {
            "cost_delta_nanos": 45_000_000_000,
            "top_request_type": {
                "provider": "openai",
                "model": "gpt-5.4",
                "endpoint_mode": "sync",
                "task": "extraction",
                "cost_nanos": 40_000_000_000,
                "requests": 120,
            },
            "trace_ids": ["tr-1", "tr-2"],
            "window": {"start": "2026-11-20T05:00:00+00:00", "end": at.isoformat()},
        },
        at,
    )
    payload = asdict(anomaly) | changes
    payload["at"] = at.isoformat()
    return payload


def test_bot_token_posts_anomalies_and_threads_repeats_under_the_first_message(
    tmp_path: Path, slack: FakeSlack, clock: Any
) -> None:
    config = _config(f"{{bot_token: {BOT_TOKEN}, channel: '#ai-spend', api_base: '{slack.api_base}'}}")
    with _slack_runtime(tmp_path, clock, config) as rt:
        enqueue(rt, "anomaly_detected", _anomaly(clock.now), "anomaly:a1:0")
        enqueue(rt, "anomaly_detected", _anomaly(clock.now + timedelta(hours=6)), "anomaly:a1:1")
        assert deliver(rt, now=clock.now).delivered == 2
    first, repeat = slack.delivered
    assert all(r.headers["authorization"] == f"Bearer {BOT_TOKEN}" for r in slack.requests)
    assert first["channel"] == "#ai-spend" and "thread_ts" not in first and first["unfurl_links"] is False
    assert repeat["thread_ts"] == "1700000000.000001" and repeat["channel"] == "C0123"
    assert repeat["text"].startswith("Still ongoing: AI spend anomaly (spend_spike)")
    fields = [f["text"] for f in first["blocks"][1]["fields"]]
    assert "*Cost delta:*\n$45.00" in fields
    assert "*Top request type:*\nopenai/gpt-5.4 (sync, extraction): $40.00, 120 req" in fields
    assert "*Trace ids:*\n`tr-1`, `tr-2`" in fields
    assert "dedup `a1b2c3d4e5f6a7b8`" in first["blocks"][2]["elements"][0]["text"]


def test_a_refused_token_is_an_error_the_outbox_keeps_not_a_silent_drop(
    tmp_path: Path, slack: FakeSlack, clock: Any
) -> None:
    config = _config(f"{{bot_token: xoxb-wrong, channel: '#ai-spend', api_base: '{slack.api_base}'}}")
    with _slack_runtime(tmp_path, clock, config) as rt:
        enqueue(rt, "anomaly_detected", _anomaly(clock.now), "anomaly:a1:0")
        report = deliver(rt, now=clock.now)
    assert report.failed == 1 and "invalid_auth" in report.errors[0]
    assert slack.delivered == []


def test_detected_anomalies_reach_slack_through_the_webhook(
    tmp_path: Path, slack: FakeSlack, clock: Any
) -> None:
    config = SAMPLE_CONFIG + (
        f"plugins:\n  slack: {{webhook_url: '{slack.webhook_url}', scopes: []}}\n"
        "  anomaly: {token_ceiling: 50000}\n"
    )
    with _slack_runtime(tmp_path, clock, config) as rt:
        key, key_id = rt.admin.issue_key("ada@acme.example")
        rt.record(
            intent(key, at=clock.now - timedelta(hours=1), trace_id="tr-big"), Usage(input_tokens=80_000)
        )
        assert len(detect(rt, clock.now)) == 1
        deliver(rt, now=clock.now)
    (message,) = slack.delivered
    assert message["text"].startswith("AI spend anomaly (token_ceiling): 1 request(s) from key " + key_id)
    assert "`tr-big`" in json.dumps(message["blocks"])


def test_unconfigured_slack_stays_silent_and_bad_settings_fail_loudly(tmp_path: Path, clock: Any) -> None:
    with _slack_runtime(tmp_path, clock, SAMPLE_CONFIG) as rt:
        _spend_as_sam(rt, 9, clock)
        report = deliver(rt, now=clock.now)
        assert report.errors == []
        rt.apply_config_text(_config("{webhook_url: x, scopes: [persons]}"))
        plugin = SlackAlerts(clock)
        plugin.runtime_opened(rt)
        with pytest.raises(ConfigError, match="unknown scopes"):
            plugin._configured()


def test_monthly_summary_posts_last_months_team_spend_once(
    tmp_path: Path, slack: FakeSlack, clock: Any
) -> None:
    from allotment.jobs import run_job

    config = _config(f"{{webhook_url: '{slack.webhook_url}', scopes: [], monthly_summary: true}}")
    with _slack_runtime(tmp_path, clock, config) as rt:
        _spend_as_sam(rt, 2, clock)
        december = clock.now + timedelta(days=12)
        assert run_job(rt, "slack-monthly-summary", now=december) == {"period": "2026-11", "teams": 1}
        assert run_job(rt, "slack-monthly-summary", now=december)["skipped"]
    (message,) = slack.delivered
    assert message["text"] == "AI spend for 2026-11: $45.00 at Acme"
    assert "*Support*: $45.00 of $2,000.00 (2%)" in message["blocks"][2]["text"]["text"]


def test_the_entry_point_loads_slack_and_the_environment_can_disable_it() -> None:
    names = {info.name: info.hooks for info in describe_plugins(create_plugin_manager(environ={}))}
    assert set(names["slack"]) == {"anomaly_detected", "budget_threshold", "register_jobs", "runtime_opened"}
    off = create_plugin_manager(environ={"ALLOTMENT_DISABLE_PLUGINS": "slack"})
    assert "slack" not in {info.name for info in describe_plugins(off)}


def _cli_plugin_names(env: dict[str, str]) -> set[str]:
    """The plugin names ``allotment plugins`` prints when run with ``env``."""
    out = subprocess.run(
        [str(Path(sys.executable).with_name("allotment")), "plugins"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {p["name"] for p in json.loads(out)}


def test_allotment_plugins_cli_lists_slack(tmp_path: Path) -> None:
    env = dict(os.environ, ALLOTMENT_DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}")
    env.pop("ALLOTMENT_DISABLE_PLUGINS", None)
    assert "slack" in _cli_plugin_names(env)
    env["ALLOTMENT_DISABLE_PLUGINS"] = "slack"
    assert "slack" not in _cli_plugin_names(env)
