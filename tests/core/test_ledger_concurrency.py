"""Many callers on one wallet never overspend; a caller killed mid-request gives its hold back."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from allotment import Denied, Usage
from allotment.audit import verify
from allotment.runtime import Runtime
from allotment.settings import Settings
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime

# Sam's support tier pays $200; with input 0 and max output 4,000,000 tokens on gpt-5.4-mini
# each worst case is exactly $18, so 11 fit ($198) and the 12th cannot.
WORST_CASE_TOKENS = 4_000_000
WORST_CASE_NANOS = 18_000_000_000
AFFORDABLE = 11


def _check_invariant(rt: Runtime) -> None:
    for wallet in rt.ledger.all_wallets():
        assert wallet.spent_nanos + wallet.reserved_nanos <= wallet.limit_nanos, wallet
    report = verify(rt)
    assert report.ok, report.problems


def test_concurrent_reservations_never_overspend(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("sam@acme.example")
    admitted: list[str] = []
    refused: list[Denied] = []
    lock = threading.Lock()

    def attempt(_: int) -> None:
        try:
            admission = runtime.admit(intent(key, input_tokens=0, max_output_tokens=WORST_CASE_TOKENS))
        except Denied as denied:
            with lock:
                refused.append(denied)
            return
        with lock:
            admitted.append(admission.request_id)

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(attempt, range(64)))
    assert len(admitted) == AFFORDABLE
    assert len(refused) == 64 - AFFORDABLE
    assert {d.code for d in refused} == {"budget_exceeded"}
    person = next(w for w in runtime.ledger.all_wallets() if w.scope == "person")
    assert person.reserved_nanos == AFFORDABLE * WORST_CASE_NANOS
    _check_invariant(runtime)

    # settle in parallel too: counters end equal to the sum of events
    def settle(request_id: str) -> int:
        return runtime.settle(request_id, Usage(input_tokens=1000, output_tokens=1000)).cost_nanos

    with ThreadPoolExecutor(max_workers=8) as pool:
        costs = list(pool.map(settle, admitted))
    cost = 750_000 + 4_500_000  # 1,000 input at $0.75/1M + 1,000 output at $4.50/1M
    assert costs == [cost] * AFFORDABLE
    person = next(w for w in runtime.ledger.all_wallets() if w.scope == "person")
    assert (person.spent_nanos, person.reserved_nanos) == (AFFORDABLE * cost, 0)
    _check_invariant(runtime)


def test_hierarchy_team_limit_binds_across_people(tmp_path, database_url: str) -> None:
    # Two support people with $200 each share a team capped at $100: the team wallet binds.
    config = SAMPLE_CONFIG.replace(
        "support: {name: Support, cost_center: CC-SUP-001, monthly_budget: 2000}",
        "support: {name: Support, cost_center: CC-SUP-001, monthly_budget: 100}",
    ).replace(
        "  - {email: sam@acme.example, name: Sam Support, team: support, tier: support}\n",
        "  - {email: sam@acme.example, name: Sam Support, team: support, tier: support}\n"
        "  - {email: sue@acme.example, name: Sue Support, team: support, tier: support}\n",
    )
    with temporary_runtime(tmp_path, config=config, database_url=database_url) as rt:
        keys = [rt.admin.issue_key(e)[0] for e in ("sam@acme.example", "sue@acme.example")]
        results: list[str] = []
        lock = threading.Lock()

        def attempt(i: int) -> None:
            try:
                rt.admit(intent(keys[i % 2], input_tokens=0, max_output_tokens=WORST_CASE_TOKENS))
                outcome = "ok"
            except Denied as denied:
                outcome = str(denied.details.get("scope"))
            with lock:
                results.append(outcome)

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(attempt, range(40)))
        assert results.count("ok") == 5  # $100 / $18 = 5 holds, whoever asked
        assert set(results) - {"ok"} == {"team"}
        _check_invariant(rt)


def _reserve_in_child(database_url: str, key: str, ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    rt = Runtime.open(Settings(database_url=database_url), load_entrypoints=False, migrate=False)
    admission = rt.admit(intent(key, input_tokens=0, max_output_tokens=WORST_CASE_TOKENS))
    ready.put(admission.request_id)
    threading.Event().wait(60)  # never settles: the parent kills this process


def _hammer_in_child(database_url: str, key: str, attempts: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    rt = Runtime.open(Settings(database_url=database_url), load_entrypoints=False, migrate=False)
    admitted = 0
    for _ in range(attempts):
        try:
            a = rt.admit(intent(key, input_tokens=0, max_output_tokens=WORST_CASE_TOKENS))
        except Denied:
            continue
        admitted += 1
        rt.settle(a.request_id, Usage(output_tokens=WORST_CASE_TOKENS))
    rt.close()
    out.put(admitted)


def test_processes_share_one_wallet_without_overspending(runtime: Runtime, database_url: str) -> None:
    key, _ = runtime.admin.issue_key("sam@acme.example")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer_in_child, args=(database_url, key, 8, out)) for _ in range(4)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert total == AFFORDABLE  # each settles its full worst case, so exactly 11 fit
    person = next(w for w in runtime.ledger.all_wallets() if w.scope == "person")
    assert (person.spent_nanos, person.reserved_nanos) == (AFFORDABLE * WORST_CASE_NANOS, 0)
    _check_invariant(runtime)


def test_process_killed_between_reserve_and_settle_gives_its_hold_back(
    runtime: Runtime, database_url: str
) -> None:
    key, _ = runtime.admin.issue_key("sam@acme.example")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    child = ctx.Process(target=_reserve_in_child, args=(database_url, key, ready))
    child.start()
    request_id = ready.get(timeout=120)
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(timeout=30)
    person = next(w for w in runtime.ledger.all_wallets() if w.scope == "person")
    assert person.reserved_nanos == WORST_CASE_NANOS  # the dead process still holds $18
    # the sweeper, run after the TTL, returns it
    assert runtime.expire_reservations(datetime.now(UTC) + timedelta(hours=2)) == 1
    person = next(w for w in runtime.ledger.all_wallets() if w.scope == "person")
    assert (person.spent_nanos, person.reserved_nanos) == (0, 0)
    assert runtime.ledger.reservation(request_id).state == "expired"  # type: ignore[union-attr]
    _check_invariant(runtime)
