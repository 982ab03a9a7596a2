"""JSON over HTTP on ``allotment.vendor_http``, with the vendors' shared retry classification.

429 and 503 (and other 5xx) raise ``RetryLater``; any other refusal raises ``TicketError``.
"""

from __future__ import annotations

import json
from typing import Any

from allotment.vendor_http import TransientVendorError, VendorReply, VendorUnreachable, send


class TicketError(Exception):
    """A ticket system refused a request in a way a retry will not fix (auth, validation)."""


class RetryLater(TransientVendorError):
    """Rate limited or unavailable; ``after`` is the vendor's Retry-After in seconds, when given."""


class Reply(VendorReply):
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
    sent = {"Content-Type": "application/json"} if body is not None else {}
    try:
        reply = send(method, url, body, {**sent, **(headers or {})}, timeout)
    except VendorUnreachable as exc:
        raise RetryLater(f"{method} {url} unreachable: {exc}") from None
    if reply.status == 429 or reply.status >= 500:
        raise RetryLater(f"{method} {url} answered {reply.status}: {reply.body[:200]}", reply.retry_after())
    return Reply(reply.status, reply.body, reply.headers)


def refused(system: str, reply: Reply) -> TicketError:
    return TicketError(f"{system} refused the request ({reply.status}): {reply.body[:300]}")
