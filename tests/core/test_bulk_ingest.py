"""The bulk ledger path against the one-call-per-item path: same rows, hashes, counters, alerts.

Each comparison builds two identical ledgers, applies the same items one by one to the first
and in batches to the second, and compares every table; both run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from allotment import Outcome, Usage
from allotment.audit import verify
from allotment.bulk import BulkItem, BulkResult, RecordItem, SettleItem, apply_many, record_many, settle_many
from allotment.db.bulk import BulkStatements
from allotment.db.ledger import EVENT_COLUMNS
from allotment.directory import hash_key
from allotment.errors import AllotmentError
from allotment.hookspecs import hookimpl
from allotment.runtime import Runtime
from allotment.testing import intent, temporary_runtime
from allotment.types import CallIntent, EndpointMode, Price

AT = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


class CountingSecrets:
    """Stands in for ``secrets`` so two ledgers built the same way get the same ids and keys."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)

    def token_hex(self, nbytes: int = 16) -> str:
        return f"{next(self.counter):0{2 * nbytes}x}"

    def token_urlsafe(self, nbytes: int = 32) -> str:
        return f"t{next(self.counter):0{nbytes}d}"


@pytest.fixture
def fresh_url(runtime: Runtime, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """Makes empty, migrated databases on the same backend as ``runtime``'s."""

    def make(name: str) -> str:
        if runtime.settings.database_url.startswith("postgresql"):
            server = request.getfixturevalue("pg_server")
            return str(server.create_database(request.getfixturevalue("pg_template")))
        return f"sqlite:///{tmp_path / name}.db"

    return make


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it before building each ledger: both then issue the same key and reservation ids."""

    def reset() -> None:
        fake = CountingSecrets()
        monkeypatch.setattr("allotment.admin.secrets", fake)
        # the reservation id is made wherever the ledger plugin takes it from
        monkeypatch.setattr("allotment.defaults.ledger.secrets", fake, raising=False)
        monkeypatch.setattr(
            "allotment.defaults.ledger.new_reservation_id", lambda: "res_" + fake.token_hex(10), raising=False
        )

    return reset


@contextmanager
def runtime_on(url: str, tmp_path: Path) -> Iterator[Runtime]:
    with temporary_runtime(tmp_path, database_url=url) as rt:
        yield rt


def dump(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that settling or recording writes, in id order (timestamps of holds excluded)."""
    queries = {
        "events": "SELECT * FROM usage_events ORDER BY id",
        "entries": "SELECT * FROM ledger_entries ORDER BY id",
        "wallets": "SELECT id, scope, scope_id, period, limit_nanos, spent_nanos, reserved_nanos "
        "FROM wallets ORDER BY id",
        "reservations": "SELECT id, request_id, state, amount_nanos, wallet_ids "
        "FROM reservations ORDER BY id",
        "outbox": "SELECT hook, payload, dedup_key, created_at FROM outbox ORDER BY id",
    }
    with rt.engine.connect() as conn:
        return {name: [tuple(row) for row in conn.execute(text(sql))] for name, sql in queries.items()}


def one_by_one(
    rt: Runtime, batches: Sequence[Sequence[BulkItem]]
) -> list[tuple[str, int | None, str | None]]:
    """What the ingester did before: each item through ``settle``/``record`` inside ``batch()``."""
    out: list[tuple[str, int | None, str | None]] = []
    for items in batches:
        with rt.batch():
            for item in items:
                try:
                    if isinstance(item, SettleItem):
                        event = rt.settle(item.request_id, item.usage, item.outcome, flags=item.flags)
                    else:
                        event = rt.record(
                            item.intent, item.usage, item.outcome, principal=item.principal, flags=item.flags
                        )
                except AllotmentError as exc:
                    out.append((item.request_id, None, exc.code))
                else:
                    out.append((item.request_id, event.id, None))
    return out


def in_bulk(rt: Runtime, batches: Sequence[Sequence[BulkItem]]) -> list[tuple[str, int | None, str | None]]:
    out: list[tuple[str, int | None, str | None]] = []
    for items in batches:
        for result in apply_many(rt, items):
            out.append((result.request_id, result.event_id, result.error.code if result.error else None))
    return out


def passive(request_id: str, model: str = "gpt-5.4-mini", **fields: Any) -> CallIntent:
    return CallIntent(request_id=request_id, provider="openai", model=model, at=AT, **fields)


def mixed_scenario(rt: Runtime) -> list[list[BulkItem]]:
    """Build the same ledger state and the same items on ``rt``: settles, records, every odd case."""
    ada, _ = rt.admin.issue_key("ada@acme.example", name="ada")
    small, _ = rt.admin.issue_key("sam@acme.example", name="tiny", monthly_budget=Decimal("0.01"))
    rt.refresh_directory()
    ada_p = rt.find_principal(ada)
    small_p = rt.find_principal_by_hash(hash_key(small))
    assert ada_p is not None and small_p is not None
    # a hold that expires before its line is read: a late settle
    rt.admit(intent(ada, request_id="late", at=AT))
    rt.expire_reservations(AT + timedelta(days=3650))
    for n in range(6):
        labels = {"feature": "content-gen"} if n % 2 else {}
        rt.admit(intent(ada, request_id=f"adm{n}", at=AT + timedelta(seconds=n), labels=labels))
    usage = Usage(input_tokens=800, cache_read_tokens=200, output_tokens=120, reasoning_tokens=20)
    first: list[BulkItem] = [
        SettleItem("adm0", usage),
        RecordItem(passive("p0", labels={"Feature": "search"}), usage, principal=ada_p),
        SettleItem(
            "adm1",
            Usage(input_tokens=1000, output_tokens=500, estimated=True),
            Outcome.CANCELLED,
            ("usage_missing",),
        ),
        SettleItem("adm0", usage),  # the same line twice in one batch
        RecordItem(passive("p0", labels={"Feature": "search"}), usage, principal=ada_p),
        SettleItem("nobody", usage),  # never admitted here
        RecordItem(passive("p1"), Usage(output_tokens=7)),  # unattributed
        SettleItem("adm2", Usage(), Outcome.ERROR),  # released, nothing charged
        SettleItem("late", Usage(input_tokens=10, output_tokens=10)),
        RecordItem(passive("p2", model="no-such-model"), Usage(input_tokens=5)),  # unpriced, flagged
        RecordItem(
            passive("p3", endpoint_mode=EndpointMode.BATCH), Usage(cache_read_tokens=3), principal=ada_p
        ),
    ]
    # the tiny key: 4.5M nanos a line against a 10M limit crosses 50 % and 80 % on the second
    # line, 100 % on the third, and is over its limit from the third on
    big = Usage(output_tokens=1000)
    second: list[BulkItem] = [
        *[RecordItem(passive(f"tiny{n}"), big, principal=small_p) for n in range(4)],
        SettleItem("adm3", usage),
        SettleItem("adm0", usage),  # already settled by the previous batch
        RecordItem(passive("p0"), usage, principal=ada_p),  # already recorded by the previous batch
        RecordItem(passive("p4", endpoint_mode=EndpointMode.STREAM), usage, principal=ada_p, flags=("x",)),
        SettleItem("adm4", usage, flags=("from_log",)),
    ]
    return [first, second]


def twin_ledgers(
    fresh_url: Callable[[str], str], tmp_path: Path, reset: Callable[[], None], scenario: Callable[..., Any]
) -> tuple[Any, Any]:
    """Run ``scenario`` one by one on a new ledger and in bulk on its twin; return both outcomes."""
    results = []
    for apply in (one_by_one, in_bulk):
        reset()
        with runtime_on(fresh_url(apply.__name__), tmp_path) as rt:
            got = apply(rt, scenario(rt))
            report = verify(rt)
            assert report.ok, report.problems
            results.append((got, dump(rt)))
    return results[0], results[1]


def test_bulk_and_one_by_one_write_identical_rows_hashes_counters_and_alerts(
    fresh_url: Callable[[str], str], tmp_path: Path, deterministic: Callable[[], None]
) -> None:
    (single, single_rows), (bulk, bulk_rows) = twin_ledgers(
        fresh_url, tmp_path, deterministic, mixed_scenario
    )
    assert bulk == single
    for table in single_rows:
        assert bulk_rows[table] == single_rows[table], table
    events = {row[1]: row for row in bulk_rows["events"]}
    assert "p1" in events and "nobody" not in events
    at = EVENT_COLUMNS.index("flags") + 1  # after the id (columns added later come after row_hash)
    flags = {rid: row[at] for rid, row in events.items()}
    assert "late_settle" in flags["late"] and "estimated_usage" in flags["adm1"]
    assert flags["p1"] == "unattributed" and "unpriced" in flags["p2"]
    assert [("over_limit" in flags[f"tiny{n}"]) for n in range(4)] == [False, False, True, True]
    # the tiny key's wallet: 50 % and 80 % crossed by the second line, 100 % by the third,
    # each alert with the spend at its crossing
    alerts = [(row[2].rsplit(":", 1)[1], orjson.loads(row[1])["spent_nanos"]) for row in bulk_rows["outbox"]]
    assert alerts == [("0.5", 9_000_000), ("0.8", 9_000_000), ("1.0", 13_500_000)]
    assert sum(1 for (_, _, code) in bulk if code == "unknown_request") == 1


def test_exact_costs_computed_by_hand(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("ada@acme.example")
    runtime.refresh_directory()
    ada = runtime.find_principal(key)
    batch = EndpointMode.BATCH
    items = [
        # 1001 x 750 + 333 x 75 + 77 x 4,500 nanos = 750,750 + 24,975 + 346,500
        RecordItem(
            passive("h1"), Usage(input_tokens=1001, cache_read_tokens=333, output_tokens=77), principal=ada
        ),
        # batch halves the price: 1 cached token is 37.5 nanos, rounded half-even to 38 ...
        RecordItem(passive("h2", endpoint_mode=batch), Usage(cache_read_tokens=1), principal=ada),
        # ... and 3 are 112.5, rounded half-even to 112
        RecordItem(passive("h3", endpoint_mode=batch), Usage(cache_read_tokens=3), principal=ada),
        # (1,000 x 750 + 100 x 4,500) x 0.5
        RecordItem(
            passive("h4", endpoint_mode=batch), Usage(input_tokens=1000, output_tokens=100), principal=ada
        ),
    ]
    results = record_many(runtime, items)
    assert all(r.created for r in results)
    costs = {rid: runtime.event(rid).cost_nanos for rid in ("h1", "h2", "h3", "h4")}  # type: ignore[union-attr]
    assert costs == {"h1": 1_122_225, "h2": 38, "h3": 112, "h4": 600_000}
    person = next(w for w in runtime.admin.budgets() if w["scope"] == "person")
    assert person["spent_nanos"] == 1_122_225 + 38 + 112 + 600_000
    assert verify(runtime).ok


def test_a_failing_batch_applies_nothing(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    key, _ = runtime.admin.issue_key("ada@acme.example")
    runtime.refresh_directory()
    runtime.admit(intent(key, request_id="held", at=AT))
    before = dump(runtime)

    def broken(self: BulkStatements, conn: Any, rows: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(BulkStatements, "insert_entries", broken)
    items: list[BulkItem] = [
        SettleItem("held", Usage(input_tokens=10, output_tokens=10)),
        RecordItem(passive("r1"), Usage(output_tokens=10)),
    ]
    with pytest.raises(RuntimeError):
        apply_many(runtime, items)
    assert dump(runtime) == before
    monkeypatch.undo()
    results = apply_many(runtime, items)  # the retry applies it, once
    assert [r.created for r in results] == [True, True]
    assert apply_many(runtime, items) == [
        BulkResult("held", results[0].event_id, False),
        BulkResult("r1", results[1].event_id, False),
    ]
    assert runtime.reservation_state("held") == "settled" and verify(runtime).ok


def test_settle_after_a_passive_record_of_the_same_request_is_refused_not_crashed(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("ada@acme.example")
    runtime.refresh_directory()
    runtime.admit(intent(key, request_id="both", at=AT))
    results = apply_many(
        runtime,
        [RecordItem(passive("both"), Usage(output_tokens=1)), SettleItem("both", Usage(output_tokens=1))],
    )
    assert results[0].created and results[1].error is not None
    assert results[1].error.code == "duplicate_request"
    assert runtime.reservation_state("both") == "open" and verify(runtime).ok


class DoublePricer:
    """A third-party price plugin: the bulk path must let it price every item."""

    @hookimpl
    def price(self, provider: str, model: str, usage: Usage, at: datetime, endpoint_mode: str) -> Price:
        return Price(2 * usage.output_tokens, "double-1", provider, model)


def test_a_third_party_price_plugin_prices_every_item(tmp_path: Path) -> None:
    with temporary_runtime(tmp_path, plugins=[("double", DoublePricer())]) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        rt.refresh_directory()
        rt.admit(intent(key, request_id="a1", at=AT))
        results = settle_many(rt, [SettleItem("a1", Usage(output_tokens=21)), SettleItem("zz", Usage())])
        record_many(rt, [RecordItem(passive("r1"), Usage(output_tokens=5))])
        assert results[0].event_id is not None and results[1].error is not None
        assert rt.event("a1").cost_nanos == 42 and rt.event("r1").cost_nanos == 10  # type: ignore[union-attr]
        assert rt.event("a1").card_version == "double-1"  # type: ignore[union-attr]
        assert verify(rt).ok


def periods_and_tiers_scenario(rt: Runtime) -> list[list[BulkItem]]:
    """One caller's lines alternating between two months in one batch (two sets of wallets, the
    second created inside the batch), and a tiered model below and above its threshold."""
    ada, _ = rt.admin.issue_key("ada@acme.example", name="ada")
    rt.refresh_directory()
    ada_p = rt.find_principal(ada)
    assert ada_p is not None
    november, december = datetime(2026, 11, 15, tzinfo=UTC), datetime(2026, 12, 15, tzinfo=UTC)
    items: list[BulkItem] = []
    for n, at in enumerate([november, december, november, december, december]):
        call = CallIntent(
            request_id=f"m{n}", provider="openai", model="gpt-5.4-mini", at=at, labels={"feature": "search"}
        )
        items.append(RecordItem(call, Usage(input_tokens=100 + n, output_tokens=10), principal=ada_p))
    shapes = [(199_000, EndpointMode.SYNC), (201_000, EndpointMode.SYNC), (199_000, EndpointMode.BATCH)]
    shapes.append((201_000, EndpointMode.BATCH))
    for n, (tokens, mode) in enumerate(shapes):
        call = CallIntent(
            request_id=f"t{n}", provider="google", model="gemini-2.5-pro", at=AT, endpoint_mode=mode
        )
        items.append(RecordItem(call, Usage(input_tokens=tokens, output_tokens=100), principal=ada_p))
    return [items]


def test_bulk_and_one_by_one_agree_across_wallet_periods_and_price_tiers(
    fresh_url: Callable[[str], str], tmp_path: Path, deterministic: Callable[[], None]
) -> None:
    (single, single_rows), (bulk, bulk_rows) = twin_ledgers(
        fresh_url, tmp_path, deterministic, periods_and_tiers_scenario
    )
    assert bulk == single
    for table in single_rows:
        assert bulk_rows[table] == single_rows[table], table
    periods = {row[3] for row in bulk_rows["wallets"]}
    assert len(periods) >= 2  # the batch charged wallets of both months
    costs = {row[1]: row[20] for row in bulk_rows["events"]}
    assert costs["t1"] > costs["t0"] * 201 / 199  # above the threshold: the dearer tier
    assert costs["t2"] * 2 == costs["t0"] and costs["t3"] * 2 == costs["t1"]  # batch halves it


def test_bulk_prices_follow_a_new_rate_book(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from allotment.defaults.pricing import RateCardPricer
    from allotment.pricing import RateCardBook, parse_card

    usage = Usage(input_tokens=1_000, output_tokens=100)
    record_many(runtime, [RecordItem(passive("old"), usage)])
    before = runtime.event("old")
    assert before is not None and before.card_version != "openai-test-2"
    card = parse_card(
        "provider: openai\nversion: openai-test-2\neffective_from: 2026-01-01\nsource: test\n"
        "models:\n  gpt-5.4-mini:\n    input: 1\n    output: 2\n",
        "openai-test.yaml",
    )
    pricer = next(p for p in runtime.pm.get_plugins() if isinstance(p, RateCardPricer))
    monkeypatch.setattr(pricer, "_book", RateCardBook([card]))
    record_many(runtime, [RecordItem(passive("new"), usage)])
    after = runtime.event("new")
    assert after is not None and after.card_version == "openai-test-2"
    assert after.cost_nanos == 1_000 * 1_000 + 100 * 2_000  # $1 and $2 per 1M tokens
    assert runtime.event("old") == before and verify(runtime).ok
