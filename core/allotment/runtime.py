"""The runtime behind the narrow waist: ``admit`` before a provider call, ``settle`` after it.

Adapters hold one ``Runtime``; it owns the ledger, the plugin manager and the directory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from allotment.admin import Admin
from allotment.codec import intent_from_dict, principal_from_dict
from allotment.config import AllotmentConfig, load_config_file
from allotment.db.executor import Executor, create_executor
from allotment.db.ledger import Ledger, StaleDirectory
from allotment.db.migrate import create_sa_engine, upgrade
from allotment.directory import Directory, load_directory
from allotment.errors import Denied, LedgerUnavailable, NotFound
from allotment.money import TOKENS_PER_MILLION, dollars_to_nanos
from allotment.plugins import Hooks, create_plugin_manager
from allotment.service_tiers import AUTO
from allotment.settings import Settings, get_settings
from allotment.types import (
    UNRECORDED,
    Admission,
    CallIntent,
    Outcome,
    Price,
    Principal,
    Reservation,
    Usage,
    UsageEvent,
    usage_flags,
)

if TYPE_CHECKING:
    from allotment.pricing.book import RateCardBook

log = logging.getLogger("allotment.runtime")

# Seconds between attempts to settle a call after the ledger refused it (``LedgerUnavailable``),
# well inside a reservation's TTL; settle is idempotent, so a retry never charges twice. The
# gateway and the LiteLLM adapter retry on this schedule.
SETTLE_RETRY_DELAYS = (0.5, 2.0, 5.0, 15.0, 30.0)
_ADMISSION_CACHE_SIZE = 100_000
_FALLBACK_VERSION = "fallback-price"
_UNPRICED_VERSION = "unpriced"


def _now() -> datetime:
    return datetime.now(UTC)


def _served(intent: CallIntent, served_by: tuple[str, str] | None) -> CallIntent:
    """``intent`` as answered by ``served_by`` (provider, model); itself when that is no change."""
    if served_by is None or served_by == (intent.provider, intent.model):
        return intent
    return intent.with_changes(provider=served_by[0], model=served_by[1])


class Runtime:
    """One process's view of allotment: open it once, share it across threads."""

    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        *,
        plugins: Iterable[tuple[str, object]] = (),
        load_entrypoints: bool = True,
    ) -> None:
        from allotment.defaults import default_plugins

        self.settings = settings
        self.executor = executor
        self.ledger = Ledger(executor)
        wait = settings.ledger_wait_seconds
        self.engine = create_sa_engine(settings.database_url, wait_seconds=wait)
        self.write_engine = create_sa_engine(settings.database_url, write=True, wait_seconds=wait)
        self.admin = Admin(self.write_engine, self.ledger)
        self.directory: Directory = load_directory(self.engine)
        self._directory_lock = threading.Lock()
        self._admissions: OrderedDict[str, tuple[Reservation, CallIntent, Principal]] = OrderedDict()
        # request id -> (usage, price) of its last ``quote``: settle reuses it for the same usage
        self._quotes: dict[str, tuple[Usage, Price]] = {}
        self._admissions_lock = threading.Lock()
        self.pm: pluggy.PluginManager = create_plugin_manager(
            default_plugins(self), load_entrypoints=load_entrypoints, extra=plugins
        )
        self.hooks = Hooks(self.pm)
        self.hooks.runtime_opened(self)

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        plugins: Iterable[tuple[str, object]] = (),
        load_entrypoints: bool = True,
        migrate: bool = True,
        config_file: str | Path | None = None,
    ) -> Runtime:
        """Open the database named by the settings (migrating it) and build the plugins."""
        settings = settings or get_settings()
        if migrate:
            try:
                upgrade(settings.database_url, wait_seconds=settings.ledger_wait_seconds)
            except Exception as exc:
                raise LedgerUnavailable(f"cannot migrate the database: {exc}") from exc
        executor = create_executor(
            settings.database_url,
            synchronous=settings.sqlite_synchronous,
            pool_size=settings.pg_pool_size,
            wait_seconds=settings.ledger_wait_seconds,
        )
        runtime = cls(settings, executor, plugins=plugins, load_entrypoints=load_entrypoints)
        path = config_file or settings.config
        if path is not None:
            runtime.apply_config_file(path)
        return runtime

    def close(self) -> None:
        self.executor.close()
        self.engine.dispose()
        self.write_engine.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- directory and config ----------------------------------------------------------
    @property
    def config(self) -> AllotmentConfig | None:
        return self.directory.config

    def refresh_directory(self) -> Directory:
        with self._directory_lock:
            fresh = load_directory(self.engine)
            if fresh.generation != self.directory.generation or fresh.config != self.directory.config:
                self.directory = fresh
        return self.directory

    def apply_config_text(self, document: str, source: str = "<config>") -> AllotmentConfig:
        config = self.admin.apply_text(document, source)
        self.refresh_directory()
        return config

    def apply_config_file(self, path: str | Path) -> AllotmentConfig:
        _, document = load_config_file(path)
        return self.apply_config_text(document, str(path))

    @property
    def thresholds(self) -> list[Decimal]:
        config = self.directory.config
        return list(config.alerts.thresholds) if config else []

    @property
    def reservation_ttl_seconds(self) -> int:
        config = self.directory.config
        if config is not None and config.policy.reservation_ttl_seconds:
            return config.policy.reservation_ttl_seconds
        return self.settings.reservation_ttl_seconds

    @property
    def rate_book(self) -> RateCardBook:
        from allotment.defaults.pricing import RateCardPricer

        for plugin in self.pm.get_plugins():
            if isinstance(plugin, RateCardPricer):
                return plugin.book
        raise LedgerUnavailable("the rate-card pricer is disabled")

    # -- the waist ---------------------------------------------------------------------
    def authenticate(self, credential: str | None, context: dict[str, Any] | None = None) -> Principal:
        if not credential:
            raise Denied(401, "invalid_api_key", "missing API key (Authorization: Bearer ...)")
        principal = self.find_principal(credential, context)
        if principal is None:
            raise Denied(401, "invalid_api_key", "invalid, revoked or unknown API key")
        return principal

    def find_principal(self, credential: str, context: dict[str, Any] | None = None) -> Principal | None:
        """The principal behind a credential, or None; reloads once if the directory moved on.

        Goes through the ``authenticate`` hook, so third-party authenticate plugins decide first.
        """
        return self._lookup_reloading(lambda: self.hooks.authenticate(credential, context or {}))

    def find_principal_by_hash(
        self, key_hash: str, context: dict[str, Any] | None = None
    ) -> Principal | None:
        """The active principal behind a key's hash, or None; reloads once if the directory moved on.

        For adapters that only see the hash (a log line, a gateway that hashed the key already).
        It reads the directory directly and bypasses the ``authenticate`` hook, so third-party
        authenticate plugins are not consulted. Unknown, revoked and inactive keys give None.
        ``context`` is accepted for symmetry with ``find_principal`` and currently unused.
        """
        principal = self._lookup_reloading(lambda: self.directory.principal_for_key(key_hash))
        if principal is not None and principal.kind == "inactive":
            return None
        return principal

    def _lookup_reloading(self, lookup: Callable[[], Principal | None]) -> Principal | None:
        seen = self.directory
        principal = lookup()
        if principal is None:
            # a key issued since our snapshot: reload (unless another thread just did) and retry
            if self.directory is seen and self.ledger.generation() != seen.generation:
                self.refresh_directory()
            if self.directory is not seen:
                principal = lookup()
        return principal

    def merge_labels(self, principal: Principal | None, labels: dict[str, str]) -> dict[str, str]:
        """Key defaults, then schema defaults, then the request's own labels (which win)."""
        merged: dict[str, str] = {}
        config = self.directory.config
        if config is not None:
            for key, schema in config.labels.items():
                if schema.default is not None:
                    merged[key] = schema.default
        if principal is not None:
            merged.update(principal.default_labels)
        merged.update({k.lower(): v for k, v in labels.items()})
        return merged

    def admit(self, intent: CallIntent) -> Admission:
        """Authenticate, check policy, price the worst case and reserve it on every wallet.

        Raises ``Denied`` (401/403/400/402) and reserves nothing when refused.
        """
        for _ in range(3):
            try:
                return self._admit_once(intent)
            except StaleDirectory:
                self.refresh_directory()
        raise LedgerUnavailable("the directory kept changing during admission; try again")

    async def admit_async(self, intent: CallIntent) -> Admission:
        return await asyncio.to_thread(self.admit, intent)

    def _admit_once(self, intent: CallIntent) -> Admission:
        at = intent.at or _now()
        principal = intent.principal or self.authenticate(
            intent.credential, {"request_id": intent.request_id}
        )
        if principal.kind == "inactive":
            raise Denied(401, "invalid_api_key", "this person is no longer active")
        intent = intent.with_changes(
            labels=self.merge_labels(principal, intent.labels), at=at, principal=None, credential=None
        )
        decision = self.hooks.check_policy(principal, intent)
        if decision is not None:
            raise Denied(decision.status, decision.code, decision.message, decision.details)
        max_out, estimate = self._worst_case(intent, at)
        clamp = intent.clamp_max_tokens or bool(
            self.directory.config and self.directory.config.policy.clamp_max_tokens
        )
        try:
            reservation = self.hooks.reserve(principal, intent, estimate.amount_nanos)
        except Denied as denied:
            if denied.status != 402 or not clamp:
                raise
            max_out, estimate, reservation = self._reserve_clamped(principal, intent, at, denied)
        except LedgerUnavailable as down:
            if not self.fails_open():
                raise
            log.warning("ledger unavailable, letting %s through unenforced: %s", intent.request_id, down)
            reservation = Reservation("", intent.request_id, estimate.amount_nanos, (), at, UNRECORDED)
        if reservation is None:
            raise LedgerUnavailable("no plugin reserved the request")
        with self._admissions_lock:
            self._admissions[intent.request_id] = (reservation, intent, principal)
            while len(self._admissions) > _ADMISSION_CACHE_SIZE:
                forgotten, _ = self._admissions.popitem(last=False)
                self._quotes.pop(forgotten, None)
        return Admission(
            request_id=intent.request_id,
            principal=principal,
            reservation=reservation,
            labels=intent.labels,
            estimate=estimate,
            provider=intent.provider,
            model=intent.model,
            max_output_tokens=max_out,
        )

    def worst_case(self, intent: CallIntent) -> Price:
        """What admitting ``intent`` would reserve: the exact price of its input bound and its
        max output tokens (the model's own maximum, or the policy's default, when it sets none),
        on the dearest service tier it may be served on (see ``held_service_tier``).

        Raises ``Denied(400, unpriced_model)`` when no card prices the model. For adapters whose
        call may be served by one of several models: reserve for the dearest.
        """
        return self._worst_case(intent, intent.at or _now())[1]

    def worst_case_usage(self, intent: CallIntent, at: datetime | None = None) -> Usage:
        """The usage admitting ``intent`` reserves for: its input bound and its max output tokens
        (the model's own maximum at ``at``, or the policy's default, when it sets none), on the
        service tier it may be served on (``held_service_tier``)."""
        at = at or intent.at or _now()
        max_out = intent.max_output_tokens or self._default_max_output(intent, at)
        return Usage(
            input_tokens=intent.input_tokens,
            output_tokens=max_out,
            service_tier=self.held_service_tier(intent),
        )

    def _worst_case(self, intent: CallIntent, at: datetime) -> tuple[int, Price]:
        usage = self.worst_case_usage(intent, at)
        return usage.output_tokens, self._price_or_deny(intent, usage, at)

    def held_service_tier(self, intent: CallIntent) -> str | None:
        """The service tier a reservation is priced at: the one the request asks for; for
        ``auto`` or none, the tier the policy says the provider may pick (``policy.
        auto_service_tier``, e.g. ``priority`` for an OpenAI project with Priority processing),
        standard (None) by default."""
        asked = intent.service_tier
        if asked is not None and asked != AUTO:
            return asked
        config = self.directory.config
        return config.policy.auto_service_tier if config is not None else None

    def fails_open(self) -> bool:
        """Whether calls go through unenforced while the ledger is unreachable (the policy)."""
        config = self.directory.config
        return config is not None and config.policy.ledger_unavailable == "open"

    def _default_max_output(self, intent: CallIntent, at: datetime) -> int:
        try:
            known = self.rate_book.max_output_tokens(intent.provider, intent.model, at)
        except Exception:  # an unpriced model is dealt with by the pricing step
            known = None
        if known:
            return int(known)
        config = self.directory.config
        return config.policy.default_max_output_tokens if config else 4096

    def _reserve_clamped(
        self, principal: Principal, intent: CallIntent, at: datetime, denied: Denied
    ) -> tuple[int, Price, Reservation]:
        """Opt-in: shrink max output tokens to what the tightest wallet can still pay for."""
        from allotment.defaults.ledger import SqlLedger

        ledger_plugin = next(p for p in self.pm.get_plugins() if isinstance(p, SqlLedger))
        wallets = self.ledger.wallets_by_ids(ledger_plugin.wallet_ids(principal, intent, at))
        available = min((w.available_nanos for w in wallets), default=0)
        tier = self.held_service_tier(intent)
        tokens = self.rate_book.max_affordable_output_tokens(
            intent.provider,
            intent.model,
            at,
            intent.input_tokens,
            available,
            intent.endpoint_mode.value,
            tier,
        )
        if tokens < 1:
            raise denied
        estimate = self._price_or_deny(
            intent, Usage(input_tokens=intent.input_tokens, output_tokens=tokens, service_tier=tier), at
        )
        clamped = intent.with_changes(max_output_tokens=tokens)
        reservation = self.hooks.reserve(principal, clamped, estimate.amount_nanos)
        if reservation is None:
            raise denied
        return tokens, estimate, reservation

    def _price(self, intent: CallIntent, usage: Usage, at: datetime) -> Price | None:
        price = self.hooks.price(intent.provider, intent.model, usage, at, intent.endpoint_mode.value)
        if price is not None:
            return price
        config = self.directory.config
        if config is not None and config.policy.unpriced == "fallback" and config.policy.fallback_price:
            rates = config.policy.fallback_price
            exact = (
                Decimal(usage.total_input_tokens) * rates.input + Decimal(usage.output_tokens) * rates.output
            ) / TOKENS_PER_MILLION
            return Price(
                dollars_to_nanos(exact),
                _FALLBACK_VERSION,
                intent.provider,
                intent.model,
                flags=("fallback_price",),
            )
        return None

    def _price_or_deny(self, intent: CallIntent, usage: Usage, at: datetime) -> Price:
        price = self._price(intent, usage, at)
        if price is None:
            raise Denied(
                400,
                "unpriced_model",
                f"no rate card prices {intent.provider}/{intent.model}; "
                "it is refused rather than recorded at $0",
                {"model": f"{intent.provider}/{intent.model}"},
            )
        return price

    def _price_settled(self, intent: CallIntent, usage: Usage, at: datetime) -> Price:
        price = self._price(intent, usage, at)
        if price is not None:
            return price
        if usage.total_tokens == 0 and usage.tool_calls == 0 and usage.search_calls == 0:
            return Price(0, _UNPRICED_VERSION, intent.provider, intent.model)
        # never silently $0: the event is flagged so reports show unpriced usage
        return Price(0, _UNPRICED_VERSION, intent.provider, intent.model, flags=("unpriced",))

    def settle(
        self,
        request_id: str,
        usage: Usage,
        outcome: Outcome = Outcome.SUCCESS,
        *,
        external_cost_nanos: int | None = None,
        flags: Iterable[str] = (),
        served_by: tuple[str, str] | None = None,
    ) -> UsageEvent:
        """Price the actual usage, charge it, release the rest of the hold. Idempotent.

        ``served_by``: the (provider, model) that answered, when the gateway in front chose
        among several after admission (a load-balanced model group): the call is priced and
        recorded as that model, on the wallets of its reservation.
        """
        with self._admissions_lock:
            cached = self._admissions.pop(request_id, None)
            quoted = self._quotes.pop(request_id, None)
        if cached is not None and cached[0].state == UNRECORDED:
            reservation, admitted, who = cached
            admitted = _served(admitted, served_by)
            return self._record_let_through(
                (reservation, admitted, who), usage, outcome, external_cost_nanos, flags
            )
        if cached is not None:
            reservation, intent, principal = cached
        else:
            state = self.ledger.reservation(request_id)
            if state is None:
                let_through = self.event(request_id)  # a call let through and recorded already
                if let_through is not None and "fail_open" in let_through.flags:
                    return let_through
                raise NotFound(f"no reservation for request {request_id!r}", code="unknown_request")
            principal_or_none = principal_from_dict(state.context.get("principal"))
            intent = intent_from_dict(state.context["intent"])
            reservation = Reservation(
                state.id, request_id, state.amount_nanos, state.wallet_ids, state.expires_at, state.state
            )
            assert principal_or_none is not None
            principal = principal_or_none
        at = intent.at or _now()
        served = _served(intent, served_by)
        if served is not intent:
            intent, quoted = served, None
        if quoted is not None and quoted[0] == usage and cached is not None:
            price = quoted[1]  # priced from this same admission and usage a moment ago
        else:
            price = self._price_settled(intent, usage, at)
        details: dict[str, Any] = {"flags": usage_flags(usage, flags)}
        if external_cost_nanos is not None:
            details["external_cost_nanos"] = external_cost_nanos
        event = self.hooks.reconcile(reservation, intent, principal, usage, price, outcome, True, details)
        if event is None:
            raise LedgerUnavailable("no plugin reconciled the request")
        return event

    def _record_let_through(
        self,
        admitted: tuple[Reservation, CallIntent, Principal],
        usage: Usage,
        outcome: Outcome,
        external_cost_nanos: int | None,
        flags: Iterable[str],
    ) -> UsageEvent:
        """A call admitted while the ledger was down: recorded unenforced, flagged ``fail_open``.

        Still down: the admission is kept, so a retry of this settle records it later.
        """
        reservation, intent, principal = admitted
        try:
            return self.record(
                intent,
                usage,
                outcome,
                principal=principal,
                external_cost_nanos=external_cost_nanos,
                flags=[*flags, "fail_open"],
            )
        except Exception:
            with self._admissions_lock:
                self._admissions[reservation.request_id] = admitted
            raise

    def let_through(self, request_id: str) -> tuple[CallIntent, Principal] | None:
        """The intent and principal of a call this process let through while the ledger was
        down (``fail_open``) and has not recorded yet; None for any other call."""
        with self._admissions_lock:
            cached = self._admissions.get(request_id)
        if cached is None or cached[0].state != UNRECORDED:
            return None
        return cached[1], cached[2]

    def quote(self, request_id: str, usage: Usage) -> Price | None:
        """What ``settle`` will charge for ``usage``, without touching the ledger.

        From this process's own admission of the request; None when it did not admit it
        (then only ``settle`` knows). For gateways that answer before they settle.
        """
        with self._admissions_lock:
            cached = self._admissions.get(request_id)
        if cached is None:
            return None
        _, intent, _ = cached
        price = self._price_settled(intent, usage, intent.at or _now())
        with self._admissions_lock:
            if request_id in self._admissions:  # forgotten with its admission (see below)
                self._quotes[request_id] = (usage, price)
        return price

    async def settle_async(
        self,
        request_id: str,
        usage: Usage,
        outcome: Outcome = Outcome.SUCCESS,
        *,
        external_cost_nanos: int | None = None,
        flags: Iterable[str] = (),
        served_by: tuple[str, str] | None = None,
    ) -> UsageEvent:
        return await asyncio.to_thread(
            self.settle,
            request_id,
            usage,
            outcome,
            external_cost_nanos=external_cost_nanos,
            flags=tuple(flags),
            served_by=served_by,
        )

    def release(self, request_id: str) -> UsageEvent:
        """Settle a call that used nothing (the provider failed before any token)."""
        return self.settle(request_id, Usage(), Outcome.ERROR)

    def record(
        self,
        intent: CallIntent,
        usage: Usage,
        outcome: Outcome = Outcome.SUCCESS,
        *,
        principal: Principal | None = None,
        external_cost_nanos: int | None = None,
        flags: Iterable[str] = (),
    ) -> UsageEvent:
        """Record usage that was not admitted (log ingestion): ``enforced=False``. Idempotent."""
        principal = principal or intent.principal
        if principal is None and intent.credential:
            principal = self.find_principal(intent.credential, {"passive": True})
        at = intent.at or _now()
        intent = intent.with_changes(
            labels=self.merge_labels(principal, intent.labels), at=at, principal=None, credential=None
        )
        price = self._price_settled(intent, usage, at)
        details: dict[str, Any] = {"flags": usage_flags(usage, flags)}
        if external_cost_nanos is not None:
            details["external_cost_nanos"] = external_cost_nanos
        if principal is None:
            details["flags"] = [*details["flags"], "unattributed"]
        event = self.hooks.reconcile(None, intent, principal, usage, price, outcome, False, details)
        if event is None:
            raise LedgerUnavailable("no plugin recorded the usage")
        return event

    def extend(self, request_id: str, seconds: int | None = None) -> bool:
        """Keep a reservation alive (a long stream); returns False if it is no longer open."""
        ttl = seconds or self.reservation_ttl_seconds
        return self.ledger.extend(request_id, _now() + timedelta(seconds=ttl))

    async def extend_async(self, request_id: str, seconds: int | None = None) -> bool:
        return await asyncio.to_thread(self.extend, request_id, seconds)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Commit every settle/record made by this thread inside the block in one transaction.

        For ingesters (log tailers): thousands of lines per commit instead of one each. A call
        that fails inside the block is rolled back alone and raises as usual.
        """
        try:
            with self.executor.batch():
                yield
        except BaseException:
            # wallets created inside the rolled-back transaction no longer exist
            from allotment.defaults.ledger import SqlLedger

            for plugin in self.pm.get_plugins():
                if isinstance(plugin, SqlLedger):
                    plugin.forget()
            raise

    def event(self, request_id: str) -> UsageEvent | None:
        """The usage event settled or recorded for a request, if any."""
        from allotment.codec import event_from_columns

        found = self.ledger.event(request_id)
        return None if found is None else event_from_columns(*found)

    def reservation_state(self, request_id: str) -> str | None:
        """``open``, ``settled`` or ``expired`` for an admitted request; None if never admitted."""
        state = self.ledger.reservation(request_id)
        return None if state is None else state.state

    def expire_reservations(self, now: datetime | None = None) -> int:
        return self.ledger.expire(now or _now())

    # -- models ------------------------------------------------------------------------
    def resolve_model(self, model: str) -> tuple[str, str]:
        """(provider, model) from ``provider/model`` or the rate cards' knowledge of a bare id."""
        book = self.rate_book
        head, sep, tail = model.partition("/")
        if sep and book.has_provider(head.lower()):
            return head.lower(), tail
        provider = book.provider_for(model, _now())
        if provider is None:
            raise Denied(
                400,
                "unpriced_model",
                f"unknown model {model!r}: name it as provider/model or add a rate card",
                {"model": model},
            )
        return provider, model

    def allowed_models(self, principal: Principal) -> list[str]:
        tier = self.directory.tiers.get(principal.tier or "")
        if tier is None:
            return []
        return sorted(
            f"{provider}/{model}"
            for provider, model in self.rate_book.models(_now())
            if tier.allowlist.allows(provider, model)
        )
