"""Scheduled jobs: a registry that plugins add to (``register_jobs``) and a runner for ``serve``.

Interval jobs and cron jobs (in the org time zone); ``allotment jobs run NAME`` runs one now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from allotment.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from allotment.runtime import Runtime

log = logging.getLogger("allotment.jobs")

JobFunc = Callable[["Runtime"], Any]


@dataclass(frozen=True)
class Job:
    name: str
    func: JobFunc
    every: float | None
    cron: str | None
    description: str

    def schedule_text(self) -> str:
        return f"every {self.every:g}s" if self.every is not None else f"cron {self.cron}"


class JobRegistry:
    """What ``register_jobs(scheduler)`` receives: ``scheduler.add(name, func, every=|cron=)``."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def add(
        self,
        name: str,
        func: JobFunc,
        *,
        every: float | None = None,
        cron: str | None = None,
        description: str = "",
    ) -> None:
        if (every is None) == (cron is None):
            raise ConfigError(f"job {name!r}: give exactly one of every= or cron=")
        if every is not None and every <= 0:
            raise ConfigError(f"job {name!r}: every must be positive")
        if cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(cron)
            except ValueError as exc:
                raise ConfigError(f"job {name!r}: invalid cron {cron!r}: {exc}") from None
        if name in self._jobs:
            raise ConfigError(f"job {name!r} is registered twice")
        self._jobs[name] = Job(name, func, every, cron, description)

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda job: job.name)

    def get(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            known = ", ".join(sorted(self._jobs)) or "none"
            raise NotFound(f"no job named {name!r} (known: {known})") from None


def collect_jobs(runtime: Runtime) -> JobRegistry:
    registry = JobRegistry()
    runtime.hooks.register_jobs(registry)
    return registry


def run_job(runtime: Runtime, name: str) -> Any:
    return collect_jobs(runtime).get(name).func(runtime)


def start_scheduler(runtime: Runtime) -> BackgroundScheduler:
    """Run every registered job in background threads (one instance of each at a time)."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    scheduler = BackgroundScheduler(timezone=runtime.directory.timezone)
    for job in collect_jobs(runtime).jobs():
        trigger: Any
        if job.every is not None:
            trigger = IntervalTrigger(seconds=job.every)
        else:
            assert job.cron is not None
            trigger = CronTrigger.from_crontab(job.cron, timezone=runtime.directory.timezone)

        def run(job: Job = job) -> None:
            try:
                job.func(runtime)
            except Exception:  # a failing job is logged and retried on its next tick
                log.exception("job %s failed", job.name)

        scheduler.add_job(run, trigger, id=job.name, coalesce=True, max_instances=1)
    scheduler.start()
    return scheduler
