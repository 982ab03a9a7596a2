"""Rotation against a real nginx: rename+reopen (USR1), copytruncate, and a tailer that dies
before saving its checkpoint or is down during a logrotate shift: every call is settled once,
none lost or doubled. Runs on SQLite and PostgreSQL (the ``stack`` fixture starts once per backend).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from nginx_harness import start_nginx, stop

from allotment.testing.fake_upstream import FakeUsage, Script
from allotment_nginx.checkpoint import FileCheckpointStore
from allotment_nginx.ingest import LogIngester

pytestmark = pytest.mark.slow
COST = 100 * 750 + 50 * 4_500  # gpt-5.4-mini: 100 in x $0.75/M + 50 out x $4.50/M, in nanos


class Crash(Exception):
    """Stands in for SIGKILL after the ledger committed a line but before the checkpoint."""


@pytest.fixture
def nginx(stack, tmp_path):
    server = start_nginx(tmp_path / "nginx", stack.fake.url, stack.decision_url)
    yield server
    stop(server.process)


def send(server, key: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        reply = httpx.post(
            server.url + "/v1/chat/completions",
            timeout=30,
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-5.4-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "x"}]},
        )
        assert reply.status_code == 200, reply.text
        ids.append({k.lower(): v for k, v in reply.request.headers.items()}.get("x-request-id") or "")
    return ids


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ingester_for(stack, server, state: Path) -> LogIngester:
    return LogIngester(stack.runtime, str(server.log), store=FileCheckpointStore(state), rotate_wait=0.3)


def drain(ingester: LogIngester) -> None:
    ingester.poll()
    time.sleep(0.4)  # past rotate_wait: a renamed file is closed once quiet
    ingester.poll()


def test_rotation_both_styles_and_a_killed_tailer_lose_and_duplicate_nothing(stack, nginx, tmp_path):
    key, key_id = stack.key(budget="100")
    stack.fake.default = Script(usage=FakeUsage(input_tokens=100, output_tokens=50))
    state = tmp_path / "checkpoint.json"
    log = str(nginx.log)
    sent = 0

    def calls(n: int) -> None:
        nonlocal sent
        send(nginx, key, n)
        sent += n

    first = ingester_for(stack, nginx, state)
    calls(5)
    first.poll()

    # killed between the ledger's commit and the checkpoint: the lines are in the ledger, the
    # checkpoint never moves, and the restart reads them again
    calls(6)

    def dying(checkpoint):
        raise Crash

    first.store.save = dying  # type: ignore[method-assign]
    with pytest.raises(Crash):
        first.poll()
    first.close()

    # restart, then rename rotation while running: nginx writes the old inode until USR1
    second = ingester_for(stack, nginx, state)
    os.rename(log, log + ".1")
    calls(3)
    nginx.reopen()
    wait_until(lambda: os.path.exists(log))
    calls(4)
    drain(second)

    # copytruncate while running (the loss window is empty here: nothing is sent in between)
    calls(3)
    second.poll()
    calls(3)
    shutil.copyfile(log, log + "-20261123")
    with open(log, "r+b") as handle:
        handle.truncate(0)
    calls(3)
    drain(second)
    second.close()

    # down during a logrotate-style shift (.1 -> .2, live -> .1, USR1), then restarted
    calls(3)
    os.rename(log + ".1", log + ".2")
    os.rename(log, log + ".1")
    nginx.reopen()
    wait_until(lambda: os.path.exists(log))
    calls(3)
    third = ingester_for(stack, nginx, state)
    drain(third)
    third.close()

    wallet = next(w for w in stack.runtime.ledger.all_wallets() if w.scope == "key" and w.scope_id == key_id)
    assert sent == 33
    assert (wallet.spent_nanos, wallet.reserved_nanos) == (sent * COST, 0)
    assert second.stats.rotations >= 2 and third.stats.malformed == 0
