"""The SQLite executor keeps its write-ahead log bounded under traffic that never pauses."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from allotment.db import executor as executor_module
from allotment.db.executor import SqliteExecutor, connect_sqlite


def _write(ex: SqliteExecutor, n: int) -> None:
    for i in range(n):
        ex.run(lambda conn, i=i: conn.execute("INSERT INTO t (v) VALUES (?)", (f"row {i} " * 40,)))


def _wal_frames(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        # PASSIVE returns (busy, frames in the WAL, frames copied); it never blocks
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


@pytest.fixture()
def ex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqliteExecutor:
    monkeypatch.setattr(executor_module, "CHECKPOINT_SECONDS", 3600.0)  # ticks run by hand here
    ex = SqliteExecutor(str(tmp_path / "ledger.db"))
    ex.run(lambda conn: conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    yield ex
    ex.close()


def test_the_wal_stays_bounded_while_writes_never_pause(
    ex: SqliteExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "RESTART_FRAMES", 200)
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        while not stop.is_set():
            _write(ex, 1)
            written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    conn = connect_sqlite(ex.path)
    restarts = 0
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline or restarts < 2:
            time.sleep(0.05)
            restarts += ex.checkpoint(conn) == 0
            assert time.monotonic() < deadline + 10, "the WAL never started over"
    finally:
        stop.set()
        thread.join()
        conn.close()
    # the WAL holds a fraction of what was written: it started over while writes went on
    assert written[0] > 600
    assert _wal_frames(ex.path) < written[0] // 2
    assert ex.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == written[0]


def test_a_wal_past_the_bound_starts_over_with_the_next_write(
    ex: SqliteExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "RESTART_FRAMES", 50)
    _write(ex, 200)
    grown = _wal_frames(ex.path)
    assert grown >= 200  # every commit appended at least one frame
    conn = connect_sqlite(ex.path)
    try:
        assert ex.checkpoint(conn) == 0
    finally:
        conn.close()
    _write(ex, 1)
    # the next writer began again at the start of the file: only its own frames are in the WAL
    assert _wal_frames(ex.path) <= 5
    # and nothing written was lost on the way
    assert ex.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 201


def test_the_restart_gives_up_for_this_tick_while_a_reader_holds_the_wal(
    ex: SqliteExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "RESTART_FRAMES", 50)
    monkeypatch.setattr(executor_module, "RESTART_WAIT_MS", 1)
    _write(ex, 100)
    reader = connect_sqlite(ex.path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # a read snapshot that pins the WAL
    _write(ex, 100)
    conn = connect_sqlite(ex.path)
    try:
        left = ex.checkpoint(conn)
        assert left > 0  # could not start over; the next tick tries again
        reader.execute("COMMIT")
        assert ex.checkpoint(conn) == 0
    finally:
        conn.close()
        reader.close()
    _write(ex, 1)  # the writers were never blocked for good
    assert _wal_frames(ex.path) <= 5
    assert os.path.getsize(ex.path + "-wal") <= executor_module.WAL_SIZE_LIMIT
