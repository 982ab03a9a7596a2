"""Every hookspec exercised through a real plugin manager and runtime, one ``test_hook_<name>`` each.

The plugins here are what a third party would write; ``test_docs_meta`` checks none is missing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from allotment import (
    Anomaly,
    CallIntent,
    Decision,
    Denied,
    DirectoryChanges,
    DirectoryPerson,
    ExportResult,
    Outcome,
    Price,
    Principal,
    Reservation,
    Usage,
    UsageEvent,
    Wallet,
    hookimpl,
)
from allotment.defaults import BUILTIN_PREFIX
from allotment.defaults.commands import CoreCommands
from allotment.jobs import collect_jobs, run_job
from allotment.outbox import deliver, enqueue
from allotment.plugins import Hooks, create_plugin_manager
from allotment.runtime import Runtime
from allotment.testing import SAMPLE_CONFIG, intent, temporary_runtime

# gpt-5.4-mini on the bundled card: $0.75 / 1M input, $0.075 cached, $4.50 / 1M output.
# 8,000 fresh input + 2,000 cached + 1,200 output = $0.006 + $0.00015 + $0.0054.
USAGE = Usage(input_tokens=8000, cache_read_tokens=2000, output_tokens=1200)
USAGE_NANOS = 11_550_000
# the default intent (1,000 input, 500 max output) reserves $0.00075 + $0.00225
ESTIMATE_NANOS = 3_000_000


def ada_key(rt: Runtime) -> str:
    key, _key_id = rt.admin.issue_key("ada@acme.example")
    return key


def admit_and_settle(rt: Runtime, key: str, usage: Usage = USAGE, **kwargs: Any) -> UsageEvent:
    admission = rt.admit(intent(key, **kwargs))
    return rt.settle(admission.request_id, usage)


class EventLog:
    """An observer that keeps what it was given."""

    def __init__(self) -> None:
        self.events: list[UsageEvent] = []
        self.thresholds: list[tuple[Wallet, str]] = []
        self.anomalies: list[Anomaly] = []

    @hookimpl
    def usage_recorded(self, event: UsageEvent) -> None:
        self.events.append(event)

    @hookimpl
    def budget_threshold(self, wallet: Wallet, fraction: str) -> None:
        self.thresholds.append((wallet, fraction))

    @hookimpl
    def anomaly_detected(self, anomaly: Anomaly) -> None:
        self.anomalies.append(anomaly)


class Flaky(EventLog):
    """An observer whose backend is down until ``broken`` is cleared."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    @hookimpl
    def usage_recorded(self, event: UsageEvent) -> None:
        if self.broken:
            raise ConnectionError("chat service unavailable")
        self.events.append(event)

    @hookimpl
    def anomaly_detected(self, anomaly: Anomaly) -> None:
        if self.broken:
            raise ConnectionError("ticket service unavailable")
        self.anomalies.append(anomaly)


# -- decision hooks ------------------------------------------------------------------------


class ServiceTokens:
    @hookimpl
    def authenticate(self, credential: str, context: dict[str, Any]) -> Principal | None:
        if credential != "svc-token":
            return None  # not ours: the default key lookup still runs
        return Principal(person_id="svc-ci", kind="service", cost_center="CC-ENG-001")


def test_hook_authenticate(tmp_path: Path) -> None:
    with temporary_runtime(tmp_path, plugins=[("tokens", ServiceTokens())]) as rt:
        admission = rt.admit(intent("svc-token"))
        assert admission.principal.person_id == "svc-ci"
        assert admission.reservation.amount_nanos == ESTIMATE_NANOS
        event = rt.settle(admission.request_id, USAGE)
        assert (event.person_id, event.cost_center, event.cost_nanos) == ("svc-ci", "CC-ENG-001", USAGE_NANOS)

        # an issued key still resolves through the default, and anything else is refused
        assert rt.admit(intent(ada_key(rt))).principal.email == "ada@acme.example"
        with pytest.raises(Denied) as denied:
            rt.admit(intent("svc-token-typo"))
        assert (denied.value.status, denied.value.code) == (401, "invalid_api_key")


class FrozenFeature:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    @hookimpl
    def check_policy(self, principal: Principal, intent: CallIntent) -> Decision | None:
        self.seen.append((principal.email or "", dict(intent.labels)))
        if intent.labels.get("feature") == "experiments":
            return Decision.deny(403, "feature_frozen", "experiments are frozen this quarter")
        return None


