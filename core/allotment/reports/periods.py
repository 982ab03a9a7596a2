"""Calendar periods and local days in the org time zone, and their UTC bounds.

Reports work on whole org-local days so rollup rows and raw events cover the same instants.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from allotment.errors import InvalidRequest


def parse_period(period: str) -> tuple[int, int]:
    try:
        year_text, month_text = period.split("-")
        year, month = int(year_text), int(month_text)
    except ValueError:
        raise InvalidRequest(f"a period is YYYY-MM, got {period!r}", code="invalid_period") from None
    if not (1 <= month <= 12 and 1970 <= year <= 9999 and len(month_text) == 2):
        raise InvalidRequest(f"a period is YYYY-MM, got {period!r}", code="invalid_period")
    return year, month


def period_days(period: str) -> tuple[date, date]:
    """First local day of ``period`` and the first day after it."""
    year, month = parse_period(period)
    first = date(year, month, 1)
    after = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return first, after


def previous_period(period: str) -> str:
    year, month = parse_period(period)
    return f"{year - 1}-12" if month == 1 else f"{year:04d}-{month - 1:02d}"


def period_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def local_today(tz: ZoneInfo, now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(tz).date()


def current_period(tz: ZoneInfo, now: datetime | None = None) -> str:
    return period_of(local_today(tz, now))


def day_start_utc(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local ``day`` begins."""
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"a date is YYYY-MM-DD, got {text!r}", code="invalid_date") from None


def days_between(start: date, end: date) -> int:
    return (end - start).days


def shift(day: date, days: int) -> date:
    return day + timedelta(days=days)
