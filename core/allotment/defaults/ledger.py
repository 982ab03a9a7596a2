"""Default ``reserve`` and ``reconcile``: the SQL ledger, all wallets of a call in one transaction.

Wallets are org, team, person, key and label budgets for the calendar period of the call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from allotment.codec import event_from_columns, intent_to_dict, principal_to_dict
from allotment.db.ledger import BudgetRefused, DuplicateRequest, WalletSpec
from allotment.directory import Directory, period_bounds
from allotment.errors import Denied, InvalidRequest
from allotment.hookspecs import hookimpl
from allotment.ids import new_reservation_id
from allotment.money import usd_string
from allotment.types import (
    CallIntent,
    Outcome,
    Price,
    Principal,
    Reservation,
    Usage,
    UsageEvent,
)

if TYPE_CHECKING:
    from allotment.runtime import Runtime


def wallet_specs(
    directory: Directory, principal: Principal | None, intent: CallIntent, at: datetime
) -> list[WalletSpec]:
    """Every budget that applies to this call, as wallet specs for the period of ``at``."""
    period, start, end = period_bounds(at, directory.timezone)

    def spec(scope: str, scope_id: str, limit: int) -> WalletSpec:
        return WalletSpec(scope, scope_id, period, start, end, limit)

    specs: list[WalletSpec] = []
    org_budget = directory.org_budget_nanos
    if org_budget is not None:
        specs.append(spec("org", directory.org_id, org_budget))
    if principal is not None:
        team = directory.teams.get(principal.team_id or "")
        if team is not None and team.monthly_budget_nanos is not None:
            specs.append(spec("team", team.id, team.monthly_budget_nanos))
        person = directory.people.get(principal.person_id)
        if person is not None:
            limit = person.monthly_budget_nanos
            if limit is None:
                tier = directory.tiers.get(person.tier_id or "")
                limit = tier.monthly_budget_nanos if tier is not None else None
            if limit is not None:
                specs.append(spec("person", person.id, limit))
        if principal.key_id is not None:
            for key_info in directory.keys_by_hash.values():
                if key_info.id == principal.key_id and key_info.monthly_budget_nanos is not None:
                    specs.append(spec("key", key_info.id, key_info.monthly_budget_nanos))
                    break
    for key, value in intent.labels.items():
        limit = directory.label_budgets.get(key, {}).get(value)
        if limit is not None:
            specs.append(spec("label", f"{key}={value}", limit))
    return specs


class SqlLedger:
    """Reservations and settlement against the runtime's SQL ledger."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._wallet_cache: dict[WalletSpec, int] = {}
        self._ids_cache: dict[tuple[Any, ...], list[int]] = {}
        self._period: tuple[datetime, datetime] | None = None
        self._cache_generation = ""

    def forget(self) -> None:
        """Drop cached wallet ids (after a rolled-back batch that may have created them)."""
        self._cache_generation = ""

    def wallet_ids(self, principal: Principal | None, intent: CallIntent, at: datetime) -> list[int]:
        directory = self.runtime.directory
        if directory.generation != self._cache_generation:
            self._wallet_cache = {}
            self._ids_cache = {}
            self._period = None
            self._cache_generation = directory.generation
        # the same caller, labels and period always map to the same wallets
        period = self._period
        if period is None or not period[0] <= at < period[1]:
            _, start, end = period_bounds(at, directory.timezone)
            self._period = period = (start, end)
            self._ids_cache = {}
        key = (
            principal.person_id if principal else None,
            principal.team_id if principal else None,
            principal.key_id if principal else None,
            tuple(sorted(intent.labels.items())),
        )
        cached = self._ids_cache.get(key)
        if cached is not None:
            return cached
        specs = wallet_specs(directory, principal, intent, at)
        missing = [s for s in specs if s not in self._wallet_cache]
        if missing:
            for s, wallet_id in zip(missing, self.runtime.ledger.ensure_wallets(missing), strict=True):
                self._wallet_cache[s] = wallet_id
        ids = [self._wallet_cache[s] for s in specs]
        if len(self._ids_cache) < 100_000:
            self._ids_cache[key] = ids
        return ids

    @hookimpl(trylast=True)
    def reserve(self, principal: Principal, intent: CallIntent, amount: int) -> Reservation | None:
        rt = self.runtime
        at = intent.at or datetime.now(UTC)
        wallets = self.wallet_ids(principal, intent, at)
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=rt.reservation_ttl_seconds)
        reservation_id = new_reservation_id()
        context = {
            # ``at`` as decided above, without copying the intent
            "intent": {**intent_to_dict(intent), "at": at.isoformat()},
            "principal": principal_to_dict(principal),
            "estimate_nanos": amount,
        }
        for attempt in (1, 2):
            try:
                rt.ledger.reserve(
                    reservation_id=reservation_id,
                    request_id=intent.request_id,
                    wallet_ids=wallets,
                    amount_nanos=amount,
                    created_at=now,
                    expires_at=expires,
                    context=context,
                    generation=rt.directory.generation,
                )
            except BudgetRefused as refused:
                # Holds of crashed callers may be past their TTL: return them and retry once.
                if attempt == 1 and rt.ledger.expire(datetime.now(UTC)) > 0:
                    continue
                raise self._budget_denied(refused.wallet_id, wallets, amount) from None
            except DuplicateRequest:
                raise InvalidRequest(
                    f"request id {intent.request_id!r} was already admitted",
                    code="duplicate_request",
                    status=409,
                ) from None
            break
        return Reservation(
            id=reservation_id,
            request_id=intent.request_id,
            amount_nanos=amount,
            wallet_ids=tuple(sorted(set(wallets))),
            expires_at=expires,
        )

    def _budget_denied(self, wallet_id: int | None, wallets: list[int], amount: int) -> Denied:
        states = self.runtime.ledger.wallets_by_ids(wallets)
        if wallet_id is None:
            # the order of ``wallets`` is org, team, person, key, labels: name the first short one
            by_id = {w.id: w for w in states}
            short = [by_id[w] for w in wallets if w in by_id and by_id[w].available_nanos < amount]
            wallet = short[0] if short else None
        else:
            wallet = next((w for w in states if w.id == wallet_id), None)
        if wallet is None:  # raced with a settle that freed room: still refused this time
            return Denied(402, "budget_exceeded", "budget exceeded; try again")
        return Denied(
            402,
            "budget_exceeded",
            f"the {wallet.scope} budget {wallet.scope_id!r} for {wallet.period} cannot cover this "
            f"request (estimate ${usd_string(amount)}, available "
            f"${usd_string(max(wallet.limit_nanos - wallet.spent_nanos - wallet.reserved_nanos, 0))})",
            {
                "scope": wallet.scope,
                "scope_id": wallet.scope_id,
                "period": wallet.period,
                "limit": usd_string(wallet.limit_nanos),
                "spent": usd_string(wallet.spent_nanos),
                "reserved": usd_string(wallet.reserved_nanos),
                "estimate": usd_string(amount),
                "resets_at": wallet.period_end.isoformat(),
            },
        )

    @hookimpl(trylast=True)
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
        rt = self.runtime
        at = intent.at or datetime.now(UTC)
        event: dict[str, Any] = {
            "request_id": intent.request_id,
            "kind": "usage",
            "ts": at,
            "person_id": principal.person_id if principal else None,
            "team_id": principal.team_id if principal else None,
            "key_id": principal.key_id if principal else None,
            "cost_center": principal.cost_center if principal else None,
            "provider": intent.provider,
            "model": price.model or intent.model,
            "endpoint_mode": intent.endpoint_mode.value,
            "cost_nanos": price.amount_nanos,
            "estimate_nanos": reservation.amount_nanos if reservation else 0,
            "external_cost_nanos": details.get("external_cost_nanos"),
            "card_version": price.card_version,
            "outcome": outcome.value,
            "enforced": enforced,
            "labels": intent.labels,
            "trace_id": intent.trace_id,
            "retry_of": intent.retry_of,
            "end_user": intent.end_user,
            "flags": ",".join(dict.fromkeys([*price.flags, *details.get("flags", ())])),
            **usage.to_dict(),
        }
        thresholds = rt.thresholds
        if reservation is not None:
            known = None
            if reservation.state == "open":
                known = (reservation.id, reservation.amount_nanos, reservation.wallet_ids)
            event_id, created, stored = rt.ledger.settle(intent.request_id, event, thresholds, known=known)
        else:
            wallets = self.wallet_ids(principal, intent, at)
            event_id, created, stored = rt.ledger.record(event, wallets, thresholds)
        if not created:  # the first settle's event, as stored
            return event_from_columns(event_id, stored)
        # just written from these very values: no need to decode its usage and labels again
        return event_from_columns(event_id, stored, usage=usage, labels=dict(intent.labels))
