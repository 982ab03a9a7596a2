"""Durable delivery of observer hooks: every plugin has its own cursor over committed events.

A raising observer is retried with back-off and never blocks other observers or requests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from allotment.codec import event_from_columns
from allotment.db.ledger import EVENT_COLUMNS, parse_ts
from allotment.types import Anomaly, Wallet

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from allotment.runtime import Runtime

log = logging.getLogger("allotment.outbox")

MAX_ATTEMPTS = 8


class RetryLater(Exception):
    """Raised by an observer when its service asked to wait (a 429 with Retry-After).

    The delivery is retried after ``seconds`` and the attempt does not count toward the
    dead-letter limit, so a long, announced outage delays alerts but never drops them.
    """

    def __init__(self, seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"retry after {seconds:g}s")
        self.seconds = max(float(seconds), 0.0)


BATCH = 500
OUTBOX_HOOKS = ("budget_threshold", "anomaly_detected")


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def _cursor_name(stream: str, plugin: str) -> str:
    return f"outbox:{stream}:{plugin}"


def _load_cursor(conn: Connection, name: str) -> dict[str, Any]:
    row = conn.execute(text("SELECT data FROM checkpoints WHERE name = :n"), {"n": name}).fetchone()
    return {"cursor": 0, "attempts": 0} if row is None else dict(orjson.loads(row[0]))


def _save_cursor(conn: Connection, name: str, data: dict[str, Any]) -> None:
    payload = orjson.dumps(data).decode()
    cur = conn.execute(
        text("UPDATE checkpoints SET data = :d, updated_at = :t WHERE name = :n"),
        {"d": payload, "t": _now(), "n": name},
    )
    if cur.rowcount == 0:
        conn.execute(
            text("INSERT INTO checkpoints (name, data, updated_at) VALUES (:n, :d, :t)"),
            {"n": name, "d": payload, "t": _now()},
        )


def _wallet(conn: Connection, wallet_id: int) -> Wallet | None:
    row = conn.execute(
        text(
            "SELECT id, scope, scope_id, period, limit_nanos, spent_nanos, reserved_nanos, "
            "period_start, period_end FROM wallets WHERE id = :i"
        ),
        {"i": wallet_id},
    ).fetchone()
    if row is None:
        return None
    return Wallet(
        int(row[0]),
        row[1],
        row[2],
        row[3],
        int(row[4]),
        int(row[5]),
        int(row[6]),
        parse_ts(row[7]),
        parse_ts(row[8]),
    )


def _outbox_args(conn: Connection, hook: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    if hook == "budget_threshold":
        wallet = _wallet(conn, int(payload["wallet_id"]))
        if wallet is None:
            return None
        if "spent_nanos" in payload:  # the counters at the crossing, not at delivery
            wallet = replace(
                wallet, spent_nanos=int(payload["spent_nanos"]), limit_nanos=int(payload["limit_nanos"])
            )
        return {"wallet": wallet, "fraction": payload["fraction"]}
    if hook == "anomaly_detected":
        data = dict(payload)
        if data.get("at"):
            data["at"] = datetime.fromisoformat(data["at"])
        return {"anomaly": Anomaly(**data)}
    return None


def enqueue(runtime: Runtime, hook: str, payload: dict[str, Any], dedup_key: str | None = None) -> bool:
    """Queue an observer event durably; a repeated ``dedup_key`` is ignored. Returns if queued."""
    with runtime.write_engine.begin() as conn:
        if dedup_key is not None:
            exists = conn.execute(
                text("SELECT 1 FROM outbox WHERE dedup_key = :k"), {"k": dedup_key}
            ).fetchone()
            if exists is not None:
                return False
        conn.execute(
            text(
                "INSERT INTO outbox (hook, payload, dedup_key, created_at, done) VALUES (:h, :p, :k, :t, :d)"
            ),
            {
                "h": hook,
                "p": orjson.dumps(payload, default=str).decode(),
                "k": dedup_key,
                "t": _now(),
                "d": False,
            },
        )
    return True


def deliver(runtime: Runtime, now: datetime | None = None) -> DeliveryReport:
    """Deliver pending observer events to every implementing plugin, each at its own pace."""
    now = now or _now()
    report = DeliveryReport()
    hook_relay = runtime.pm.hook
    for impl in hook_relay.usage_recorded.get_hookimpls():
        _deliver_stream(runtime, "usage_recorded", impl, now, report)
    implementers: dict[str, Any] = {}
    for hook in OUTBOX_HOOKS:
        for impl in getattr(hook_relay, hook).get_hookimpls():
            implementers.setdefault(impl.plugin_name, {})[hook] = impl
    for plugin_name, impls in implementers.items():
        _deliver_outbox(runtime, plugin_name, impls, now, report)
    return report


def _fail(
    runtime: Runtime,
    name: str,
    state: dict[str, Any],
    row_id: int,
    plugin: str,
    exc: Exception,
    now: datetime,
    report: DeliveryReport,
) -> dict[str, Any] | None:
    """Record a failure. Returns the new state when the row is dead-lettered (move on)."""
    waiting = isinstance(exc, RetryLater)
    attempts = int(state.get("attempts", 0)) + (0 if waiting else 1)
    message = f"{plugin}: {type(exc).__name__}: {exc}"
    log.warning("observer %s failed on #%s (attempt %s): %s", plugin, row_id, attempts, exc)
    report.errors.append(message)
    with runtime.write_engine.begin() as conn:
        if attempts >= MAX_ATTEMPTS:
            conn.execute(
                text(
                    "INSERT INTO outbox_deliveries (outbox_id, plugin, state, attempts, "
                    "last_error, updated_at) VALUES (:o, :p, 'dead', :a, :e, :t)"
                ),
                {"o": row_id, "p": plugin, "a": attempts, "e": message[:2000], "t": now},
            )
            dead = {"cursor": row_id, "attempts": 0}
            _save_cursor(conn, name, dead)
            report.dead += 1
            return dead
        backoff = exc.seconds if isinstance(exc, RetryLater) else min(2**attempts, 3600)
        _save_cursor(
            conn,
            name,
            {
                "cursor": state.get("cursor", 0),
                "attempts": attempts,
                "next_at": (now + timedelta(seconds=backoff)).isoformat(),
                "last_error": message[:2000],
            },
        )
    report.failed += 1
    return None


def _due(state: dict[str, Any], now: datetime) -> bool:
    next_at = state.get("next_at")
    return not next_at or datetime.fromisoformat(next_at) <= now


def _pending(runtime: Runtime, name: str, sql: str, now: datetime) -> tuple[dict[str, Any], list[Any]]:
    with runtime.engine.connect() as conn:
        state = _load_cursor(conn, name)
        if not _due(state, now):
            return state, []
        rows = conn.execute(text(sql), {"c": int(state.get("cursor", 0)), "l": BATCH}).fetchall()
        return state, list(rows)


def _deliver_stream(runtime: Runtime, stream: str, impl: Any, now: datetime, report: DeliveryReport) -> None:
    name = _cursor_name(stream, impl.plugin_name)
    state, rows = _pending(
        runtime,
        name,
        f"SELECT id, {', '.join(EVENT_COLUMNS)} FROM usage_events WHERE id > :c ORDER BY id LIMIT :l",
        now,
    )
    if not rows:
        return
    for row in rows:
        event = event_from_columns(int(row[0]), dict(zip(EVENT_COLUMNS, row[1:], strict=True)))
        try:
            impl.function(**_args(impl, {"event": event}))
        except Exception as exc:  # noqa: BLE001 - isolated per observer
            dead = _fail(runtime, name, state, int(row[0]), impl.plugin_name, exc, now, report)
            if dead is None:
                return
            state = dead
            continue
        state = {"cursor": int(row[0]), "attempts": 0}
        report.delivered += 1
    with runtime.write_engine.begin() as conn:
        _save_cursor(conn, name, state)


def _deliver_outbox(
    runtime: Runtime, plugin: str, impls: dict[str, Any], now: datetime, report: DeliveryReport
) -> None:
    name = _cursor_name("outbox", plugin)
    state, rows = _pending(
        runtime, name, "SELECT id, hook, payload FROM outbox WHERE id > :c ORDER BY id LIMIT :l", now
    )
    if not rows:
        return
    for row_id, hook, payload in rows:
        impl = impls.get(hook)
        if impl is not None:
            with runtime.engine.connect() as conn:
                args = _outbox_args(conn, hook, orjson.loads(payload))
            if args is not None:
                try:
                    impl.function(**_args(impl, args))
                except Exception as exc:  # noqa: BLE001 - isolated per observer
                    dead = _fail(runtime, name, state, int(row_id), plugin, exc, now, report)
                    if dead is None:
                        return
                    state = dead
                    continue
                report.delivered += 1
        state = {"cursor": int(row_id), "attempts": 0}
    with runtime.write_engine.begin() as conn:
        _save_cursor(conn, name, state)


def _args(impl: Any, available: dict[str, Any]) -> dict[str, Any]:
    return {name: available[name] for name in impl.argnames}
