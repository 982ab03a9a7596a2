"""A ledger database that cannot do its work: 503 ``ledger_unavailable`` by default (fail
closed), or, with ``policy.ledger_unavailable: open``, calls let through and recorded
unenforced once the ledger answers again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from allotment import LedgerUnavailable, Usage
from allotment.audit import verify
from allotment.config import SAMPLE_CONFIG
from allotment.runtime import Runtime
from allotment.testing import intent, temporary_runtime
from allotment.types import UNRECORDED
from helpers import write_locked

USAGE = Usage(input_tokens=800, cache_read_tokens=200, output_tokens=120)
MINI_IN, MINI_CACHED, MINI_OUT = Decimal("0.75"), Decimal("0.075"), Decimal("4.50")  # gpt-5.4-mini
COST = int((800 * MINI_IN + 200 * MINI_CACHED + 120 * MINI_OUT) * 1000)  # nanos per token = $/1M * 1000


def wallet_totals(rt: Runtime) -> list[tuple[str, int, int]]:
    return sorted((w.scope, w.spent_nanos, w.reserved_nanos) for w in rt.ledger.all_wallets())


def test_fails_closed_by_default_and_holds_nothing(tmp_path: Path) -> None:
    with temporary_runtime(tmp_path, ledger_wait_seconds=0.05) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        warm = rt.admit(intent(key))  # wallets exist; this call holds its worst case
        before = wallet_totals(rt)
        started = time.monotonic()
        with write_locked(rt), pytest.raises(LedgerUnavailable) as refused:
            rt.admit(intent(key))
        assert time.monotonic() - started < 5  # the configured 50 ms wait, not the default 30 s
        assert refused.value.status == 503 and refused.value.code == "ledger_unavailable"
        assert wallet_totals(rt) == before
        rt.settle(warm.request_id, USAGE)


def test_a_database_error_inside_a_transaction_is_ledger_unavailable_and_changes_nothing(
    tmp_path: Path,
) -> None:
    with temporary_runtime(tmp_path, ledger_wait_seconds=0.05) as rt:
        writer = rt.ledger.executor._conn  # type: ignore[attr-defined]
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        writer.execute(f"PRAGMA max_page_count={pages}")  # the disk is full
        with pytest.raises(LedgerUnavailable, match="full"):
            rt.ledger.executor.run(
                lambda conn: conn.execute("INSERT INTO meta (key, value) VALUES ('big', ?)", ("x" * 200_000,))
            )
        writer.execute(f"PRAGMA max_page_count={2**31}")
        assert (
            rt.ledger.executor.read(lambda c: c.execute("SELECT 1 FROM meta WHERE key = 'big'").fetchone())
            is None
        )


def test_fail_open_lets_the_call_through_and_records_it_unenforced_once_the_ledger_is_back(
    tmp_path: Path,
) -> None:
    config = SAMPLE_CONFIG + "\npolicy:\n  ledger_unavailable: open\n"
    with temporary_runtime(tmp_path, config=config, ledger_wait_seconds=0.05) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        with write_locked(rt):
            admission = rt.admit(intent(key))
            assert admission.reservation.state == UNRECORDED
            assert admission.reservation.id == "" and admission.reservation.wallet_ids == ()
            assert rt.quote(admission.request_id, USAGE).amount_nanos == COST
            with pytest.raises(LedgerUnavailable):  # still down: the settle can be retried
                rt.settle(admission.request_id, USAGE)
        event = rt.settle(admission.request_id, USAGE)  # the ledger answers again
        assert event.cost_nanos == COST
        assert event.enforced is False
        assert "fail_open" in event.flags
        assert event.person_id == admission.principal.person_id  # attributed like any call
        assert rt.settle(admission.request_id, USAGE).id == event.id  # idempotent
        totals = wallet_totals(rt)
        assert all(spent == COST and reserved == 0 for _, spent, reserved in totals)
        assert verify(rt).ok


def test_fail_open_still_refuses_what_needs_no_ledger_to_refuse(tmp_path: Path) -> None:
    config = SAMPLE_CONFIG + "\npolicy:\n  ledger_unavailable: open\n"
    with temporary_runtime(tmp_path, config=config, ledger_wait_seconds=0.05) as rt:
        key, _ = rt.admin.issue_key("sam@acme.example")  # support tier: gpt-5.4-mini only
        with write_locked(rt):
            with pytest.raises(Exception) as denied:
                rt.admit(intent(key, model="gpt-5.4"))
            assert getattr(denied.value, "status", None) == 403
            with pytest.raises(Exception) as unknown:
                rt.admit(intent("sk-not-a-key"))
            assert getattr(unknown.value, "status", None) in (401, 503)


@contextmanager
def postgres_down(pg_server: Any, url: str) -> Iterator[None]:
    """The database refuses connections and every open one is cut, as in a failover."""
    name = url.rsplit("/", 1)[1]
    pg_server.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    pg_server.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    try:
        yield
    finally:
        pg_server.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


def test_postgres_outage_fails_closed_then_open_and_the_usage_lands_once_it_is_back(
    tmp_path: Path, pg_server: Any, postgres_url: str
) -> None:
    config = SAMPLE_CONFIG + "\npolicy:\n  ledger_unavailable: open\n"
    with temporary_runtime(
        tmp_path, database_url=postgres_url, config=SAMPLE_CONFIG, ledger_wait_seconds=0.5, pg_pool_size=2
    ) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        rt.settle(rt.admit(intent(key)).request_id, USAGE)  # wallets exist
        with postgres_down(pg_server, postgres_url), pytest.raises(LedgerUnavailable):
            rt.admit(intent(key))  # the policy's default: closed
    with temporary_runtime(
        tmp_path, database_url=postgres_url, config=config, ledger_wait_seconds=0.5, pg_pool_size=2
    ) as rt:
        with postgres_down(pg_server, postgres_url):
            admission = rt.admit(intent(key))
            assert admission.reservation.state == UNRECORDED
            with pytest.raises(LedgerUnavailable):
                rt.settle(admission.request_id, USAGE)
        event = _retry(lambda: rt.settle(admission.request_id, USAGE))  # the pool reconnects
        assert event.cost_nanos == COST and event.enforced is False and "fail_open" in event.flags
        person = next(w for w in rt.ledger.all_wallets() if w.scope == "person")
        assert (person.spent_nanos, person.reserved_nanos) == (2 * COST, 0)
        assert verify(rt).ok


def _retry(call: Any, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except LedgerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_opening_a_runtime_on_a_locked_file_waits_only_ledger_wait_seconds(tmp_path: Path) -> None:
    """The migration at start and the admin engines honour ``ledger_wait_seconds`` too: a
    gateway or LiteLLM proxy starting while another process holds the write lock answers
    ``ledger_unavailable`` after the configured wait, not after a fixed 30 s."""
    from allotment.settings import Settings

    with temporary_runtime(tmp_path) as rt, write_locked(rt):
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match="cannot migrate"):
            Runtime.open(
                Settings(database_url=rt.settings.database_url, ledger_wait_seconds=0.5),
                load_entrypoints=False,
            )
        assert time.monotonic() - started < 10
        started = time.monotonic()
        impatient = Runtime.open(
            Settings(database_url=rt.settings.database_url, ledger_wait_seconds=0.5),
            load_entrypoints=False,
            migrate=False,
        )
        try:
            with pytest.raises(LedgerUnavailable):
                impatient.apply_config_text(SAMPLE_CONFIG, "allotment.yaml")
        finally:
            impatient.close()
        assert time.monotonic() - started < 10
