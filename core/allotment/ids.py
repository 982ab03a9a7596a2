"""Identifiers allotment generates: time-ordered, so the ledger's unique indexes grow at the end.

A random id lands on a random leaf page of its index: as the ledger grows, every insert reads
and rewrites a cold page. An id that starts with the time in nanoseconds appends instead.
The random tail keeps ids from different processes apart.
"""

from __future__ import annotations

import secrets
import time


def time_ordered_id(prefix: str, random_bytes: int = 6) -> str:
    """``prefix`` + 16 hex digits of the time in ns + ``random_bytes`` random bytes in hex."""
    return f"{prefix}{time.time_ns():016x}{secrets.token_hex(random_bytes)}"


def new_request_id() -> str:
    """A request id for a call that arrived without one (``req_...``)."""
    return time_ordered_id("req_")


def new_reservation_id() -> str:
    return time_ordered_id("res_", 4)
