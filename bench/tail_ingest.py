"""Benchmark nginx log ingestion: lines/s parsed only vs. fully ingested (parse, price, ledger).

Both run over ``allotment_json`` logs generated the same way (new request ids for each ingest
round), interleaved for a few rounds; prints the best rate of each and the ingest/parse ratio.
Usage: python bench/tail_ingest.py [--lines N] [--ingest-lines M] [--rounds R] [--postgres URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from allotment.directory import hash_key
from allotment.testing import temporary_runtime
from allotment_nginx.checkpoint import FileCheckpointStore
from allotment_nginx.ingest import LogIngester
from allotment_nginx.logline import parse_line
from allotment_nginx.tailer import Tailer


def generate(path: Path, lines: int, key_hash: str) -> None:
    """Passive lines shaped like the real log format (about 800 bytes each)."""
    with path.open("wb") as out:
        for i in range(lines):
            stream = i % 3 == 0
            out.write(
                orjson.dumps(
                    {
                        "ts": "2026-11-23T10:00:00+00:00",
                        "request_id": uuid.uuid4().hex,
                        "remote": "10.0.0.7",
                        "method": "POST",
                        "uri": "/v1/chat/completions",
                        "status": 200,
                        "upstream_status": "200",
                        "request_time": 0.412,
                        "upstream_response_time": "0.410",
                        "bytes_sent": 1956,
                        "request_length": 385,
                        # a body of 0.9 to 25 KB: a third are below the parser's small-count table
                        "request_body_bytes": str(900 + i * 37 % 24_000),
                        "key_hash": key_hash,
                        "person": "",
                        "key_id": "",
                        "labels": '{"feature":"search"}',
                        "trace_id": "",
                        "model": "gpt-5.4-mini",
                        "stream": "true" if stream else "false",
                        "prompt_tokens": str(800 + i % 97),
                        "completion_tokens": str(120 + i % 13),
                        "total_tokens": "",
                        "cached_tokens": "200",
                        "cache_write_tokens": "0",
                        "reasoning_tokens": "0",
                        "usage_src": "sse" if stream else "json",
                        "delivered_bytes": str(480 + i % 53) if stream else "",
                        "litellm_cost": "",
                        "reservation_id": "",
                        "deny_status": "",
                        "deny_reason": "",
                    }
                )
                + b"\n"
            )


def parse_only(path: Path) -> tuple[int, float]:
    """The baseline: the same tailer reads and parses every line; nothing is priced or stored."""
    started = time.perf_counter()
    tailer = Tailer(str(path))
    count = 0
    for batch in tailer.batches():
        for line in batch.lines:
            parse_line(line)
            count += 1
    tailer.close()
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000, help="lines in the generated log")
    parser.add_argument("--ingest-lines", type=int, default=20_000, help="lines to ingest per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each; the best is reported")
    parser.add_argument("--postgres", help="ingest into this PostgreSQL database instead of SQLite")
    args = parser.parse_args()
    parse_rates, ingest_rates, reread_rates = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with temporary_runtime(root, database_url=args.postgres) as rt:
            key, _ = rt.admin.issue_key("ada@acme.example", name="bench")
            rt.refresh_directory()
            big = root / "big.jsonl"
            generate(big, args.lines, hash_key(key))
            # rounds interleave parse-only and ingest, so a busy moment hits both alike
            for round_ in range(args.rounds):
                n, seconds = parse_only(big)
                parse_rates.append(n / seconds)
                small = root / f"small{round_}.jsonl"  # new request ids each round
                generate(small, args.ingest_lines, hash_key(key))
                ingester = LogIngester(rt, str(small), store=FileCheckpointStore(root / f"s{round_}.json"))
                started = time.perf_counter()
                stats = ingester.run()
                ingest_rates.append(stats.lines / (time.perf_counter() - started))
                ingester.close()
                assert stats.outcomes["recorded"] == args.ingest_lines, stats.to_dict()
                # a re-read (restart without a checkpoint) must charge nothing twice
                rerun = LogIngester(rt, str(small), store=FileCheckpointStore(root / f"f{round_}.json"))
                started = time.perf_counter()
                rerun.run()
                reread_rates.append(args.ingest_lines / (time.perf_counter() - started))
                rerun.close()
    parse_rate, ingest_rate = max(parse_rates), max(ingest_rates)
    print(f"parse only   : {parse_rate:>10,.0f} lines/s  ({args.lines:,} lines, best of {args.rounds})")
    print(f"ingest       : {ingest_rate:>10,.0f} lines/s  (parse + price + idempotent ledger record)")
    print(f"re-read      : {max(reread_rates):>10,.0f} lines/s  (every line already in the ledger)")
    print(f"ratio ingest/parse-only: {ingest_rate / parse_rate:.4f}  (target >= 0.4)")


if __name__ == "__main__":
    main()
