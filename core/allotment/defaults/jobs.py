"""The core's own scheduled jobs, registered through ``register_jobs`` like any plugin's.

Reservation expiry, observer delivery from the outbox, and sealing the ledger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allotment.hookspecs import hookimpl

if TYPE_CHECKING:
    from allotment.runtime import Runtime


def _expire(runtime: Runtime) -> int:
    return runtime.expire_reservations()


def _deliver(runtime: Runtime) -> Any:
    from allotment.outbox import deliver

    return deliver(runtime)


def _seal(runtime: Runtime) -> Any:
    from allotment.audit import seal

    return seal(runtime)


class CoreJobs:
    def __init__(self, runtime: Runtime | None) -> None:
        self.runtime = runtime

    @hookimpl
    def register_jobs(self, scheduler: Any) -> None:
        scheduler.add(
            "expire-reservations",
            _expire,
            every=30,
            description="return holds whose TTL passed (crashed or vanished callers)",
        )
        scheduler.add(
            "deliver-outbox",
            _deliver,
            every=2,
            description="deliver usage_recorded, budget_threshold and anomaly events to observers",
        )
        scheduler.add(
            "seal-ledger",
            _seal,
            every=3600,
            description="append a digest chaining every event and ledger entry so far",
        )
