"""JSON over HTTP on the standard library, with the vendors' shared retry classification.

429 and 503 (and other 5xx) raise ``RetryLater``; any other refusal raises ``TicketError``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from allotment.vendor_http import retry_after_seconds


class TicketError(Exception):
    """A ticket system refused a request in a way a retry will not fix (auth, validation)."""


class RetryLater(Exception):
    """Rate limited or unavailable; ``after`` is the vendor's Retry-After in seconds, when given."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


@dataclass(frozen=True)
class Reply:
    status: int
    body: str
    headers: dict[str, str]

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


def request(
    method: str,
    url: str,
    payload: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
    data: bytes | None = None,
) -> Reply:
    """Send one request; returns 2xx and 4xx replies, raises ``RetryLater`` on 429/5xx/network."""
    body = data if data is not None else (None if payload is None else json.dumps(payload).encode())
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as reply:  # noqa: S310 - configured URL
            return Reply(reply.status, reply.read().decode("utf-8", "replace"), dict(reply.headers))
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        found = {k.lower(): v for k, v in (exc.headers or {}).items()}
        if exc.code == 429 or exc.code >= 500:
            after = retry_after_seconds(found.get("retry-after"), fractional=True)
            raise RetryLater(f"{method} {url} answered {exc.code}: {text[:200]}", after) from None
        return Reply(exc.code, text, found)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise RetryLater(f"{method} {url} unreachable: {exc}") from None


def refused(system: str, reply: Reply) -> TicketError:
    return TicketError(f"{system} refused the request ({reply.status}): {reply.body[:300]}")
