"""Scheduled jobs: a registry that plugins add to (``register_jobs``) and a runner for ``serve``.

Cron jobs run in the org time zone; a job with a ``period`` runs once per period (``job_runs``),
missed runs are caught up once at start, and one process at a time runs jobs (leader lock).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from allotment.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from allotment.runtime import Runtime

log = logging.getLogger("allotment.jobs")

JobFunc = Callable[..., Any]  # (runtime) or, for period jobs, (runtime, period_key)
PERIODS = {"month": 32, "week": 8, "day": 2}  # days to look back for a missed run


@dataclass(frozen=True)
class Job:
    name: str
    func: JobFunc
    every: float | None
    cron: str | None
    description: str
    period: str | None = None  # month | week | day: runs once per completed period

    def schedule_text(self) -> str:
        text_ = f"every {self.every:g}s" if self.every is not None else f"cron {self.cron}"
        return text_ + (f" (once per {self.period})" if self.period else "")


def _check_cron(name: str, cron: str) -> None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(cron)
    except ValueError as exc:
        raise ConfigError(f"job {name!r}: invalid cron {cron!r}: {exc}") from None


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
        period: str | None = None,
    ) -> None:
        if (every is None) == (cron is None):
            raise ConfigError(f"job {name!r}: give exactly one of every= or cron=")
        if every is not None and every <= 0:
            raise ConfigError(f"job {name!r}: every must be positive")
        if cron is not None:
            _check_cron(name, cron)
        if period is not None and (period not in PERIODS or cron is None):
            raise ConfigError(f"job {name!r}: period is one of {sorted(PERIODS)} and needs cron=")
        if name in self._jobs:
            raise ConfigError(f"job {name!r} is registered twice")
        self._jobs[name] = Job(name, func, every, cron, description, period)

    def configure(self, settings: dict[str, Any]) -> None:
        """Apply ``allotment.yaml``'s ``jobs:``: ``NAME: {cron: ..., enabled: false, ...}``."""
        for name, options in settings.items():
            if name not in self._jobs or not isinstance(options, dict):
                continue
            job = self._jobs[name]
            if options.get("enabled") is False:
                del self._jobs[name]
                continue
            if options.get("cron"):
                _check_cron(name, str(options["cron"]))
                self._jobs[name] = replace(job, cron=str(options["cron"]), every=None)

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
    config = runtime.directory.config
    if config is not None and config.jobs:
        registry.configure(config.jobs)
    return registry


class JobLeader:
    """One process at a time runs jobs: a PostgreSQL advisory lock, or a lock file for SQLite.

    Held for the process's life; a replica that loses its connection loses the lock, and
    another replica takes it on its next tick.
    """

    LOCK_KEY = 0x616C6C6F746D  # "allotm": one key for the whole job runner

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._conn: Any = None
        self._file: Any = None

    def acquire(self) -> bool:
        if self.runtime.write_engine.dialect.name == "postgresql":
            return self._acquire_pg()
        return self._acquire_file()

    def _acquire_pg(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except Exception:  # the session (and its lock) is gone; try to lead again
                self._conn.invalidate()
                self._conn = None
        conn = self.runtime.write_engine.connect()
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.LOCK_KEY}).scalar())
        conn.commit()
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def _acquire_file(self) -> bool:
        if self._file is not None:
            return True
        import fcntl

        from allotment.db.executor import sqlite_path

        path = sqlite_path(self.runtime.settings.database_url)
        if path == ":memory:":
            return True
        handle = open(f"{path}.jobs.lock", "a+")  # noqa: SIM115 (held open while leading)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._conn is not None:
            # the pooled session outlives close(): give the lock back explicitly
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.LOCK_KEY})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        if self._file is not None:
            self._file.close()
            self._file = None


# -- periods ------------------------------------------------------------------------------


def period_key(period: str, fired: datetime, tz: ZoneInfo) -> str:
    """The completed period a run at ``fired`` covers: last month, last ISO week, yesterday."""
    local: date = fired.astimezone(tz).date()
    if period == "month":
        first = local.replace(day=1) - timedelta(days=1)
        return f"{first.year:04d}-{first.month:02d}"
    if period == "week":
        year, week, _ = (local - timedelta(days=7)).isocalendar()
        return f"{year:04d}-W{week:02d}"
    return (local - timedelta(days=1)).isoformat()


