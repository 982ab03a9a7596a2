"""Added latency and throughput of ``allotment serve`` over calling the provider directly.

The same fake provider (its own process) is called directly and through the gateway (its own
process, SQLite ledger), interleaved round by round in one run, non-streaming and streaming.
Prints p50/p99 of each target, the paired added latency, throughput ratios and stream TTFB.

``--baseline SRC`` also runs a gateway from another checkout's sources (``SRC/core`` ...),
interleaved with the two other targets, so a change is compared with its predecessor in
the same run: on a shared machine the load moves more between runs than a change does.

An open-loop phase sends Poisson arrivals at ``--rate`` per second over all targets: the
added latency under a moderate load. The closed-loop phase (``--concurrency`` callers that
each send again as soon as an answer arrives) measures throughput: there latency is queueing.

    python bench/gateway_overhead.py [--rounds 2000] [--rate 400] [--open-seconds 10]
                                     [--concurrency 16] [--seconds 5] [--baseline SRC] [--floor]

``--floor`` adds the thinnest pass-through built from the gateway's own HTTP parts and no
allotment logic: "floor - direct" is what a Python hop costs on the machine, "gateway - floor"
allotment's own share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles

import aiohttp
import httpx

FAKE = (
    "import sys, time\n"
    "from allotment.testing.fake_upstream import FakeUpstream\n"
    "f = FakeUpstream(port=int(sys.argv[1])).start()\n"
    "print('ready', flush=True)\n"
    "time.sleep(10**9)\n"
)
CONFIG = """
org: {{name: Bench, timezone: UTC, monthly_budget: 1000000}}
tiers: {{dev: {{monthly_budget: 100000, allow: ["openai/*"]}}}}
teams: {{eng: {{monthly_budget: 1000000}}}}
people: [{{email: bench@acme.example, team: eng, tier: dev}}]
upstreams: {{openai: {{api_key: sk-bench, api_base: "http://127.0.0.1:{port}/v1"}}}}
"""
BODY = {"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
STREAM_BODY = {**BODY, "stream": True}
# The thinnest pass-through built from the gateway's own parts (uvicorn with uvloop and the
# coalescing httptools protocol, the gateway's upstream client), with no authentication,
# ledger or parsing: what any Python hop costs on this machine, so that "gateway - floor"
# is allotment's own share of the added latency.
FLOOR = (
    "import sys, uvicorn\n"
    "from allotment.cli.serve import _uvicorn_options\n"
    "from allotment.gateway.upstream_http import Origin, UpstreamPool\n"
    "origin = Origin.parse(f'http://127.0.0.1:{sys.argv[1]}/v1')\n"
    "pool = UpstreamPool()\n"
    "HEADERS = {'authorization': 'Bearer sk-bench', 'content-type': 'application/json'}\n"
    "async def app(scope, receive, send):\n"
    "    if scope['type'] != 'http':\n"
    "        return\n"
    "    body, more = b'', True\n"
    "    while more:\n"
    "        message = await receive()\n"
    "        body, more = body + message.get('body', b''), message.get('more_body', False)\n"
    "    answer = await pool.post(origin, '/chat/completions', body, HEADERS,\n"
    "                             connect_timeout=5, read_timeout=30)\n"
    "    kind = [(k.encode(), v.encode()) for k, v in answer.headers if k == 'content-type']\n"
    "    if b'stream' in body:\n"
    "        await send({'type': 'http.response.start', 'status': answer.status, 'headers': kind})\n"
    "        async for piece in answer:\n"
    "            await send({'type': 'http.response.body', 'body': piece, 'more_body': True})\n"
    "        await send({'type': 'http.response.body', 'body': b''})\n"
    "    else:\n"
    "        data = await answer.read()\n"
    "        headers = [*kind, (b'content-length', str(len(data)).encode())]\n"
    "        await send({'type': 'http.response.start', 'status': answer.status, 'headers': headers})\n"
    "        await send({'type': 'http.response.body', 'body': data})\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning',\n"
    "            access_log=False, **_uvicorn_options())\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def pct(values: list[float], q: int) -> float:
    return quantiles(values, n=100, method="inclusive")[q - 1] * 1000


OWN_TIME: dict[str, list[float]] = {}  # target -> the gateway's x-allotment-overhead-ms, in ms


async def one(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], stream: bool
) -> tuple[float, float]:
    """(total seconds, seconds to the first body byte); notes the gateway's own reported time."""
    start = time.perf_counter()
    async with session.post(url, json=STREAM_BODY if stream else BODY, headers=headers) as r:
        first = None
        async for _ in r.content.iter_any():
            if first is None:
                first = time.perf_counter() - start
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}")
        own = r.headers.get("x-allotment-overhead-ms")
        if own is not None:
            OWN_TIME.setdefault(url, []).append(float(own))
    return time.perf_counter() - start, first or 0.0


