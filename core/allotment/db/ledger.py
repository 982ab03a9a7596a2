"""The ledger's hot path in raw DBAPI SQL: wallets, reservations, settlement, passive records.

Every limit is evaluated inside one conditional UPDATE; nothing reads and then writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from allotment.db.executor import Executor
from allotment.errors import InvalidRequest, NotFound
from allotment.types import USAGE_COUNT_FIELDS, Wallet

GENERATION_KEY = "generation"


class BudgetRefused(Exception):
    """A wallet could not hold the amount; carries the wallet id that refused."""

    def __init__(self, wallet_id: int | None) -> None:
        super().__init__(wallet_id)
        self.wallet_id = wallet_id


class StaleDirectory(Exception):
    """Config or keys changed since the caller's snapshot; reload and try again."""


class DuplicateRequest(Exception):
    """A reservation already exists for this request id."""


@dataclass(frozen=True, slots=True)
class WalletSpec:
    scope: str
    scope_id: str
    period: str
    period_start: datetime
    period_end: datetime
    limit_nanos: int


@dataclass(frozen=True, slots=True)
class ReservationState:
    id: str
    request_id: str
    state: str
    amount_nanos: int
    wallet_ids: tuple[int, ...]
    created_at: datetime
    expires_at: datetime
    context: dict[str, Any]


EVENT_COLUMNS = (
    "request_id",
    "kind",
    "ts",
    "person_id",
    "team_id",
    "key_id",
    "cost_center",
    "provider",
    "model",
    "endpoint_mode",
    *USAGE_COUNT_FIELDS,
    "estimated",
    "cost_nanos",
    "estimate_nanos",
    "external_cost_nanos",
    "card_version",
    "outcome",
    "enforced",
    "labels",
    "trace_id",
    "retry_of",
    "end_user",
    "reservation_id",
    "flags",
    "service_tier",
)
# Columns added after the first events were hashed: a row's hash covers one only when it is set,
# so every row written before the column existed (NULL there) still verifies unchanged.
LATE_HASHED_COLUMNS = ("service_tier",)
# integer columns that are never NULL (stored as 0 when absent)
COUNT_COLUMNS = (*USAGE_COUNT_FIELDS, "cost_nanos", "estimate_nanos")
# positions of the columns whose stored form differs from the event's value
_TS = EVENT_COLUMNS.index("ts")
_ESTIMATED = EVENT_COLUMNS.index("estimated")
_ENFORCED = EVENT_COLUMNS.index("enforced")
WALLET_COLUMNS = (
    "id, scope, scope_id, period, period_start, period_end, limit_nanos, spent_nanos, reserved_nanos"
)
TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def format_ts(value: datetime) -> str:
    """An aware datetime as stored text in UTC: ``TS_FORMAT``, written faster than strftime."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def parse_ts(value: Any) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite keeps text, PostgreSQL timestamptz)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    if "+" in text[10:]:
        text = text[: text.rindex("+")]
    parsed = datetime.strptime(text, TS_FORMAT if "." in text else "%Y-%m-%d %H:%M:%S")
    return parsed.replace(tzinfo=UTC)


def _hash_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


def row_hash(values: dict[str, Any]) -> str:
    """Content hash of a row: canonical JSON of its columns (id excluded; a NULL column of
    ``LATE_HASHED_COLUMNS`` left out).

    Datetimes must be aware UTC (``parse_ts`` gives that when reading back) so the writer
    and ``audit verify`` serialise them identically.
    """
    for name in LATE_HASHED_COLUMNS:
        if name in values and values[name] is None:
            values = {k: v for k, v in values.items() if k != name}
    canonical = orjson.dumps(values, option=orjson.OPT_SORT_KEYS, default=_hash_value)
    return hashlib.sha256(canonical).hexdigest()


def entry_hash(event_hash: str, wallet_id: int, amount_nanos: int, ts: datetime | str) -> str:
    """Hash of a ledger entry, chained to its event's hash (``ts`` as text or datetime)."""
    stamp = ts if isinstance(ts, str) else _hash_value(ts)
    text = f"{event_hash}|{wallet_id}|{amount_nanos}|{stamp}"
    return hashlib.sha256(text.encode()).hexdigest()


