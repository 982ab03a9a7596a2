"""One allotment ``Runtime`` per proxy process, opened on first use from ``ALLOTMENT_*`` env.

It also runs the expiry sweep, so holds whose log event never came go back to the wallets, and
replays the settle spool (settles the ledger refused until a previous run stopped).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from allotment.runtime import Runtime
from allotment.settings import Settings
from allotment.settle_spool import has_pending, replay

log = logging.getLogger("allotment.litellm")

SWEEP_ENV = "ALLOTMENT_LITELLM_SWEEP_SECONDS"
DEFAULT_SWEEP_SECONDS = 30.0


class RuntimeHolder:
    def __init__(self, runtime: Runtime | None = None) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self.sweep_seconds = float(os.environ.get(SWEEP_ENV, DEFAULT_SWEEP_SECONDS))

    @property
    def opened(self) -> Runtime | None:
        """The runtime if this process has opened it already, else None (never opens it)."""
        return self._runtime

    def get(self) -> Runtime:
        """The process's runtime, opening it (and migrating the database) the first time."""
        runtime = self._runtime
        if runtime is not None:
            return runtime
        with self._lock:
            if self._runtime is None:
                # Settings() reads ALLOTMENT_DATABASE_URL and ALLOTMENT_CONFIG (applied at open)
                self._runtime = Runtime.open(Settings())
                log.info(
                    "allotment runtime opened on %s", self._runtime.settings.database_url.split("://")[0]
                )
            return self._runtime

    async def get_async(self) -> Runtime:
        runtime = self._runtime
        if runtime is None:
            runtime = await asyncio.to_thread(self.get)
        self._ensure_sweeper()
        return runtime

    def _ensure_sweeper(self) -> None:
        if self._sweeper is not None or self.sweep_seconds <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sweeper = loop.create_task(self._sweep(), name="allotment-expire-reservations")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            runtime = self._runtime
            if runtime is None:
                continue
            if has_pending(runtime.settings):
                # what a previous run (or this one's exhausted retries) spooled: settled before
                # the expiry below could return their holds; idempotent
                try:
                    await asyncio.to_thread(replay, runtime)
                except Exception:
                    log.exception("allotment: replaying the settle spool failed; it is kept")
            try:
                expired = await asyncio.to_thread(runtime.expire_reservations)
            except Exception:  # the ledger is briefly unreachable: the next sweep catches up
                log.exception("allotment: expiring reservations failed")
                continue
            if expired:
                log.warning("allotment: %d reservation(s) expired without a LiteLLM log event", expired)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        with self._lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None
