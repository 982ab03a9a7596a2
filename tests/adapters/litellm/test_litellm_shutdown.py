"""A LiteLLM proxy stopped while a settle waits for a locked ledger: the settle is spooled at
shutdown, not lost, and ``allotment settles replay`` charges it exactly once.

Stops its proxy, so it starts its own (the one extra process), on the SQLite stack's ledger.
gpt-4o: $2.50 in / $10.00 out per 1M tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import openai
import pytest
from litellm_harness import proxy_config, start_proxy, stop_proxy
from litellm_stack import LEDGER_WAIT_SECONDS, Stack, wait_for
from sqlalchemy import text

from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script
from helpers import write_locked

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_stack]  # locks the SQLite ledger file

COST = 100 * 2_500 + 20 * 10_000  # the fake provider's usage below: 100 in, 20 out, gpt-4o


def allotment_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("allotment", path=str(Path(sys.executable).parent)) or "allotment"
    env = {**os.environ, "ALLOTMENT_DATABASE_URL": stack.runtime.settings.database_url}
    return subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=120)


def logged_success(probe: Path, call_id: str) -> bool:
    """The contract probe saw LiteLLM's success event for ``call_id``."""
    if not probe.exists():
        return False
    records = [json.loads(line) for line in probe.read_text().splitlines() if line.strip()]
    return any(r.get("call_id") == call_id and r["hook"] == "log_success" for r in records)


def events_of(stack: Stack, request_id: str) -> int:
    with stack.runtime.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT COUNT(*) FROM usage_events WHERE request_id = :r"), {"r": request_id}
            ).scalar_one()
        )


def test_a_settle_pending_when_the_proxy_stops_is_spooled_and_replayed_once(
    stack: Stack, fake: FakeUpstream, tmp_path: Path
) -> None:
    workdir = tmp_path / "proxy"
    workdir.mkdir()
    shutil.copy(Path(__file__).parent / "contract_probe.py", workdir / "contract_probe.py")
    spool = tmp_path / "pending-settles.jsonl"
    probe = tmp_path / "probe.jsonl"
    proxy = start_proxy(
        workdir,
        proxy_config(fake.openai_base_url, probe=True),
        env={
            "ALLOTMENT_DATABASE_URL": stack.runtime.settings.database_url,
            "ALLOTMENT_CONFIG": str(stack.workdir / "allotment.yaml"),
            "ALLOTMENT_LEDGER_WAIT_SECONDS": str(LEDGER_WAIT_SECONDS),
            "ALLOTMENT_SETTLE_SPOOL": str(spool),
            "ALLOTMENT_CONTRACT_PROBE_FILE": str(probe),
        },
    )
    try:
        warmup = openai.OpenAI(base_url=proxy.openai_base_url, api_key=stack.key()[0], max_retries=0)
        key, key_id = stack.key()
        client = openai.OpenAI(base_url=proxy.openai_base_url, api_key=key, max_retries=0)
        stack.clients.extend([warmup, client])
        # the proxy opens its runtime (and migrates) at its first call: not under the lock
        warmup.chat.completions.create(
            model="gpt-4o-mock", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        fake.default = Script(usage=FakeUsage(input_tokens=100, output_tokens=20), delay=0.5)
        replies: list[Any] = []

        def call() -> None:
            replies.append(
                client.chat.completions.with_raw_response.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=50
                )
            )

        caller = threading.Thread(target=call)
        caller.start()
        try:
            wait_for(lambda: fake.requests, 20, "the call never reached the provider")  # admitted
            with write_locked(stack.runtime):
                caller.join(20)
                call_id = replies[0].headers["x-litellm-call-id"]
                # allotment's callback (listed before the probe) made its first attempt by then
                wait_for(
                    lambda: logged_success(probe, call_id),
                    20,
                    f"LiteLLM never logged the success of {call_id}\n{proxy.log_tail()}",
                )
                assert stack.runtime.reservation_state(call_id) == "open"  # refused: still held
                stop_proxy(proxy)  # SIGTERM while the retry waits; the ledger is still locked
                assert proxy.process.returncode is not None
        finally:
            caller.join(20)
    finally:
        stop_proxy(proxy)
    assert replies[0].status_code == 200  # the client had its answer
    log = proxy.log_path.read_text(errors="replace")
    assert "LiteLLM proxy shutting down with 1 settle(s) pending" in log, log[-3000:]
    assert f"could not settle {call_id}; spooled to {spool}" in log
    entries = [json.loads(line) for line in spool.read_text().splitlines()]
    assert [e["request_id"] for e in entries] == [call_id]
    assert entries[0]["usage"]["input_tokens"] == 100 and entries[0]["usage"]["output_tokens"] == 20
    assert events_of(stack, call_id) == 0  # nothing reached the ledger, nothing was dropped

    replayed = allotment_cli(stack, "settles", "replay", "--spool", str(spool), "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {"settled": 1, "kept": 0, "refused": 0}
    event = stack.runtime.event(call_id)
    assert event is not None and event.enforced and event.cost_nanos == COST == 450_000
    assert stack.runtime.reservation_state(call_id) == "settled"
    wallet = stack.key_wallet(key_id)
    assert (wallet.spent_nanos, wallet.reserved_nanos) == (COST, 0)
    assert spool.read_text() == ""

    again = allotment_cli(stack, "settles", "replay", "--spool", str(spool), "--json")
    assert json.loads(again.stdout) == {"settled": 0, "kept": 0, "refused": 0}
    assert events_of(stack, call_id) == 1
    verified = allotment_cli(stack, "audit", "verify")
    assert verified.returncode == 0 and "ledger verified" in verified.stdout, verified.stdout
