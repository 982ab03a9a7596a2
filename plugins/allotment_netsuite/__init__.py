"""NetSuite export for allotment: a month's AI spend as journal entries via SuiteTalk REST, or CSV.

Implements ``export`` for kind ``netsuite``; the core's export passes the runtime in ``options``.
"""

from __future__ import annotations

from typing import Any

from allotment.hookspecs import hookimpl
from allotment.types import ExportResult

__all__ = ["export", "runtime_opened"]

_runtime: Any = None  # the runtime of this process, for callers that do not pass options["runtime"]


@hookimpl
def runtime_opened(runtime: Any) -> None:
    global _runtime
    _runtime = runtime


@hookimpl
def export(kind: str, period: str, options: dict[str, Any]) -> ExportResult | None:
    if kind != "netsuite":
        return None
    # a submodule named like the hook would shadow it on the package: hence "posting"
    from allotment_netsuite.posting import run

    runtime = options.get("runtime") or _runtime
    if runtime is None:
        from allotment.errors import ConfigError

        raise ConfigError("the netsuite export needs options['runtime']")
    return run(runtime, period, options)
