"""The bulk path's fast writer: a batch of settles and records priced, hashed and written at once.

Used by ``allotment.bulk`` when only the bundled ``price`` and ``reconcile`` plugins are installed.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from allotment.bulk import BulkItem, BulkResult, RecordItem, SettleItem
from allotment.codec import intent_from_dict, principal_from_dict
from allotment.db.bulk import BulkStatements
from allotment.db.ledger import EVENT_COLUMNS, ReservationState, _add_flag, _hash_value, entry_hash, row_hash
from allotment.errors import AllotmentError, InvalidRequest, NotFound
from allotment.exact_pricing import PriceTables
from allotment.types import CallIntent, Principal, usage_flags

if TYPE_CHECKING:
    from allotment.defaults.ledger import SqlLedger
    from allotment.runtime import Runtime

_CACHE_LIMIT = 4096
_columns = operator.itemgetter(*EVENT_COLUMNS)
_TS = EVENT_COLUMNS.index("ts")
_ESTIMATED = EVENT_COLUMNS.index("estimated")
_ENFORCED = EVENT_COLUMNS.index("enforced")


class _New:
    """An event this batch creates: its stored columns (as ``Ledger._normalise_event`` gives
    them), its wallets, the hold it releases and what it costs."""

    __slots__ = ("index", "stored", "wallet_ids", "release", "cost")

    def __init__(
        self, index: int, stored: dict[str, Any], wallet_ids: Sequence[int], release: int, cost: int
    ) -> None:
        self.index = index
        self.stored = stored
        self.wallet_ids = wallet_ids
        self.release = release
        self.cost = cost


class _Caller:
    """What every passive line of one principal with one label set shares (cached per directory)."""

    __slots__ = ("principal", "labels", "labels_json", "wallet_intent", "who")

    def __init__(
        self, principal: Principal | None, labels: dict[str, str], wallet_intent: CallIntent
    ) -> None:
        self.principal = principal
        self.labels = labels
        self.labels_json = _labels_json(labels)
        self.wallet_intent = wallet_intent  # carries the merged labels, which pick the wallets
        self.who = _who(principal)


def _who(principal: Principal | None) -> tuple[str | None, str | None, str | None, str | None]:
    """The event's person, team, key and cost center columns."""
    if principal is None:
        return None, None, None, None
    return principal.person_id, principal.team_id, principal.key_id, principal.cost_center


def _labels_json(labels: dict[str, str]) -> str:
    return orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode()


