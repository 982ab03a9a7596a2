"""allotment: hard AI-spend controls for the LLM gateways you already run.

Adapters use the narrow waist: ``rt = allotment.open_runtime(); rt.admit(intent); rt.settle(...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from allotment.errors import (
    AllotmentError,
    ConfigError,
    Denied,
    InvalidRequest,
    LedgerUnavailable,
    NotFound,
    PricingError,
)
from allotment.hookspecs import hookimpl
from allotment.types import (
    Admission,
    Anomaly,
    CallIntent,
    Decision,
    DirectoryChanges,
    DirectoryPerson,
    EndpointMode,
    ExportResult,
    Outcome,
    Price,
    Principal,
    Reservation,
    Usage,
    UsageEvent,
    Wallet,
)

if TYPE_CHECKING:
    from allotment.runtime import Runtime

__version__ = "0.1.0"

__all__ = [
    "Admission",
    "AllotmentError",
    "Anomaly",
    "CallIntent",
    "ConfigError",
    "Decision",
    "Denied",
    "DirectoryChanges",
    "DirectoryPerson",
    "EndpointMode",
    "ExportResult",
    "InvalidRequest",
    "LedgerUnavailable",
    "NotFound",
    "Outcome",
    "Price",
    "PricingError",
    "Principal",
    "Reservation",
    "Usage",
    "UsageEvent",
    "Wallet",
    "hookimpl",
    "open_runtime",
]


def open_runtime(*args: object, **kwargs: object) -> Runtime:
    """Open the allotment runtime (ledger, plugins, policy) from settings; see ``Runtime``."""
    from allotment.runtime import Runtime

    return Runtime.open(*args, **kwargs)  # type: ignore[arg-type]
