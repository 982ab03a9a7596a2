"""Benchmark the LiteLLM proxy with and without allotment's callback, same fake upstream.

Two ``litellm --config`` processes, requests interleaved one by one; prints p50/p99 of each and
allotment's added latency. Usage: python bench/litellm_overhead.py [--requests N] [--stream]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "adapters" / "litellm"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm_harness import proxy_config, start_proxy, stop_proxy  # noqa: E402

from allotment.config import SAMPLE_CONFIG  # noqa: E402
from allotment.runtime import Runtime  # noqa: E402
from allotment.settings import Settings  # noqa: E402
from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one(client: httpx.Client, url: str, key: str, stream: bool) -> tuple[float, float | None]:
    """(client-observed ms, LiteLLM's own x-litellm-overhead-duration-ms) for one request."""
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 16,
        "user": "ada@acme.example",
        "stream": stream,
    }
    start = time.perf_counter()
    with client.stream(
        "POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as reply:
        for _ in reply.iter_bytes():
            pass
        if reply.status_code != 200:
            raise RuntimeError(f"{url} answered {reply.status_code}: {reply.read()[:300]!r}")
        overhead = reply.headers.get("x-litellm-overhead-duration-ms")
    elapsed = (time.perf_counter() - start) * 1000
    return elapsed, float(overhead) if overhead else None


def wait_settled(database_url: str, expected: int, timeout: float = 30.0) -> int:
    """Every allotment request must have landed in the ledger, or the numbers mean nothing."""
    from sqlalchemy import text

    with Runtime.open(Settings(database_url=database_url), migrate=False, load_entrypoints=False) as rt:
        deadline = time.monotonic() + timeout
        while True:
            with rt.engine.connect() as conn:
                count = int(conn.execute(text("SELECT COUNT(*) FROM usage_events")).scalar_one())
            if count >= expected or time.monotonic() > deadline:
                return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="measured requests per proxy")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--stream", action="store_true", help="stream the answers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeUpstream() as fake:
        workdir = Path(tmp)
        fake.default = Script(usage=FakeUsage(input_tokens=12, output_tokens=6))
        database_url = f"sqlite:///{workdir / 'allotment.db'}"
        with Runtime.open(Settings(database_url=database_url), load_entrypoints=False) as rt:
            rt.apply_config_text(SAMPLE_CONFIG, "allotment.yaml")
        env = {"ALLOTMENT_DATABASE_URL": database_url}  # master key: the body's user is trusted
        print("starting two LiteLLM proxies (about 10 s each)...", flush=True)
        base = start_proxy(workdir / "baseline", proxy_config(fake.openai_base_url, allotment=False), env)
        ours = start_proxy(workdir / "allotment", proxy_config(fake.openai_base_url, custom_auth=False), env)
        try:
            samples: dict[str, list[float]] = {"baseline": [], "allotment": []}
            overheads: dict[str, list[float]] = {"baseline": [], "allotment": []}
            with httpx.Client(timeout=30) as client:
                targets = (("baseline", base), ("allotment", ours))
                for index in range(args.warmup + args.requests):
                    # interleave, alternating who goes first, so drift hits both equally
                    order = targets if index % 2 == 0 else targets[::-1]
                    for name, proxy in order:
                        elapsed, overhead = one(client, proxy.url, proxy.master_key, args.stream)
                        if index >= args.warmup:
                            samples[name].append(elapsed)
                            if overhead is not None:
                                overheads[name].append(overhead)
            settled = wait_settled(database_url, args.warmup + args.requests)
        finally:
            stop_proxy(base)
            stop_proxy(ours)

    mode = "stream" if args.stream else "non-stream"
    print(f"ledger: {settled} of {args.warmup + args.requests} allotment requests settled")
    print(f"LiteLLM proxy, {mode}, {args.requests} interleaved requests each, fake upstream on 127.0.0.1")
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}")
    rows = [(f"{name} (client latency)", samples[name]) for name in ("baseline", "allotment")]
    rows += [(f"{name} (litellm overhead)", overheads[name]) for name in ("baseline", "allotment")]
    for label, values in rows:
        if values:
            print(f"{label:28}{pct(values, 0.5):>10.2f}{pct(values, 0.99):>10.2f}")
    ours, base = samples["allotment"], samples["baseline"]
    added50, added99 = pct(ours, 0.5) - pct(base, 0.5), pct(ours, 0.99) - pct(base, 0.99)
    print(f"added by allotment: p50 {added50:+.2f} ms, p99 {added99:+.2f} ms")
    print(
        f"ratio allotment/baseline: p50 {pct(ours, 0.5) / pct(base, 0.5):.3f}, "
        f"p99 {pct(ours, 0.99) / pct(base, 0.99):.3f}"
    )


if __name__ == "__main__":
    main()