class Ledger:
    """SQL for the ledger, shared by SQLite and PostgreSQL (placeholders differ)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.dialect = executor.dialect
        self._sqlite = executor.dialect == "sqlite"
        p = executor.placeholder
        self._p = p

        def q(sql: str) -> str:
            return sql.replace("?", p)

        self._q = q
        cols = ", ".join(EVENT_COLUMNS) + ", row_hash"
        marks = ", ".join("?" for _ in range(len(EVENT_COLUMNS) + 1))
        self.sql_insert_reservation = q(
            "INSERT INTO reservations (id, request_id, state, amount_nanos, wallet_ids, "
            "created_at, expires_at, context) VALUES (?, ?, 'open', ?, ?, ?, ?, ?)"
        )
        self.sql_generation = q("SELECT value FROM meta WHERE key = ?")
        # PostgreSQL only (migration 0004): the whole reservation in one statement
        self.sql_reserve_function = q("SELECT allotment_reserve(?::bigint[], ?, ?, ?, ?, ?, ?, ?, ?)")
        self.sql_settle_function = q(
            "SELECT allotment_settle(?, ?, ?, ?::bigint[], ?::jsonb, ?::text[], ?, ?::text[])"
        )
        self.sql_claim = q("UPDATE reservations SET state = ? WHERE request_id = ? AND state = 'open'")
        self.sql_reservation = q(
            "SELECT id, request_id, state, amount_nanos, wallet_ids, created_at, expires_at, "
            "context FROM reservations WHERE request_id = ?"
        )
        self.sql_settle_wallet = q(
            "UPDATE wallets SET reserved_nanos = reserved_nanos - ?, "
            "spent_nanos = spent_nanos + ? WHERE id = ? "
            "RETURNING spent_nanos, limit_nanos"
        )
        self.sql_insert_event = q(f"INSERT INTO usage_events ({cols}) VALUES ({marks}) RETURNING id")
        self.sql_insert_entry = q(
            "INSERT INTO ledger_entries (event_id, wallet_id, amount_nanos, ts, row_hash) "
            "VALUES (?, ?, ?, ?, ?)"
        )
        self.sql_event_by_request = q(
            f"SELECT id, {', '.join(EVENT_COLUMNS)} FROM usage_events WHERE request_id = ? AND kind = 'usage'"
        )
        self.sql_outbox = q(
            "INSERT INTO outbox (hook, payload, dedup_key, created_at, done) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING"
        )
        self.sql_extend = q("UPDATE reservations SET expires_at = ? WHERE request_id = ? AND state = 'open'")
        self._entries_sql: dict[int, str] = {}
        self._charge_sql: dict[int, str] = {}
        self._reserve_sql: dict[int, str] = {}
        self._event_entries_sql: dict[int, str] = {}

    # -- values ------------------------------------------------------------------------
    def ts(self, value: datetime) -> Any:
        """A naive-UTC datetime as the driver wants it (text for SQLite)."""
        return format_ts(value) if self._sqlite else value.astimezone(UTC)

    @staticmethod
    def parse_ts(value: Any) -> datetime:
        return parse_ts(value)

    def _bool(self, value: bool) -> Any:
        return int(value) if self._sqlite else value

    # -- wallets -----------------------------------------------------------------------
    def ensure_wallets(self, specs: Sequence[WalletSpec]) -> list[int]:
        """Create missing wallets for the period (limits updated in place); return their ids."""
        q = self._q

        def op(conn: Any) -> list[int]:
            ids: list[int] = []
            for spec in specs:
                cur = conn.execute(
                    q(
                        "INSERT INTO wallets (scope, scope_id, period, period_start, "
                        "period_end, limit_nanos, spent_nanos, reserved_nanos) "
                        "VALUES (?, ?, ?, ?, ?, ?, 0, 0) "
                        "ON CONFLICT (scope, scope_id, period) "
                        "DO UPDATE SET limit_nanos = excluded.limit_nanos "
                        "RETURNING id"
                    ),
                    (
                        spec.scope,
                        spec.scope_id,
                        spec.period,
                        self.ts(spec.period_start),
                        self.ts(spec.period_end),
                        spec.limit_nanos,
                    ),
                )
                ids.append(int(cur.fetchone()[0]))
            return ids

        return self.executor.run(op)

    def wallets_by_ids(self, ids: Sequence[int]) -> list[Wallet]:
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        sql = self._q(f"SELECT {WALLET_COLUMNS} FROM wallets WHERE id IN ({marks}) ORDER BY id")

        def op(conn: Any) -> list[Wallet]:
            return [self._wallet(row) for row in conn.execute(sql, tuple(ids)).fetchall()]

        return self.executor.read(op)

    def all_wallets(self, period: str | None = None) -> list[Wallet]:
        sql = f"SELECT {WALLET_COLUMNS} FROM wallets"
        params: tuple[Any, ...] = ()
        if period is not None:
            sql += " WHERE period = ?"
            params = (period,)
        sql += " ORDER BY period, scope, scope_id"

        def op(conn: Any) -> list[Wallet]:
            return [self._wallet(row) for row in conn.execute(self._q(sql), params).fetchall()]

        return self.executor.read(op)

    def _wallet(self, row: Sequence[Any]) -> Wallet:
        return Wallet(
            id=int(row[0]),
            scope=row[1],
            scope_id=row[2],
            period=row[3],
            limit_nanos=int(row[6]),
            spent_nanos=int(row[7]),
            reserved_nanos=int(row[8]),
            period_start=self.parse_ts(row[4]),
            period_end=self.parse_ts(row[5]),
        )

    # -- reservations ------------------------------------------------------------------
    def reserve(
        self,
        *,
        reservation_id: str,
        request_id: str,
        wallet_ids: Sequence[int],
        amount_nanos: int,
        created_at: datetime,
        expires_at: datetime,
        context: dict[str, Any],
        generation: str | None,
    ) -> None:
        """Hold ``amount_nanos`` on every wallet or none; raise ``BudgetRefused`` otherwise."""
        if amount_nanos < 0:
            raise InvalidRequest("a reservation cannot be negative")
        ordered = sorted(set(wallet_ids))
        wallet_text = ",".join(str(w) for w in ordered)
        context_json = orjson.dumps(context).decode()
        created = self.ts(created_at)
        expires = self.ts(expires_at)

        reservation_row = (
            reservation_id,
            request_id,
            amount_nanos,
            wallet_text,
            created,
            expires,
            context_json,
        )

        def op(conn: Any) -> None:
            self._reserve_sqlite(conn, ordered, amount_nanos, generation, reservation_row)

        def op_postgres(conn: Any) -> None:
            conn.execute(
                self.sql_reserve_function,
                (ordered, amount_nanos, generation, reservation_id, request_id, *reservation_row[3:]),
            )

        try:
            if self._sqlite:
                self.executor.run(op)
            else:
                self.executor.run_one(op_postgres)
        except (BudgetRefused, StaleDirectory):
            raise
        except Exception as exc:
            state = getattr(exc, "sqlstate", None)
            if state == "AL402":  # raised by allotment_reserve, DETAIL is the wallet id
                detail = getattr(getattr(exc, "diag", None), "message_detail", None)
                raise BudgetRefused(int(detail) if detail else None) from None
            if state == "AL410":
                raise StaleDirectory() from None
            if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                raise DuplicateRequest(request_id) from exc
            raise

    def _reserve_sqlite(
        self, conn: Any, ordered: list[int], amount: int, generation: str | None, row: tuple[Any, ...]
    ) -> None:
        if ordered:
            # one writer at a time on SQLite: one statement for every wallet, all or none, and
            # it only matches while the directory generation is the caller's
            cur = conn.execute(
                self._sql_reserve_wallets(len(ordered)),
                (amount, *ordered, amount, generation, generation, generation),
            )
            if cur.rowcount != len(ordered):
                self._check_generation(conn, generation)
                raise BudgetRefused(None)
        else:
            self._check_generation(conn, generation)
        conn.execute(self.sql_insert_reservation, row)

    def _check_generation(self, conn: Any, generation: str | None) -> None:
        if generation is not None:
            current = conn.execute(self.sql_generation, (GENERATION_KEY,)).fetchone()
            if current is not None and current[0] != generation:
                raise StaleDirectory()

    def _sql_reserve_wallets(self, count: int) -> str:
        sql = self._reserve_sql.get(count)
        if sql is None:
            sql = self._reserve_sql[count] = (
                "UPDATE wallets SET reserved_nanos = reserved_nanos + ? WHERE id IN ("
                + ",".join("?" * count)
                + ") AND limit_nanos - spent_nanos - reserved_nanos >= ? AND (? IS NULL OR "
                f"coalesce((SELECT value FROM meta WHERE key = '{GENERATION_KEY}'), ?) = ?)"
            )
        return sql

    def reservation(self, request_id: str) -> ReservationState | None:
        def op(conn: Any) -> ReservationState | None:
            row = conn.execute(self.sql_reservation, (request_id,)).fetchone()
            return None if row is None else self._reservation(row)

        return self.executor.read(op)

    def _reservation(self, row: Sequence[Any]) -> ReservationState:
        wallets = tuple(int(w) for w in str(row[4]).split(",") if w)
        return ReservationState(
            id=row[0],
            request_id=row[1],
            state=row[2],
            amount_nanos=int(row[3]),
            wallet_ids=wallets,
            created_at=self.parse_ts(row[5]),
            expires_at=self.parse_ts(row[6]),
            context=orjson.loads(row[7]),
        )

    def extend(self, request_id: str, expires_at: datetime) -> bool:
        def op(conn: Any) -> bool:
            cur = conn.execute(self.sql_extend, (self.ts(expires_at), request_id))
            return bool(cur.rowcount == 1)

        return self.executor.run(op)

    # -- settlement --------------------------------------------------------------------
    def settle(
        self,
        request_id: str,
        event: dict[str, Any],
        thresholds: Sequence[Decimal],
        *,
        known: tuple[str, int, tuple[int, ...]] | None = None,
    ) -> tuple[int, bool, dict[str, Any]]:
        """Charge ``event['cost_nanos']`` and release the hold, once.

        Returns (event id, created, stored event columns). A second settle of the same
        request returns the first event and changes nothing. A reservation that already
        expired is charged without releasing again (a late settle), flagged ``late_settle``.
        ``known`` (reservation id, amount, wallet ids) lets the admitting process skip a read.
        """

        def op_known(conn: Any) -> tuple[int, bool, dict[str, Any]]:
            assert known is not None
            reservation_id, release, wallet_ids = known
            if conn.execute(self.sql_claim, ("settled", request_id)).rowcount != 1:
                raise _NotClaimed()
            values = dict(event, reservation_id=reservation_id)
            return self._append_event(conn, values, wallet_ids, release, thresholds)

        if known is not None and not self._sqlite:
            done = self._settle_in_one_statement(request_id, event, thresholds, known)
            if done is not None:
                return done
        elif known is not None:
            try:
                return self.executor.run(op_known)
            except _NotClaimed:
                pass  # settled or expired meanwhile: the general path below sorts it out

        def op(conn: Any) -> tuple[int, bool, dict[str, Any]]:
            row = conn.execute(self.sql_reservation, (request_id,)).fetchone()
            if row is None:
                raise NotFound(f"no reservation for request {request_id!r}", code="unknown_request")
            reservation = self._reservation(row)
            if reservation.state == "open":
                conn.execute(self.sql_claim, ("settled", request_id))
                values = dict(event, reservation_id=reservation.id)
                return self._append_event(
                    conn, values, reservation.wallet_ids, reservation.amount_nanos, thresholds
                )
            existing = conn.execute(self.sql_event_by_request, (request_id,)).fetchone()
            if existing is not None:
                return int(existing[0]), False, self._event_columns(existing)
            # expired: the hold already went back; charge only what was used
            values = dict(event, reservation_id=reservation.id)
            values["flags"] = _add_flag(values.get("flags", ""), "late_settle")
            return self._append_event(conn, values, reservation.wallet_ids, 0, thresholds)

        return self.executor.run(op)

    def _settle_in_one_statement(
        self,
        request_id: str,
        event: dict[str, Any],
        thresholds: Sequence[Decimal],
        known: tuple[str, int, tuple[int, ...]],
    ) -> tuple[int, bool, dict[str, Any]] | None:
        """PostgreSQL: the admitting process's settle as one ``allotment_settle`` call.

        None when the general path must decide instead: the reservation was no longer open
        (nothing changed), or a wallet would end over its limit (the event then carries
        ``over_limit`` in its hash; the function rolled everything back).
        """
        reservation_id, release, wallet_ids = known
        wallets = sorted(wallet_ids)
        stored = self._normalise_event(dict(event, reservation_id=reservation_id))
        digest = row_hash(stored)
        ts = stored["ts"]
        stamp = _hash_value(ts)
        cost = int(stored["cost_nanos"])
        hashes = [entry_hash(digest, wallet_id, cost, stamp) for wallet_id in wallets]
        row = orjson.dumps({**stored, "row_hash": digest}).decode()
        fractions = [str(fraction) for fraction in thresholds]
        params = (request_id, release, cost, wallets, row, hashes, ts, fractions)

        def op(conn: Any) -> Any:
            return conn.execute(self.sql_settle_function, params).fetchone()[0]

        try:
            event_id = self.executor.run_one(op)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == "AL409":
                return None
            raise
        if event_id is None:
            return None
        return int(event_id), True, stored

    def record(
        self, event: dict[str, Any], wallet_ids: Sequence[int], thresholds: Sequence[Decimal]
    ) -> tuple[int, bool, dict[str, Any]]:
        """Append a passive event (no reservation) and charge its wallets; idempotent."""

        def op(conn: Any) -> tuple[int, bool, dict[str, Any]]:
            existing = conn.execute(self.sql_event_by_request, (event["request_id"],)).fetchone()
            if existing is not None:
                return int(existing[0]), False, self._event_columns(existing)
            return self._append_event(conn, dict(event), sorted(set(wallet_ids)), 0, thresholds)

        return self.executor.run(op)

    def _append_event(
        self,
        conn: Any,
        values: dict[str, Any],
        wallet_ids: Sequence[int],
        release_nanos: int,
        thresholds: Sequence[Decimal],
    ) -> tuple[int, bool, dict[str, Any]]:
        """Charge the wallets and append the event (and any threshold crossings)."""
        cost = int(values["cost_nanos"])
        over = False
        crossings: list[tuple[int, Decimal, int, int]] = []
        for wallet_id, spent, limit in self._charge_wallets(conn, wallet_ids, release_nanos, cost):
            over = over or spent > limit
            before = spent - cost
            for fraction in thresholds:
                mark = fraction * limit
                if limit > 0 and before < mark <= spent:
                    crossings.append((wallet_id, fraction, spent, limit))
        if over:
            values["flags"] = _add_flag(values.get("flags", ""), "over_limit")
        stored = self._normalise_event(values)
        digest = row_hash(stored)
        ts_db = self.ts(stored["ts"])
        params = [stored[name] for name in EVENT_COLUMNS]
        params[_TS] = ts_db
        params[_ESTIMATED] = self._bool(stored["estimated"])
        params[_ENFORCED] = self._bool(stored["enforced"])
        params.append(digest)
        stamp = ts_db if isinstance(ts_db, str) else _hash_value(stored["ts"])
        if self._sqlite or not wallet_ids:
            event_id = int(conn.execute(self.sql_insert_event, params).fetchone()[0])
            if wallet_ids:
                rows: list[Any] = []
                for wallet_id in wallet_ids:
                    rows.extend(
                        (event_id, wallet_id, cost, ts_db, entry_hash(digest, wallet_id, cost, stamp))
                    )
                conn.execute(self._sql_insert_entries(len(wallet_ids)), rows)
        else:
            # PostgreSQL: the event and its entries in one statement (one round trip)
            for wallet_id in wallet_ids:
                params.extend((wallet_id, cost, ts_db, entry_hash(digest, wallet_id, cost, stamp)))
            sql = self._sql_insert_event_entries(len(wallet_ids))
            event_id = int(conn.execute(sql, params).fetchone()[0])
        for wallet_id, fraction, spent, limit in crossings:
            # the wallet as it was at the crossing, so a delayed alert still tells the truth
            payload = orjson.dumps(
                {
                    "wallet_id": wallet_id,
                    "fraction": str(fraction),
                    "spent_nanos": spent,
                    "limit_nanos": limit,
                }
            ).decode()
            conn.execute(
                self.sql_outbox,
                (
                    "budget_threshold",
                    payload,
                    f"budget_threshold:{wallet_id}:{fraction}",
                    ts_db,
                    self._bool(False),
                ),
            )
        return event_id, True, stored

    def _charge_wallets(
        self, conn: Any, wallet_ids: Sequence[int], release_nanos: int, cost: int
    ) -> list[tuple[int, int, int]]:
        """Release the hold and add the cost on each wallet; (id, spent, limit) after."""
        if not wallet_ids:
            return []
        if self._sqlite:
            rows = conn.execute(
                self._sql_charge_wallets(len(wallet_ids)), (release_nanos, cost, *wallet_ids)
            ).fetchall()
            return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]
        with conn.pipeline():  # one round trip; ascending ids like reservations: no deadlocks
            cursors = [
                (wallet_id, conn.execute(self.sql_settle_wallet, (release_nanos, cost, wallet_id)))
                for wallet_id in sorted(wallet_ids)
            ]
        out = []
        for wallet_id, cur in cursors:
            spent, limit = cur.fetchone()
            out.append((wallet_id, int(spent), int(limit)))
        return out

    def _normalise_event(self, values: dict[str, Any]) -> dict[str, Any]:
        stored = {name: values.get(name) for name in EVENT_COLUMNS}
        for name in COUNT_COLUMNS:
            stored[name] = int(stored[name] or 0)
        stored["estimated"] = bool(stored["estimated"])
        stored["enforced"] = bool(stored["enforced"])
        stored["flags"] = stored["flags"] or ""
        ts = stored["ts"]
        if not isinstance(ts, datetime):
            raise InvalidRequest("an event needs its timestamp")
        stored["ts"] = ts.astimezone(UTC)
        if not isinstance(stored["labels"], str):
            stored["labels"] = orjson.dumps(stored["labels"] or {}, option=orjson.OPT_SORT_KEYS).decode()
        return stored

    # The statements for N wallets are built once per N (a call has a handful of wallets).
    def _sql_insert_entries(self, count: int) -> str:
        sql = self._entries_sql.get(count)
        if sql is None:
            sql = self._entries_sql[count] = self._q(
                "INSERT INTO ledger_entries (event_id, wallet_id, amount_nanos, ts, row_hash) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?)"] * count)
            )
        return sql

    def _sql_insert_event_entries(self, count: int) -> str:
        sql = self._event_entries_sql.get(count)
        if sql is None:
            entries = ", ".join(["(%s::bigint, %s::bigint, %s::timestamptz, %s)"] * count)
            sql = self._event_entries_sql[count] = (
                f"WITH e AS ({self.sql_insert_event}), "
                f"x AS (INSERT INTO ledger_entries (event_id, wallet_id, amount_nanos, ts, row_hash) "
                f"SELECT e.id, v.wallet_id, v.amount, v.ts, v.hash FROM e, "
                f"(VALUES {entries}) AS v (wallet_id, amount, ts, hash)) "
                "SELECT id FROM e"
            )
        return sql

    def _sql_charge_wallets(self, count: int) -> str:
        sql = self._charge_sql.get(count)
        if sql is None:
            sql = self._charge_sql[count] = self._q(
                "UPDATE wallets SET reserved_nanos = reserved_nanos - ?, "
                "spent_nanos = spent_nanos + ? WHERE id IN ("
                + ",".join("?" * count)
                + ") RETURNING id, spent_nanos, limit_nanos"
            )
        return sql

    def _event_columns(self, row: Sequence[Any]) -> dict[str, Any]:
        stored = dict(zip(EVENT_COLUMNS, row[1:], strict=True))
        stored["ts"] = self.parse_ts(stored["ts"])
        stored["estimated"] = bool(stored["estimated"])
        stored["enforced"] = bool(stored["enforced"])
        return stored

    def event(self, request_id: str) -> tuple[int, dict[str, Any]] | None:
        def op(conn: Any) -> tuple[int, dict[str, Any]] | None:
            row = conn.execute(self.sql_event_by_request, (request_id,)).fetchone()
            return None if row is None else (int(row[0]), self._event_columns(row))

        return self.executor.read(op)

    # -- expiry ------------------------------------------------------------------------
    def expire(self, now: datetime, limit: int = 1000) -> int:
        """Release every open reservation past its TTL; returns how many were expired."""
        q = self._q

        def op(conn: Any) -> int:
            rows = conn.execute(
                q(
                    "SELECT request_id, amount_nanos, wallet_ids FROM reservations "
                    "WHERE state = 'open' AND expires_at < ? ORDER BY expires_at LIMIT ?"
                ),
                (self.ts(now), limit),
            ).fetchall()
            count = 0
            for request_id, amount, wallet_text in rows:
                cur = conn.execute(
                    q("UPDATE reservations SET state = 'expired' WHERE request_id = ? AND state = 'open'"),
                    (request_id,),
                )
                if cur.rowcount != 1:
                    continue
                for wallet_id in sorted(int(w) for w in str(wallet_text).split(",") if w):
                    conn.execute(
                        q("UPDATE wallets SET reserved_nanos = reserved_nanos - ? WHERE id = ?"),
                        (int(amount), wallet_id),
                    )
                count += 1
            return count

        return self.executor.run(op)

    # -- generation --------------------------------------------------------------------
    def generation(self) -> str:
        def op(conn: Any) -> str:
            row = conn.execute(self.sql_generation, (GENERATION_KEY,)).fetchone()
            return "0" if row is None else str(row[0])

        return self.executor.read(op)


class _NotClaimed(Exception):
    """The reservation was not open when the admitting process settled it."""


def _add_flag(flags: str, flag: str) -> str:
    parts = [f for f in flags.split(",") if f]
    if flag not in parts:
        parts.append(flag)
    return ",".join(parts)
