"""Small helpers shared by test modules."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from allotment.db.executor import sqlite_path


@contextmanager
def write_locked(rt: Any) -> Iterator[None]:
    """Another connection holds the SQLite database's write lock (as another process would);
    allotment's writer waits ``ledger_wait_seconds`` for it, then fails."""
    other = sqlite3.connect(sqlite_path(rt.settings.database_url), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def metric(client: Any, name: str) -> float:
    """The value of an unlabelled Prometheus metric on a gateway test client's ``/metrics``."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")
