"""Tamper evidence: per-row content hashes, chained seals, and counters that equal their entries.

``allotment audit verify`` recomputes all three and says exactly what does not match.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from allotment.db.ledger import EVENT_COLUMNS, entry_hash, parse_ts, row_hash

if TYPE_CHECKING:
    from allotment.runtime import Runtime

GENESIS = "0" * 64


@dataclass
class AuditReport:
    events: int = 0
    entries: int = 0
    wallets: int = 0
    seals: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "entries": self.entries,
            "wallets": self.wallets,
            "seals": self.seals,
            "problems": self.problems,
        }


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["ts"] = parse_ts(row["ts"])
    row["estimated"] = bool(row["estimated"])
    row["enforced"] = bool(row["enforced"])
    for name in ("cost_nanos", "estimate_nanos"):
        row[name] = int(row[name])
    if row["external_cost_nanos"] is not None:
        row["external_cost_nanos"] = int(row["external_cost_nanos"])
    return row


def _digest(prev: str, event_hashes: list[str], entry_hashes: list[str]) -> str:
    h = hashlib.sha256(prev.encode())
    for value in event_hashes:
        h.update(b"e" + value.encode())
    for value in entry_hashes:
        h.update(b"l" + value.encode())
    return h.hexdigest()


def _hashes_between(conn: Any, table: str, low: int, high: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            text(f"SELECT row_hash FROM {table} WHERE id > :lo AND id <= :hi ORDER BY id"),
            {"lo": low, "hi": high},
        )
    ]


def seal(runtime: Runtime) -> dict[str, Any] | None:
    """Append a seal covering every event and entry since the previous seal."""
    with runtime.write_engine.begin() as conn:
        last = conn.execute(
            text("SELECT last_event_id, last_entry_id, digest FROM seals ORDER BY id DESC LIMIT 1")
        ).fetchone()
        prev_event, prev_entry, prev_digest = (
            (0, 0, GENESIS) if last is None else (int(last[0]), int(last[1]), last[2])
        )
        max_event = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM usage_events")).scalar_one()
        max_entry = conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM ledger_entries")).scalar_one()
        if int(max_event) == prev_event and int(max_entry) == prev_entry:
            return None
        digest = _digest(
            prev_digest,
            _hashes_between(conn, "usage_events", prev_event, int(max_event)),
            _hashes_between(conn, "ledger_entries", prev_entry, int(max_entry)),
        )
        conn.execute(
            text(
                "INSERT INTO seals (last_event_id, last_entry_id, digest, prev_digest, sealed_at) "
                "VALUES (:e, :l, :d, :p, :t)"
            ),
            {"e": int(max_event), "l": int(max_entry), "d": digest, "p": prev_digest, "t": datetime.now(UTC)},
        )
    return {"last_event_id": int(max_event), "last_entry_id": int(max_entry), "digest": digest}


def verify(runtime: Runtime) -> AuditReport:
    """Recompute every hash, every seal and every wallet counter."""
    report = AuditReport()
    event_hashes: dict[int, str] = {}
    entry_hashes: dict[int, str] = {}
    spent: dict[int, int] = defaultdict(int)
    with runtime.engine.connect() as conn:
        cols = ", ".join(EVENT_COLUMNS)
        for row in conn.execute(text(f"SELECT id, {cols}, row_hash FROM usage_events ORDER BY id")):
            report.events += 1
            event_id = int(row[0])
            stored = dict(zip(EVENT_COLUMNS, row[1:-1], strict=True))
            expected = row_hash(_normalise(stored))
            if expected != row[-1]:
                report.problems.append(
                    f"usage event #{event_id} (request {stored['request_id']}) was altered: "
                    "its content no longer matches its hash"
                )
            event_hashes[event_id] = row[-1]
        for row in conn.execute(
            text("SELECT id, event_id, wallet_id, amount_nanos, ts, row_hash FROM ledger_entries ORDER BY id")
        ):
            report.entries += 1
            entry_id, event_id, wallet_id, amount = int(row[0]), int(row[1]), int(row[2]), int(row[3])
            parent = event_hashes.get(event_id)
            if parent is None:
                report.problems.append(f"ledger entry #{entry_id} points at missing event #{event_id}")
            elif entry_hash(parent, wallet_id, amount, parse_ts(row[4])) != row[5]:
                report.problems.append(f"ledger entry #{entry_id} (wallet {wallet_id}) was altered")
            entry_hashes[entry_id] = row[5]
            spent[wallet_id] += amount
        prev_event, prev_entry, prev_digest = 0, 0, GENESIS
        for row in conn.execute(
            text("SELECT id, last_event_id, last_entry_id, digest, prev_digest FROM seals ORDER BY id")
        ):
            report.seals += 1
            seal_id, last_event, last_entry = int(row[0]), int(row[1]), int(row[2])
            if row[4] != prev_digest:
                report.problems.append(f"seal #{seal_id} does not chain to the seal before it")
            expected_digest = _digest(
                prev_digest,
                [event_hashes[i] for i in sorted(event_hashes) if prev_event < i <= last_event],
                [entry_hashes[i] for i in sorted(entry_hashes) if prev_entry < i <= last_entry],
            )
            if expected_digest != row[3]:
                report.problems.append(
                    f"seal #{seal_id} no longer matches: events {prev_event + 1}..{last_event} or "
                    f"entries {prev_entry + 1}..{last_entry} were altered, removed or inserted"
                )
            prev_event, prev_entry, prev_digest = last_event, last_entry, row[3]
        reserved: dict[int, int] = defaultdict(int)
        for amount, wallet_text in conn.execute(
            text("SELECT amount_nanos, wallet_ids FROM reservations WHERE state = 'open'")
        ):
            for held in str(wallet_text).split(","):
                if held:
                    reserved[int(held)] += int(amount)
        for row in conn.execute(
            text("SELECT id, scope, scope_id, period, spent_nanos, reserved_nanos FROM wallets ORDER BY id")
        ):
            report.wallets += 1
            wallet_id = int(row[0])
            label = f"wallet #{wallet_id} ({row[1]} {row[2]} {row[3]})"
            if int(row[4]) != spent[wallet_id]:
                report.problems.append(
                    f"{label}: spent counter {int(row[4])} != sum of its entries {spent[wallet_id]}"
                )
            if int(row[5]) != reserved[wallet_id]:
                report.problems.append(
                    f"{label}: reserved counter {int(row[5])} != open reservations {reserved[wallet_id]}"
                )
    return report
