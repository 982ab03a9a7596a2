"""The narrow waist on both databases: admit reserves, settle charges exactly once, record is passive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from allotment import Denied, NotFound, Outcome, Usage
from allotment.audit import verify
from allotment.directory import hash_key
from allotment.hookspecs import hookimpl
from allotment.runtime import Runtime
from allotment.testing import SAMPLE_CONFIG, intent

# gpt-5.4-mini on the bundled card: $0.75 / 1M input, $0.075 / 1M cached, $4.50 / 1M output
MINI_IN, MINI_CACHED, MINI_OUT = Decimal("0.75"), Decimal("0.075"), Decimal("4.50")


def nanos(tokens: int, per_million: Decimal) -> Decimal:
    return Decimal(tokens) * per_million * 1000  # per-million USD → nanos per token × 1e9 / 1e6


def wallets(rt: Runtime) -> dict[str, dict[str, object]]:
    return {w["scope"]: w for w in rt.admin.budgets()}


@pytest.fixture
def ada(runtime: Runtime) -> str:
    key, _ = runtime.admin.issue_key("ada@acme.example")
    return key


def test_admit_reserves_the_worst_case_on_every_wallet(runtime: Runtime, ada: str) -> None:
    admission = runtime.admit(intent(ada, input_tokens=1000, max_output_tokens=500))
    expected = nanos(1000, MINI_IN) + nanos(500, MINI_OUT)  # 750_000 + 2_250_000
    assert admission.estimate.amount_nanos == int(expected) == 3_000_000
    state = wallets(runtime)
    assert set(state) == {"org", "team", "person"}
    for scope in ("org", "team", "person"):
        assert state[scope]["reserved_nanos"] == 3_000_000
        assert state[scope]["spent_nanos"] == 0
    assert admission.principal.email == "ada@acme.example"
    assert admission.principal.team_id == "engineering"
    assert admission.labels == {"environment": "prod"}  # the schema default


def test_settle_charges_actual_cost_and_releases_the_rest(runtime: Runtime, ada: str) -> None:
    admission = runtime.admit(intent(ada, input_tokens=20_000, max_output_tokens=2000))
    event = runtime.settle(
        admission.request_id, Usage(input_tokens=8000, cache_read_tokens=2000, output_tokens=1200)
    )
    # the worked example: $0.006 + $0.00015 + $0.0054 = $0.01155
    assert event.cost_nanos == 11_550_000
    assert event.card_version == "openai-2026-11-23"  # the newest card in force
    assert event.enforced is True
    assert event.outcome is Outcome.SUCCESS
    for scope, wallet in wallets(runtime).items():
        assert wallet["spent_nanos"] == 11_550_000, scope
        assert wallet["reserved_nanos"] == 0, scope
    assert verify(runtime).ok


def test_second_settle_returns_the_first_event_and_changes_nothing(runtime: Runtime, ada: str) -> None:
    admission = runtime.admit(intent(ada))
    first = runtime.settle(admission.request_id, Usage(input_tokens=100, output_tokens=10))
    again = runtime.settle(admission.request_id, Usage(input_tokens=99_999, output_tokens=99_999))
    assert again.id == first.id
    assert again.cost_nanos == first.cost_nanos == int(nanos(100, MINI_IN) + nanos(10, MINI_OUT))
    assert wallets(runtime)["person"]["spent_nanos"] == first.cost_nanos


def test_settle_from_another_runtime_reads_the_reservation(
    runtime: Runtime, ada: str, database_url: str
) -> None:
    admission = runtime.admit(intent(ada))
    with Runtime.open(runtime.settings, load_entrypoints=False) as other:
        event = other.settle(admission.request_id, Usage(input_tokens=1000, output_tokens=100))
    assert event.person_id == admission.principal.person_id
    assert event.cost_nanos == int(nanos(1000, MINI_IN) + nanos(100, MINI_OUT))
    assert wallets(runtime)["team"]["reserved_nanos"] == 0


def test_settle_of_an_unknown_request_is_an_error(runtime: Runtime) -> None:
    with pytest.raises(NotFound):
        runtime.settle("req_never_admitted", Usage(output_tokens=1))


def test_provider_error_releases_the_reservation_without_charge(runtime: Runtime, ada: str) -> None:
    admission = runtime.admit(intent(ada))
    event = runtime.release(admission.request_id)
    assert event.outcome is Outcome.ERROR
    assert event.cost_nanos == 0
    assert all(w["reserved_nanos"] == 0 and w["spent_nanos"] == 0 for w in wallets(runtime).values())


def test_cancelled_stream_is_charged_for_what_was_delivered(runtime: Runtime, ada: str) -> None:
    admission = runtime.admit(intent(ada, max_output_tokens=4000))
    event = runtime.settle(
        admission.request_id, Usage(input_tokens=500, output_tokens=37, estimated=True), Outcome.CANCELLED
    )
    assert event.outcome is Outcome.CANCELLED
    assert event.cost_nanos == int(nanos(500, MINI_IN) + nanos(37, MINI_OUT))
    assert "estimated_usage" in event.flags


def test_unknown_key_is_refused_with_401(runtime: Runtime) -> None:
    with pytest.raises(Denied) as info:
        runtime.admit(intent("sk-allot-not-a-key"))
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")


def test_revoked_key_is_refused_on_the_next_request(runtime: Runtime) -> None:
    key, key_id = runtime.admin.issue_key("grace@acme.example")
    runtime.admit(intent(key))
    runtime.admin.revoke_key(key_id)  # as `allotment keys revoke` would, from outside
    with pytest.raises(Denied) as info:
        runtime.admit(intent(key))
    assert info.value.status == 401


def test_revocation_by_another_process_is_seen_without_a_reload(runtime: Runtime) -> None:
    key, key_id = runtime.admin.issue_key("grace@acme.example")
    runtime.admit(intent(key))
    with Runtime.open(runtime.settings, load_entrypoints=False) as other:
        other.admin.revoke_key(key_id)
    with pytest.raises(Denied) as info:
        runtime.admit(intent(key))
    assert info.value.status == 401


def test_key_issued_by_another_runtime_is_found_by_hash_without_a_refresh(runtime: Runtime) -> None:
    with Runtime.open(runtime.settings, load_entrypoints=False) as other:
        key, key_id = other.admin.issue_key("grace@acme.example")
    principal = runtime.find_principal_by_hash(hash_key(key))
    assert principal is not None
    assert principal.email == "grace@acme.example"
    assert principal.key_id == key_id


def test_revoked_key_is_not_found_by_hash(runtime: Runtime) -> None:
    with Runtime.open(runtime.settings, load_entrypoints=False) as other:
        key, key_id = other.admin.issue_key("grace@acme.example")
        other.admin.revoke_key(key_id)
    assert runtime.find_principal_by_hash(hash_key(key)) is None
    assert runtime.find_principal_by_hash(hash_key("ak-not-a-key")) is None


def test_disallowed_model_is_refused_with_403(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("sam@acme.example")  # support: gpt-5.4-mini only
    with pytest.raises(Denied) as info:
        runtime.admit(intent(key, model="gpt-4o"))
    assert (info.value.status, info.value.code) == (403, "model_not_allowed")
    assert runtime.admin.budgets() == [] or all(w["reserved_nanos"] == 0 for w in runtime.admin.budgets())


def test_bare_and_provider_qualified_globs_both_match(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("dee@acme.example")  # design: openai/gpt-5.4 and -mini
    runtime.admit(intent(key, model="gpt-5.4"))
    with pytest.raises(Denied):
        runtime.admit(intent(key, model="gpt-4.1"))
    with pytest.raises(Denied):
        runtime.admit(intent(key, provider="anthropic", model="claude-sonnet-4"))


def test_label_not_in_the_allowed_values_is_refused(runtime: Runtime, ada: str) -> None:
    with pytest.raises(Denied) as info:
        runtime.admit(intent(ada, labels={"environment": "moon"}))
    assert (info.value.status, info.value.code) == (400, "invalid_request")


def test_required_label_missing_is_refused(tmp_path, database_url: str) -> None:
    from allotment.testing import temporary_runtime

    config = SAMPLE_CONFIG.replace("feature: {required: false}", "feature: {required: true}")
    with temporary_runtime(tmp_path, config=config, database_url=database_url) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        with pytest.raises(Denied) as info:
            rt.admit(intent(key))
        assert (info.value.status, info.value.code) == (400, "label_required")
        admission = rt.admit(intent(key, labels={"feature": "search"}))
        assert admission.labels["feature"] == "search"


def test_key_default_labels_apply_and_request_labels_win(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("ada@acme.example", labels={"feature": "chat", "environment": "dev"})
    assert runtime.admit(intent(key)).labels == {"feature": "chat", "environment": "dev"}
    assert runtime.admit(intent(key, labels={"feature": "search"})).labels["feature"] == "search"


def test_unpriced_model_is_refused_not_recorded_at_zero(runtime: Runtime, ada: str) -> None:
    with pytest.raises(Denied) as info:
        runtime.admit(intent(ada, model="gpt-imaginary-9"))
    assert info.value.code == "unpriced_model"


def test_passive_record_is_marked_unenforced_and_may_exceed_the_limit(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("sam@acme.example")  # support tier: $200 a month
    usage = Usage(input_tokens=100_000_000, output_tokens=40_000_000)
    event = runtime.record(intent(key), usage)
    expected = int(nanos(100_000_000, MINI_IN) + nanos(40_000_000, MINI_OUT))  # $75 + $180
    assert event.cost_nanos == expected
    assert event.enforced is False
    assert "over_limit" in event.flags
    assert wallets(runtime)["person"]["spent_nanos"] == expected
    again = runtime.record(intent(key, request_id=event.request_id), usage)
    assert again.id == event.id  # idempotent by request id
    assert wallets(runtime)["person"]["spent_nanos"] == expected


def test_passive_record_of_unpriced_model_is_flagged(runtime: Runtime, ada: str) -> None:
    event = runtime.record(intent(ada, model="mystery-model"), Usage(input_tokens=10, output_tokens=10))
    assert event.cost_nanos == 0
    assert "unpriced" in event.flags


def test_exhausted_budget_is_refused_with_402_naming_the_wallet(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("sam@acme.example")  # $200 person budget
    # 40M output tokens on gpt-5.4-mini cost $180; the next $180 worst case cannot fit
    first = runtime.admit(intent(key, input_tokens=0, max_output_tokens=40_000_000))
    with pytest.raises(Denied) as info:
        runtime.admit(intent(key, input_tokens=0, max_output_tokens=40_000_000))
    denied = info.value
    assert (denied.status, denied.code) == (402, "budget_exceeded")
    assert denied.details["scope"] == "person"
    assert denied.details["limit"] == "200"
    assert denied.details["reserved"] == "180"
    assert denied.details["estimate"] == "180"
    assert denied.details["resets_at"]
    runtime.settle(first.request_id, Usage(output_tokens=1000))
    runtime.admit(intent(key, input_tokens=0, max_output_tokens=40_000_000))  # fits again


def test_clamp_opt_in_shrinks_max_tokens_to_the_budget(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("sam@acme.example")  # $200
    runtime.admit(intent(key, input_tokens=0, max_output_tokens=44_400_000))  # holds $199.80
    admission = runtime.admit(intent(key, input_tokens=0, max_output_tokens=100_000, clamp_max_tokens=True))
    # $0.20 left at $4.50 / 1M output tokens: 44,444 tokens cost $0.199998
    assert admission.max_output_tokens == 44_444
    assert admission.estimate.amount_nanos == 199_998_000
    with pytest.raises(Denied):  # without the opt-in the same request is refused
        runtime.admit(intent(key, input_tokens=0, max_output_tokens=100_000))


def test_token_ceiling_refuses_oversized_requests(tmp_path, database_url: str) -> None:
    from allotment.testing import temporary_runtime

    config = SAMPLE_CONFIG.replace(
        "clamp_max_tokens: false", "clamp_max_tokens: false\n  max_request_tokens: 10000"
    )
    with temporary_runtime(tmp_path, config=config, database_url=database_url) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        with pytest.raises(Denied) as info:
            rt.admit(intent(key, input_tokens=9000, max_output_tokens=2000))
        assert info.value.status == 400
        rt.admit(intent(key, input_tokens=8000, max_output_tokens=2000))


def test_expired_hold_returns_to_the_wallets(runtime: Runtime, ada: str) -> None:
    admission = runtime.admit(intent(ada))
    assert runtime.expire_reservations(datetime.now(UTC) + timedelta(hours=1)) == 1
    assert all(w["reserved_nanos"] == 0 for w in wallets(runtime).values())
    # a late settle still lands, charged once, and flagged
    event = runtime.settle(admission.request_id, Usage(input_tokens=100, output_tokens=10))
    assert "late_settle" in event.flags
    state = wallets(runtime)
    assert state["person"]["spent_nanos"] == event.cost_nanos
    assert state["person"]["reserved_nanos"] == 0
    assert verify(runtime).ok


def test_extend_keeps_a_stream_alive_past_its_ttl(runtime: Runtime, ada: str) -> None:
    admission = runtime.admit(intent(ada))
    assert runtime.extend(admission.request_id, 7200)
    assert runtime.expire_reservations(datetime.now(UTC) + timedelta(hours=1)) == 0
    runtime.settle(admission.request_id, Usage(output_tokens=5))
    assert not runtime.extend(admission.request_id, 7200)


def test_duplicate_request_id_is_refused(runtime: Runtime, ada: str) -> None:
    first = intent(ada)
    runtime.admit(first)
    with pytest.raises(Exception) as info:
        runtime.admit(intent(ada, request_id=first.request_id))
    assert getattr(info.value, "code", None) == "duplicate_request"


def test_a_new_month_is_a_new_wallet_and_history_is_kept(runtime: Runtime, ada: str) -> None:
    # Acme's timezone is America/New_York: 2026-11-01 03:00 UTC is still October there.
    october = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    november = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
    a = runtime.admit(intent(ada, at=october))
    runtime.settle(a.request_id, Usage(output_tokens=1000))
    b = runtime.admit(intent(ada, at=november))
    runtime.settle(b.request_id, Usage(output_tokens=2000))
    person = {w["period"]: w for w in runtime.admin.budgets() if w["scope"] == "person"}
    assert person["2026-10"]["spent_nanos"] == int(nanos(1000, MINI_OUT))
    assert person["2026-11"]["spent_nanos"] == int(nanos(2000, MINI_OUT))


def test_label_budget_is_enforced_on_labelled_requests_only(runtime: Runtime, ada: str) -> None:
    # feature=content-gen has a $500 budget; Ada's own is $3,000
    runtime.admit(
        intent(ada, input_tokens=0, max_output_tokens=100_000_000, labels={"feature": "content-gen"})
    )
    with pytest.raises(Denied) as info:
        runtime.admit(
            intent(ada, input_tokens=0, max_output_tokens=20_000_000, labels={"feature": "content-gen"})
        )
    assert info.value.details["scope"] == "label"
    assert info.value.details["scope_id"] == "feature=content-gen"
    runtime.admit(intent(ada, input_tokens=0, max_output_tokens=20_000_000, labels={"feature": "search"}))


def test_absurd_token_counts_are_rejected_before_anything_happens(runtime: Runtime, ada: str) -> None:
    from allotment.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        intent(ada, input_tokens=-1)
    with pytest.raises(InvalidRequest):
        Usage(output_tokens=10**12)
    admission = runtime.admit(intent(ada))
    with pytest.raises(InvalidRequest):
        runtime.settle(admission.request_id, Usage.from_dict({"output_tokens": -5}))
    assert wallets(runtime)["person"]["spent_nanos"] == 0


def test_inactive_person_is_refused(runtime: Runtime, ada: str) -> None:
    ada_line = next(line for line in SAMPLE_CONFIG.splitlines(keepends=True) if "ada@acme" in line)
    config = SAMPLE_CONFIG.replace(ada_line, "")
    runtime.apply_config_text(config, "without-ada.yaml")
    with pytest.raises(Denied) as info:
        runtime.admit(intent(ada))
    assert info.value.status == 401


def test_event_and_reservation_state_lookups(runtime: Runtime, ada: str) -> None:
    admission = runtime.admit(intent(ada))
    assert runtime.reservation_state(admission.request_id) == "open"
    assert runtime.event(admission.request_id) is None
    event = runtime.settle(admission.request_id, Usage(output_tokens=10))
    assert runtime.reservation_state(admission.request_id) == "settled"
    assert runtime.event(admission.request_id) == event
    assert runtime.reservation_state("req_unknown") is None


def test_a_plugins_deny_is_reported_before_the_builtin_policys(tmp_path, database_url: str) -> None:
    from allotment import Decision, hookimpl
    from allotment.testing import temporary_runtime

    class NoMoon:
        @hookimpl
        def check_policy(self, principal, intent):  # type: ignore[no-untyped-def]
            if intent.labels.get("environment") == "moon":
                return Decision.deny(403, "no_moon", "no requests from the moon")
            return None

    with temporary_runtime(tmp_path, database_url=database_url, plugins=[("nomoon", NoMoon())]) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        with pytest.raises(Denied) as info:  # the built-in policy would say 400 invalid_request
            rt.admit(intent(key, labels={"environment": "moon"}))
        assert (info.value.status, info.value.code) == (403, "no_moon")


def test_batch_commits_many_records_at_once_and_a_failing_one_alone(runtime: Runtime, ada: str) -> None:
    from allotment.errors import InvalidRequest

    first = intent(ada)
    with runtime.batch():
        for i in range(50):
            runtime.record(intent(ada, request_id=f"batch-{i}"), Usage(output_tokens=1000))
        admission = runtime.admit(first)  # admission and settle work inside a batch too
        runtime.settle(admission.request_id, Usage(output_tokens=1000))
        with pytest.raises(InvalidRequest):
            runtime.admit(intent(ada, request_id=first.request_id))  # duplicate: rolled back alone
    person = wallets(runtime)["person"]
    assert person["spent_nanos"] == 51 * int(nanos(1000, MINI_OUT))
    assert person["reserved_nanos"] == 0
    assert verify(runtime).ok


def test_leaving_a_batch_by_an_exception_writes_nothing(runtime: Runtime, ada: str) -> None:
    with pytest.raises(RuntimeError), runtime.batch():
        runtime.record(intent(ada, request_id="doomed"), Usage(output_tokens=1000))
        raise RuntimeError("the tailer crashed before its batch committed")
    assert runtime.event("doomed") is None
    assert all(w["spent_nanos"] == 0 for w in runtime.admin.budgets())
    # the wallets made inside the rolled-back batch are made again, not used from a cache
    admission = runtime.admit(intent(ada))
    runtime.settle(admission.request_id, Usage(output_tokens=1000))
    assert wallets(runtime)["person"]["spent_nanos"] == int(nanos(1000, MINI_OUT))


def _person_alerts(rt: Runtime) -> tuple[int, list[dict[str, object]]]:
    """The person wallet's id and the budget-threshold alerts queued for it."""
    import orjson
    from sqlalchemy import text

    wallet_id = next(w.id for w in rt.ledger.all_wallets() if w.scope == "person")
    with rt.engine.connect() as conn:
        rows = conn.execute(text("SELECT payload FROM outbox WHERE hook = 'budget_threshold'")).fetchall()
    payloads = [orjson.loads(row[0]) for row in rows]
    return wallet_id, [p for p in payloads if p["wallet_id"] == wallet_id]


