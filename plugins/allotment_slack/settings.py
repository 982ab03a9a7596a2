"""The plugin's settings: ``plugins: {slack: {...}}`` in allotment.yaml, read on every delivery.

Secrets are ``env:NAME`` references, resolved when used and never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from allotment.errors import ConfigError
from allotment.secrets import read_env_ref
from allotment_slack.transport import BotTransport, Transport, WebhookTransport

SCOPES = ("org", "team", "person", "key", "label")


_resolve = read_env_ref


@dataclass(frozen=True)
class SlackSettings:
    webhook_url: str | None = None
    bot_token: str | None = None
    channel: str | None = None
    api_base: str = "https://slack.com/api/"
    timeout_seconds: float = 10.0
    scopes: tuple[str, ...] = SCOPES
    thresholds: tuple[str, ...] | None = None  # None: every threshold the ledger fires
    anomalies: bool = True
    dashboard_url: str | None = None
    park_after: int = 6  # failed attempts before a message is parked for the retry job
    monthly_summary: bool = False

    @classmethod
    def from_config(cls, data: Any) -> SlackSettings | None:
        """None when Slack is not configured (the plugin then stays silent)."""
        if not data:
            return None
        if not isinstance(data, dict):
            raise ConfigError("plugins.slack must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"plugins.slack: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        values = dict(data)
        if "scopes" in values:
            values["scopes"] = tuple(values["scopes"])
            bad = set(values["scopes"]) - set(SCOPES)
            if bad:
                raise ConfigError(f"plugins.slack.scopes: unknown scopes {sorted(bad)}")
        if values.get("thresholds") is not None:
            values["thresholds"] = tuple(str(Decimal(str(v)).normalize()) for v in values["thresholds"])
        settings = cls(**values)
        if not settings.webhook_url and not settings.bot_token:
            raise ConfigError("plugins.slack needs webhook_url, or bot_token and channel")
        if settings.bot_token and not settings.channel:
            raise ConfigError("plugins.slack.bot_token needs a channel")
        return settings

    def transport(self) -> Transport:
        token = _resolve(self.bot_token)
        if self.bot_token:
            if not token:
                raise ConfigError(f"plugins.slack.bot_token: {self.bot_token} is not set")
            return BotTransport(token, str(self.channel), self.api_base, self.timeout_seconds)
        url = _resolve(self.webhook_url)
        if not url:
            raise ConfigError(f"plugins.slack.webhook_url: {self.webhook_url} is not set")
        return WebhookTransport(url, self.timeout_seconds)

    def wants_threshold(self, scope: str, fraction: str) -> bool:
        if scope not in self.scopes:
            return False
        return self.thresholds is None or str(Decimal(fraction).normalize()) in self.thresholds
