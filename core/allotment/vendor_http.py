"""Helpers for plugins that call vendor HTTP APIs (HR systems, ERPs, chat, ticket trackers).

One request path and one reading of ``Retry-After``, so every plugin sees a vendor's
answers, outages and throttling the same way.
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime

__all__ = ["TransientVendorError", "VendorReply", "VendorUnreachable", "retry_after_seconds", "send"]


class TransientVendorError(Exception):
    """A vendor call that may work later: rate limited, unavailable or unreachable.

    Each plugin raises its own subclass, so its callers catch the plugin's own type.

    :param after: the vendor's ``Retry-After`` in seconds, when it gave one.
    """

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


class VendorUnreachable(Exception):
    """No answer came: the name did not resolve, or the connection failed, reset or timed out."""


@dataclass(frozen=True)
class VendorReply:
    """A vendor's answer, whatever its status, with the header names in lower case."""

    status: int
    body: str
    headers: dict[str, str]

    def retry_after(self) -> float | None:
        """The ``Retry-After`` header in seconds (decimals allowed), or None."""
        return retry_after_seconds(self.headers.get("retry-after"), fractional=True)


def send(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> VendorReply:
    """Send one request on the standard library; every answer is returned, 4xx and 5xx too.

    The body is read as UTF-8, undecodable bytes replaced.

    :raises VendorUnreachable: when no answer came; its message is the network error's.
    """
    request = urllib.request.Request(url, data=data, method=method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - configured URL
            return _reply(reply.status, reply.read(), reply.headers)
    except urllib.error.HTTPError as exc:
        return _reply(exc.code, exc.read(), exc.headers)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise VendorUnreachable(str(exc)) from exc


def _reply(status: int, body: bytes, headers: Message | None) -> VendorReply:
    found = {name.lower(): value for name, value in (headers or {}).items()}
    return VendorReply(status, body.decode("utf-8", "replace"), found)


def retry_after_seconds(
    value: str | None,
    now: datetime | None = None,
    cap: float | None = None,
    *,
    fractional: bool = False,
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or None when absent or unreadable.

    The value is delta-seconds or an HTTP date (a date without a zone is read as UTC); a date
    in the past means "now" (0.0).

    :param now: the current time for HTTP dates (default: the clock).
    :param cap: the longest wait to return; a vendor asking for more gets ``cap``.
    :param fractional: also read decimal and negative numbers (negative means 0.0), which
        RFC 9110 does not allow but some vendors send; by default only digits are seconds.
    """
    if not value:
        return None
    value = value.strip()
    seconds: float | None = None
    if value.isdigit() or fractional:
        # not a number after all (e.g. a superscript digit): fall through to a date
        with contextlib.suppress(ValueError):
            seconds = max(0.0, float(value))
    if seconds is None:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if cap is None else min(seconds, cap)
