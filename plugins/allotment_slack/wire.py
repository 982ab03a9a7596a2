"""A tiny JSON-over-HTTP client for the Slack transports, on ``allotment.vendor_http``.

It classifies failures: ``RetryLater`` (429, 5xx, network) versus ``SlackError`` (permanent).
"""

from __future__ import annotations

import json
from typing import Any

from allotment.vendor_http import TransientVendorError, VendorReply, VendorUnreachable, send


class SlackError(Exception):
    """Slack refused the message for a reason a retry will not fix (bad token, no channel)."""


class RetryLater(TransientVendorError):
    """Slack is rate limiting or unavailable; ``after`` is Slack's Retry-After in seconds, if given."""


class Response(VendorReply):
    def json(self) -> Any:
        return json.loads(self.body)


def post_json(url: str, payload: dict[str, Any], headers: dict[str, str], timeout: float) -> Response:
    """POST ``payload``; 429 and 5xx raise ``RetryLater``, other statuses are returned."""
    data = json.dumps(payload).encode()
    sent = {"Content-Type": "application/json; charset=utf-8", **headers}
    try:
        reply = send("POST", url, data, sent, timeout)
    except VendorUnreachable as exc:
        raise RetryLater(f"slack unreachable: {exc}") from None
    if reply.status == 429:
        after = reply.retry_after()
        raise RetryLater(f"slack rate limited (429), retry after {after}s", after)
    if reply.status >= 500:
        raise RetryLater(f"slack unavailable ({reply.status}): {reply.body[:200]}")
    return Response(reply.status, reply.body, reply.headers)
