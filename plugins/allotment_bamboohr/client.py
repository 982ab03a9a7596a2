"""A small BambooHR HTTP client: Basic auth with the API key, JSON only, 429/503 retries.

BambooHR throttles with 429 + Retry-After (503 before 2026-09-16); both are retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from allotment.errors import AllotmentError
from allotment.vendor_http import retry_after_seconds

RETRY_STATUSES = (429, 503)
MAX_WAIT_SECONDS = 60.0


def default_sleep(seconds: float) -> None:
    time.sleep(seconds)


class BambooHRError(AllotmentError):
    status = 502
    code = "bamboohr_error"
    type = "server_error"


class BambooHRClient:
    """Every call here is a read, so throttling and network errors are safe to retry."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        max_attempts: int = 4,
        sleep: Callable[[float], None] | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.sleep = sleep if sleep is not None else default_sleep
        # the password part of Basic auth is ignored by BambooHR; "x" is the documented filler
        self.http = httpx.Client(
            auth=(api_key, "x"),
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json"},
        )

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}/{path.lstrip('/')}"
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise BambooHRError(f"BambooHR unreachable ({method} {path}): {exc}") from exc
                self.sleep(self._backoff(attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                wait = retry_after_seconds(response.headers.get("Retry-After"), cap=MAX_WAIT_SECONDS)
                self.sleep(self._backoff(attempt) if wait is None else wait)
                continue
            return self._json(response, method, path)
        raise AssertionError("unreachable")

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(2.0 ** (attempt - 1), 30.0) * (0.5 + random.random() / 2)

    @staticmethod
    def _json(response: httpx.Response, method: str, path: str) -> Any:
        if response.status_code == 401:
            raise BambooHRError(
                "BambooHR refused the API key (401); check plugins.bamboohr.api_key",
                code="bamboohr_unauthorized",
            )
        if response.status_code >= 400:
            reason = response.headers.get("X-BambooHR-Error-Message") or response.text[:200]
            raise BambooHRError(f"BambooHR {method} {path} failed with {response.status_code}: {reason}")
        try:
            return response.json()
        except ValueError as exc:
            raise BambooHRError(f"BambooHR {method} {path} did not answer JSON") from exc

    def changed(self, since: datetime) -> dict[str, Any]:
        """``GET /employees/changed``: ``{"latest", "employees": {id: {id, action, lastChanged}}}``."""
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # "Z", never a raw "+"
        data = self._request("GET", "employees/changed", params={"since": stamp})
        if not isinstance(data, dict) or not isinstance(data.get("employees", {}), dict):
            raise BambooHRError("BambooHR /employees/changed answered an unexpected shape")
        return data

    def report(self, fields: list[str], employee_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """``POST /reports/custom``: every employee, active and inactive, with current values."""
        body: dict[str, Any] = {"title": "allotment-sync", "fields": fields}
        if employee_ids is not None:
            body["filters"] = {"employeeIds": employee_ids}
        data = self._request(
            "POST",
            "reports/custom",
            params={"format": "JSON", "onlyCurrent": "true"},
            json=body,
            # exactly application/json: with a charset BambooHR parses the body as XML
            headers={"Content-Type": "application/json"},
        )
        employees = data.get("employees") if isinstance(data, dict) else None
        if not isinstance(employees, list):
            raise BambooHRError("BambooHR /reports/custom answered an unexpected shape")
        return employees