async def sequential(targets: dict[str, tuple[str, dict[str, str]]], rounds: int, stream: bool) -> None:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
        for _ in range(50):  # warm up connections and caches
            for url, headers in targets.values():
                await one(session, url, headers, stream)
        for _ in range(rounds):
            order = list(targets.items())
            random.shuffle(order)
            for name, (url, headers) in order:
                samples[name].append(await one(session, url, headers, stream))
    kind = "stream" if stream else "non-stream"
    print(f"\n{kind}, sequential, {rounds} interleaved rounds")
    urls = {name: url for name, (url, _) in targets.items()}
    for name, values in samples.items():
        totals = [t for t, _ in values]
        line = f"  {name:8s} p50 {pct(totals, 50):6.3f} ms  p99 {pct(totals, 99):6.3f} ms"
        if stream:
            ttfb = [f for _, f in values]
            line += f"  TTFB p50 {pct(ttfb, 50):6.3f} ms  p99 {pct(ttfb, 99):6.3f} ms"
        print(line)
    for name in samples:
        if name == "direct":
            continue
        pairs = list(zip(samples[name], samples["direct"], strict=True))
        label = "added" if len(samples) == 2 else f"added by {name}"
        added = [g[0] - d[0] for g, d in pairs]
        print(f"  {label} p50 {pct(added, 50):+6.3f} ms  p99 {pct(added, 99):+6.3f} ms (paired)")
        if stream:
            added_ttfb = [g[1] - d[1] for g, d in pairs]
            print(f"  {label} TTFB p50 {pct(added_ttfb, 50):+6.3f} ms  p99 {pct(added_ttfb, 99):+6.3f} ms")
        if name != "floor" and "floor" in samples:
            over = [g[0] - f[0] for g, f in zip(samples[name], samples["floor"], strict=True)]
            print(f"  {name} over floor p50 {pct(over, 50):+6.3f} ms  p99 {pct(over, 99):+6.3f} ms (paired)")
        own = [ms / 1000 for ms in OWN_TIME.pop(urls[name], [])][-len(pairs) :]
        if own:
            what = "to the first byte" if stream else "per call"
            print(
                f"  {name}'s own time {what} (x-allotment-overhead-ms): "
                f"p50 {pct(own, 50):6.3f} ms  p99 {pct(own, 99):6.3f} ms"
            )


async def throughput(
    targets: dict[str, tuple[str, dict[str, str]]], concurrency: int, seconds: float, stream: bool
) -> None:
    rates: dict[str, list[float]] = {name: [] for name in targets}
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        for _block in range(4):  # alternate blocks so drift hits both targets alike
            for name, (url, headers) in targets.items():
                done = 0
                deadline = time.perf_counter() + seconds / 4

                async def worker(
                    url: str = url,
                    headers: dict[str, str] = headers,
                    name: str = name,
                    deadline: float = deadline,
                ) -> None:
                    nonlocal done
                    while time.perf_counter() < deadline:
                        total, _ = await one(session, url, headers, stream)
                        latencies[name].append(total)
                        done += 1

                start = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                rates[name].append(done / (time.perf_counter() - start))
    kind = "stream" if stream else "non-stream"
    mean = {name: sum(values) / len(values) for name, values in rates.items()}
    print(f"\n{kind}, {concurrency} concurrent, {seconds:g}s per target")
    for name, rate in mean.items():
        print(
            f"  {name:8s} {rate:8.0f} req/s  p50 {pct(latencies[name], 50):6.2f} ms"
            f"  p99 {pct(latencies[name], 99):6.2f} ms"
        )
    for name, rate in mean.items():
        if name != "direct":
            print(f"  {name}/direct throughput ratio {rate / mean['direct']:.2f}")


