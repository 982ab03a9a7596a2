"""The tailer's bulk path without nginx: a mixed log in one transaction, re-reads, a failing ledger.

Runs on SQLite and PostgreSQL through the ``runtime`` fixture.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from allotment.audit import verify
from allotment.db.bulk import BulkStatements
from allotment.directory import hash_key
from allotment.errors import LedgerUnavailable
from allotment.runtime import Runtime
from allotment.testing import intent
from allotment_nginx.checkpoint import FileCheckpointStore
from allotment_nginx.ingest import LogIngester
from allotment_nginx.logline import parse_line

AT = "2026-11-23T10:00:00+00:00"


def line(**fields: Any) -> bytes:
    data = {
        "ts": AT,
        "request_id": uuid.uuid4().hex,
        "status": 200,
        "upstream_status": "200",
        "model": "gpt-5.4-mini",
        **fields,
    }
    return orjson.dumps(data) + b"\n"


def counts(prompt: int, completion: int, cached: int = 0) -> dict[str, str]:
    return {
        "prompt_tokens": str(prompt),
        "completion_tokens": str(completion),
        "cached_tokens": str(cached),
        "cache_write_tokens": "0",
        "reasoning_tokens": "0",
    }


def ledger_rows(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    with rt.engine.connect() as conn:
        return {
            table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
            for table in ("usage_events", "ledger_entries", "wallets", "outbox")
        }


def ingest(rt: Runtime, log: Path, state: Path) -> Any:
    ingester = LogIngester(rt, str(log), store=FileCheckpointStore(state))
    try:
        return ingester.run()
    finally:
        ingester.close()


@pytest.fixture
def mixed_log(runtime: Runtime, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Enforced and passive lines of every kind, one duplicate, garbage and a blank line."""
    key, _ = runtime.admin.issue_key("ada@acme.example")
    runtime.refresh_directory()
    at = datetime.fromisoformat(AT)
    ok = runtime.admit(intent(key, request_id="ok", at=at, input_tokens=1000, max_output_tokens=500))
    aborted = runtime.admit(intent(key, request_id="abort", at=at, input_tokens=1000, max_output_tokens=500))
    passive = line(key_hash=hash_key(key), stream="true", **counts(1200, 300, cached=200))
    lines = [
        line(request_id="ok", reservation_id=ok.reservation.id, **counts(900, 100)),
        passive,
        b"not json at all",
        line(reservation_id="res_gone", **counts(10, 10)),  # admitted by another ledger
        line(request_id="abort", reservation_id=aborted.reservation.id),  # client left, no usage
        line(deny_status="402", status=402),
        line(model="", uri="/healthz"),
        b"",
        passive.rstrip(b"\n"),  # the same line again
        line(**counts(1000, 100)),  # nobody's key: unattributed
    ]
    log = tmp_path / "access.jsonl"
    log.write_bytes(b"\n".join(x.rstrip(b"\n") for x in lines) + b"\n")
    return log, {"passive": parse_line(passive.rstrip()).request_id}


