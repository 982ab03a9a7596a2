"""A tiny JSON-over-HTTP client on the standard library, shared by the Slack transports.

It classifies failures: ``RetryLater`` (429, 5xx, network) versus ``SlackError`` (permanent).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from allotment.vendor_http import retry_after_seconds


class SlackError(Exception):
    """Slack refused the message for a reason a retry will not fix (bad token, no channel)."""


class RetryLater(Exception):
    """Slack is rate limiting or unavailable; ``after`` is Slack's Retry-After in seconds, if given."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def post_json(url: str, payload: dict[str, Any], headers: dict[str, str], timeout: float) -> Response:
    """POST ``payload``; 429 and 5xx raise ``RetryLater``, other statuses are returned."""
    data = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json; charset=utf-8")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - configured URL
            return Response(reply.status, reply.read().decode("utf-8", "replace"), dict(reply.headers))
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")
        found = dict(exc.headers or {})
        if exc.code == 429:
            after = retry_after_seconds(
                exc.headers.get("Retry-After") if exc.headers else None, fractional=True
            )
            raise RetryLater(f"slack rate limited (429), retry after {after}s", after) from None
        if exc.code >= 500:
            raise RetryLater(f"slack unavailable ({exc.code}): {body[:200]}") from None
        return Response(exc.code, body, found)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise RetryLater(f"slack unreachable: {exc}") from None
