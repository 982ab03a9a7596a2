"""The built-in ``sync-directory`` job: pull the HR systems on a schedule and apply the changes.

Registered like any plugin's job; the work itself is ``allotment.sync.run_sync``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from allotment.hookspecs import hookimpl

if TYPE_CHECKING:
    from allotment.runtime import Runtime

log = logging.getLogger("allotment.sync")


def sync_job(runtime: Runtime) -> dict[str, Any]:
    from allotment.sync import run_sync

    result = run_sync(runtime)
    # a job's output lands in logs: key ids only, never the secrets of keys issued to joiners
    summary = result.to_dict(show_secrets=False)
    log.info("directory sync: %s", summary["counts"])
    for item in summary["unplaced"]:
        log.warning(
            "directory sync could not place %s (%s): %s", item["email"], item["source"], item["reason"]
        )
    return summary


class DirectorySync:
    def __init__(self, runtime: Runtime | None) -> None:
        self.runtime = runtime

    @hookimpl
    def register_jobs(self, scheduler: Any) -> None:
        every = 3600.0
        config = self.runtime.config if self.runtime is not None else None
        if config is not None:
            raw = config.plugins.get("sync") or {}
            if isinstance(raw, dict) and isinstance(raw.get("every_seconds"), int | float):
                every = max(float(raw["every_seconds"]), 60.0)
        scheduler.add(
            "sync-directory",
            sync_job,
            every=every,
            description="apply joiners, movers and leavers reported by the HR systems (Rippling, BambooHR)",
        )
