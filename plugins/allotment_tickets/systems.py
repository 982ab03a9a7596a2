"""One class per ticket system: open a ticket, find one by its dedup marker, add a repeat to it.

Shapes follow each vendor's documented REST API (Jira v3, GitHub REST, PagerDuty Events v2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol

from allotment.secrets import read_env_ref
from allotment.types import Anomaly
from allotment_tickets import content
from allotment_tickets.wire import Reply, RetryLater, TicketError, refused, request


@dataclass(frozen=True)
class Ticket:
    remote_id: str
    url: str | None = None


class System(Protocol):
    name: str

    def open(self, anomaly: Anomaly) -> Ticket: ...

    def find(self, anomaly: Anomaly) -> Ticket | None: ...

    def repeat(self, ticket: Ticket, anomaly: Anomaly) -> None: ...


def secret(value: Any, where: str) -> str:
    """``env:NAME`` references are read when used and never stored."""
    text = read_env_ref(str(value or "")) or ""
    if not text:
        raise TicketError(f"plugins.tickets.{where} is not set")
    return text


class Jira:
    name = "jira"

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.base = str(cfg["base_url"]).rstrip("/")
        self.project = str(cfg["project"])
        self.issue_type = str(cfg.get("issue_type", "Task"))
        self.priority = cfg.get("priority")
        token = base64.b64encode(f"{cfg['email']}:{secret(cfg.get('api_token'), 'jira.api_token')}".encode())
        self.headers = {"Authorization": f"Basic {token.decode()}", "Accept": "application/json"}

    def open(self, anomaly: Anomaly) -> Ticket:
        fields: dict[str, Any] = {
            "project": {"key": self.project},
            "issuetype": {"name": self.issue_type},
            "summary": content.title(anomaly)[:255],
            "labels": ["ai-spend-anomaly", content.label(anomaly)],
            "description": content.adf(anomaly),
        }
        if self.priority:
            fields["priority"] = {"name": self.priority}
        reply = request("POST", f"{self.base}/rest/api/3/issue", {"fields": fields}, self.headers)
        if reply.status != 201:
            raise refused("jira", reply)
        key = str(reply.json()["key"])
        return Ticket(key, f"{self.base}/browse/{key}")

    def find(self, anomaly: Anomaly) -> Ticket | None:
        jql = f'project = {self.project} AND labels = "{content.label(anomaly)}"'
        body = {"jql": jql, "fields": ["status", "key"], "maxResults": 5}
        reply = request("POST", f"{self.base}/rest/api/3/search/jql", body, self.headers)
        if reply.status != 200:
            raise refused("jira", reply)
        issues = reply.json().get("issues") or []
        if not issues:
            return None
        key = str(issues[0]["key"])
        return Ticket(key, f"{self.base}/browse/{key}")

    def repeat(self, ticket: Ticket, anomaly: Anomaly) -> None:
        url = f"{self.base}/rest/api/3/issue/{urllib.parse.quote(ticket.remote_id)}/comment"
        reply = request("POST", url, {"body": content.adf(anomaly, repeat=True)}, self.headers)
        if reply.status != 201:
            raise refused("jira", reply)


class GitHub:
    name = "github"

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.base = str(cfg.get("api_base", "https://api.github.com")).rstrip("/")
        self.repo = str(cfg["repo"])
        self.assignees = list(cfg.get("assignees", []))
        self.headers = {
            "Authorization": f"Bearer {secret(cfg.get('token'), 'github.token')}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def _check(self, reply: Reply, expected: int) -> None:
        if reply.status == expected:
            return
        # GitHub's secondary limits answer 403 with retry-after or an exhausted quota
        if reply.status == 403 and (
            reply.headers.get("retry-after") or reply.headers.get("x-ratelimit-remaining") == "0"
        ):
            after = reply.retry_after()
            raise RetryLater(f"github rate limited: {reply.body[:200]}", 60.0 if after is None else after)
        raise refused("github", reply)

    def open(self, anomaly: Anomaly) -> Ticket:
        body = {
            "title": content.title(anomaly),
            "body": content.markdown(anomaly) + f"\n\n<!-- allotment:dedup={anomaly.dedup_key} -->",
            "labels": ["ai-spend-anomaly", content.label(anomaly)],
        }
        if self.assignees:
            body["assignees"] = self.assignees
        reply = request("POST", f"{self.base}/repos/{self.repo}/issues", body, self.headers)
        self._check(reply, 201)
        issue = reply.json()
        return Ticket(str(issue["number"]), issue.get("html_url"))

    def find(self, anomaly: Anomaly) -> Ticket | None:
        query = urllib.parse.urlencode({"labels": content.label(anomaly), "state": "all"})
        reply = request("GET", f"{self.base}/repos/{self.repo}/issues?{query}", None, self.headers)
        self._check(reply, 200)
        issues = reply.json() or []
        return Ticket(str(issues[0]["number"]), issues[0].get("html_url")) if issues else None

    def repeat(self, ticket: Ticket, anomaly: Anomaly) -> None:
        url = f"{self.base}/repos/{self.repo}/issues/{ticket.remote_id}/comments"
        reply = request("POST", url, {"body": content.markdown(anomaly, repeat=True)}, self.headers)
        self._check(reply, 201)


class PagerDuty:
    name = "pagerduty"
    SEVERITIES = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}

    def __init__(self, cfg: dict[str, Any], tenant: str) -> None:
        self.url = str(cfg.get("url", "https://events.pagerduty.com/v2/enqueue"))
        self.routing_key = secret(cfg.get("routing_key"), "pagerduty.routing_key")
        self.tenant = tenant

    def dedup(self, anomaly: Anomaly) -> str:
        return f"allotment:{self.tenant}:{anomaly.dedup_key}"[:255]

    def _trigger(self, anomaly: Anomaly) -> Ticket:
        details = content.event(anomaly)
        body = {
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": self.dedup(anomaly),
            "payload": {
                "summary": content.title(anomaly)[:1024],
                "source": f"allotment/{self.tenant}",
                "severity": self.SEVERITIES.get(anomaly.severity, "warning"),
                "timestamp": details["at"],
                "component": str((anomaly.details.get("top_request_type") or {}).get("provider", "llm")),
                "group": f"{anomaly.scope}:{anomaly.scope_id}",
                "class": anomaly.rule,
                "custom_details": {name: value for name, value in content.facts(anomaly)},
            },
            "client": "allotment",
        }
        reply = request("POST", self.url, body, {})
        if reply.status != 202:
            raise refused("pagerduty", reply)
        return Ticket(str(reply.json().get("dedup_key") or self.dedup(anomaly)))

    def open(self, anomaly: Anomaly) -> Ticket:
        return self._trigger(anomaly)

    def find(self, anomaly: Anomaly) -> Ticket | None:
        return None  # a trigger with the same dedup_key is idempotent: just send it again

    def repeat(self, ticket: Ticket, anomaly: Anomaly) -> None:
        self._trigger(anomaly)  # joins the open alert with the same dedup_key


class Webhook:
    """A signed generic webhook (ServiceNow, Opsgenie, in-house): HMAC-SHA256 over ``ts.body``."""

    name = "webhook"

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.url = str(cfg["url"])
        self.secret = secret(cfg.get("secret"), "webhook.secret").encode()

    def _post(self, anomaly: Anomaly, kind: str) -> None:
        body = json.dumps({"type": kind, "anomaly": content.event(anomaly)}, sort_keys=True).encode()
        stamp = str(int(time.time()))
        signature = hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        delivery = hashlib.sha256(f"{anomaly.dedup_key}|{content.event(anomaly)['at']}".encode()).hexdigest()[
            :32
        ]
        headers = {
            "X-Allotment-Timestamp": stamp,
            "X-Allotment-Signature": f"sha256={signature}",
            "X-Allotment-Delivery": delivery,  # receivers dedup on this
        }
        reply = request("POST", self.url, None, headers, data=body)
        if not 200 <= reply.status < 300:
            raise refused("webhook", reply)

    def open(self, anomaly: Anomaly) -> Ticket:
        self._post(anomaly, "anomaly.opened")
        return Ticket(anomaly.dedup_key)

    def find(self, anomaly: Anomaly) -> Ticket | None:
        return None

    def repeat(self, ticket: Ticket, anomaly: Anomaly) -> None:
        self._post(anomaly, "anomaly.repeated")