async def open_loop(
    targets: dict[str, tuple[str, dict[str, str]]], rate: float, seconds: float, stream: bool
) -> None:
    """Requests arrive at random (Poisson) at ``rate`` per second whether or not earlier ones
    finished, spread evenly over the targets: latency under a moderate load, not at saturation.
    (A closed loop of N callers measures throughput: its latency is N / requests per second.)"""
    samples: dict[str, list[float]] = {name: [] for name in targets}
    in_flight = 0
    flight_samples: list[int] = []

    async def call(session: aiohttp.ClientSession, name: str) -> None:
        nonlocal in_flight
        url, headers = targets[name]
        in_flight += 1
        flight_samples.append(in_flight)  # requests in flight as this one arrives, itself included
        try:
            total, _ = await one(session, url, headers, stream)
        finally:
            in_flight -= 1
        samples[name].append(total)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        for _ in range(20):
            for url, headers in targets.values():
                await one(session, url, headers, stream)
        names = list(targets)
        OWN_TIME.clear()
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        due = start
        arrivals = 0
        while due - start < seconds:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if arrivals % len(names) == 0:
                random.shuffle(names)  # each target gets every n-th arrival, in a random order
            tasks.append(asyncio.create_task(call(session, names[arrivals % len(names)])))
            arrivals += 1
            due += random.expovariate(rate)
        await asyncio.gather(*tasks)
    kind = "stream" if stream else "non-stream"
    mean_flight = sum(flight_samples) / len(flight_samples)
    print(
        f"\n{kind}, open loop: {rate:g} req/s Poisson arrivals over {seconds:g}s, split over "
        f"{len(targets)} targets (in flight at arrival: mean {mean_flight:.2f}, max {max(flight_samples)})"
    )
    for name, values in samples.items():
        p50, p99 = pct(values, 50), pct(values, 99)
        print(f"  {name:8s} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  ({len(values)} calls)")
    for name, values in samples.items():
        if name != "direct":
            direct = samples["direct"]
            print(
                f"  added by {name}: p50 {pct(values, 50) - pct(direct, 50):+6.3f} ms  "
                f"p99 {pct(values, 99) - pct(direct, 99):+6.3f} ms"
            )
            if name != "floor" and "floor" in samples:
                floor = samples["floor"]
                print(
                    f"  {name} over floor: p50 {pct(values, 50) - pct(floor, 50):+6.3f} ms  "
                    f"p99 {pct(values, 99) - pct(floor, 99):+6.3f} ms"
                )
            own = [ms / 1000 for ms in OWN_TIME.get(targets[name][0], [])]
            if len(own) > 1:
                print(
                    f"  {name}'s own time (x-allotment-overhead-ms): "
                    f"p50 {pct(own, 50):6.3f} ms  p99 {pct(own, 99):6.3f} ms"
                )


def start_gateway(
    work: Path, fake_port: int, source: Path | None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """An ``allotment serve`` on its own SQLite file; ``source``: run that checkout's code."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (work / "allotment.yaml").write_text(CONFIG.format(port=fake_port))
    env = {
        **os.environ,
        "ALLOTMENT_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
        "ALLOTMENT_ADMIN_TOKEN": "bench-admin",
    }
    if source is not None:
        packages = [str(source / folder) for folder in ("core", "adapters", "plugins")]
        env["PYTHONPATH"] = os.pathsep.join([*packages, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    allotment = Path(sys.executable).with_name("allotment")
    command = [str(allotment), "serve", "--config", str(work / "allotment.yaml"), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz")
    key = httpx.post(
        url + "/admin/keys",
        json={"email": "bench@acme.example"},
        headers={"Authorization": "Bearer bench-admin"},
    ).json()["key"]
    return process, url, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--baseline", type=Path, help="another checkout to run interleaved")
    parser.add_argument(
        "--rate", type=float, default=400.0, help="open-loop arrivals per second (all targets together)"
    )
    parser.add_argument("--open-seconds", type=float, default=10.0, help="length of the open-loop run")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run the thinnest Python pass-through (the gateway's HTTP parts, no allotment)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="allotment-bench-"))
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, "-c", FAKE, str(fake_port)], stdout=subprocess.PIPE)
    assert fake.stdout is not None and fake.stdout.readline().strip() == b"ready"
    gateways: list[subprocess.Popen[bytes]] = []
    try:
        targets = {
            "direct": (
                f"http://127.0.0.1:{fake_port}/v1/chat/completions",
                {"Authorization": "Bearer sk-bench"},
            )
        }
        sources = {"gateway": None, "baseline": args.baseline} if args.baseline else {"gateway": None}
        for name, source in sources.items():
            process, url, key = start_gateway(work / name, fake_port, source)
            gateways.append(process)
            targets[name] = (url + "/v1/chat/completions", {"Authorization": f"Bearer {key}"})
        if args.floor:
            floor_port = free_port()
            gateways.append(subprocess.Popen([sys.executable, "-c", FLOOR, str(fake_port), str(floor_port)]))
            wait_http(f"http://127.0.0.1:{floor_port}/")
            targets["floor"] = (f"http://127.0.0.1:{floor_port}/v1/chat/completions", {})
        print(f"python {sys.version.split()[0]}, gateway: 1 uvicorn worker, SQLite ledger")
        for stream in (False, True):
            asyncio.run(sequential(targets, args.rounds, stream))
            asyncio.run(open_loop(targets, args.rate, args.open_seconds, stream))
            asyncio.run(throughput(targets, args.concurrency, args.seconds, stream))
    finally:
        for process in [*gateways, fake]:
            process.terminate()
        for process in [*gateways, fake]:
            process.wait()


if __name__ == "__main__":
    main()