def test_hook_check_policy(tmp_path: Path) -> None:
    policy = FrozenFeature()
    with temporary_runtime(tmp_path, plugins=[("freeze", policy)]) as rt:
        key = ada_key(rt)
        refused = intent(key, labels={"feature": "experiments"})
        with pytest.raises(Denied) as denied:
            rt.admit(refused)
        assert (denied.value.status, denied.value.code) == (403, "feature_frozen")
        assert rt.reservation_state(refused.request_id) is None  # nothing was held

        rt.admit(intent(key, labels={"feature": "search"}))
        # the policy sees the caller and the labels merged with the schema's defaults
        assert policy.seen[-1] == ("ada@acme.example", {"environment": "prod", "feature": "search"})

        # the default policy still runs beside it: sam's tier does not allow gpt-5.4
        sam = rt.admin.issue_key("sam@acme.example")[0]
        with pytest.raises(Denied) as denied:
            rt.admit(intent(sam, model="gpt-5.4"))
        assert denied.value.code == "model_not_allowed"


class NegotiatedPrices:
    """$1 / 1M input and $4 / 1M output for gpt-5.4-mini, and a house model at $2 / $3."""

    @hookimpl
    def price(
        self, provider: str, model: str, usage: Usage, at: datetime, endpoint_mode: str
    ) -> Price | None:
        rates = {("openai", "gpt-5.4-mini"): (1, 4), ("acme", "house-model"): (2, 3)}.get((provider, model))
        if rates is None:
            return None  # the rate cards price everything else
        # one nano-dollar per token is exactly $1 per million tokens
        amount = usage.total_input_tokens * rates[0] + usage.output_tokens * rates[1]
        return Price(amount, "acme-negotiated-2026", provider, model)


def test_hook_price(tmp_path: Path) -> None:
    with temporary_runtime(tmp_path, plugins=[("negotiated", NegotiatedPrices())]) as rt:
        key = ada_key(rt)
        event = admit_and_settle(rt, key)
        assert (event.cost_nanos, event.card_version) == (10_000 + 4_800, "acme-negotiated-2026")

        admission = rt.admit(intent(key, "house-model", "acme", input_tokens=1000, max_output_tokens=500))
        assert admission.estimate.amount_nanos == 2_000 + 1_500
        event = rt.settle(admission.request_id, Usage(input_tokens=100, output_tokens=10))
        assert event.cost_nanos == 230

        # a model id the plugin abstains on (a dated alias) keeps its rate-card price
        event = admit_and_settle(rt, key, model="gpt-5.4-mini-2026-03-05")
        assert (event.cost_nanos, event.card_version) == (USAGE_NANOS, "openai-2026-11-23")


class CountingReserve:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    @hookimpl
    def reserve(self, principal: Principal, intent: CallIntent, amount: int) -> Reservation | None:
        self.calls.append((principal.email or "", intent.request_id, amount))
        return None  # let the SQL ledger hold it


def test_hook_reserve(tmp_path: Path) -> None:
    counter = CountingReserve()
    with temporary_runtime(tmp_path, plugins=[("counter", counter)]) as rt:
        admission = rt.admit(intent(ada_key(rt)))
        assert counter.calls == [("ada@acme.example", admission.request_id, ESTIMATE_NANOS)]
        assert admission.reservation.amount_nanos == ESTIMATE_NANOS
        assert rt.reservation_state(admission.request_id) == "open"
        wallets = rt.ledger.wallets_by_ids(list(admission.reservation.wallet_ids))
        assert {w.scope for w in wallets} == {"org", "team", "person"}
        assert all(w.reserved_nanos == ESTIMATE_NANOS for w in wallets)


class ReconcileWatcher:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def reconcile(
        self,
        reservation: Reservation | None,
        intent: CallIntent,
        principal: Principal | None,
        usage: Usage,
        price: Price,
        outcome: Outcome,
        enforced: bool,
        details: dict[str, Any],
    ) -> UsageEvent | None:
        self.calls.append(
            {
                "reservation": reservation.id if reservation else None,
                "request_id": intent.request_id,
                "person": principal.email if principal else None,
                "usage": usage,
                "price": price.amount_nanos,
                "outcome": outcome,
                "enforced": enforced,
                "external": details.get("external_cost_nanos"),
            }
        )
        return None  # the SQL ledger settles


