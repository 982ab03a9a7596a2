"""Report benchmark: finance, workflow and dashboard reports over N usage events (10M default).

Prints each as a ratio to a full-scan ``SUM(cost_nanos)`` on the same table, measured in this run.
Usage: python bench/reports.py [--events N] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from allotment.db.ledger import EVENT_COLUMNS
from allotment.reports import rollup
from allotment.reports.dashboard import dashboard
from allotment.reports.spend import spend_report
from allotment.reports.workflows import workflow_report
from allotment.runtime import Runtime
from allotment.testing import temporary_runtime

MODELS = [
    ("openai", "gpt-5.4"),
    ("openai", "gpt-5.4-mini"),
    ("openai", "gpt-4.1"),
    ("openai", "gpt-4.1-mini"),
    ("anthropic", "claude-sonnet-4"),
    ("anthropic", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-pro"),
    ("openai", "gpt-4o"),
]
FEATURES = [f"wf-{i:02d}" for i in range(20)]
END = datetime(2026, 8, 1, 4, tzinfo=UTC)  # 1 August, New York midnight
DAYS = 93


def generate(rt: Runtime, count: int, batch: int = 50_000) -> None:
    """Bulk-insert ``count`` synthetic events (5,000 people in 200 teams, 8 models, ~93 days)."""
    rng = random.Random(7)
    cols = (*EVENT_COLUMNS, "row_hash")
    sql = text(f"INSERT INTO usage_events ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})")
    start = END - timedelta(days=DAYS)
    span = DAYS * 86_400
    labels = [f'{{"environment":"{env}","feature":"{f}"}}' for f in FEATURES for env in ("prod", "staging")]
    labels.append('{"environment":"prod"}')  # unlabeled by feature
    sqlite = rt.engine.dialect.name == "sqlite"
    made = 0
    while made < count:
        rows = []
        for i in range(made, min(count, made + batch)):
            person = rng.randrange(5000)
            provider, model = MODELS[rng.randrange(8)]
            ts = start + timedelta(seconds=span * i / count)
            rows.append(
                {
                    "request_id": f"b{i}",
                    "kind": "usage",
                    "ts": ts.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else ts,
                    "person_id": f"p{person}",
                    "team_id": f"t{person % 200}",
                    "key_id": None,
                    "cost_center": f"CC-{person % 200:03d}",
                    "provider": provider,
                    "model": model,
                    "endpoint_mode": "sync",
                    "input_tokens": rng.randrange(100, 5000),
                    "cache_read_tokens": 0,
                    "cache_write_tokens": 0,
                    "cache_write_1h_tokens": 0,
                    "output_tokens": rng.randrange(10, 1500),
                    "reasoning_tokens": 0,
                    "tool_calls": 0,
                    "search_calls": 0,
                    "estimated": False,
                    "cost_nanos": rng.randrange(10_000, 50_000_000),
                    "estimate_nanos": 0,
                    "external_cost_nanos": None,
                    "card_version": "bench",
                    "outcome": "success",
                    "enforced": True,
                    "labels": labels[(person * 7 + i % 3) % len(labels)],
                    "trace_id": None,
                    "retry_of": None,
                    "end_user": None,
                    "reservation_id": None,
                    "flags": "",
                    "row_hash": "0" * 64,
                }
            )
        with rt.write_engine.begin() as conn:
            conn.execute(sql, rows)
        made += len(rows)
        print(f"  inserted {made:,}", end="\r", file=sys.stderr)
    print(file=sys.stderr)
    if rt.engine.dialect.name == "postgresql":
        with rt.write_engine.begin() as conn:
            conn.execute(text("ANALYZE usage_events"))


def timed(func: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - began)
    return best


def full_scan_sum(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        conn.execute(text("SELECT SUM(cost_nanos) FROM usage_events")).scalar()


def run(rt: Runtime, count: int) -> None:
    began = time.perf_counter()
    generate(rt, count)
    print(f"generated {count:,} events in {time.perf_counter() - began:.1f}s")
    now = END - timedelta(hours=6)
    base = timed(lambda: full_scan_sum(rt))
    print(f"baseline full-scan SUM: {base * 1000:.1f} ms")
    raw = timed(lambda: spend_report(rt, "2026-07"), repeat=1)
    print(f"finance report, raw events (no rollup yet): {raw * 1000:.1f} ms  ratio {raw / base:.2f}")
    began = time.perf_counter()
    rollup.refresh(rt)
    print(f"rollup build: {time.perf_counter() - began:.1f}s")
    for name, func in (
        ("finance report, month", lambda: spend_report(rt, "2026-07")),
        ("workflow report, month", lambda: workflow_report(rt, "2026-07", ["feature"])),
        ("dashboard data", lambda: dashboard(rt, now=now)),
    ):
        took = timed(func)
        print(f"{name}: {took * 1000:.1f} ms  ratio to full-scan SUM {took / base:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        print(f"== SQLite, {args.events:,} events")
        with tempfile.TemporaryDirectory() as folder, temporary_runtime(Path(folder)) as rt:
            run(rt, args.events)
    if args.backend in ("postgres", "both"):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from pgserver import PgServer  # the tests' throwaway cluster on 127.0.0.1

        server = PgServer()
        server.start()
        try:
            print(f"== PostgreSQL, {args.events:,} events")
            with (
                tempfile.TemporaryDirectory() as folder,
                temporary_runtime(Path(folder), database_url=server.create_database()) as rt,
            ):
                run(rt, args.events)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