class BulkWriter:
    """One runtime's bulk path: its statements and price tables, reused batch after batch."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.ledger = runtime.ledger
        self.sql = BulkStatements(runtime.ledger)
        self._tables: PriceTables | None = None
        self._ts: dict[datetime, tuple[datetime, Any, str]] = {}
        self._callers: dict[tuple[int, tuple[tuple[str, str], ...]], _Caller] = {}
        self._directory: object = None
        # (caller, instant) -> its wallets, for one transaction: the lines of one caller in one
        # batch mostly share a timestamp, and the wallets cannot change inside the transaction
        self._wallets: dict[tuple[_Caller, datetime], list[int]] = {}

    def apply(self, plugin: SqlLedger, items: Sequence[BulkItem]) -> list[BulkResult]:
        rt = self.runtime
        book = rt.rate_book
        if self._tables is None or self._tables.book is not book:
            self._tables = PriceTables(book)
        if self._directory is not rt.directory:  # config, keys or budgets changed
            self._directory = rt.directory
            self._callers = {}
        self._wallets = {}
        try:
            with rt.batch():
                return rt.executor.run(lambda conn: self._write(conn, plugin, items))
        finally:
            self._wallets = {}

    # -- one event each ----------------------------------------------------------------
    def _caller(self, principal: Principal | None, intent: CallIntent) -> _Caller:
        key = (id(principal), tuple(intent.labels.items()))
        caller = self._callers.get(key)
        if caller is None or caller.principal is not principal:
            labels = self.runtime.merge_labels(principal, intent.labels)
            wallet_intent = intent if labels == intent.labels else intent.with_changes(labels=labels)
            caller = _Caller(principal, labels, wallet_intent)
            if len(self._callers) >= _CACHE_LIMIT:
                self._callers.clear()
            self._callers[key] = caller
        return caller

    def _recorded(self, plugin: SqlLedger, index: int, item: RecordItem) -> _New:
        """What ``Runtime.record`` and ``SqlLedger.reconcile`` would append for ``item``."""
        intent = item.intent
        principal = item.principal or intent.principal
        if principal is None and intent.credential:
            principal = self.runtime.find_principal(intent.credential, {"passive": True})
        at = intent.at or datetime.now(UTC)
        caller = self._caller(principal, intent)
        usage = item.usage
        flags = usage_flags(usage, item.flags) if usage.estimated else list(item.flags)
        if principal is None:
            flags.append("unattributed")
        stored = self._stored(
            intent, caller.who, caller.labels, caller.labels_json, at, item, flags, None, None
        )
        key = (caller, at)
        wallets = self._wallets.get(key)
        if wallets is None:
            wallets = sorted(set(plugin.wallet_ids(principal, caller.wallet_intent, at)))
            self._wallets[key] = wallets
        return _New(index, stored, wallets, 0, stored["cost_nanos"])

    def _settled(self, index: int, item: SettleItem, reservation: ReservationState, late: bool) -> _New:
        """What ``Runtime.settle`` and ``Ledger.settle`` would append for ``item``."""
        context = reservation.context
        intent = intent_from_dict(context["intent"])
        principal = principal_from_dict(context.get("principal"))
        at = intent.at or datetime.now(UTC)
        flags = usage_flags(item.usage, item.flags)
        labels = intent.labels
        stored = self._stored(
            intent,
            _who(principal),
            labels,
            _labels_json(labels),
            at,
            item,
            flags,
            reservation.amount_nanos,
            reservation.id,
        )
        if late:  # the hold already went back when it expired: charge only what was used
            stored["flags"] = _add_flag(stored["flags"], "late_settle")
        release = 0 if late else reservation.amount_nanos
        return _New(index, stored, reservation.wallet_ids, release, stored["cost_nanos"])

    def _stored(
        self,
        intent: CallIntent,
        who: tuple[str | None, str | None, str | None, str | None],
        labels: dict[str, str],
        labels_json: str,
        at: datetime,
        item: BulkItem,
        flags: list[str],
        estimate_nanos: int | None,
        reservation_id: str | None,
    ) -> dict[str, Any]:
        """The event ``SqlLedger.reconcile`` builds, priced like ``Runtime._price_settled``, in
        the stored form ``Ledger._normalise_event`` gives it (the form its row hash is taken of)."""
        assert self._tables is not None
        usage = item.usage
        mode = intent.endpoint_mode._value_  # not .value: an enum property, slow per line
        entry = self._tables.entry(intent.provider, intent.model, at, mode)
        if entry is not None:
            amount, version, model, price_flags = (
                entry.amount_nanos(usage),
                entry.card_version,
                entry.model,
                entry.flags_for(usage),
            )
        else:  # unpriced: the runtime's own policy (fallback price, or $0 flagged)
            priced_intent = intent.with_changes(labels=labels, at=at, principal=None, credential=None)
            fallback = self.runtime._price_settled(priced_intent, usage, at)
            amount, version, model, price_flags = (
                fallback.amount_nanos,
                fallback.card_version,
                fallback.model,
                fallback.flags,
            )
        person_id, team_id, key_id, cost_center = who
        return {
            "request_id": intent.request_id,
            "kind": "usage",
            "ts": self._when(at)[0],
            "person_id": person_id,
            "team_id": team_id,
            "key_id": key_id,
            "cost_center": cost_center,
            "provider": intent.provider,
            "model": model or intent.model,
            "endpoint_mode": mode,
            "input_tokens": int(usage.input_tokens),
            "cache_read_tokens": int(usage.cache_read_tokens),
            "cache_write_tokens": int(usage.cache_write_tokens),
            "cache_write_1h_tokens": int(usage.cache_write_1h_tokens),
            "output_tokens": int(usage.output_tokens),
            "reasoning_tokens": int(usage.reasoning_tokens),
            "tool_calls": int(usage.tool_calls),
            "search_calls": int(usage.search_calls),
            "estimated": bool(usage.estimated),
            "service_tier": usage.service_tier,
            "cost_nanos": int(amount),
            "estimate_nanos": estimate_nanos or 0,
            "external_cost_nanos": item.external_cost_nanos,
            "card_version": version,
            "outcome": item.outcome._value_,
            "enforced": estimate_nanos is not None,
            "labels": labels_json,
            "trace_id": intent.trace_id,
            "retry_of": intent.retry_of,
            "end_user": intent.end_user,
            "reservation_id": reservation_id,
            "flags": ",".join(dict.fromkeys([*price_flags, *flags])) if price_flags or flags else "",
        }

    # -- the transaction -------------------------------------------------------------------
    def _write(self, conn: Any, plugin: SqlLedger, items: Sequence[BulkItem]) -> list[BulkResult]:
        sql = self.sql
        first: dict[str, int] = {}  # request id -> index of its first item in the batch
        rids = [item.request_id for item in items]  # a property of RecordItem: read it once
        for index, rid in enumerate(rids):
            first.setdefault(rid, index)
        existing = sql.existing_events(conn, list(first))
        settle_ids = list(
            dict.fromkeys(rid for rid, i in zip(rids, items, strict=True) if isinstance(i, SettleItem))
        )
        # only a request whose first item is a settle, with no event yet, may claim its hold
        to_claim = [
            rid for rid in settle_ids if rid not in existing and isinstance(items[first[rid]], SettleItem)
        ]
        claimed = sql.claim(conn, to_claim) if to_claim else {}
        others = [rid for rid in settle_ids if rid not in claimed]
        states = sql.reservations(conn, others) if others else {}
        raced = [rid for rid, s in states.items() if s.state == "settled" and rid not in existing]
        if raced:  # settled by another process since our first look: its event is committed now
            existing.update(sql.existing_events(conn, raced))

        results: list[BulkResult | None] = [None] * len(items)
        made: dict[str, int] = {}  # request id -> index of the item that creates its event here
        new: list[_New] = []
        failed_claims: list[str] = []
        for index, item in enumerate(items):
            rid = rids[index]
            if isinstance(item, RecordItem):
                if rid in existing or rid in made:
                    continue
                try:
                    new.append(self._recorded(plugin, index, item))
                except AllotmentError as exc:  # this item alone, as its own call would fail
                    if exc.status >= 500:
                        raise
                    results[index] = BulkResult(rid, error=exc)
                    continue
                made[rid] = index
                continue
            reservation = claimed.get(rid) or states.get(rid)
            if reservation is None:
                error = NotFound(f"no reservation for request {rid!r}", code="unknown_request")
                results[index] = BulkResult(rid, error=error)
            elif rid in existing or rid in made:
                if reservation.state == "open":
                    # an event of a passive record already holds this request id
                    results[index] = BulkResult(
                        rid,
                        error=InvalidRequest(
                            f"request {rid!r} was already recorded; its hold is left to expire",
                            code="duplicate_request",
                            status=409,
                        ),
                    )
            else:
                try:
                    new.append(self._settled(index, item, reservation, late=rid not in claimed))
                except AllotmentError as exc:
                    if exc.status >= 500:
                        raise
                    results[index] = BulkResult(rid, error=exc)
                    failed_claims.append(rid)
                    continue
                made[rid] = index
        # a claimed hold whose item failed stays open, as its rolled-back settle would leave it
        failed_claims = [rid for rid in dict.fromkeys(failed_claims) if rid in claimed and rid not in made]
        if failed_claims:
            sql.unclaim(conn, failed_claims)

        event_ids = self._append(conn, new)
        for index, rid in enumerate(rids):
            if results[index] is not None:
                continue
            if made.get(rid) == index:
                results[index] = BulkResult(rid, event_ids[rid], True)
            else:
                results[index] = BulkResult(rid, existing[rid] if rid in existing else event_ids[rid], False)
        return [r for r in results if r is not None]

    def _append(self, conn: Any, new: list[_New]) -> dict[str, int]:
        """Charge the wallets once each, then write every event, entry and threshold alert."""
        if not new:
            return {}
        releases: dict[int, int] = {}
        costs: dict[int, int] = {}
        for event in new:
            for wallet_id in event.wallet_ids:
                releases[wallet_id] = releases.get(wallet_id, 0) + event.release
                costs[wallet_id] = costs.get(wallet_id, 0) + event.cost
        deltas = {w: (releases[w], costs[w]) for w in costs}
        after = self.sql.charge_wallets(conn, deltas)
        # replay the batch in order from each wallet's spend before it: the same over_limit
        # flags and the same crossings (with the spend at the crossing) as one call per item
        spent = {w: s - deltas[w][1] for w, (s, _) in after.items()}
        limits = {w: limit for w, (_, limit) in after.items()}
        thresholds = self.runtime.thresholds
        # before < fraction * limit <= spent, in integers: before < ceil(mark) <= spent
        marks = {
            w: [(f, math.ceil(f * limits[w])) for f in thresholds] if limits[w] > 0 else [] for w in after
        }
        # no crossing is possible while a wallet's spend is below its lowest mark
        lowest = {w: min((mark for _, mark in m), default=None) for w, m in marks.items()}
        crossings: list[tuple[int, str, int, int, Any]] = []
        rows: list[list[Any]] = []
        hashed: list[tuple[str, Any, str]] = []  # per new event: row hash, ts as stored, ts as hashed
        ledger = self.ledger
        stored_bool = {True: ledger._bool(True), False: ledger._bool(False)}
        for event in new:
            over = False
            cost = event.cost
            for wallet_id in event.wallet_ids:
                if wallet_id not in after:
                    continue  # a wallet row that no longer exists: nothing charged, as one UPDATE does
                now = spent[wallet_id] = spent[wallet_id] + cost
                limit = limits[wallet_id]
                over = over or now > limit
                first_mark = lowest[wallet_id]
                if first_mark is None or now < first_mark:
                    continue
                before = now - cost
                for fraction, mark in marks[wallet_id]:
                    if before < mark <= now:
                        crossings.append((wallet_id, str(fraction), now, limit, event.index))
            stored = event.stored
            if over:
                stored["flags"] = _add_flag(stored["flags"], "over_limit")
            digest = row_hash(stored)
            _, ts_db, stamp = self._when(stored["ts"])
            params = list(_columns(stored))
            params[_TS] = ts_db
            params[_ESTIMATED] = stored_bool[stored["estimated"]]
            params[_ENFORCED] = stored_bool[stored["enforced"]]
            params.append(digest)
            rows.append(params)
            hashed.append((digest, ts_db, stamp))
        ids = self.sql.insert_events(conn, rows)
        entries = []
        index_ts: dict[int, Any] = {}
        for event, params, (digest, ts_db, stamp) in zip(new, rows, hashed, strict=True):
            event_id = ids[params[0]]
            index_ts[event.index] = ts_db
            cost = event.cost
            for wallet_id in event.wallet_ids:
                chained = entry_hash(digest, wallet_id, cost, stamp)
                entries.append((event_id, wallet_id, cost, ts_db, chained))
        self.sql.insert_entries(conn, entries)
        if crossings:
            self.sql.insert_outbox(
                conn, [(w, f, s, limit, index_ts[index]) for w, f, s, limit, index in crossings]
            )
        return ids

    def _when(self, at: datetime) -> tuple[datetime, Any, str]:
        """``at`` in UTC, as the driver stores it, and as entry hashes spell it (logs repeat it)."""
        cached = self._ts.get(at)
        if cached is None:
            utc = at.astimezone(UTC)
            ts_db = self.ledger.ts(utc)
            stamp = ts_db if isinstance(ts_db, str) else _hash_value(utc)
            if len(self._ts) >= _CACHE_LIMIT:
                self._ts.clear()
            cached = self._ts[at] = (utc, ts_db, stamp)
        return cached
