"""A local Rippling REST API: bearer auth, ``results``/``next_link`` cursor pages, 429s, failing pages.

Serves ``/workers/``, ``/departments/`` and ``/levels/`` on 127.0.0.1 with the documented shapes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from allotment.testing.vendor_server import VendorAnswer, VendorRequest, serve_vendor

STAMP = "2026-01-01T00:00:00Z"


@dataclass
class FakeRippling:
    token: str = "rpl-token"
    page_size: int = 2  # small, so every collection spans several pages
    workers: list[dict[str, Any]] = field(default_factory=list)
    departments: list[dict[str, Any]] = field(default_factory=list)
    levels: list[dict[str, Any]] = field(default_factory=list)
    throttle: list[str] = field(default_factory=list)  # Retry-After values of the next 429s
    fail_pages: dict[tuple[str, int], int] = field(
        default_factory=dict
    )  # (collection, page) -> times to fail
    redacted: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def department(self, dep_id: str, name: str, reference_code: str) -> None:
        self.departments.append(
            {
                "id": dep_id,
                "created_at": STAMP,
                "updated_at": STAMP,
                "name": name,
                "parent_id": None,
                "reference_code": reference_code,
            }
        )

    def level(self, level_id: str, name: str, global_level: int) -> None:
        self.levels.append(
            {
                "id": level_id,
                "created_at": STAMP,
                "updated_at": STAMP,
                "name": name,
                "global_level": global_level,
                "rank": 1,
                "track_id": "trk_ic",
            }
        )

    def worker(self, worker_id: str, email: str, **fields: Any) -> dict[str, Any]:
        record = {
            "id": worker_id,
            "created_at": STAMP,
            "updated_at": STAMP,
            "user_id": "usr_" + worker_id,
            "status": "ACTIVE",
            "work_email": email,
            "title": None,
            "start_date": "2024-01-15",
            "end_date": None,
            "termination_details": None,
            "manager_id": None,
            "department_id": None,
            "level_id": None,
            **fields,
        }
        for name in self.redacted:
            record.pop(name, None)
        self.workers.append(record)
        return record

    def handle(self, path: str, query: dict[str, list[str]], headers: Any) -> tuple[int, dict[str, str], Any]:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {}, {"detail": "Invalid token."}
        if self.throttle:
            return 429, {"Retry-After": self.throttle.pop(0)}, {"detail": "Request was throttled."}
        collection = path.strip("/")
        items = {"workers": self.workers, "departments": self.departments, "levels": self.levels}.get(
            collection
        )
        if items is None:
            return 404, {}, {"detail": "Not found."}
        cursor = query.get("cursor", [""])[0]
        offset = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
        page = offset // self.page_size
        if self.fail_pages.get((collection, page), 0) > 0:
            self.fail_pages[(collection, page)] -= 1
            return 500, {}, {"detail": "A server error occurred."}
        if "status" in query.get("filter", [""])[0]:
            return 400, {}, {"detail": "unsupported filter in this fake"}
        ordered = sorted(items, key=lambda i: i["id"]) if query.get("order_by") == ["id"] else items
        body: dict[str, Any] = {"results": ordered[offset : offset + self.page_size]}
        if self.redacted and collection == "workers":
            body["__meta"] = {
                "redacted_fields": [{"name": n, "reason": "Insufficient entitlements"} for n in self.redacted]
            }
        if offset + self.page_size < len(ordered):
            # next_link is a full URL carrying every other parameter of the request
            rest = {k: v[0] for k, v in query.items() if k != "cursor"}
            rest["cursor"] = base64.urlsafe_b64encode(str(offset + self.page_size).encode()).decode()
            body["next_link"] = f"{self.url}/{collection}/?{urlencode(rest)}"
        return 200, {}, body


@contextmanager
def serve(fake: FakeRippling) -> Iterator[FakeRippling]:
    def answer(request: VendorRequest) -> VendorAnswer:
        query = parse_qs(request.query)
        fake.log.append({"path": request.path, "query": query, "headers": dict(request.headers)})
        status, headers, body = fake.handle(request.path, query, request.headers)
        return status, {**headers, "Content-Type": "application/json"}, json.dumps(body).encode()

    with serve_vendor(answer, methods=("GET",)) as url:
        fake.url = url
        yield fake
