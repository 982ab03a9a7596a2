"""The ``CustomLogger`` LiteLLM calls: admit in ``async_pre_call_hook``, settle from the log events.

Every hook is declared on this class itself: LiteLLM skips hooks a subclass merely inherits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import sys
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from allotment.errors import AllotmentError, Denied, LedgerUnavailable
from allotment.runtime import SETTLE_RETRY_DELAYS, Runtime
from allotment.settle_spool import PendingSettle, attempt_settle, retry_settle, settle_or_spool, spool
from allotment.types import CallIntent, Principal
from allotment_litellm import reconcile
from allotment_litellm.errors import refusal
from allotment_litellm.identity import IdentityMapper
from allotment_litellm.intents import MAX_TOKEN_KEYS, ModelResolver, build_intent
from allotment_litellm.runtime_holder import RuntimeHolder

log = logging.getLogger("allotment.litellm")

GRACE_ENV = "ALLOTMENT_LITELLM_SETTLE_GRACE_SECONDS"
DEFAULT_GRACE_SECONDS = 60
# LiteLLM call types that spend tokens and go through admission; MCP tool calls do not
ADMITTED_CALL_TYPES = frozenset(
    {
        "completion",
        "acompletion",
        "text_completion",
        "atext_completion",
        "embeddings",
        "aembedding",
        "responses",
        "aresponses",
        "anthropic_messages",
    }
)
PASSED_CALL_TYPE_PREFIXES = ("mcp", "call_mcp_tool", "list_mcp_tools")
HOOKS = (
    "async_pre_call_hook",
    "async_post_call_failure_hook",
    "async_post_call_streaming_iterator_hook",
    "async_log_success_event",
    "async_log_failure_event",
)
_MEMORY = 100_000


def _callback_time_limit() -> float:
    """How long LiteLLM lets one log callback run before it cancels it (20 s by default)."""
    try:
        from litellm.constants import LOGGING_WORKER_MAX_TIME_PER_COROUTINE
    except ImportError:  # pragma: no cover - older or newer LiteLLM
        return 20.0
    return float(LOGGING_WORKER_MAX_TIME_PER_COROUTINE)


def _dearest_allowed(
    rt: Runtime, principal: Principal, intent: CallIntent, deployments: tuple[tuple[str, str], ...]
) -> CallIntent:
    """For a model group the router will load-balance after admission: refuse it unless the
    caller may use every deployment in it (any of them may answer), and reserve for the
    dearest, so the hold covers whichever one serves. Settle then prices the one that did."""
    if principal.kind == "inactive":
        return intent  # admit refuses it (401) before any policy
    labelled = intent.with_changes(labels=rt.merge_labels(principal, intent.labels))
    dearest, most = intent, -1
    for provider, model in deployments:
        candidate = labelled.with_changes(provider=provider, model=model)
        decision = rt.hooks.check_policy(principal, candidate)
        if decision is not None:
            raise Denied(decision.status, decision.code, decision.message, decision.details)
        amount = rt.worst_case(candidate).amount_nanos
        if amount > most:
            dearest, most = intent.with_changes(provider=provider, model=model), amount
    return dearest


@dataclass(frozen=True, slots=True)
class _Call:
    provider: str
    model: str
    at: datetime
    mode: str
    deployments: tuple[tuple[str, str], ...] = ()  # a load-balanced group's, as admitted


class AllotmentLogger(CustomLogger):
    """Hard budgets for the LiteLLM proxy: reserve before the call, settle from the log events."""

    def __init__(self, runtime: Runtime | None = None, *, settle_grace_seconds: int | None = None) -> None:
        super().__init__()
        self.holder = RuntimeHolder(runtime)
        self.settle_grace_seconds = settle_grace_seconds or int(
            os.environ.get(GRACE_ENV, DEFAULT_GRACE_SECONDS)
        )
        self._identity: IdentityMapper | None = None
        self._resolver: ModelResolver | None = None
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._denied: OrderedDict[str, None] = OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()
        # LiteLLM delivers a call's log event once: a settle dropped on a locked ledger is lost
        self.settle_retry_delays: tuple[float, ...] = SETTLE_RETRY_DELAYS
        # a log callback waits this long for its first settle attempt; the attempt and its
        # retries run in a task of their own, which LiteLLM's time limit cannot cancel
        self.settle_wait_seconds = _callback_time_limit() / 2
        # settles waiting for a retry, by call id: flushed (one last attempt, else the spool)
        # when the proxy's event loop is torn down, so a shutdown loses none of them
        self._pending: dict[str, PendingSettle] = {}
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        _LOGGERS.add(self)
        _hook_proxy_shutdown()

    # -- admission ---------------------------------------------------------------------
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        kind = str(getattr(call_type, "value", call_type) or "")
        call_id = data.get("litellm_call_id")
        if self._serving_loop is None:
            self._serving_loop = asyncio.get_running_loop()  # the proxy's; settles happen on it
        if kind.startswith(PASSED_CALL_TYPE_PREFIXES):
            return None
        if kind not in ADMITTED_CALL_TYPES:
            self._remember(self._denied, call_id, None)
            raise refusal(
                Denied(400, "unsupported_endpoint", f"allotment cannot budget LiteLLM call type {kind!r}"),
                call_id,
            )
        try:
            rt = await self.holder.get_async()
            max_tokens = await asyncio.to_thread(self._admit, rt, user_api_key_dict, data)
        except AllotmentError as exc:
            self._remember(self._denied, call_id, None)
            raise refusal(exc, call_id) from None
        except Exception as exc:  # fail closed: an unbudgeted call must not reach the provider
            log.exception("allotment: admission failed for %s", call_id)
            self._remember(self._denied, call_id, None)
            raise refusal(LedgerUnavailable(f"allotment could not admit the call: {exc}"), call_id) from None
        if max_tokens is not None:
            # the same field the client used, so the provider sees one limit
            field = next((k for k in MAX_TOKEN_KEYS if data.get(k) is not None), "max_tokens")
            data[field] = max_tokens
        return data

    def _admit(self, rt: Runtime, user_api_key_dict: Any, data: dict[str, Any]) -> int | None:
        if self._identity is None:
            self._identity = IdentityMapper(rt)
            self._resolver = ModelResolver(rt)
        assert self._resolver is not None
        principal = self._identity.principal(user_api_key_dict, data)
        intent = build_intent(data, principal, self._resolver, user_api_key_dict)
        intent = intent.with_changes(at=datetime.now(UTC))
        deployments = self._resolver.resolve_all(str(data.get("model")))
        if len(deployments) > 1:
            intent = _dearest_allowed(rt, principal, intent, deployments)
        admission = rt.admit(intent)
        assert intent.at is not None
        self._remember(
            self._calls,
            intent.request_id,
            _Call(intent.provider, intent.model, intent.at, intent.endpoint_mode.value, deployments),
        )
        clamped = admission.max_output_tokens
        if (
            clamped is not None
            and intent.max_output_tokens is not None
            and clamped < intent.max_output_tokens
        ):
            return clamped  # opt-in clamping shrank the request to what the budget pays for
        return None

    # -- streams -----------------------------------------------------------------------
    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        call_id = request_data.get("litellm_call_id")
        rt = self.holder.opened
        interval = (rt.reservation_ttl_seconds / 3) if rt is not None else None
        last = time.monotonic()
        async for item in response:
            yield item
            if interval is not None and isinstance(call_id, str):
                now = time.monotonic()
                if now - last > interval:
                    # a long stream keeps its hold: the TTL only catches callers that vanished
                    last = now
                    self._spawn(self._extend(call_id, None))

    # -- settlement ----------------------------------------------------------------------
    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            settlement = reconcile.success(kwargs, response_obj)
        except Exception:
            log.exception("allotment: unreadable LiteLLM success event; the hold will expire")
            return
        if settlement is not None:
            await self._settle(settlement)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            settlement = reconcile.failure(kwargs, response_obj)
        except Exception:
            log.exception("allotment: unreadable LiteLLM failure event; the hold will expire")
            return
        if settlement is not None:
            await self._settle(settlement)

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> Any:
        # The failure log event (queued, best effort) settles the call; if it never comes,
        # the hold expires after a short grace instead of the full TTL.
        call_id = request_data.get("litellm_call_id")
        if isinstance(call_id, str) and call_id in self._calls:
            self._spawn(self._extend(call_id, self.settle_grace_seconds))
        return None

    async def _settle(self, settlement: reconcile.Settlement) -> None:
        if settlement.call_id in self._denied:
            return  # refused at admission: nothing was reserved
        rt = self.holder.opened
        if rt is None:
            return  # this process never opened its runtime, so it admitted nothing
        flags = list(settlement.flags)
        call = self._calls.pop(settlement.call_id, None)
        served_by = None
        if call is not None:
            served_by = self._served_by(call, settlement)
            if served_by is not None:
                call = replace(call, provider=served_by[0], model=served_by[1])
            flags.extend(self._cost_flags(rt, call, settlement))
        pending = PendingSettle(
            settlement.call_id,
            settlement.usage,
            settlement.outcome,
            tuple(flags),
            settlement.external_cost_nanos,
            served_by,
        )
        loop = asyncio.get_running_loop()
        if self._serving_loop is None:
            self._serving_loop = loop
        elif loop is not self._serving_loop:
            # LiteLLM's exit flush runs queued log events in a loop it closes right after: no
            # task of ours would survive there, so one attempt now, else the spool
            await asyncio.to_thread(settle_or_spool, rt, [pending], "LiteLLM proxy exiting")
            return
        attempted = asyncio.Event()
        self._spawn(self._settle_until_done(rt, pending, attempted))
        # LiteLLM awaits its callbacks (also when it flushes them at exit): wait for the first
        # attempt, usually a millisecond, but leave a locked ledger's retries to the task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attempted.wait(), self.settle_wait_seconds)

    async def _settle_until_done(self, rt: Runtime, pending: PendingSettle, attempted: asyncio.Event) -> None:
        """Settle now; if the ledger refused (locked, unreachable), retry after each delay.

        Settle is idempotent, so a retry never charges twice. An enforced call's hold keeps
        its worst case meanwhile; a call let through unenforced (``fail_open``) is recorded
        from the admission this process kept. When every attempt failed, or the proxy stops
        first, the settle goes to the spool for ``allotment settles replay``: never dropped.
        """
        try:
            done = await self._settle_once(rt, pending)
        finally:
            attempted.set()
        if done:
            return
        log.warning("allotment: the ledger refused the settlement of %s; retrying it", pending.request_id)
        self._pending[pending.request_id] = pending
        try:
            done = await retry_settle(lambda: self._settle_once(rt, pending), self.settle_retry_delays)
        except asyncio.CancelledError:
            # the proxy has shut down and its event loop is cancelling what is left: flush
            # every pending settle now (blocking is fine: nothing is served any more)
            self.flush_pending("LiteLLM proxy shut down")
            raise
        if self._pending.pop(pending.request_id, None) is None:
            return  # flushed meanwhile
        if done:
            log.warning("allotment: settled %s after a retry", pending.request_id)
            return
        await asyncio.to_thread(spool, rt, [pending], "allotment: settle retries exhausted")

    async def _settle_once(self, rt: Runtime, pending: PendingSettle) -> bool:
        """One attempt: True once there is nothing left to do, False if a retry may succeed."""
        return await asyncio.to_thread(attempt_settle, rt, pending)

    def flush_pending(self, reason: str) -> list[str]:
        """Every settle waiting for a retry: one last attempt each, the spool for those the
        ledger still refuses (their request ids are returned). For shutdown; blocks."""
        rt = self.holder.opened
        pending, self._pending = list(self._pending.values()), {}
        if rt is None or not pending:
            return []
        log.warning("allotment: %s with %d settle(s) pending; a last attempt each", reason, len(pending))
        return settle_or_spool(rt, pending, reason)

    def _served_by(self, call: _Call, settlement: reconcile.Settlement) -> tuple[str, str] | None:
        """Which deployment of a load-balanced group answered, if it is one the group admitted."""
        if len(call.deployments) < 2 or settlement.deployment is None or self._resolver is None:
            return None
        try:
            served = self._resolver.deployment(settlement.deployment)
        except AllotmentError:
            return None
        return served if served in call.deployments else None

    @staticmethod
    def _cost_flags(rt: Runtime, call: _Call, settlement: reconcile.Settlement) -> list[str]:
        if settlement.external_cost_nanos is None:
            return [reconcile.UNPRICED_FLAG] if settlement.usage.total_tokens else []
        try:
            ours = rt.hooks.price(call.provider, call.model, settlement.usage, call.at, call.mode)
        except Exception:
            ours = None
        if ours is not None and reconcile.diverges(ours.amount_nanos, settlement.external_cost_nanos):
            return [reconcile.DIVERGENCE_FLAG]
        return []

    async def _extend(self, call_id: str, seconds: int | None) -> None:
        rt = self.holder.opened
        if rt is None:
            return
        try:
            await rt.extend_async(call_id, seconds)
        except Exception:
            log.exception("allotment: extending the hold of %s failed", call_id)

    # -- helpers -------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    def _remember(store: OrderedDict[str, Any], key: object, value: Any) -> None:
        if not isinstance(key, str):
            return
        store[key] = value
        while len(store) > _MEMORY:
            store.popitem(last=False)


_LOGGERS: weakref.WeakSet[AllotmentLogger] = weakref.WeakSet()


async def _flush_loggers(reason: str) -> None:
    for logger in list(_LOGGERS):
        if logger._pending:
            await asyncio.to_thread(logger.flush_pending, reason)


def _hook_proxy_shutdown() -> None:
    """Flush pending settles in the LiteLLM proxy's own shutdown (its FastAPI lifespan awaits
    ``proxy_shutdown_event`` once the in-flight requests have drained).

    There is no later point: uvicorn re-raises the SIGTERM it caught as soon as the lifespan
    is done, which ends the process without cancelling tasks or running ``atexit``. Outside the
    proxy (the SDK alone) the server module is not loaded and nothing is hooked.
    """
    server = sys.modules.get("litellm.proxy.proxy_server")
    original = getattr(server, "proxy_shutdown_event", None)
    if original is None or getattr(original, "allotment_flushes", False):
        return

    async def proxy_shutdown_event(*args: Any, **kwargs: Any) -> Any:
        try:
            await _flush_loggers("LiteLLM proxy shutting down")
        except Exception:  # the proxy's own shutdown must go on; what failed was logged
            log.exception("allotment: flushing pending settles at shutdown failed")
        return await original(*args, **kwargs)

    proxy_shutdown_event.allotment_flushes = True  # type: ignore[attr-defined]
    server.proxy_shutdown_event = proxy_shutdown_event  # type: ignore[union-attr]


@atexit.register
def _flush_at_exit() -> None:
    """The last resort: settles still pending when the interpreter exits without its event
    loop having cancelled their retries (a loop closed, not shut down)."""
    for logger in list(_LOGGERS):
        try:
            logger.flush_pending("process exiting")
        except Exception:  # noqa: BLE001 - exit must go on; what failed was logged
            log.exception("allotment: flushing pending settles at exit failed")


def check_hooks_declared(cls: type) -> None:
    """Fail loudly at import if a hook we rely on is only inherited (LiteLLM would skip it)."""
    missing = [name for name in HOOKS if name not in vars(cls)]
    if missing:
        raise RuntimeError(f"{cls.__name__} must declare {missing} itself; LiteLLM skips inherited hooks")


check_hooks_declared(AllotmentLogger)
