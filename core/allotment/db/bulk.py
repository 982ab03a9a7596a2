"""The ledger's bulk statements: a whole batch of settles and records in a handful of SQL statements.

Used by ``allotment.bulk`` inside one transaction; every statement takes or returns many rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

from allotment.db.ledger import COUNT_COLUMNS, EVENT_COLUMNS, Ledger, ReservationState

_CHUNK = 500  # rows (or ids) per statement: far below SQLite's and PostgreSQL's parameter limits


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


_PG_INTEGER_COLUMNS = frozenset((*COUNT_COLUMNS, "external_cost_nanos"))


def _pg_type(column: str) -> str:
    if column in _PG_INTEGER_COLUMNS:
        return "bigint"
    if column == "ts":
        return "timestamptz"
    if column in ("estimated", "enforced"):
        return "boolean"
    return "text"


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows as one list per column (the parameters of an ``unnest`` INSERT)."""
    return [list(column) for column in zip(*rows, strict=True)]


class BulkStatements:
    """Many-row SQL over a ``Ledger``'s dialect: IN lists, multi-row INSERTs, ``executemany``."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._sqlite = ledger.dialect == "sqlite"
        self._q = ledger._q
        cols = ", ".join(EVENT_COLUMNS) + ", row_hash"
        marks = ", ".join("?" for _ in range(len(EVENT_COLUMNS) + 1))
        self._insert_event = self._q(f"INSERT INTO usage_events ({cols}) VALUES ({marks})")
        self._max_event_id = "SELECT COALESCE(MAX(id), 0) FROM usage_events"
        self._events_after = self._q("SELECT id, request_id FROM usage_events WHERE id > ?")
        self._insert_entry = self._q(
            "INSERT INTO ledger_entries (event_id, wallet_id, amount_nanos, ts, row_hash) "
            "VALUES (?, ?, ?, ?, ?)"
        )
        self._sql: dict[tuple[str, int], str] = {}
        # PostgreSQL: INSERT ... SELECT FROM unnest(one array per column)
        types = ", ".join(f"%s::{_pg_type(name)}[]" for name in (*EVENT_COLUMNS, "row_hash"))
        self._unnest_events = (
            f"INSERT INTO usage_events ({cols}) SELECT * FROM unnest({types}) RETURNING id, request_id"
        )
        self._unnest_entries = (
            "INSERT INTO ledger_entries (event_id, wallet_id, amount_nanos, ts, row_hash) "
            "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::timestamptz[], %s::text[])"
        )

    # -- helpers ---------------------------------------------------------------------------
    def _in(self, head: str, tail: str, count: int) -> str:
        """``head IN (...) tail`` for ``count`` values (``= ANY(%s)`` with one list on PostgreSQL)."""
        key = (head + tail, count if self._sqlite else 0)
        sql = self._sql.get(key)
        if sql is None:
            marks = "IN (" + ", ".join("?" * count) + ")" if self._sqlite else "= ANY(?)"
            sql = self._sql[key] = self._q(f"{head} {marks}{tail}")
        return sql

    def _select_in(self, conn: Any, head: str, tail: str, ids: Sequence[str]) -> Iterator[Sequence[Any]]:
        for chunk in _chunks(ids):
            params = tuple(chunk) if self._sqlite else (list(chunk),)
            yield from conn.execute(self._in(head, tail, len(chunk)), params).fetchall()

    def _executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self._sqlite:
            conn.executemany(sql, rows)
        else:
            with conn.cursor() as cur:
                cur.executemany(sql, rows)

    # -- reads -----------------------------------------------------------------------------
    def existing_events(self, conn: Any, request_ids: Sequence[str]) -> dict[str, int]:
        """request id -> id of its usage event, for the ids that already have one."""
        return {
            str(row[1]): int(row[0])
            for row in self._select_in(
                conn,
                "SELECT id, request_id FROM usage_events WHERE kind = 'usage' AND request_id",
                "",
                request_ids,
            )
        }

    def claim(self, conn: Any, request_ids: Sequence[str]) -> dict[str, ReservationState]:
        """Move every open reservation among ``request_ids`` to ``settled``; return the ones moved."""
        head = "UPDATE reservations SET state = 'settled' WHERE state = 'open' AND request_id"
        tail = " RETURNING id, request_id, state, amount_nanos, wallet_ids, created_at, expires_at, context"
        return {
            str(row[1]): self.ledger._reservation(row)
            for row in self._select_in(conn, head, tail, request_ids)
        }

    def unclaim(self, conn: Any, request_ids: Sequence[str]) -> None:
        """Put claimed holds back to ``open`` (their settle failed inside the batch)."""
        sql = self._q("UPDATE reservations SET state = 'open' WHERE request_id = ? AND state = 'settled'")
        self._executemany(conn, sql, [(rid,) for rid in request_ids])

    def reservations(self, conn: Any, request_ids: Sequence[str]) -> dict[str, ReservationState]:
        head = (
            "SELECT id, request_id, state, amount_nanos, wallet_ids, created_at, expires_at, context "
            "FROM reservations WHERE request_id"
        )
        return {
            str(row[1]): self.ledger._reservation(row) for row in self._select_in(conn, head, "", request_ids)
        }

    # -- writes ----------------------------------------------------------------------------
    def charge_wallets(self, conn: Any, deltas: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """One UPDATE per wallet: release the summed holds and add the summed cost.

        ``deltas`` maps wallet id -> (release, cost); returns wallet id -> (spent, limit) after.
        Ascending ids, like every other wallet update, so concurrent writers cannot deadlock.
        """
        sql = self.ledger.sql_settle_wallet
        ordered = sorted(deltas)
        out: dict[int, tuple[int, int]] = {}
        if self._sqlite:
            for wallet_id in ordered:
                release, cost = deltas[wallet_id]
                row = conn.execute(sql, (release, cost, wallet_id)).fetchone()
                if row is not None:
                    out[wallet_id] = (int(row[0]), int(row[1]))
            return out
        with conn.pipeline():
            cursors = [(w, conn.execute(sql, (deltas[w][0], deltas[w][1], w))) for w in ordered]
        for wallet_id, cur in cursors:
            row = cur.fetchone()
            if row is not None:
                out[wallet_id] = (int(row[0]), int(row[1]))
        return out

    def insert_events(self, conn: Any, rows: Sequence[Sequence[Any]]) -> dict[str, int]:
        """Insert event rows (columns as ``EVENT_COLUMNS`` + row hash); request id -> id."""
        ids: dict[str, int] = {}
        if not rows:
            return ids
        if not self._sqlite:
            # one short statement over column arrays: a long VALUES list costs the driver more
            # to parse on every batch than the database takes to insert the rows
            for event_id, request_id in conn.execute(self._unnest_events, _columns(rows)).fetchall():
                ids[str(request_id)] = int(event_id)
            return ids
        # SQLite: one short statement, prepared once, run per row. A multi-row VALUES statement is
        # a new statement for every chunk size (the last chunk of a batch rarely repeats), and
        # preparing one of thousands of placeholders costs about as much as inserting its rows.
        # The batch holds SQLite's write lock, so the rows above the largest id before the
        # insert are exactly these.
        last = conn.execute(self._max_event_id).fetchone()[0]
        conn.executemany(self._insert_event, rows)
        for event_id, request_id in conn.execute(self._events_after, (last,)).fetchall():
            ids[str(request_id)] = int(event_id)
        if len(ids) != len(rows):  # never expected: refuse to chain entries to the wrong event
            raise RuntimeError(f"inserted {len(rows)} events but read back {len(ids)}")
        return ids

    def insert_entries(self, conn: Any, rows: Sequence[Sequence[Any]]) -> None:
        if rows and not self._sqlite:
            conn.execute(self._unnest_entries, _columns(rows))
            return
        self._executemany(conn, self._insert_entry, rows)

    def insert_outbox(self, conn: Any, rows: Iterable[tuple[int, str, int, int, Any]]) -> None:
        """Threshold crossings: (wallet id, fraction, spent at the crossing, limit, created at)."""
        params = []
        for wallet_id, fraction, spent, limit, created in rows:
            payload = orjson.dumps(
                {"wallet_id": wallet_id, "fraction": fraction, "spent_nanos": spent, "limit_nanos": limit}
            ).decode()
            dedup = f"budget_threshold:{wallet_id}:{fraction}"
            params.append(("budget_threshold", payload, dedup, created, self.ledger._bool(False)))
        self._executemany(conn, self.ledger.sql_outbox, params)
