"""Escalation: each anomaly opens one ticket per configured system; a repeat becomes a comment.

The mapping dedup_key -> ticket lives in the core ``checkpoints`` table, written before each call.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from allotment.errors import ConfigError
from allotment.hookspecs import hookimpl
from allotment.types import Anomaly
from allotment_tickets.systems import GitHub, Jira, PagerDuty, System, Ticket, Webhook

if TYPE_CHECKING:
    from allotment.runtime import Runtime

log = logging.getLogger("allotment.tickets")

SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2, "critical": 3}
KNOWN_KEYS = {"jira", "github", "pagerduty", "webhook", "rules", "min_severity", "containment"}


def build_systems(cfg: dict[str, Any], tenant: str) -> list[System]:
    unknown = set(cfg) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"plugins.tickets: unknown keys {sorted(unknown)} (known: {sorted(KNOWN_KEYS)})")
    systems: list[System] = []
    if cfg.get("jira"):
        systems.append(Jira(cfg["jira"]))
    if cfg.get("github"):
        systems.append(GitHub(cfg["github"]))
    if cfg.get("pagerduty"):
        systems.append(PagerDuty(cfg["pagerduty"], tenant))
    if cfg.get("webhook"):
        systems.append(Webhook(cfg["webhook"]))
    return systems


class Links:
    """``tickets:<system>:<dedup_key>`` -> {state, remote_id, url, events}: one row per ticket."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @staticmethod
    def name(system: str, dedup_key: str) -> str:
        return f"tickets:{system}:{dedup_key}"

    def get(self, system: str, dedup_key: str) -> dict[str, Any] | None:
        with self.runtime.engine.connect() as conn:
            row = conn.execute(
                text("SELECT data FROM checkpoints WHERE name = :n"), {"n": self.name(system, dedup_key)}
            ).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    def put(self, system: str, dedup_key: str, data: dict[str, Any]) -> None:
        name, payload, now = self.name(system, dedup_key), orjson.dumps(data).decode(), datetime.now(UTC)
        with self.runtime.write_engine.begin() as conn:
            if not conn.execute(
                text("UPDATE checkpoints SET data = :d, updated_at = :t WHERE name = :n"),
                {"d": payload, "t": now, "n": name},
            ).rowcount:
                conn.execute(
                    text("INSERT INTO checkpoints (name, data, updated_at) VALUES (:n, :d, :t)"),
                    {"n": name, "d": payload, "t": now},
                )


class TicketEscalation:
    def __init__(self) -> None:
        self.runtime: Runtime | None = None

    @hookimpl
    def runtime_opened(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @hookimpl
    def anomaly_detected(self, anomaly: Anomaly) -> None:
        runtime = self.runtime
        config = runtime.config if runtime is not None else None
        cfg = config.plugins.get("tickets") if config is not None else None
        if runtime is None or not cfg or not self._wanted(cfg, anomaly):
            return
        failures: list[Exception] = []
        for system in build_systems(cfg, runtime.directory.org_id):
            try:
                escalate(Links(runtime), system, anomaly)
            except Exception as exc:  # noqa: BLE001 - one system's outage must not block the others
                log.warning("escalating %s to %s failed: %s", anomaly.dedup_key, system.name, exc)
                failures.append(exc)
        if failures:
            # the outbox retries the anomaly; systems already done skip it by their recorded events
            raise failures[0]

    @staticmethod
    def _wanted(cfg: dict[str, Any], anomaly: Anomaly) -> bool:
        rules = cfg.get("rules")
        if rules is not None and anomaly.rule not in rules:
            return False
        floor = SEVERITY_ORDER.get(str(cfg.get("min_severity", "info")), 0)
        return SEVERITY_ORDER.get(anomaly.severity, 1) >= floor


def escalate(links: Links, system: System, anomaly: Anomaly) -> Ticket | None:
    """Open, adopt or update the one ticket for ``anomaly.dedup_key`` in ``system``; idempotent."""
    event = anomaly.at.isoformat() if anomaly.at else "-"
    link = links.get(system.name, anomaly.dedup_key)
    if link is not None and link.get("state") == "open":
        existing = Ticket(link["remote_id"], link.get("url"))
        if event in link.get("events", []):
            return existing
        system.repeat(existing, anomaly)
        links.put(system.name, anomaly.dedup_key, {**link, "events": [*link.get("events", []), event]})
        return existing
    ticket: Ticket | None = None
    if link is not None:
        # a create was attempted and its answer lost: look for the marker before creating again
        ticket = system.find(anomaly)
    else:
        links.put(system.name, anomaly.dedup_key, {"state": "pending", "events": []})
    if ticket is None:
        ticket = system.open(anomaly)
    links.put(
        system.name,
        anomaly.dedup_key,
        {"state": "open", "remote_id": ticket.remote_id, "url": ticket.url, "events": [event]},
    )
    return ticket
