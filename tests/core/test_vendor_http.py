"""The one ``Retry-After`` reader the vendor plugins share: delta-seconds, HTTP dates, caps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from allotment.vendor_http import retry_after_seconds

NOW = datetime(2026, 6, 8, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "Wed, 99 Foo 2026"])
def test_absent_or_unreadable_values_give_none(value: str | None) -> None:
    assert retry_after_seconds(value, NOW) is None


def test_delta_seconds_are_read_and_stripped() -> None:
    assert retry_after_seconds("30", NOW) == 30.0
    assert retry_after_seconds(" 7 ", NOW) == 7.0
    assert retry_after_seconds("0", NOW) == 0.0


def test_http_dates_count_from_now_and_never_go_negative() -> None:
    assert retry_after_seconds("Mon, 08 Jun 2026 12:00:45 GMT", NOW) == 45.0
    assert retry_after_seconds("Mon, 08 Jun 2026 11:00:00 GMT", NOW) == 0.0
    # "-0000" means no zone information: read as UTC rather than failing
    assert retry_after_seconds("Mon, 08 Jun 2026 12:01:00 -0000", NOW) == 60.0


def test_cap_bounds_both_forms() -> None:
    assert retry_after_seconds("3600", NOW, cap=60.0) == 60.0
    assert retry_after_seconds("Mon, 08 Jun 2026 13:00:00 GMT", NOW, cap=60.0) == 60.0
    assert retry_after_seconds("5", NOW, cap=60.0) == 5.0


def test_fractional_and_negative_numbers_only_when_asked() -> None:
    assert retry_after_seconds("1.5", NOW) is None
    assert retry_after_seconds("-3", NOW) is None
    assert retry_after_seconds("1.5", NOW, fractional=True) == 1.5
    assert retry_after_seconds("-3", NOW, fractional=True) == 0.0


def test_the_clock_is_the_default_now() -> None:
    assert retry_after_seconds("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
