"""Built-in reporting plugin: ``csv``/``focus`` exports, ``/admin/reports`` routes, report jobs.

Registered like any third-party plugin; ``trylast`` lets an installed plugin replace an export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allotment.hookspecs import hookimpl
from allotment.types import ExportResult

if TYPE_CHECKING:
    from allotment.runtime import Runtime


class Reporting:
    def __init__(self, runtime: Runtime | None) -> None:
        self.runtime = runtime

    @hookimpl(trylast=True)
    def export(self, kind: str, period: str, options: dict[str, Any]) -> ExportResult | None:
        from allotment.reports.exports import KINDS, run_export

        if kind not in KINDS or self.runtime is None:
            return None
        return run_export(self.runtime, kind, period, options)

    @hookimpl
    def register_routes(self, app: Any) -> None:
        from allotment.reports.routes import router

        app.include_router(router)

    @hookimpl
    def register_jobs(self, scheduler: Any) -> None:
        from allotment.reports.jobs import register

        register(scheduler)