def test_a_mixed_log_is_settled_and_recorded_in_one_pass_at_exact_costs(
    runtime: Runtime, mixed_log: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    log, ids = mixed_log
    stats = ingest(runtime, log, tmp_path / "state.json")
    assert stats.to_dict() == {
        "lines": 10,  # the blank line counts as read, never as malformed
        "settled": 2,
        "recorded": 3,
        "denied": 1,
        "skipped": 1,
        "unknown": 1,
        "malformed": 1,
        "failed": 0,
        "rotations": 0,
    }
    ok, aborted, passive = (runtime.event(r) for r in ("ok", "abort", ids["passive"]))
    assert ok is not None and aborted is not None and passive is not None
    # 900 in x 750 + 100 out x 4,500 nanos
    assert ok.cost_nanos == 675_000 + 450_000 and ok.enforced
    # the hold's worst case: 1000 in x 750 + 500 out x 4,500
    assert aborted.cost_nanos == 3_000_000
    assert set(aborted.flags) == {"usage_missing", "estimated_usage"}
    # 1000 fresh x 750 + 200 cached x 75 + 300 out x 4,500; passive, a stream
    assert passive.cost_nanos == 750_000 + 15_000 + 1_350_000
    assert not passive.enforced and passive.endpoint_mode == "stream"
    person = next(w for w in runtime.admin.budgets() if w["scope"] == "person")
    assert (person["spent_nanos"], person["reserved_nanos"]) == (1_125_000 + 3_000_000 + 2_115_000, 0)
    assert verify(runtime).ok

    before = ledger_rows(runtime)
    again = ingest(runtime, log, tmp_path / "fresh-state.json")  # a restart without its checkpoint
    assert ledger_rows(runtime) == before
    assert again.outcomes["recorded"] == 3 and again.outcomes["settled"] == 2


def test_a_ledger_error_applies_nothing_of_the_batch_and_keeps_the_checkpoint(
    runtime: Runtime, mixed_log: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = mixed_log
    before = ledger_rows(runtime)
    state = tmp_path / "state.json"

    def down(self: BulkStatements, conn: Any, rows: Any) -> dict[str, int]:
        raise LedgerUnavailable("ledger database unavailable: disk I/O error")

    monkeypatch.setattr(BulkStatements, "insert_events", down)
    with pytest.raises(LedgerUnavailable):
        ingest(runtime, log, state)
    assert ledger_rows(runtime) == before
    assert FileCheckpointStore(state).load() is None
    assert runtime.reservation_state("ok") == "open"

    monkeypatch.undo()
    stats = ingest(runtime, log, state)  # the retry starts from the same place, and counts once
    assert stats.outcomes["settled"] == 2 and runtime.reservation_state("ok") == "settled"
    assert FileCheckpointStore(state).load() is not None
    assert verify(runtime).ok


def test_parser_edge_cases_are_malformed_not_crashes() -> None:
    from allotment_nginx.logline import MalformedLine

    assert parse_line(line(labels={"Feature": "x"})).labels == {"Feature": "x"}
    assert parse_line(line(prompt_tokens=10, completion_tokens=5)).tokens == (10, 5, 0, 0, 0)
    for bad in (
        line(prompt_tokens="²", completion_tokens="1"),  # a digit int() refuses
        line(**{**counts(100, 5), "cached_tokens": "0000000000005"}),  # longer than any count
        line(**counts(200_000_000, 1)),
        line(labels=[1]),
        line(ts={"at": 1}),
        line(ts="yesterday"),
    ):
        with pytest.raises(MalformedLine):
            parse_line(bad)


def test_the_cyclic_collector_is_paused_only_while_a_batch_is_applied(
    runtime: Runtime, mixed_log: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from allotment_nginx.sink import LedgerSink

    log, _ = mixed_log
    seen: list[bool] = []
    apply = LedgerSink.apply

    def spy(self: LedgerSink, records: Any) -> list[str]:
        seen.append(gc.isenabled())
        return apply(self, records)

    monkeypatch.setattr(LedgerSink, "apply", spy)
    assert gc.isenabled()
    ingest(runtime, log, tmp_path / "a.json")
    assert seen == [False] and gc.isenabled()

    def down(self: BulkStatements, conn: Any, rows: Any) -> dict[str, int]:
        raise LedgerUnavailable("ledger database unavailable: disk I/O error")

    fresh = tmp_path / "fresh.jsonl"
    fresh.write_bytes(line(**counts(100, 10)))  # a new passive line: its batch inserts an event
    with monkeypatch.context() as patch:
        patch.setattr(BulkStatements, "insert_events", down)
        with pytest.raises(LedgerUnavailable):
            ingest(runtime, fresh, tmp_path / "b.json")
    assert seen == [False, False] and gc.isenabled()  # back on after a failed batch too

    gc.disable()  # the application's own choice is left alone
    try:
        ingest(runtime, log, tmp_path / "c.json")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_estimate_policy_charges_what_an_aborted_stream_delivered(
    runtime: Runtime, tmp_path: Path
) -> None:
    """``--aborted estimate``: an admitted stream that ended without usage is charged its
    delivered answer bytes / 4 and its input bound / 4 (rounded up), flagged; a line without
    ``delivered_bytes`` (not a stream, or an older log) falls back to the reservation."""
    key, _ = runtime.admin.issue_key("ada@acme.example")
    runtime.refresh_directory()
    at = datetime.fromisoformat(AT)
    streamed = runtime.admit(intent(key, request_id="s", at=at, input_tokens=1001, max_output_tokens=500))
    older = runtime.admit(intent(key, request_id="o", at=at, input_tokens=1000, max_output_tokens=500))
    log = tmp_path / "access.jsonl"
    log.write_bytes(
        line(
            request_id="s",
            reservation_id=streamed.reservation.id,
            status=499,
            stream="true",
            delivered_bytes="42",
        )
        + line(request_id="o", reservation_id=older.reservation.id, status=499, stream="true")
    )
    ingester = LogIngester(
        runtime, str(log), store=FileCheckpointStore(tmp_path / "state.json"), aborted="estimate"
    )
    try:
        ingester.run()
    finally:
        ingester.close()
    s, o = runtime.event("s"), runtime.event("o")
    assert s is not None and o is not None
    # ceil(1001 / 4) = 251 in x 750 + ceil(42 / 4) = 11 out x 4,500 nanos (gpt-5.4-mini)
    assert (s.usage.input_tokens, s.usage.output_tokens) == (251, 11)
    assert s.cost_nanos == 251 * 750 + 11 * 4_500
    assert set(s.flags) == {"usage_missing", "estimated_usage"} and s.outcome.value == "cancelled"
    # no delivered_bytes: the hold's worst case, 1000 in x 750 + 500 out x 4,500
    assert o.cost_nanos == 3_000_000 and "usage_missing" in o.flags
    person = next(w for w in runtime.admin.budgets() if w["scope"] == "person")
    assert (person["spent_nanos"], person["reserved_nanos"]) == (s.cost_nanos + 3_000_000, 0)
    assert verify(runtime).ok


def passive_lines(key: str) -> tuple[bytes, dict[str, str]]:
    """Passive calls that ended without usage: a stream that logged its request body's size, one
    logged before that field existed (only nginx's request_length), and a JSON reply."""
    ids = {kind: uuid.uuid4().hex for kind in ("stream", "older", "json")}
    common = {"key_hash": hash_key(key), "usage_src": ""}
    log = (
        line(request_id=ids["stream"], stream="true", delivered_bytes="42", request_body_bytes="1001",
             request_length=1290, **common)
        + line(request_id=ids["older"], stream="true", delivered_bytes="8", request_length=385, **common)
        + line(request_id=ids["json"], stream="false", delivered_bytes="", request_body_bytes="700",
               request_length=990, **common)
    )  # fmt: skip
    return log, ids


def test_the_estimate_policy_charges_a_passive_stream_its_body_and_delivered_bytes(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Passive lines hold no reservation: ``--aborted estimate`` charges a stream without usage
    its request body's bytes / 4 as input and its delivered answer bytes / 4 as output; a line
    from before ``request_body_bytes`` existed uses nginx's ``request_length`` instead."""
    key, _ = runtime.admin.issue_key("ada@acme.example")
    runtime.refresh_directory()
    text, ids = passive_lines(key)
    log = tmp_path / "access.jsonl"
    log.write_bytes(text)
    ingester = LogIngester(
        runtime, str(log), store=FileCheckpointStore(tmp_path / "s.json"), aborted="estimate"
    )
    try:
        stats = ingester.run()
    finally:
        ingester.close()
    assert stats.outcomes["recorded"] == 3 and stats.malformed == 0
    stream, older, json_reply = (runtime.event(ids[k]) for k in ("stream", "older", "json"))
    assert stream is not None and older is not None and json_reply is not None
    # gpt-5.4-mini, 750 nanos an input token and 4,500 an output token:
    # ceil(1001 / 4) = 251 in, ceil(42 / 4) = 11 out
    assert (stream.usage.input_tokens, stream.usage.output_tokens) == (251, 11)
    assert stream.cost_nanos == 251 * 750 + 11 * 4_500 == 237_750
    # ceil(385 / 4) = 97 in (request line and headers included), ceil(8 / 4) = 2 out
    assert (older.usage.input_tokens, older.usage.output_tokens) == (97, 2)
    assert older.cost_nanos == 97 * 750 + 2 * 4_500 == 81_750
    for event in (stream, older):
        assert set(event.flags) == {"usage_missing", "estimated_usage"} and not event.enforced
    # not a stream: nothing tells what was delivered, so nothing is estimated
    assert json_reply.cost_nanos == 0 and set(json_reply.flags) == {"usage_missing"}
    person = next(w for w in runtime.admin.budgets() if w["scope"] == "person")
    assert person["spent_nanos"] == 237_750 + 81_750
    assert verify(runtime).ok


def test_the_default_policy_records_a_passive_stream_without_usage_at_zero_flagged(
    runtime: Runtime, tmp_path: Path
) -> None:
    """``reserve`` (the default) and ``release`` have no hold to charge in passive mode: the call
    is recorded at $0, flagged ``usage_missing``, so it can be found and corrected later."""
    key, _ = runtime.admin.issue_key("ada@acme.example")
    runtime.refresh_directory()
    for policy in ("reserve", "release"):
        text, ids = passive_lines(key)
        log = tmp_path / f"{policy}.jsonl"
        log.write_bytes(text)
        store = FileCheckpointStore(tmp_path / f"{policy}.json")
        ingester = LogIngester(runtime, str(log), store=store, aborted=policy)
        try:
            ingester.run()
        finally:
            ingester.close()
        for request_id in ids.values():
            event = runtime.event(request_id)
            assert event is not None and event.cost_nanos == 0
            assert set(event.flags) == {"usage_missing"} and not event.usage.estimated
    assert verify(runtime).ok


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "99999999999"])
def test_a_bad_request_body_bytes_value_makes_the_line_malformed(value: str) -> None:
    from allotment_nginx.logline import MalformedLine

    assert parse_line(line(request_body_bytes="17", request_length=300).rstrip()).request_bytes == 17
    assert parse_line(line(request_body_bytes="", request_length=300).rstrip()).request_bytes == 300
    assert parse_line(line(request_length=300).rstrip()).request_bytes == 300
    assert parse_line(line().rstrip()).request_bytes is None
    with pytest.raises(MalformedLine, match="request_body_bytes"):
        parse_line(line(request_body_bytes=value).rstrip())


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "99999999999"])
def test_a_bad_delivered_bytes_value_makes_the_line_malformed(value: str) -> None:
    from allotment_nginx.logline import MalformedLine

    assert parse_line(line(delivered_bytes="17").rstrip()).delivered_bytes == 17
    assert parse_line(line(delivered_bytes="").rstrip()).delivered_bytes is None
    assert parse_line(line().rstrip()).delivered_bytes is None
    with pytest.raises(MalformedLine, match="delivered_bytes"):
        parse_line(line(delivered_bytes=value).rstrip())
