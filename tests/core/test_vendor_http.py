"""What the vendor plugins share: one request path and one ``Retry-After`` reader (seconds, dates, caps)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from allotment.testing.serve import free_port
from allotment.testing.vendor_server import VendorAnswer, VendorRequest, serve_vendor
from allotment.vendor_http import VendorReply, VendorUnreachable, retry_after_seconds, send

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


def test_send_returns_every_answer_with_its_body_and_lower_case_header_names() -> None:
    received: list[VendorRequest] = []

    def answer(request: VendorRequest) -> VendorAnswer:
        received.append(request)
        status = {"/ok": 200, "/refused": 403, "/busy": 503}[request.path]
        return status, {"X-Vendor-Id": "v-1", "Retry-After": "1.5"}, f"{status} \xe9".encode() + b"\xff"

    with serve_vendor(answer) as url:
        replies = [
            send("PUT", url + "/ok?page=2", b'{"a": 1}', {"Content-Type": "application/json"}),
            send("GET", url + "/refused"),
            send("POST", url + "/busy", b"", timeout=5),
        ]
    assert [r.status for r in replies] == [200, 403, 503]
    assert [r.body for r in replies] == ["200 \xe9\ufffd", "403 \xe9\ufffd", "503 \xe9\ufffd"]
    for reply in replies:
        assert reply.headers["x-vendor-id"] == "v-1" and reply.retry_after() == 1.5
        assert all(name == name.lower() for name in reply.headers)
    first = received[0]
    assert (first.method, first.path, first.query, first.body) == ("PUT", "/ok", "page=2", b'{"a": 1}')
    assert first.headers.get("content-type") == "application/json"
    assert [r.method for r in received] == ["PUT", "GET", "POST"]


def test_send_raises_vendor_unreachable_when_no_answer_comes() -> None:
    with pytest.raises(VendorUnreachable, match="refused"):
        send("GET", f"http://127.0.0.1:{free_port()}/", timeout=5)


def test_a_reply_reads_its_retry_after_with_decimals_or_gives_none() -> None:
    assert VendorReply(429, "", {"retry-after": "2.5"}).retry_after() == 2.5
    assert VendorReply(429, "", {"retry-after": "-1"}).retry_after() == 0.0
    assert VendorReply(503, "", {}).retry_after() is None
