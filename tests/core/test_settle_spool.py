"""The settle spool: what a process could not settle is kept durably and replayed exactly once.

Runs on SQLite and PostgreSQL through the ``runtime`` fixture (the spool is a local file).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from allotment.audit import verify
from allotment.errors import LedgerUnavailable
from allotment.runtime import Runtime
from allotment.settings import Settings
from allotment.settle_spool import PendingSettle, replay, settle_or_spool, spool_path
from allotment.testing import intent
from allotment.types import Usage

AT = datetime.fromisoformat("2026-11-23T10:00:00+00:00")


def admitted(runtime: Runtime, request_id: str) -> None:
    key, _ = runtime.admin.issue_key("ada@acme.example")
    runtime.refresh_directory()
    runtime.admit(intent(key, request_id=request_id, at=AT, input_tokens=1000, max_output_tokens=500))


def test_a_refused_settle_is_spooled_kept_while_the_ledger_is_down_then_replayed_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a PostgreSQL ledger's default spool is the working directory: keep the test's in its own
    runtime.settings = runtime.settings.model_copy(update={"settle_spool": tmp_path / "spool.jsonl"})
    admitted(runtime, "r1")
    pending = PendingSettle("r1", Usage(input_tokens=900, output_tokens=100), flags=("client_disconnected",))
    real = Runtime.settle

    def down(self: Runtime, *args: Any, **kwargs: Any) -> Any:
        raise LedgerUnavailable("ledger database unavailable: database is locked")

    monkeypatch.setattr(Runtime, "settle", down)
    assert settle_or_spool(runtime, [pending, PendingSettle("r2", Usage())], "test") == ["r1", "r2"]
    path = spool_path(runtime.settings)
    with path.open("ab") as out:
        out.write(b"not a spooled settle\n")
    before = path.read_bytes()
    assert replay(runtime).to_dict() == {"settled": 0, "kept": 3, "refused": 0}
    assert path.read_bytes() == before  # nothing taken out while the ledger is down

    monkeypatch.setattr(Runtime, "settle", real)
    report = replay(runtime)
    # r2 was never admitted here: kept (the wrong ledger?), as is the unreadable line
    assert report.to_dict() == {"settled": 1, "kept": 2, "refused": 0}
    event = runtime.event("r1")
    assert event is not None and event.cost_nanos == 900 * 750 + 100 * 4_500  # gpt-5.4-mini
    assert "client_disconnected" in event.flags
    assert [line.split(b'"request_id":"')[-1][:2] for line in path.read_bytes().splitlines()] == [
        b"r2",
        b"no",
    ]
    assert replay(runtime).settled == 0 and runtime.event("r1") == event  # charged once
    assert verify(runtime).ok


def test_the_spool_sits_beside_a_sqlite_ledger_unless_configured(tmp_path: Path) -> None:
    sqlite = Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    assert spool_path(sqlite) == Path(f"{tmp_path / 'ledger.db'}.pending-settles.jsonl")
    postgres = Settings(database_url="postgresql://db/allotment")
    assert spool_path(postgres) == Path("allotment.pending-settles.jsonl")
    chosen = Settings(database_url="postgresql://db/allotment", settle_spool=tmp_path / "s.jsonl")
    assert spool_path(chosen) == tmp_path / "s.jsonl"