def test_settle_that_crosses_a_threshold_queues_the_alert_with_the_spend_at_the_crossing(
    runtime: Runtime,
) -> None:
    key, _ = runtime.admin.issue_key("sam@acme.example")  # support tier: $200 a month
    admission = runtime.admit(intent(key, input_tokens=100_000_000, max_output_tokens=6_000_000))
    event = runtime.settle(admission.request_id, Usage(input_tokens=100_000_000, output_tokens=6_000_000))
    expected = int(nanos(100_000_000, MINI_IN) + nanos(6_000_000, MINI_OUT))  # $75 + $27
    assert event.cost_nanos == expected == 102_000_000_000
    assert "over_limit" not in event.flags
    person = wallets(runtime)["person"]
    assert (person["spent_nanos"], person["reserved_nanos"]) == (expected, 0)
    wallet_id, alerts = _person_alerts(runtime)
    assert alerts == [
        {"wallet_id": wallet_id, "fraction": "0.5", "spent_nanos": expected, "limit_nanos": 200_000_000_000}
    ]
    assert verify(runtime).ok


def test_admitted_call_that_costs_more_than_its_wallet_is_flagged_over_limit(runtime: Runtime) -> None:
    key, _ = runtime.admin.issue_key("sam@acme.example")  # support tier: $200 a month
    admission = runtime.admit(intent(key, input_tokens=1_000, max_output_tokens=10))
    usage = Usage(input_tokens=100_000_000, output_tokens=40_000_000)  # the provider ignored max_tokens
    event = runtime.settle(admission.request_id, usage)
    expected = int(nanos(100_000_000, MINI_IN) + nanos(40_000_000, MINI_OUT))  # $75 + $180
    assert event.cost_nanos == expected
    assert "over_limit" in event.flags
    stored = runtime.event(admission.request_id)
    assert stored is not None and "over_limit" in stored.flags and stored.id == event.id
    person = wallets(runtime)["person"]
    assert (person["spent_nanos"], person["reserved_nanos"]) == (expected, 0)
    _, alerts = _person_alerts(runtime)
    assert [a["fraction"] for a in alerts] == ["0.5", "0.8", "1.0"]  # as the config spells them
    assert verify(runtime).ok