def test_hook_reconcile(tmp_path: Path) -> None:
    watcher = ReconcileWatcher()
    with temporary_runtime(tmp_path, plugins=[("watcher", watcher)]) as rt:
        key = ada_key(rt)
        admission = rt.admit(intent(key))
        event = rt.settle(admission.request_id, USAGE, external_cost_nanos=11_600_000)
        assert watcher.calls == [
            {
                "reservation": admission.reservation.id,
                "request_id": admission.request_id,
                "person": "ada@acme.example",
                "usage": USAGE,
                "price": USAGE_NANOS,
                "outcome": Outcome.SUCCESS,
                "enforced": True,
                "external": 11_600_000,
            }
        ]
        assert (event.cost_nanos, event.external_cost_nanos) == (USAGE_NANOS, 11_600_000)
        assert rt.reservation_state(admission.request_id) == "settled"

        passive = rt.record(intent(key), USAGE)
        assert watcher.calls[-1]["reservation"] is None and watcher.calls[-1]["enforced"] is False
        assert (passive.enforced, passive.cost_nanos) == (False, USAGE_NANOS)


class DemoExport:
    @hookimpl
    def export(self, kind: str, period: str, options: dict[str, Any]) -> ExportResult | None:
        if kind != "demo":
            return None
        body = f"period,rows\n{period},{options.get('rows', 0)}\n".encode()
        return ExportResult(
            kind, period, rows=1, content=body, details={"dry_run": bool(options.get("dry_run"))}
        )


def test_hook_export(tmp_path: Path) -> None:
    with temporary_runtime(tmp_path, plugins=[("demo", DemoExport())]) as rt:
        result = rt.hooks.export("demo", "2026-03", {"rows": 7, "dry_run": True})
        assert result == ExportResult(
            "demo", "2026-03", rows=1, content=b"period,rows\n2026-03,7\n", details={"dry_run": True}
        )
        assert rt.hooks.export("no-such-kind", "2026-03", {}) is None


# -- observers, delivered from the outbox ----------------------------------------------------


def test_hook_usage_recorded(tmp_path: Path) -> None:
    log = EventLog()
    with temporary_runtime(tmp_path, plugins=[("log", log)]) as rt:
        event = admit_and_settle(rt, ada_key(rt))
        assert log.events == []  # never inside the request path
        report = deliver(rt)
        assert report.delivered == 1 and report.failed == 0
        assert [(e.request_id, e.cost_nanos, e.enforced) for e in log.events] == [
            (event.request_id, USAGE_NANOS, True)
        ]
        assert log.events[0] == rt.event(event.request_id)
        assert deliver(rt).delivered == 0  # each plugin's cursor moved past it
        assert len(log.events) == 1


def test_hook_budget_threshold(tmp_path: Path) -> None:
    # ada's own budget is $0.01 (10,000,000 nanos); $0.006 of fresh input crosses half of it
    config = SAMPLE_CONFIG.replace(
        "tier: eng-principal, level: 6}", "tier: eng-principal, level: 6, monthly_budget: 0.01}"
    )
    assert config != SAMPLE_CONFIG
    log = EventLog()
    with temporary_runtime(tmp_path, config=config, plugins=[("log", log)]) as rt:
        key = ada_key(rt)
        admit_and_settle(rt, key, Usage(input_tokens=4000), input_tokens=4000)  # $0.003: 30%
        deliver(rt)
        assert log.thresholds == []
        admit_and_settle(rt, key, Usage(input_tokens=4000), input_tokens=4000)  # $0.006: 60%
        deliver(rt)
        assert len(log.thresholds) == 1
        wallet, fraction = log.thresholds[0]
        assert (wallet.scope, fraction) == ("person", "0.5")
        assert (wallet.limit_nanos, wallet.spent_nanos, wallet.reserved_nanos) == (10_000_000, 6_000_000, 0)
        admit_and_settle(rt, key, Usage(input_tokens=400), input_tokens=400)  # 63%: nothing new
        deliver(rt)
        assert len(log.thresholds) == 1


