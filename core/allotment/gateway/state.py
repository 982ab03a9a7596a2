"""What one gateway app holds: the runtime, the upstream client, metrics, live streams.

Routes reach it through ``request.app.state.gateway``; nothing here is a module global.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from allotment.errors import NotFound
from allotment.gateway.forwarding import Forwarder
from allotment.gateway.metrics import GatewayMetrics
from allotment.gateway.mock_upstream import MockUpstream
from allotment.money import usd_string
from allotment.runtime import SETTLE_RETRY_DELAYS
from allotment.settle_spool import PendingSettle, retry_settle, spool
from allotment.types import Admission, CallIntent, Outcome, Usage, UsageEvent

if TYPE_CHECKING:
    from allotment.gateway.streaming import SettlingStream

log = logging.getLogger("allotment.gateway")
T = TypeVar("T")

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class Call:
    """One admitted request on its way through the gateway."""

    request_id: str
    route: str  # chat | completions | embeddings | messages
    dialect: str  # openai | anthropic
    provider: str
    model: str
    started: float = field(default_factory=time.perf_counter)


def _resolve(future: asyncio.Future[T], result: T | BaseException) -> None:
    """Hand a result or error to whoever awaits ``future`` (unless they stopped waiting)."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class GatewayState:
    def __init__(
        self,
        runtime: Any,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        extend_interval: float | None = None,
        mock: MockUpstream | None = None,
        force_mock: bool = False,
    ) -> None:
        self.runtime = runtime
        self.force_mock = force_mock
        self.forwarder = Forwarder()
        self.mock = mock or MockUpstream()
        self.metrics = GatewayMetrics(runtime)
        self.max_body_bytes = max_body_bytes
        settings = getattr(runtime, "settings", None)
        ttl = float(getattr(settings, "reservation_ttl_seconds", 600) or 600)
        self.extend_seconds = ttl
        # extend well before expiry so one missed tick cannot lose the reservation
        self.extend_interval = extend_interval if extend_interval is not None else ttl / 3
        # SQLite serialises writes anyway and its calls take ~0.3 ms: run them inline rather
        # than paying a thread hop each; PostgreSQL waits on the network, so use threads.
        self.inline_ledger = bool(getattr(settings, "is_sqlite", False))
        self.streams: set[SettlingStream] = set()
        self.pending: set[asyncio.Task[Any]] = set()
        self.settle_retry_delays: tuple[float, ...] = SETTLE_RETRY_DELAYS
        self._stopping = asyncio.Event()
        # settles waiting for the next turn of the event loop, committed together
        self._settle_queue: list[tuple[str, Usage, Outcome, asyncio.Future[UsageEvent]]] = []

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` to completion even if the request that started it is cancelled."""
        task = asyncio.get_running_loop().create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        return task

    async def admit(self, intent: CallIntent) -> Admission:
        if self.inline_ledger:
            admission: Admission = self.runtime.admit(intent)
        else:
            admission = await self.runtime.admit_async(intent)
        return admission

    async def settle(self, call: Call, usage: Usage, outcome: Outcome, *, status: int) -> UsageEvent | None:
        """Settle ``call``; a ledger failure never reaches the response.

        A failed settlement is retried in the background (settle is idempotent) while the
        reservation still holds the call's worst case; at shutdown, once more at once.
        """
        try:
            event = await self._settle_once(call, usage, outcome)
        except Exception:
            log.warning("settle failed for %s; retrying in the background", call.request_id, exc_info=True)
            self.metrics.settle_failures.inc()
            self.spawn(self._settle_later(call, usage, outcome, status))
            return None
        self.log_call(call, status, outcome, usage, event)
        return event

    async def _settle_once(self, call: Call, usage: Usage, outcome: Outcome) -> UsageEvent:
        event: UsageEvent
        if self.inline_ledger:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[UsageEvent] = loop.create_future()
            if not self._settle_queue:
                loop.call_soon(self._commit_settles)
            self._settle_queue.append((call.request_id, usage, outcome, future))
            event = await future
        else:
            event = await self.runtime.settle_async(call.request_id, usage, outcome)
        return event

    def _commit_settles(self) -> None:
        """Every settle queued during this turn of the event loop, in one SQLite transaction.

        Settles run after their answers were sent, so none waits on another's commit; under
        load, one commit then carries many events (the pages they share are written once).
        Each settle still runs in its own savepoint: one that fails fails alone. If the
        commit itself fails, every settle in it fails and is retried like any other.
        """
        queue, self._settle_queue = self._settle_queue, []
        if len(queue) == 1:
            request_id, usage, outcome, future = queue[0]
            try:
                _resolve(future, self.runtime.settle(request_id, usage, outcome))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting settle
                _resolve(future, exc)
            return
        results: list[UsageEvent | BaseException] = []
        try:
            with self.runtime.batch():
                for request_id, usage, outcome, _ in queue:
                    try:
                        results.append(self.runtime.settle(request_id, usage, outcome))
                    except Exception as exc:  # noqa: BLE001 - rolled back alone
                        results.append(exc)
        except Exception as exc:  # noqa: BLE001 - the commit failed: nothing was settled
            for *_, future in queue:
                _resolve(future, exc)
            return
        for (*_, future), result in zip(queue, results, strict=True):
            _resolve(future, result)

    async def _settle_later(self, call: Call, usage: Usage, outcome: Outcome, status: int) -> None:
        settled: list[UsageEvent] = []

        async def attempt() -> bool:
            try:
                settled.append(await self._settle_once(call, usage, outcome))
            except NotFound:
                return True  # the ledger has no such reservation: nothing to charge it to
            except Exception:
                self.metrics.settle_failures.inc()
                return False
            return True

        if await retry_settle(attempt, self.settle_retry_delays, stopping=self._stopping):
            if settled:
                log.info("settled %s after a retry", call.request_id)
                self.log_call(call, status, outcome, usage, settled[0])
            return
        self.metrics.settles_abandoned.inc()
        reason = "gateway shutting down" if self._stopping.is_set() else "settle retries exhausted"
        await asyncio.to_thread(spool, self.runtime, [PendingSettle(call.request_id, usage, outcome)], reason)

    def log_call(
        self,
        call: Call,
        status: int,
        outcome: Outcome,
        usage: Usage | None,
        event: UsageEvent | None,
    ) -> None:
        elapsed = time.perf_counter() - call.started
        self.metrics.count_request(call.route, status, outcome.value)
        if log.isEnabledFor(logging.INFO):
            record: dict[str, Any] = {
                "request_id": call.request_id,
                "route": call.route,
                "provider": call.provider,
                "model": call.model,
                "status": status,
                "outcome": outcome.value,
                "ms": round(elapsed * 1000, 3),
            }
            if usage is not None:
                record["input_tokens"] = usage.input_tokens
                record["cache_read_tokens"] = usage.cache_read_tokens
                record["output_tokens"] = usage.output_tokens
                record["estimated"] = usage.estimated
            if event is not None:
                record["cost_usd"] = usd_string(event.cost_nanos)
            log.info("call", extra={"fields": record})

    async def shutdown(self) -> None:
        """End live streams (charging what they delivered) and wait for every settlement."""
        self._stopping.set()
        for stream in list(self.streams):
            stream.stop_for_shutdown()
        for _ in range(100):
            if not self.pending and not self.streams:
                break
            await asyncio.sleep(0.01)
        if self.pending:
            await asyncio.gather(*list(self.pending), return_exceptions=True)
        await self.forwarder.close()
