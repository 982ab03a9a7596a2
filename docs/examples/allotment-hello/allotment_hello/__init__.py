"""allotment-hello: the smallest useful allotment plugin, meant to be copied.

A policy that refuses one label value, an observer that logs costs, and a CLI command.
"""

from __future__ import annotations

import os
from typing import Any

from allotment import CallIntent, Decision, Principal, UsageEvent, hookimpl

LOG_ENV = "ALLOTMENT_HELLO_LOG"


@hookimpl
def check_policy(principal: Principal, intent: CallIntent) -> Decision | None:
    # Abstain (None) unless this plugin has an opinion: other policies still run.
    if intent.labels.get("environment") == "forbidden":
        return Decision.deny(
            403, "environment_forbidden", "requests labelled environment=forbidden are refused"
        )
    return None


@hookimpl
def usage_recorded(event: UsageEvent) -> None:
    # Delivered from the outbox by the deliver-outbox job; raising here means "retry later".
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{event.request_id} {event.cost_nanos}\n")


@hookimpl
def register_commands(cli: Any) -> None:
    @cli.command("hello")
    def hello() -> None:
        """Say hello from the allotment-hello plugin."""
        print("hello from allotment-hello")
