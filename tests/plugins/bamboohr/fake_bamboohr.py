"""A local BambooHR: Basic-auth API key, ``/employees/changed`` and ``/reports/custom`` on 127.0.0.1.

Serves both URL prefixes (``/api/v1`` and ``/api/gateway.php/{domain}/v1``), throttles on demand.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from allotment.testing.vendor_server import VendorAnswer, VendorRequest, serve_vendor

_PREFIX = re.compile(r"^/api/(?:v1|gateway\.php/(?P<domain>[^/]+)/v1)/(?P<rest>.*)$")


@dataclass
class Employee:
    id: int
    fields: dict[str, str]
    last_changed: datetime
    created: datetime


@dataclass
class FakeBambooHR:
    api_key: str = "bhr-secret"
    domain: str = "acme"
    employees: dict[int, Employee] = field(default_factory=dict)
    deleted: dict[int, datetime] = field(default_factory=dict)
    throttle: list[tuple[int, str]] = field(default_factory=list)  # next responses: (status, Retry-After)
    fail_next: list[int] = field(default_factory=list)  # next responses: bare error statuses
    log: list[dict[str, Any]] = field(default_factory=list)
    clock: datetime = field(default_factory=lambda: datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    url: str = ""

    # -- test controls --------------------------------------------------------------------
    def tick(self, at: datetime) -> None:
        self.clock = at

    def upsert(self, emp_id: int, **fields: str) -> None:
        current = self.employees.get(emp_id)
        if current is None:
            self.employees[emp_id] = Employee(emp_id, dict(fields), self.clock, self.clock)
        else:
            current.fields.update(fields)
            current.last_changed = self.clock

    def delete(self, emp_id: int) -> None:
        self.employees.pop(emp_id)
        self.deleted[emp_id] = self.clock

    # -- the API --------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        match = _PREFIX.match(path)
        if match is None or (match.group("domain") not in (None, self.domain)):
            return 404, {}, b""
        if self.throttle:
            status, retry_after = self.throttle.pop(0)
            return status, {"Retry-After": retry_after}, b""
        if self.fail_next:
            return self.fail_next.pop(0), {"X-BambooHR-Error-Message": "Internal error"}, b""
        if not self._authorized(headers.get("Authorization", "")):
            return 401, {"X-BambooHR-Error-Message": "Invalid API key"}, b""
        rest = match.group("rest")
        if method == "GET" and rest == "employees/changed":
            return self._changed(query, headers)
        if method == "POST" and rest == "reports/custom":
            return self._report(query, headers, body)
        return 404, {}, b""

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, _ = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.api_key  # the password can be anything

    @staticmethod
    def _json(data: Any) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()

    def _changed(self, query: dict[str, list[str]], headers: Any) -> tuple[int, dict[str, str], bytes]:
        if headers.get("Accept") != "application/json":
            return 200, {"Content-Type": "application/xml"}, b"<employees/>"  # XML is the default
        try:
            since = datetime.fromisoformat(query["since"][0].replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return 400, {"X-BambooHR-Error-Message": "Invalid since"}, b""
        out: dict[str, dict[str, str]] = {}
        stamps = []
        for emp in self.employees.values():
            if emp.last_changed >= since:
                action = "Inserted" if emp.created >= since else "Updated"
                out[str(emp.id)] = {
                    "id": str(emp.id),
                    "action": action,
                    "lastChanged": emp.last_changed.isoformat(),
                }
                stamps.append(emp.last_changed)
        for emp_id, at in self.deleted.items():
            if at >= since:
                out[str(emp_id)] = {"id": str(emp_id), "action": "Deleted", "lastChanged": at.isoformat()}
                stamps.append(at)
        latest = max(stamps).isoformat() if stamps else since.isoformat()
        return self._json({"latest": latest, "employees": out})

    def _report(
        self, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if query.get("format", [""])[0].lower() != "json":
            return 404, {}, b""
        if headers.get("Content-Type") != "application/json":
            return 400, {"X-BambooHR-Error-Message": "Malformed XML"}, b""
        try:
            spec = json.loads(body)
        except ValueError:
            return 400, {"X-BambooHR-Error-Message": "Malformed JSON"}, b""
        fields = spec.get("fields") or []
        if len(fields) > 400:
            return 400, {}, b""
        wanted = (spec.get("filters") or {}).get("employeeIds")
        rows = []
        for emp in sorted(self.employees.values(), key=lambda e: e.id):
            if wanted is not None and emp.id not in wanted:
                continue
            # unknown fields are dropped silently; values are strings
            rows.append({"id": str(emp.id), **{f: emp.fields[f] for f in fields if f in emp.fields}})
        meta = [{"id": f, "type": "text", "name": f} for f in fields]
        return self._json({"title": spec.get("title", ""), "fields": meta, "employees": rows})


@contextmanager
def serve(fake: FakeBambooHR) -> Iterator[FakeBambooHR]:
    def answer(request: VendorRequest) -> VendorAnswer:
        query = parse_qs(request.query)
        fake.log.append(
            {
                "method": request.method,
                "path": request.path,
                "query": query,
                "headers": dict(request.headers),
                "body": request.body,
            }
        )
        return fake.handle(request.method, request.path, query, request.headers, request.body)

    with serve_vendor(answer, methods=("GET", "POST")) as url:
        fake.url = url
        yield fake
