"""A PostgreSQL server whose time zone is not UTC stores and returns the same instants.

The ledger's timestamp columns are ``timestamptz`` on PostgreSQL. Managed PostgreSQL usually
runs in UTC, but a self-hosted server often inherits the machine's zone: nothing read back,
hashed or audited may shift by the server's offset.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from allotment import Usage
from allotment.audit import verify
from allotment.testing import intent, temporary_runtime


def test_instants_survive_a_server_outside_utc(postgres_url: str, tmp_path: Path) -> None:
    import psycopg

    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {database} SET timezone = 'America/New_York'")
        assert conn.execute("SHOW timezone").fetchone() is not None
    at = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # already the next day in UTC, not in New York
    with temporary_runtime(tmp_path, database_url=postgres_url) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        before = datetime.now(UTC)
        admission = rt.admit(intent(key, at=at))
        assert admission.reservation.expires_at > before
        state = rt.ledger.reservation(admission.request_id)
        assert state is not None
        assert before - timedelta(seconds=5) < state.created_at < datetime.now(UTC) + timedelta(seconds=5)
        event = rt.settle(admission.request_id, Usage(input_tokens=100, output_tokens=10))
        assert event.at == at
        stored = rt.event(admission.request_id)
        assert stored is not None and stored.at == at
        report = verify(rt)
        assert report.ok, report.problems
