"""The ledger's history is append-only on both databases, and tampering is detected."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from allotment import Usage
from allotment.audit import seal, verify
from allotment.runtime import Runtime
from allotment.testing import intent


def _settled(runtime: Runtime, count: int = 3) -> list[str]:
    key, _ = runtime.admin.issue_key("ada@acme.example")
    ids = []
    for i in range(count):
        admission = runtime.admit(intent(key))
        runtime.settle(admission.request_id, Usage(input_tokens=100 * (i + 1), output_tokens=10))
        ids.append(admission.request_id)
    return ids


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE usage_events SET cost_nanos = 1",
        "DELETE FROM usage_events",
        "UPDATE ledger_entries SET amount_nanos = 1",
        "DELETE FROM ledger_entries",
    ],
)
def test_history_refuses_update_and_delete(runtime: Runtime, statement: str) -> None:
    _settled(runtime, 1)
    with pytest.raises(Exception) as info, runtime.write_engine.begin() as conn:
        conn.execute(text(statement))
    assert "append-only" in str(info.value)
    assert verify(runtime).ok


def _drop_triggers(runtime: Runtime) -> None:
    """What an attacker with database access would do first."""
    with runtime.write_engine.begin() as conn:
        if runtime.ledger.dialect == "postgresql":
            conn.execute(text("DROP TRIGGER usage_events_append_only ON usage_events"))
            conn.execute(text("DROP TRIGGER ledger_entries_append_only ON ledger_entries"))
        else:
            for name in ("usage_events_no_update", "usage_events_no_delete", "ledger_entries_no_update"):
                conn.execute(text(f"DROP TRIGGER {name}"))


def test_audit_verify_detects_an_edited_event(runtime: Runtime) -> None:
    ids = _settled(runtime)
    seal(runtime)
    assert verify(runtime).ok
    _drop_triggers(runtime)
    with runtime.write_engine.begin() as conn:
        conn.execute(text("UPDATE usage_events SET cost_nanos = 1 WHERE request_id = :r"), {"r": ids[1]})
    report = verify(runtime)
    assert not report.ok
    assert any("was altered" in p and ids[1] in p for p in report.problems)


def test_audit_verify_detects_a_deleted_event_behind_a_seal(runtime: Runtime) -> None:
    ids = _settled(runtime)
    seal(runtime)
    _drop_triggers(runtime)
    with runtime.write_engine.begin() as conn:
        conn.execute(text("DELETE FROM usage_events WHERE request_id = :r"), {"r": ids[0]})
    problems = verify(runtime).problems
    assert any("seal #1 no longer matches" in p for p in problems)


def test_audit_verify_detects_a_counter_that_disagrees_with_its_entries(runtime: Runtime) -> None:
    _settled(runtime)
    with runtime.write_engine.begin() as conn:
        conn.execute(text("UPDATE wallets SET spent_nanos = spent_nanos - 5 WHERE scope = 'team'"))
    problems = verify(runtime).problems
    assert len(problems) == 1
    assert "spent counter" in problems[0] and "team engineering" in problems[0]


def test_rehashed_tampering_still_breaks_the_seal(runtime: Runtime) -> None:
    from allotment.audit import _normalise
    from allotment.db.ledger import EVENT_COLUMNS, row_hash

    ids = _settled(runtime)
    seal(runtime)
    _drop_triggers(runtime)
    cols = ", ".join(EVENT_COLUMNS)
    with runtime.write_engine.begin() as conn:
        row = conn.execute(
            text(f"SELECT {cols} FROM usage_events WHERE request_id = :r"), {"r": ids[2]}
        ).fetchone()
        stored = _normalise(dict(zip(EVENT_COLUMNS, row, strict=True)))
        stored["cost_nanos"] = 7
        conn.execute(
            text("UPDATE usage_events SET cost_nanos = 7, row_hash = :h WHERE request_id = :r"),
            {"h": row_hash(stored), "r": ids[2]},
        )
    problems = verify(runtime).problems
    assert any("seal #1 no longer matches" in p for p in problems)
