"""Bulk settle and record for ingesters: thousands of calls per transaction in a few statements.

Each item ends exactly as one ``Runtime.settle``/``Runtime.record`` would leave it (same event,
cost, flags, hashes, wallet counters, threshold alerts); with a third-party ``price`` or
``reconcile`` plugin installed, every item goes through those hooks one by one instead.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from allotment.errors import AllotmentError
from allotment.types import CallIntent, Outcome, Principal, Usage

if TYPE_CHECKING:
    from allotment.bulk_writer import BulkWriter
    from allotment.defaults.ledger import SqlLedger
    from allotment.runtime import Runtime

__all__ = ["BulkItem", "BulkResult", "RecordItem", "SettleItem", "apply_many", "record_many", "settle_many"]


class SettleItem(NamedTuple):
    """``Runtime.settle(request_id, usage, outcome, ...)`` as one item of a batch."""

    request_id: str
    usage: Usage
    outcome: Outcome = Outcome.SUCCESS
    flags: tuple[str, ...] = ()
    external_cost_nanos: int | None = None


class RecordItem(NamedTuple):
    """``Runtime.record(intent, usage, outcome, ...)`` as one item of a batch (``enforced=false``)."""

    intent: CallIntent
    usage: Usage
    outcome: Outcome = Outcome.SUCCESS
    principal: Principal | None = None
    flags: tuple[str, ...] = ()
    external_cost_nanos: int | None = None

    @property
    def request_id(self) -> str:
        return self.intent.request_id


class BulkResult(NamedTuple):
    """What became of one item: its event (new, or the one already there), or why it failed."""

    request_id: str
    event_id: int | None = None
    created: bool | None = None  # None when the item went through the hooks, which do not say
    error: AllotmentError | None = None


BulkItem = SettleItem | RecordItem


def settle_many(runtime: Runtime, items: Sequence[SettleItem]) -> list[BulkResult]:
    """Settle every item in one transaction; see ``apply_many``."""
    return apply_many(runtime, items)


def record_many(runtime: Runtime, items: Sequence[RecordItem]) -> list[BulkResult]:
    """Record every item passively in one transaction; see ``apply_many``."""
    return apply_many(runtime, items)


def apply_many(runtime: Runtime, items: Sequence[BulkItem]) -> list[BulkResult]:
    """Settle and record ``items`` in order, in one transaction; one result per item.

    Idempotent by request id, within the batch and across batches. An item the ledger refuses
    (no reservation: ``NotFound``) gets its error in its result and changes nothing; any other
    failure (the database) raises and applies nothing of the batch.
    """
    if not items:
        return []
    plugin = _bundled_only(runtime)
    if plugin is None:
        return _through_hooks(runtime, items)
    return _writer(runtime).apply(plugin, items)


_WRITERS: weakref.WeakKeyDictionary[Runtime, BulkWriter] = weakref.WeakKeyDictionary()


def _writer(runtime: Runtime) -> BulkWriter:
    from allotment.bulk_writer import BulkWriter

    writer = _WRITERS.get(runtime)
    if writer is None:
        writer = _WRITERS[runtime] = BulkWriter(runtime)
    return writer


def _bundled_only(runtime: Runtime) -> SqlLedger | None:
    """The SQL ledger plugin when the only ``price``/``reconcile`` implementations are the defaults."""
    from allotment.defaults import BUILTIN_PREFIX
    from allotment.defaults.ledger import SqlLedger
    from allotment.defaults.pricing import RateCardPricer

    pm = runtime.pm
    prices = pm.hook.price.get_hookimpls()
    reconciles = pm.hook.reconcile.get_hookimpls()
    if len(prices) != 1 or len(reconciles) != 1:
        return None
    price, reconcile = prices[0], reconciles[0]
    if not (
        isinstance(price.plugin, RateCardPricer)
        and isinstance(reconcile.plugin, SqlLedger)
        and price.plugin_name.startswith(BUILTIN_PREFIX)
        and reconcile.plugin_name.startswith(BUILTIN_PREFIX)
    ):
        return None
    return reconcile.plugin


def _through_hooks(rt: Runtime, items: Sequence[BulkItem]) -> list[BulkResult]:
    """One ``settle``/``record`` per item, through every plugin's hooks, in one transaction."""
    results: list[BulkResult] = []
    with rt.batch():
        for item in items:
            try:
                if isinstance(item, SettleItem):
                    event = rt.settle(
                        item.request_id,
                        item.usage,
                        item.outcome,
                        external_cost_nanos=item.external_cost_nanos,
                        flags=item.flags,
                    )
                else:
                    event = rt.record(
                        item.intent,
                        item.usage,
                        item.outcome,
                        principal=item.principal,
                        external_cost_nanos=item.external_cost_nanos,
                        flags=item.flags,
                    )
            except AllotmentError as exc:
                if exc.status >= 500:
                    raise
                results.append(BulkResult(item.request_id, error=exc))
                continue
            results.append(BulkResult(item.request_id, event.id))
    return results
