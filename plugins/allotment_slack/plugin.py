"""The Slack alerts plugin: budget thresholds, anomalies and a monthly summary, as Block Kit.

Delivered from the core outbox; a per-message record makes a restart or a retry never double-send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from allotment.hookspecs import hookimpl
from allotment.types import Anomaly, Wallet
from allotment_slack.messages import anomaly_message, summary_message, threshold_message
from allotment_slack.records import PREFIX, THREAD_PREFIX, Records
from allotment_slack.settings import SlackSettings
from allotment_slack.transport import Posted
from allotment_slack.wire import RetryLater, SlackError

if TYPE_CHECKING:
    from allotment.runtime import Runtime

log = logging.getLogger("allotment.slack")

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SlackAlerts:
    """One instance per process; it learns the runtime from ``runtime_opened``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.runtime: Runtime | None = None
        self.clock = clock or _utcnow
        self._not_before: datetime | None = None  # Slack's Retry-After, shared by every message

    # -- hooks -------------------------------------------------------------------------
    @hookimpl
    def runtime_opened(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @hookimpl
    def budget_threshold(self, wallet: Wallet, fraction: str) -> None:
        runtime, settings = self._configured()
        if runtime is None or settings is None or not settings.wants_threshold(wallet.scope, fraction):
            return
        message = threshold_message(wallet, fraction, wallet_name(runtime, wallet), settings.dashboard_url)
        self._send(runtime, settings, f"threshold:{wallet.id}:{fraction}", message)

    @hookimpl
    def anomaly_detected(self, anomaly: Anomaly) -> None:
        runtime, settings = self._configured()
        if runtime is None or settings is None or not settings.anomalies:
            return
        records = Records(runtime)
        thread_name = THREAD_PREFIX + anomaly.dedup_key
        thread = records.get(thread_name)
        message = anomaly_message(anomaly, thread is not None, settings.dashboard_url)
        at = anomaly.at.isoformat() if anomaly.at else "-"
        self._send(runtime, settings, f"anomaly:{anomaly.dedup_key}:{at}", message, thread_name)

    @hookimpl
    def register_jobs(self, scheduler: Any) -> None:
        scheduler.add(
            "slack-retry-parked",
            self.retry_parked,
            every=60,
            description="resend Slack alerts parked after a long outage (honours Retry-After)",
        )
        scheduler.add(
            "slack-monthly-summary",
            self.monthly_summary,
            cron="0 9 1 * *",
            period="month",
            description="post last month's AI spend per team to Slack (plugins.slack.monthly_summary)",
        )

    # -- jobs --------------------------------------------------------------------------
    def retry_parked(self, runtime: Runtime) -> dict[str, int]:
        """Send parked messages in the order they were parked; stop at the first rate limit."""
        settings = SlackSettings.from_config(_plugin_config(runtime))
        done = {"sent": 0, "left": 0, "failed": 0}
        if settings is None:
            return done
        records = Records(runtime)
        parked = records.parked()
        for index, (name, record) in enumerate(parked):
            thread = _posted(records.get(record["thread"])) if record.get("thread") else None
            try:
                self._guard()
                posted = settings.transport().post(record["message"], thread)
            except RetryLater as exc:
                self._note_retry_after(exc)
                done["left"] = len(parked) - index
                break
            except SlackError as exc:
                records.put(name, {**record, "state": "failed", "error": str(exc)[:500]})
                done["failed"] += 1
                continue
            self._remember(records, name, record.get("thread"), posted)
            done["sent"] += 1
        return done

    def monthly_summary(self, runtime: Runtime, period: str) -> dict[str, Any]:
        settings = SlackSettings.from_config(_plugin_config(runtime))
        if settings is None or not settings.monthly_summary:
            return {"skipped": "plugins.slack.monthly_summary is off"}
        with runtime.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT scope_id, spent_nanos, limit_nanos FROM wallets "
                    "WHERE scope = 'team' AND period = :p"
                ),
                {"p": period},
            ).fetchall()
        teams = runtime.directory.teams
        table = sorted(
            ((teams[r[0]].name if r[0] in teams else r[0], int(r[1]), int(r[2])) for r in rows),
            key=lambda row: (-row[1], row[0]),
        )
        org = runtime.config.org.name if runtime.config else "the organisation"
        self._send(runtime, settings, f"summary:{period}", summary_message(period, org, table))
        return {"period": period, "teams": len(table)}

    # -- delivery ----------------------------------------------------------------------
    def _configured(self) -> tuple[Runtime | None, SlackSettings | None]:
        if self.runtime is None:
            return None, None
        return self.runtime, SlackSettings.from_config(_plugin_config(self.runtime))

    def _guard(self) -> None:
        if self._not_before is not None and self.clock() < self._not_before:
            raise RetryLater(f"honouring Slack's Retry-After until {self._not_before.isoformat()}")

    def _note_retry_after(self, exc: RetryLater) -> None:
        if exc.after is not None:
            self._not_before = self.clock() + timedelta(seconds=exc.after)

    def _send(
        self,
        runtime: Runtime,
        settings: SlackSettings,
        key: str,
        message: dict[str, Any],
        thread_name: str | None = None,
    ) -> None:
        """Post once. Raises ``RetryLater``/``SlackError`` so the outbox retries with back-off."""
        records = Records(runtime)
        name = PREFIX + key
        record = records.get(name) or {"state": "new", "attempts": 0}
        if record["state"] in ("sent", "parked"):
            return  # sent before a restart, or waiting for the retry job: never twice
        thread = _posted(records.get(thread_name)) if thread_name else None
        try:
            self._guard()
            posted = settings.transport().post(message, thread)
        except RetryLater as exc:
            self._note_retry_after(exc)
            attempts = int(record.get("attempts", 0)) + 1
            if attempts >= settings.park_after:
                # the outbox dead-letters after a few attempts; a long outage must not lose the alert
                records.put(
                    name,
                    {
                        "state": "parked",
                        "attempts": attempts,
                        "message": message,
                        "thread": thread_name,
                        "error": str(exc)[:500],
                    },
                )
                log.warning("slack alert %s parked after %s attempts: %s", key, attempts, exc)
                return
            records.put(name, {"state": "failing", "attempts": attempts, "error": str(exc)[:500]})
            raise
        self._remember(records, name, thread_name, posted)

    def _remember(self, records: Records, name: str, thread_name: str | None, posted: Posted) -> None:
        records.put(
            name,
            {"state": "sent", "channel": posted.channel, "ts": posted.ts, "at": self.clock().isoformat()},
        )
        if thread_name and records.get(thread_name) is None:
            records.put(thread_name, {"channel": posted.channel, "ts": posted.ts})


def _posted(record: dict[str, Any] | None) -> Posted | None:
    return None if record is None else Posted(record.get("channel"), record.get("ts"))


def _plugin_config(runtime: Runtime) -> Any:
    config = runtime.config
    return None if config is None else config.plugins.get("slack")


def wallet_name(runtime: Runtime, wallet: Wallet) -> str:
    """A wallet as a person reads it: ``team Engineering``, ``person sam@acme.example``."""
    directory = runtime.directory
    if wallet.scope == "org":
        return f"org {runtime.config.org.name if runtime.config else wallet.scope_id}"
    if wallet.scope == "team" and wallet.scope_id in directory.teams:
        return f"team {directory.teams[wallet.scope_id].name}"
    if wallet.scope == "person" and wallet.scope_id in directory.people:
        return f"person {directory.people[wallet.scope_id].email}"
    if wallet.scope == "key":
        for key in directory.keys_by_hash.values():
            if key.id == wallet.scope_id and key.person_id in directory.people:
                return f"key {wallet.scope_id} ({directory.people[key.person_id].email})"
    return f"{wallet.scope} {wallet.scope_id}"
