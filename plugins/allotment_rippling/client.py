"""A small Rippling REST client: bearer token, ``next_link`` pagination, 429 and 5xx retries on GETs.

The error body is not specified by Rippling, so failures are keyed on the status code only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from allotment.errors import AllotmentError
from allotment.vendor_http import retry_after_seconds

DEFAULT_BASE_URL = "https://rest.ripplingapis.com"
MAX_WAIT_SECONDS = 60.0


def default_sleep(seconds: float) -> None:
    time.sleep(seconds)


class RipplingError(AllotmentError):
    status = 502
    code = "rippling_error"
    type = "server_error"


class RipplingClient:
    """Only GETs: throttling, server errors and network errors are all safe to retry."""

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        max_attempts: int = 4,
        page_size: int = 100,
        sleep: Callable[[float], None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.page_size = page_size
        self.sleep = sleep if sleep is not None else default_sleep
        self.http = httpx.Client(
            timeout=timeout, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
        )

    def close(self) -> None:
        self.http.close()

    def get(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                response = self.http.get(url, params=params)
            except httpx.TransportError as exc:
                if last:
                    raise RipplingError(f"Rippling unreachable (GET {url}): {exc}") from exc
                self.sleep(self._backoff(attempt))
                continue
            if (response.status_code == 429 or response.status_code >= 500) and not last:
                wait = retry_after_seconds(response.headers.get("Retry-After"), cap=MAX_WAIT_SECONDS)
                self.sleep(self._backoff(attempt) if wait is None else wait)
                continue
            if response.status_code in (401, 403):
                raise RipplingError(
                    f"Rippling refused the token ({response.status_code}): it may be expired, revoked, "
                    "or miss a scope (workers.read, departments.read, levels.read)",
                    code="rippling_unauthorized",
                )
            if response.status_code >= 400:
                raise RipplingError(f"Rippling GET {urlsplit(url).path} failed with {response.status_code}")
            data = response.json()
            if not isinstance(data, dict):
                raise RipplingError(f"Rippling GET {urlsplit(url).path} answered an unexpected shape")
            return data
        raise AssertionError("unreachable")

    @staticmethod
    def _backoff(attempt: int) -> float:
        return min(2.0 ** (attempt - 1), 30.0) * (0.5 + random.random() / 2)

    def list(self, collection: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following ``next_link`` verbatim until it is absent."""
        url: str | None = f"{self.base_url}/{collection.strip('/')}/"
        query: dict[str, Any] | None = {"limit": self.page_size, **params}
        origin = urlsplit(self.base_url).netloc
        while url:
            page = self.get(url, query)
            results = page.get("results")
            if not isinstance(results, list):
                raise RipplingError(f"Rippling /{collection} answered without results")
            yield from results
            url, query = page.get("next_link"), None  # next_link already carries the query
            if url and urlsplit(url).netloc != origin:
                # never hand the bearer token to another host
                raise RipplingError(f"Rippling next_link points elsewhere: {urlsplit(url).netloc}")