ANOMALY = {
    "rule": "spend_spike",
    "scope": "person",
    "scope_id": "ada@acme.example",
    "dedup_key": "spend_spike:person:ada@acme.example:2026-03-02",
    "severity": "high",
    "summary": "ada spent $412.50 today, 9.1x her daily median",
    "details": {"today_nanos": 412_500_000_000, "median_nanos": 45_200_000_000},
    "at": "2026-03-02T15:00:00+00:00",
}


def test_hook_anomaly_detected(tmp_path: Path) -> None:
    log = EventLog()
    with temporary_runtime(tmp_path, plugins=[("log", log)]) as rt:
        assert enqueue(rt, "anomaly_detected", ANOMALY, dedup_key="anomaly:" + ANOMALY["dedup_key"])
        assert not enqueue(rt, "anomaly_detected", ANOMALY, dedup_key="anomaly:" + ANOMALY["dedup_key"])
        assert deliver(rt).delivered == 1
        assert log.anomalies == [
            Anomaly(**{**ANOMALY, "at": datetime(2026, 3, 2, 15, tzinfo=UTC)})  # type: ignore[arg-type]
        ]
        assert deliver(rt).delivered == 0
        assert len(log.anomalies) == 1


def test_raising_observer_never_blocks_others_and_is_retried_after_backoff(tmp_path: Path) -> None:
    flaky, steady = Flaky(), EventLog()
    with temporary_runtime(tmp_path, plugins=[("flaky", flaky), ("steady", steady)]) as rt:
        event = admit_and_settle(rt, ada_key(rt))
        enqueue(rt, "anomaly_detected", ANOMALY, dedup_key="anomaly:retry")
        start = datetime.now(UTC)

        first = deliver(rt, now=start)
        assert (first.delivered, first.failed) == (2, 2)
        assert [e.request_id for e in steady.events] == [event.request_id]
        assert [a.rule for a in steady.anomalies] == ["spend_spike"]
        assert flaky.events == [] and flaky.anomalies == []

        flaky.broken = False
        early = deliver(rt, now=start + timedelta(seconds=1))  # still backing off
        assert (early.delivered, early.failed) == (0, 0)
        assert flaky.events == []

        later = deliver(rt, now=start + timedelta(seconds=3))
        assert later.delivered == 2
        assert [(e.request_id, e.cost_nanos) for e in flaky.events] == [(event.request_id, USAGE_NANOS)]
        assert [a.rule for a in flaky.anomalies] == ["spend_spike"]
        assert len(steady.events) == 1 and len(steady.anomalies) == 1  # nothing delivered twice


# -- directory and runtime -------------------------------------------------------------------


class FakeHR:
    def __init__(self, source: str, configured: bool) -> None:
        self.source, self.configured = source, configured
        self.calls: list[tuple[datetime | None, dict[str, Any]]] = []

    @hookimpl
    def sync_directory(self, since: datetime | None, config: dict[str, Any]) -> DirectoryChanges | None:
        self.calls.append((since, config))
        if not self.configured:
            return None
        people = (DirectoryPerson("grace@acme.example", department="Engineering", level=5),)
        return DirectoryChanges(self.source, people, complete=since is None, cursor="c-42")


def test_hook_sync_directory(tmp_path: Path) -> None:
    hr, unconfigured = FakeHR("fakehr", True), FakeHR("otherhr", False)
    with temporary_runtime(tmp_path, plugins=[("fakehr", hr), ("otherhr", unconfigured)]) as rt:
        settings = {"fakehr": {"token": "env:FAKEHR_TOKEN"}}
        changes = rt.hooks.sync_directory(None, settings)
        assert [(c.source, c.complete, c.cursor) for c in changes] == [("fakehr", True, "c-42")]
        assert changes[0].people[0].email == "grace@acme.example"
        since = datetime(2026, 3, 1, tzinfo=UTC)
        assert [c.complete for c in rt.hooks.sync_directory(since, settings)] == [False]
        assert hr.calls == unconfigured.calls == [(None, settings), (since, settings)]


class Keeper:
    """Keeps the runtime to read its own settings later, inside an observer."""

    def __init__(self) -> None:
        self.runtime: Any = None
        self.greetings: list[str] = []

    @hookimpl
    def runtime_opened(self, runtime: Any) -> None:
        self.runtime = runtime

    @hookimpl
    def usage_recorded(self, event: UsageEvent) -> None:
        self.greetings.append(self.runtime.config.plugins["keeper"]["greeting"] + " " + event.request_id)


