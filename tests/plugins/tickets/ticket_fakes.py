"""Loopback Jira Cloud, GitHub Issues, PagerDuty Events v2 and a signature-checking webhook receiver.

One server routes by path; switches rate limit (429 + Retry-After) or lose the answer to a create.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from allotment.testing.vendor_server import VendorAnswer, VendorRequest, serve_vendor

JIRA_AUTH = "Basic " + base64.b64encode(b"ops@acme.example:jira-token").decode()
GITHUB_TOKEN = "github_pat_test"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, as PagerDuty issues them
WEBHOOK_SECRET = "whsec-test"
REPO = "acme/ai-spend"

Answer = tuple[int, dict[str, str], Any]


@dataclass
class FakeTickets:
    url: str = ""
    jira_issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    jira_comments: dict[str, list[Any]] = field(default_factory=dict)
    github_issues: list[dict[str, Any]] = field(default_factory=list)
    github_comments: dict[int, list[str]] = field(default_factory=dict)
    pd_events: list[dict[str, Any]] = field(default_factory=list)
    pd_alerts: dict[str, int] = field(default_factory=dict)  # dedup_key -> events joined
    webhook_deliveries: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    _limits: dict[str, list[str]] = field(default_factory=dict)
    _lose: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def rate_limit(self, prefix: str, count: int, retry_after: str = "1") -> None:
        self._limits.setdefault(prefix, []).extend([retry_after] * count)

    def lose_answer(self, prefix: str, count: int = 1) -> None:
        """Do the work, then answer 502: the client cannot know the ticket exists."""
        self._lose[prefix] = self._lose.get(prefix, 0) + count

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        with self._lock:
            answer = self._route(method, path, headers, raw)
            self.requests.append((method, path, answer[0]))
            return answer

    def _route(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Answer:
        for prefix, queue in self._limits.items():
            if path.startswith(prefix) and queue:
                return 429, {"Retry-After": queue.pop(0)}, {"message": "rate limited"}
        body = json.loads(raw) if raw else None
        if path.startswith("/jira/"):
            answer = self._jira(method, path.removeprefix("/jira"), headers, body)
        elif path.startswith("/github/"):
            answer = self._github(method, path.removeprefix("/github"), headers, body)
        elif path == "/pagerduty/v2/enqueue":
            answer = self._pagerduty(body)
        elif path == "/hook":
            answer = self._webhook(headers, raw)
        else:
            answer = (404, {}, {"message": "Not Found"})
        for prefix, left in self._lose.items():
            if path.startswith(prefix) and left and answer[0] < 300:
                self._lose[prefix] = left - 1
                return 502, {}, {"message": "Bad Gateway"}
        return answer

    # -- Jira Cloud REST v3 ------------------------------------------------------------
    def _jira(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        if headers.get("authorization") != JIRA_AUTH:
            return (
                401,
                {},
                {"errorMessages": ["Client must be authenticated to access this resource."], "errors": {}},
            )
        if method == "POST" and path == "/rest/api/3/issue":
            fields = body.get("fields", {})
            errors = {}
            if not fields.get("summary"):
                errors["summary"] = "You must specify a summary of the issue."
            if (fields.get("project") or {}).get("key") != "FIN":
                errors["project"] = "valid project is required"
            if (fields.get("description") or {}).get("type") != "doc":
                errors["description"] = "Operation value must be an Atlassian Document."
            if errors:
                return 400, {}, {"errorMessages": [], "errors": errors}
            number = len(self.jira_issues) + 42
            key = f"FIN-{number}"
            self.jira_issues[key] = fields
            return (
                201,
                {},
                {"id": str(10000 + number), "key": key, "self": f"{self.url}/jira/rest/api/3/issue/{key}"},
            )
        if method == "POST" and path == "/rest/api/3/search/jql":
            label = body["jql"].split('labels = "')[1].rstrip('"')
            found = [
                {"key": k, "fields": {"status": {"name": "To Do"}}}
                for k, f in self.jira_issues.items()
                if label in f["labels"]
            ]
            return 200, {}, {"issues": found, "isLast": True}
        if method == "POST" and path.startswith("/rest/api/3/issue/") and path.endswith("/comment"):
            key = path.split("/")[5]
            if key not in self.jira_issues:
                return (
                    404,
                    {},
                    {
                        "errorMessages": ["Issue does not exist or you do not have permission to see it."],
                        "errors": {},
                    },
                )
            self.jira_comments.setdefault(key, []).append(body["body"])
            return 201, {}, {"id": str(len(self.jira_comments[key])), "body": body["body"]}
        return 404, {}, {"errorMessages": ["not found"], "errors": {}}

    # -- GitHub REST -------------------------------------------------------------------
    def _github(self, method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        if headers.get("authorization") != f"Bearer {GITHUB_TOKEN}":
            return (
                401,
                {},
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
            )
        if headers.get("x-github-api-version") != "2022-11-28" or "github" not in headers.get("accept", ""):
            return 400, {}, {"message": "bad headers"}
        parsed = urllib.parse.urlparse(path)
        issues_path = f"/repos/{REPO}/issues"
        if method == "POST" and parsed.path == issues_path:
            if not body.get("title"):
                return (
                    422,
                    {},
                    {
                        "message": "Validation Failed",
                        "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}],
                    },
                )
            number = len(self.github_issues) + 1
            issue = {
                "id": 9000 + number,
                "number": number,
                "state": "open",
                "title": body["title"],
                "body": body["body"],
                "labels": [{"name": n} for n in body.get("labels", [])],
                "html_url": f"https://github.com/{REPO}/issues/{number}",
            }
            self.github_issues.append(issue)
            return 201, {}, issue
        if method == "GET" and parsed.path == issues_path:
            query = urllib.parse.parse_qs(parsed.query)
            wanted = set(query.get("labels", [""])[0].split(","))
            return 200, {}, [i for i in self.github_issues if wanted <= {lb["name"] for lb in i["labels"]}]
        if (
            method == "POST"
            and parsed.path.startswith(issues_path + "/")
            and parsed.path.endswith("/comments")
        ):
            number = int(parsed.path.split("/")[5])
            self.github_comments.setdefault(number, []).append(body["body"])
            return 201, {}, {"id": 1, "body": body["body"]}
        return 404, {}, {"message": "Not Found"}

    # -- PagerDuty Events v2 -----------------------------------------------------------
    def _pagerduty(self, body: Any) -> Answer:
        errors = []
        if len(body.get("routing_key", "")) != 32 or body["routing_key"] != ROUTING_KEY:
            errors.append("'routing_key' is invalid")
        if body.get("event_action") not in {"trigger", "acknowledge", "resolve"}:
            errors.append("'event_action' is invalid")
        payload = body.get("payload") or {}
        if body.get("event_action") == "trigger":
            if payload.get("severity") not in {"critical", "error", "warning", "info"}:
                errors.append("'payload.severity' is invalid")
            if not payload.get("summary") or len(payload["summary"]) > 1024 or not payload.get("source"):
                errors.append("'payload.summary' or 'payload.source' is invalid")
        if errors:
            return (
                400,
                {},
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
            )
        self.pd_events.append(body)
        key = body["dedup_key"]
        self.pd_alerts[key] = self.pd_alerts.get(key, 0) + 1
        return 202, {}, {"status": "success", "message": "Event processed", "dedup_key": key}

    # -- signed webhook receiver -------------------------------------------------------
    def _webhook(self, headers: dict[str, str], raw: bytes) -> Answer:
        stamp = headers.get("x-allotment-timestamp", "")
        expected = hmac.new(WEBHOOK_SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("x-allotment-signature", ""), f"sha256={expected}"):
            return 401, {}, {"error": "bad signature"}
        self.webhook_deliveries.append({"delivery": headers["x-allotment-delivery"], **json.loads(raw)})
        return 204, {}, None


@contextmanager
def serve(fake: FakeTickets) -> Iterator[FakeTickets]:
    def answer(request: VendorRequest) -> VendorAnswer:
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, reply_headers, body = fake.handle(request.method, request.target, headers, request.body)
        data = b"" if body is None else json.dumps(body).encode()
        return status, {**reply_headers, "Content-Type": "application/json"}, data

    with serve_vendor(answer, methods=("GET", "POST")) as url:
        fake.url = url
        yield fake
