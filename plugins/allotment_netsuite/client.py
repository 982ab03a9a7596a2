"""SuiteTalk REST calls: SuiteQL lookups and the ``eid:`` journal upsert, signed with TBA.

A PUT by external id is idempotent, so 429s, 5xx and network errors are retried safely.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from allotment.errors import AllotmentError
from allotment.vendor_http import retry_after_seconds
from allotment_netsuite.oauth1 import TokenAuth

MAX_WAIT_SECONDS = 60.0


def default_sleep(seconds: float) -> None:
    time.sleep(seconds)


class NetSuiteError(AllotmentError):
    status = 502
    code = "netsuite_error"
    type = "server_error"


def account_slug(account_id: str) -> str:
    """``1234567_SB1`` -> ``1234567-sb1`` (the host); the realm keeps the upper-case form."""
    return account_id.strip().lower().replace("_", "-")


def _details(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    errors = body.get("o:errorDetails") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return "; ".join(
            f"{e.get('o:errorCode', '')} {e.get('o:errorPath', '')}: {e.get('detail', '')}".strip()
            for e in errors
        )
    return str(body)[:200]


class NetSuiteClient:
    def __init__(
        self,
        account_id: str,
        auth: TokenAuth,
        *,
        base_url: str | None = None,
        max_attempts: int = 4,
        sleep: Callable[[float], None] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = (base_url or f"https://{account_slug(account_id)}.suitetalk.api.netsuite.com").rstrip(
            "/"
        )
        self.max_attempts = max_attempts
        self.sleep = sleep if sleep is not None else default_sleep
        self.http = httpx.Client(auth=auth, timeout=timeout, headers={"Accept": "application/json"})

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.base_url + path
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise NetSuiteError(f"NetSuite unreachable ({method} {path}): {exc}") from exc
                self.sleep(min(2.0**attempt, 30.0) * random.random())
                continue
            if (response.status_code == 429 or response.status_code >= 500) and not last:
                wait = retry_after_seconds(response.headers.get("Retry-After"), cap=MAX_WAIT_SECONDS)
                self.sleep(min(2.0**attempt, 30.0) * random.random() if wait is None else wait)
                continue
            if response.status_code == 401:
                raise NetSuiteError(
                    f"NetSuite refused the token-based auth (401): {_details(response)}",
                    code="netsuite_unauthorized",
                )
            if response.status_code >= 400:
                raise NetSuiteError(
                    f"NetSuite {method} {path} failed with {response.status_code}: {_details(response)}"
                )
            return response
        raise AssertionError("unreachable")

    def suiteql(self, query: str) -> list[dict[str, Any]]:
        """Every row of a SuiteQL query, following ``hasMore`` pages."""
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            response = self._send(
                "POST",
                "/services/rest/query/v1/suiteql",
                params={"limit": 1000, "offset": offset},
                json={"q": query},
                headers={"Prefer": "transient"},
            )
            page = response.json()
            rows.extend(page.get("items") or [])
            if not page.get("hasMore"):
                return rows
            offset += int(page.get("count") or len(page.get("items") or [])) or 1000

    def upsert_journal(self, external_id: str, body: dict[str, Any]) -> str | None:
        """``PUT journalEntry/eid:{externalId}``: creates or updates; returns the internal id if given."""
        response = self._send(
            "PUT", f"/services/rest/record/v1/journalEntry/eid:{quote(external_id, safe='')}", json=body
        )
        location = response.headers.get("Location") or ""
        return location.rstrip("/").rsplit("/", 1)[-1] or None