def test_hook_runtime_opened(tmp_path: Path) -> None:
    keeper = Keeper()
    config = SAMPLE_CONFIG + "\nplugins:\n  keeper: {greeting: hello}\n"
    with temporary_runtime(tmp_path, config=config, plugins=[("keeper", keeper)]) as rt:
        assert keeper.runtime is rt
        event = admit_and_settle(rt, ada_key(rt))
        deliver(rt)
        assert keeper.greetings == [f"hello {event.request_id}"]


# -- registration hooks ----------------------------------------------------------------------


class NightlyJob:
    @hookimpl
    def register_jobs(self, scheduler: Any) -> None:
        scheduler.add("count-events", self.count, cron="0 2 * * *", description="count usage events")
        scheduler.add("ping", lambda runtime: "pong", every=60)

    @staticmethod
    def count(runtime: Runtime) -> int:
        return len(runtime.admin.budgets())


def test_hook_register_jobs(tmp_path: Path) -> None:
    with temporary_runtime(tmp_path, plugins=[("nightly", NightlyJob())]) as rt:
        jobs = {job.name: job for job in collect_jobs(rt).jobs()}
        assert {"count-events", "ping", "deliver-outbox", "expire-reservations"} <= set(jobs)
        assert jobs["count-events"].schedule_text() == "cron 0 2 * * *"
        assert jobs["ping"].schedule_text() == "every 60s"
        assert run_job(rt, "ping") == "pong"
        assert isinstance(run_job(rt, "count-events"), int)


class HelloRoutes:
    @hookimpl
    def register_routes(self, app: Any) -> None:
        @app.get("/hello-plugin/{name}")
        async def hello(name: str) -> dict[str, str]:
            return {"hello": name}


def test_hook_register_routes(tmp_path: Path) -> None:
    with temporary_runtime(tmp_path, plugins=[("hello-routes", HelloRoutes())]) as rt:
        app = FastAPI()
        rt.hooks.register_routes(app)
        with TestClient(app) as client:
            response = client.get("/hello-plugin/ada")
        assert (response.status_code, response.json()) == (200, {"hello": "ada"})


class Greeter:
    @hookimpl
    def register_commands(self, cli: Any) -> None:
        @cli.command("greet")
        def greet(name: str = typer.Argument(...), shout: bool = typer.Option(False, "--shout")) -> None:
            """Greet someone."""
            message = f"hello {name}"
            typer.echo(message.upper() if shout else message)


def test_hook_register_commands() -> None:
    pm = create_plugin_manager(
        [(BUILTIN_PREFIX + "commands", CoreCommands())],
        load_entrypoints=False,
        extra=[("greeter", Greeter())],
        environ={},
    )
    app = typer.Typer()
    Hooks(pm).register_commands(app)
    runner = CliRunner()
    result = runner.invoke(app, ["greet", "ada", "--shout"])
    assert (result.exit_code, result.output) == (0, "HELLO ADA\n")
    assert "greet" in runner.invoke(app, ["--help"]).output


def test_retry_later_waits_as_asked_and_never_dead_letters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    from allotment import Usage, hookimpl
    from allotment.outbox import MAX_ATTEMPTS, RetryLater, deliver
    from allotment.testing import intent, temporary_runtime

    class Busy:
        def __init__(self) -> None:
            self.calls = 0
            self.busy = True

        @hookimpl
        def usage_recorded(self, event):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.busy:
                raise RetryLater(30)

    busy = Busy()
    with temporary_runtime(tmp_path, plugins=[("busy", busy)]) as rt:
        key, _ = rt.admin.issue_key("ada@acme.example")
        a = rt.admit(intent(key))
        rt.settle(a.request_id, Usage(output_tokens=1))
        now = datetime.now(UTC)
        for i in range(MAX_ATTEMPTS + 2):
            deliver(rt, now=now + timedelta(seconds=31 * i))
        assert busy.calls == MAX_ATTEMPTS + 2  # every wait honoured, never dead-lettered
        assert deliver(rt, now=now + timedelta(seconds=31 * (MAX_ATTEMPTS + 2) - 20)).delivered == 0
        busy.busy = False
        report = deliver(rt, now=now + timedelta(seconds=31 * (MAX_ATTEMPTS + 3)))
        assert report.delivered == 1 and report.dead == 0
