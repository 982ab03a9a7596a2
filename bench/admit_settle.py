"""Benchmark admit+settle in-process against a bare conditional UPDATE on the same database.

Prints p50/p99 per call and cycles/s for 1 and 32 callers, each as a ratio to the baseline
measured in the same run. Usage: python bench/admit_settle.py [--postgres URL] [--cycles N]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from allotment import CallIntent, Usage
from allotment.db.executor import connect_sqlite, sqlite_path
from allotment.ids import new_request_id, new_reservation_id
from allotment.runtime import Runtime
from allotment.testing import temporary_runtime

USAGE = Usage(input_tokens=800, cache_read_tokens=200, output_tokens=120)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bare_update(rt: Runtime) -> Callable[[], None]:
    """One conditional UPDATE on a wallet in its own transaction: the floor for a reservation.

    On its own plain DBAPI connection (not allotment's executor), so the baseline does not
    move when allotment's own code does. Callable from any thread (one connection each).
    """
    wallet_id = rt.ledger.all_wallets()[0].id
    sqlite = rt.ledger.dialect == "sqlite"
    sql = (
        "UPDATE wallets SET reserved_nanos = reserved_nanos + 0 WHERE id = {p} "
        "AND limit_nanos - spent_nanos - reserved_nanos >= 0"
    ).format(p="?" if sqlite else "%s")
    local = threading.local()

    def connection() -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            if sqlite:
                conn = connect_sqlite(sqlite_path(rt.settings.database_url))
            else:
                import psycopg

                url = rt.settings.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
                conn = psycopg.connect(url, autocommit=True)
            local.conn = conn
        return conn

    def run() -> None:
        conn = connection()
        if sqlite:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, (wallet_id,))
            conn.execute("COMMIT")
        else:
            with conn.transaction():
                conn.execute(sql, (wallet_id,))

    return run


def ledger_only(rt: Runtime, key: str) -> Callable[[], None]:
    """The same reservation and settlement written by the ledger alone (its SQL and row hashing):
    no authentication, policy, pricing or hooks. The waist's floor on this database."""
    from allotment.defaults.ledger import SqlLedger

    admission = rt.admit(intent_for(key))
    event = rt.settle(admission.request_id, USAGE)
    plugin = next(p for p in rt.pm.get_plugins() if isinstance(p, SqlLedger))
    wallets = plugin.wallet_ids(admission.principal, intent_for(key), event.at)
    columns = {
        "kind": "usage",
        "person_id": event.person_id,
        "team_id": event.team_id,
        "key_id": event.key_id,
        "cost_center": event.cost_center,
        "provider": event.provider,
        "model": event.model,
        "endpoint_mode": "sync",
        "cost_nanos": event.cost_nanos,
        "estimate_nanos": admission.estimate.amount_nanos,
        "card_version": event.card_version,
        "outcome": "success",
        "enforced": True,
        "labels": {},
        "flags": "",
        **USAGE.to_dict(),
    }
    context = {"intent": {"request_id": "x"}, "principal": {"person_id": event.person_id}}
    amount = admission.estimate.amount_nanos

    def cycle() -> None:
        request_id = new_request_id()
        reservation_id = new_reservation_id()
        now = datetime.now(UTC)
        rt.ledger.reserve(
            reservation_id=reservation_id,
            request_id=request_id,
            wallet_ids=wallets,
            amount_nanos=amount,
            created_at=now,
            expires_at=now + timedelta(minutes=10),
            context=context,
            generation=rt.directory.generation,
        )
        rt.ledger.settle(
            request_id,
            dict(columns, request_id=request_id, ts=now),
            (),
            known=(reservation_id, amount, tuple(sorted(wallets))),
        )

    return cycle


def intent_for(key: str) -> CallIntent:
    return CallIntent(
        request_id=new_request_id(),  # what the gateway generates
        provider="openai",
        model="gpt-5.4-mini",
        credential=key,
        input_tokens=1000,
        max_output_tokens=500,
    )


def single_caller(rt: Runtime, key: str, cycles: int) -> dict[str, float]:
    for _ in range(200):  # warm caches and create the wallet rows
        a = rt.admit(intent_for(key))
        rt.settle(a.request_id, USAGE)
    baseline = bare_update(rt)
    ledger_cycle = ledger_only(rt, key)
    admit_us: list[float] = []
    settle_us: list[float] = []
    base_us: list[float] = []
    ledger_us: list[float] = []
    for _ in range(cycles):  # interleaved so machine noise hits all alike
        intent = intent_for(key)
        t0 = time.perf_counter()
        a = rt.admit(intent)
        t1 = time.perf_counter()
        rt.settle(a.request_id, USAGE)
        t2 = time.perf_counter()
        baseline()
        t3 = time.perf_counter()
        ledger_cycle()
        ledger_us.append((time.perf_counter() - t3) * 1e6)
        admit_us.append((t1 - t0) * 1e6)
        settle_us.append((t2 - t1) * 1e6)
        base_us.append((t3 - t2) * 1e6)
    cycle_s = (sum(admit_us) + sum(settle_us)) / 1e6
    base_s = sum(base_us) / 1e6
    return {
        "admit_p50": pct(admit_us, 0.5),
        "admit_p99": pct(admit_us, 0.99),
        "settle_p50": pct(settle_us, 0.5),
        "settle_p99": pct(settle_us, 0.99),
        "base_p50": pct(base_us, 0.5),
        "base_p99": pct(base_us, 0.99),
        "cycles_per_s": cycles / cycle_s,
        "base_per_s": cycles / base_s,
        "ledger_per_s": cycles / (sum(ledger_us) / 1e6),
        "ledger_p50": pct(ledger_us, 0.5),
    }


def concurrent_callers(rt: Runtime, key: str, callers: int, cycles: int) -> dict[str, float]:
    admit_us: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        local = []
        for _ in range(n):
            t0 = time.perf_counter()
            a = rt.admit(intent_for(key))
            local.append((time.perf_counter() - t0) * 1e6)
            rt.settle(a.request_id, USAGE)
        with lock:
            admit_us.extend(local)

    per = max(1, cycles // callers)
    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(worker, [per] * callers))
    elapsed = time.perf_counter() - start

    baseline = bare_update(rt)
    base_us: list[float] = []

    def base_worker(n: int) -> None:
        local = []
        for _ in range(n):
            t0 = time.perf_counter()
            baseline()
            local.append((time.perf_counter() - t0) * 1e6)
        with lock:
            base_us.extend(local)

    start_b = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(base_worker, [per] * callers))
    base_elapsed = time.perf_counter() - start_b
    return {
        "admit_p50": pct(admit_us, 0.5),
        "admit_p99": pct(admit_us, 0.99),
        "cycles_per_s": per * callers / elapsed,
        "base_p50": pct(base_us, 0.5),
        "base_p99": pct(base_us, 0.99),
        "base_per_s": per * callers / base_elapsed,
    }