def test_quote_is_what_settle_charges_and_touches_no_ledger(runtime: Runtime, ada: str) -> None:
    admission = runtime.admit(intent(ada))
    usage = Usage(input_tokens=800, cache_read_tokens=200, output_tokens=120)
    quoted = runtime.quote(admission.request_id, usage)
    assert quoted is not None
    expected = int(nanos(800, MINI_IN) + nanos(200, MINI_CACHED) + nanos(120, MINI_OUT))
    assert quoted.amount_nanos == expected
    assert runtime.reservation_state(admission.request_id) == "open"  # quoting settled nothing
    assert runtime.settle(admission.request_id, usage).cost_nanos == expected
    assert runtime.quote(admission.request_id, usage) is None  # settled: only settle knows now
    assert runtime.quote("never-admitted", usage) is None


class _CountingPricer:
    """A ``price`` plugin that prices nothing itself and counts how often pricing runs."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(tryfirst=True)
    def price(self, provider: str, model: str, usage: Usage, at: datetime, endpoint_mode: str) -> None:
        self.calls += 1


def test_settle_reuses_the_quote_of_the_same_usage_and_reprices_any_other(runtime: Runtime, ada: str) -> None:
    counter = _CountingPricer()
    runtime.pm.register(counter)
    usage = Usage(input_tokens=800, cache_read_tokens=200, output_tokens=120)
    expected = int(nanos(800, MINI_IN) + nanos(200, MINI_CACHED) + nanos(120, MINI_OUT))

    same = runtime.admit(intent(ada))
    runtime.quote(same.request_id, usage)
    before = counter.calls
    assert runtime.settle(same.request_id, Usage(**usage.to_dict())).cost_nanos == expected
    assert counter.calls == before  # equal usage: the quoted price, not a second pricing

    other = runtime.admit(intent(ada))
    runtime.quote(other.request_id, usage)
    before = counter.calls
    more = Usage(input_tokens=800, cache_read_tokens=200, output_tokens=121)
    assert runtime.settle(other.request_id, more).cost_nanos == expected + int(nanos(1, MINI_OUT))
    assert counter.calls == before + 1  # the usage changed after the quote: priced again


def test_settle_prices_and_records_the_model_that_served_the_call(runtime: Runtime, ada: str) -> None:
    """A gateway that picks among several deployments after admission (a LiteLLM model group)
    settles with ``served_by``: the event is that model's, priced by its card, on the same wallets."""
    dearest = intent(
        ada, provider="anthropic", model="claude-sonnet-4", input_tokens=1000, max_output_tokens=500
    )
    # claude-sonnet-4: $3 in, $15 out per 1M = 3,000 and 15,000 nanos a token
    assert runtime.worst_case(dearest).amount_nanos == 1000 * 3_000 + 500 * 15_000
    admission = runtime.admit(dearest)
    runtime.quote(admission.request_id, Usage(input_tokens=800, output_tokens=100))  # not reused
    event = runtime.settle(
        admission.request_id,
        Usage(input_tokens=800, output_tokens=100),
        served_by=("openai", "gpt-5.4-mini"),
    )
    assert (event.provider, event.model) == ("openai", "gpt-5.4-mini")
    assert event.cost_nanos == int(nanos(800, MINI_IN) + nanos(100, MINI_OUT)) == 1_050_000
    assert event.card_version == "openai-2026-11-23"  # the newest card in force
    for scope, wallet in wallets(runtime).items():
        assert (wallet["spent_nanos"], wallet["reserved_nanos"]) == (1_050_000, 0), scope
    # the second settle of the same call returns that event unchanged
    again = runtime.settle(admission.request_id, Usage(input_tokens=800, output_tokens=100))
    assert (again.provider, again.cost_nanos) == ("openai", 1_050_000)
    assert verify(runtime).ok