def last_fire_time(job: Job, now: datetime, tz: ZoneInfo) -> datetime | None:
    """The latest scheduled instant at or before ``now`` within the period's look-back."""
    from apscheduler.triggers.cron import CronTrigger

    assert job.cron is not None and job.period is not None
    trigger = CronTrigger.from_crontab(job.cron, timezone=tz)
    cursor = now - timedelta(days=PERIODS[job.period])
    previous: datetime | None = None
    found: datetime | None = None
    for _ in range(10_000):
        fire = trigger.get_next_fire_time(previous, cursor)
        if fire is None or fire > now:
            break
        found = previous = fire
        cursor = fire + timedelta(microseconds=1)
    return found


def _claim(runtime: Runtime, job: str, key: str, now: datetime) -> bool:
    """Take (job, period) for this run; False if it ran or is running. A failed run is retaken."""
    stamp = runtime.ledger.ts(now)
    with runtime.write_engine.begin() as conn:
        inserted = conn.execute(
            text(
                "INSERT INTO job_runs (job, period_key, started_at, status) VALUES (:j, :k, :t, 'running') "
                "ON CONFLICT (job, period_key) DO NOTHING"
            ),
            {"j": job, "k": key, "t": stamp},
        ).rowcount
        if inserted:
            return True
        retaken = conn.execute(
            text(
                "UPDATE job_runs SET status = 'running', started_at = :t, detail = NULL "
                "WHERE job = :j AND period_key = :k AND status = 'failed'"
            ),
            {"j": job, "k": key, "t": stamp},
        ).rowcount
        return bool(retaken)


def _finish(runtime: Runtime, job: str, key: str, status: str, detail: str | None) -> None:
    with runtime.write_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE job_runs SET status = :s, finished_at = :t, detail = :d "
                "WHERE job = :j AND period_key = :k"
            ),
            {"s": status, "t": runtime.ledger.ts(datetime.now(UTC)), "d": detail, "j": job, "k": key},
        )


def execute(runtime: Runtime, job: Job, *, now: datetime | None = None, key: str | None = None) -> Any:
    """Run ``job`` once; a period job runs only if its period has not run yet."""
    if job.period is None:
        return job.func(runtime)
    moment = now or datetime.now(UTC)
    key = key or period_key(job.period, moment, runtime.directory.timezone)
    if not _claim(runtime, job.name, key, moment):
        return {"job": job.name, "period": key, "skipped": "already ran for this period"}
    try:
        result = job.func(runtime, key)
    except Exception as exc:
        _finish(runtime, job.name, key, "failed", f"{type(exc).__name__}: {exc}")
        raise
    _finish(runtime, job.name, key, "done", None)
    return result


def run_job(runtime: Runtime, name: str, *, now: datetime | None = None, period: str | None = None) -> Any:
    return execute(runtime, collect_jobs(runtime).get(name), now=now, key=period)


def catch_up(runtime: Runtime, now: datetime | None = None) -> list[str]:
    """Run, once, each period job whose latest scheduled run was missed (e.g. while down)."""
    moment = now or datetime.now(UTC)
    tz = runtime.directory.timezone
    ran = []
    for job in collect_jobs(runtime).jobs():
        if job.period is None:
            continue
        fired = last_fire_time(job, moment, tz)
        if fired is None:
            continue
        try:
            result = execute(runtime, job, now=fired)
        except Exception:  # logged; the next scheduled tick retries it
            log.exception("catching up job %s failed", job.name)
            continue
        if not (isinstance(result, dict) and result.get("skipped")):
            ran.append(job.name)
    return ran


def start_scheduler(runtime: Runtime, *, leader: JobLeader | None = None) -> BackgroundScheduler:
    """Run every registered job in background threads, only while this process leads."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    tz = runtime.directory.timezone
    leader = leader or JobLeader(runtime)
    scheduler = BackgroundScheduler(timezone=tz)
    for job in collect_jobs(runtime).jobs():
        trigger: Any
        if job.every is not None:
            trigger = IntervalTrigger(seconds=job.every)
        else:
            assert job.cron is not None
            trigger = CronTrigger.from_crontab(job.cron, timezone=tz)

        def run(job: Job = job) -> None:
            if not leader.acquire():  # another replica runs the jobs
                return
            try:
                execute(runtime, job)
            except Exception:  # a failing job is logged and retried on its next tick
                log.exception("job %s failed", job.name)

        scheduler.add_job(run, trigger, id=job.name, coalesce=True, max_instances=1)

    def startup() -> None:
        if leader.acquire():
            catch_up(runtime)

    scheduler.add_job(startup, id="catch-up", max_instances=1)  # once, right after start
    scheduler.start()
    return scheduler