def report(label: str, single: dict[str, float], many: dict[str, float]) -> None:
    print(f"\n== {label} ==")
    print(
        f"1 caller   admit p50 {single['admit_p50']:7.0f} us  p99 {single['admit_p99']:7.0f} us   "
        f"settle p50 {single['settle_p50']:7.0f} us  p99 {single['settle_p99']:7.0f} us"
    )
    print(
        f"           bare UPDATE p50 {single['base_p50']:6.0f} us  p99 {single['base_p99']:6.0f} us   "
        f"admit/bare p50 ratio {single['admit_p50'] / single['base_p50']:5.1f}x  "
        f"p99 ratio {single['admit_p99'] / single['base_p99']:5.1f}x"
    )
    print(
        f"           {single['cycles_per_s']:8.0f} admit+settle cycles/s vs {single['base_per_s']:8.0f} "
        f"bare UPDATEs/s (ratio {single['cycles_per_s'] / single['base_per_s']:.3f})"
    )
    print(
        f"           ledger alone (its SQL + hashing, no auth/policy/pricing/hooks): "
        f"p50 {single['ledger_p50']:6.0f} us per cycle, {single['ledger_per_s']:8.0f} cycles/s; "
        f"admit+settle at {single['cycles_per_s'] / single['ledger_per_s']:.2f}x of it"
    )
    print(
        f"32 callers admit p50 {many['admit_p50']:7.0f} us  p99 {many['admit_p99']:7.0f} us   "
        f"{many['cycles_per_s']:8.0f} cycles/s vs {many['base_per_s']:8.0f} bare/s "
        f"(ratio {many['cycles_per_s'] / many['base_per_s']:.3f}); bare p99 {many['base_p99']:.0f} us"
    )


def run(label: str, directory: Path, database_url: str | None, cycles: int) -> None:
    with temporary_runtime(directory, database_url=database_url) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        single = single_caller(rt, key, cycles)
        many = concurrent_callers(rt, key, 32, cycles)
        report(label, single, many)
        for w in rt.ledger.all_wallets():
            assert w.spent_nanos + w.reserved_nanos <= w.limit_nanos
            assert w.reserved_nanos == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--postgres", help="a PostgreSQL URL to measure as well")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("SQLite (WAL, synchronous=NORMAL), 3 wallets per call", Path(tmp), None, args.cycles)
        if args.postgres:
            run("PostgreSQL (pooled), 3 wallets per call", Path(tmp), args.postgres, args.cycles)


if __name__ == "__main__":
    main()
