"""Turn parsed log lines into money: settle each by request id, or record it passively.

A batch of lines goes to the core's bulk path in one transaction; both are idempotent by request
id, so re-reading a line after a crash charges nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from allotment.bulk import BulkItem, RecordItem, SettleItem, apply_many
from allotment.codec import intent_from_dict
from allotment.errors import AllotmentError, Denied, NotFound
from allotment.intents import estimate_tokens
from allotment.types import CallIntent, EndpointMode, Outcome, Principal, Usage
from allotment_nginx.logline import LogRecord

if TYPE_CHECKING:
    from allotment.runtime import Runtime

log = logging.getLogger("allotment.nginx")

# What to charge for an admitted call whose reply reached the client without usage
# (the client aborted a stream, or the upstream never sent a usage block):
#   reserve: charge the reserved worst case, flagged estimated (budgets stay conservative)
#   estimate: charge what a stream delivered (its answer bytes / 4) and the input bound / 4,
#             flagged estimated, as the gateway does; a line without delivered_bytes: reserve
#   release: charge nothing, flagged usage_missing (trust that nothing was generated)
# Passive lines hold no reservation: under estimate a stream is charged its delivered bytes / 4
# and its request body's bytes / 4 (flagged estimated); otherwise it is recorded at $0, flagged.
ABORTED_POLICIES = ("reserve", "estimate", "release")
USAGE_MISSING = "usage_missing"
PARTIAL = "sse:partial"  # usage_src of a stream whose final usage never came (Anthropic)


def _last_status(upstream_status: str) -> int | None:
    # "502, 200" after a retry: the last attempt is the one that answered
    tail = upstream_status.replace(":", ",").split(",")[-1].strip()
    return int(tail) if tail.isdigit() else None


def outcome_of(rec: LogRecord) -> Outcome:
    if rec.status == 499:
        return Outcome.CANCELLED
    return Outcome.SUCCESS if rec.status < 400 else Outcome.ERROR


def reached_generation(rec: LogRecord) -> bool:
    """True when the upstream answered 2xx, so tokens may have been generated."""
    upstream = _last_status(rec.upstream_status)
    return upstream is not None and 200 <= upstream < 300


def reported_usage(rec: LogRecord) -> Usage | None:
    """The line's usage. An Anthropic stream cut before its final count (``sse:partial``)
    reported a placeholder output count: the delivered answer bytes / 4 stand in when more."""
    usage = rec.usage
    if usage is not None and rec.usage_src == PARTIAL and rec.delivered_bytes is not None:
        delivered = estimate_tokens(rec.delivered_bytes)
        if delivered > usage.output_tokens:
            usage = replace(usage, output_tokens=delivered, estimated=True)
    return usage


def bytes_estimate(prompt_bytes: int, delivered_bytes: int) -> Usage:
    """Usage estimated from sizes, as the gateway estimates a call the provider never
    reported: the prompt's bytes / 4 as input, the delivered answer's bytes / 4 as output."""
    return Usage(
        input_tokens=estimate_tokens(prompt_bytes),
        output_tokens=estimate_tokens(delivered_bytes),
        estimated=True,
    )


class LedgerSink:
    """Settles enforced lines and records passive ones through the runtime's waist."""

    def __init__(self, runtime: Runtime, *, aborted: str = "reserve") -> None:
        if aborted not in ABORTED_POLICIES:
            raise ValueError(f"aborted policy is one of {ABORTED_POLICIES}, got {aborted!r}")
        self.rt = runtime
        self.aborted = aborted
        self._providers: dict[str, str] = {}
        self._principals: dict[str, Principal | None] = {}

    def handle(self, rec: LogRecord) -> str:
        """Apply one line; returns what happened: settled, recorded, denied, skipped or unknown."""
        return self.apply([rec])[0]

    def apply(self, records: Sequence[LogRecord]) -> list[str]:
        """Apply lines in order, in one ledger transaction; one outcome per line.

        Outcomes: settled, recorded, denied, skipped, unknown (no reservation in this ledger)
        or failed (refused by the ledger, logged). A ledger that is down raises.
        """
        outcomes: list[str] = []
        items: list[BulkItem] = []
        positions: list[int] = []
        self._principals = {}  # key hash -> principal, for this batch
        for rec in records:
            try:
                item = self.item(rec)
            except AllotmentError as exc:
                if exc.status >= 500:
                    raise
                log.warning("nginx tail: line %s refused by the ledger: %s", rec.request_id, exc.message)
                item = "failed"
            if isinstance(item, str):
                outcomes.append(item)
                continue
            positions.append(len(outcomes))
            outcomes.append("settled" if isinstance(item, SettleItem) else "recorded")
            items.append(item)
        if not items:
            return outcomes
        for position, result in zip(positions, apply_many(self.rt, items), strict=True):
            error = result.error
            if error is None:
                continue
            if isinstance(error, NotFound):
                log.warning("nginx line %s: no reservation in this ledger; skipped", result.request_id)
                outcomes[position] = "unknown"
            else:
                log.warning("nginx tail: line %s refused by the ledger: %s", result.request_id, error.message)
                outcomes[position] = "failed"
        return outcomes

    def item(self, rec: LogRecord) -> BulkItem | str:
        """The ledger item for a line, or what happened when it needs none (denied, skipped)."""
        if rec.deny_status:
            return "denied"  # refused before the call: nothing was reserved, nothing to charge
        if rec.reservation_id:
            return self._settle(rec)
        return self._record(rec)

    # -- enforced ----------------------------------------------------------------------
    def _settle(self, rec: LogRecord) -> SettleItem:
        usage, outcome, flags = reported_usage(rec), outcome_of(rec), ()
        if usage is None:
            if not reached_generation(rec):
                usage, outcome = Usage(), Outcome.ERROR  # the provider never answered: release
            elif self.aborted == "estimate" and rec.delivered_bytes is not None:
                usage, flags = self._delivered_usage(rec.request_id, rec.delivered_bytes), (USAGE_MISSING,)
                outcome = Outcome.CANCELLED
            elif self.aborted in ("reserve", "estimate"):
                usage, flags = self._reserved_usage(rec.request_id), (USAGE_MISSING,)
                outcome = Outcome.CANCELLED
            else:
                usage, outcome, flags = Usage(), Outcome.CANCELLED, (USAGE_MISSING,)
        return SettleItem(rec.request_id, usage, outcome, flags)

    def _delivered_usage(self, request_id: str, delivered_bytes: int) -> Usage:
        """What a stream delivered before it ended without usage, estimated as the gateway
        estimates a call the provider never reported: bytes / 4 for the answer, and the
        reservation's input bound (a token per byte of text) / 4 for the prompt."""
        state = self.rt.ledger.reservation(request_id)
        bound = intent_from_dict(state.context["intent"]).input_tokens if state is not None else 0
        return bytes_estimate(bound, delivered_bytes)

    def _reserved_usage(self, request_id: str) -> Usage:
        """The worst case the reservation held, as usage, so settling charges exactly the hold."""
        state = self.rt.ledger.reservation(request_id)
        if state is None:
            return Usage(estimated=True)
        intent = intent_from_dict(state.context["intent"])
        return replace(self.rt.worst_case_usage(intent), estimated=True)

    # -- passive -----------------------------------------------------------------------
    def _record(self, rec: LogRecord) -> RecordItem | str:
        if not rec.model:
            return "skipped"  # not a model call (or the upstream never named a model)
        usage, flags = reported_usage(rec), ()
        if usage is None:
            if not reached_generation(rec) or rec.status >= 400 and rec.status != 499:
                return "skipped"  # failed before any token: nothing was spent
            if self.aborted == "estimate" and rec.delivered_bytes is not None:
                # no reservation to bound the prompt: the request body stands in for it
                usage = bytes_estimate(rec.request_bytes or 0, rec.delivered_bytes)
            else:
                usage = Usage()
            flags = (USAGE_MISSING,)
        provider, model = self._resolve(rec.model)
        intent = CallIntent(
            request_id=rec.request_id,
            provider=provider,
            model=model,
            endpoint_mode=EndpointMode.STREAM if rec.stream else EndpointMode.SYNC,
            labels=rec.labels,
            trace_id=rec.trace_id,
            at=rec.at,
        )
        return RecordItem(intent, usage, outcome_of(rec), self._principal(rec.key_hash), flags)

    def _resolve(self, name: str) -> tuple[str, str]:
        known = self._providers.get(name)
        if known is not None:
            return known, name.removeprefix(known + "/")
        try:
            provider, model = self.rt.resolve_model(name)
        except Denied:
            return "unknown", name  # recorded and flagged unpriced, never dropped
        self._providers[name] = provider
        return provider, model

    def _principal(self, key_hash: str) -> Principal | None:
        if not key_hash:
            return None
        try:
            return self._principals[key_hash]
        except KeyError:
            principal = self._principals[key_hash] = self.rt.find_principal_by_hash(key_hash)
            return principal
