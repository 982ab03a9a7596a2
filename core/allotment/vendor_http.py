"""Helpers for plugins that call vendor HTTP APIs (HR systems, ERPs, chat, ticket trackers).

One reading of ``Retry-After`` so every plugin honours a vendor's throttling the same way.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


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
