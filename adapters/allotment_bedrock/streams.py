"""Governed event streams: settle when the usage event arrives, or as cancelled when abandoned.

``ConverseStream`` reports usage in its last ``metadata`` event, InvokeModelWithResponseStream
in the last chunk's ``amazon-bedrock-invocationMetrics``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from allotment.errors import AllotmentError
from allotment.types import Outcome, Usage, UsageEvent
from allotment.usage_parsers import from_bedrock_converse, from_bedrock_invocation_log
from allotment_bedrock.estimate import tokens_from_bytes

log = logging.getLogger("allotment.bedrock")

_TEXT_KEYS = frozenset({"text", "generation", "outputText", "completion", "partial_json", "thinking"})


@dataclass
class CallState:
    """What the handlers remember about one governed call between admit and settle."""

    request_id: str
    operation: str
    model_id: str
    input_bound: int
    max_output: int | None
    metadata: dict[str, str]


def converse_total_flags(usage: dict[str, Any]) -> tuple[str, ...]:
    """Flag usage whose ``totalTokens`` disagrees with its parts (a known streaming anomaly)."""
    total = usage.get("totalTokens")
    if not isinstance(total, int):
        return ()
    parts = sum(
        v
        for k in ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")
        if isinstance(v := usage.get(k), int)
    )
    return () if parts == total else ("usage_total_mismatch",)


class Settlement:
    """Settles one call exactly once, from whichever thread or finaliser gets there first."""

    def __init__(self, runtime: Any, call: CallState) -> None:
        self.runtime = runtime
        self.call = call
        self.delivered_bytes = 0
        self.event: UsageEvent | None = None
        self._done = False
        self._lock = threading.Lock()
        self._last_extend = time.monotonic()

    @property
    def done(self) -> bool:
        return self._done

    def settle(self, usage: Usage, outcome: Outcome, flags: tuple[str, ...] = ()) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        try:
            self.event = self.runtime.settle(self.call.request_id, usage, outcome, flags=flags)
        except Exception:  # the caller's stream must not break; the hold expires by its TTL
            log.exception("could not settle Bedrock request %s", self.call.request_id)

    def estimated(self) -> Usage:
        """What was probably used when AWS never said: the input, and the output delivered."""
        return Usage(
            input_tokens=tokens_from_bytes(self.call.input_bound),
            output_tokens=tokens_from_bytes(self.delivered_bytes),
            estimated=True,
        )

    def abandon(self) -> None:
        """The caller stopped reading before the usage arrived: charge what was delivered."""
        if not self._done:
            self.settle(self.estimated(), Outcome.CANCELLED, ("stream_abandoned",))

    def keep_alive(self) -> None:
        ttl = self.runtime.reservation_ttl_seconds
        if time.monotonic() - self._last_extend > ttl / 2:
            self._last_extend = time.monotonic()
            try:
                self.runtime.extend(self.call.request_id)
            except Exception:
                log.exception("could not extend Bedrock request %s", self.call.request_id)


class Watcher(Protocol):
    def observe(self, event: dict[str, Any], settlement: Settlement) -> tuple[Usage, tuple[str, ...]] | None:
        """The usage (and flags) if ``event`` reports it; otherwise count delivered output."""


def _text_bytes(value: Any) -> int:
    if isinstance(value, dict):
        return sum(
            len(item.encode("utf-8")) if key in _TEXT_KEYS and isinstance(item, str) else _text_bytes(item)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return sum(_text_bytes(item) for item in value)
    return 0


class ConverseWatcher:
    def observe(self, event: dict[str, Any], settlement: Settlement) -> tuple[Usage, tuple[str, ...]] | None:
        metadata = event.get("metadata")
        if isinstance(metadata, dict) and metadata.get("usage") is not None:
            usage = metadata["usage"]
            served = metadata.get("serviceTier")  # priced at that tier (see allotment.service_tiers)
            return from_bedrock_converse(usage, service_tier=served), converse_total_flags(usage)
        delta = event.get("contentBlockDelta")
        if isinstance(delta, dict):
            settlement.delivered_bytes += _text_bytes(delta.get("delta"))
        return None


class InvokeWatcher:
    def __init__(self, service_tier: Any = None) -> None:
        self.service_tier = service_tier  # the response's X-Amzn-Bedrock-Service-Tier

    def observe(self, event: dict[str, Any], settlement: Settlement) -> tuple[Usage, tuple[str, ...]] | None:
        chunk = event.get("chunk")
        raw = chunk.get("bytes") if isinstance(chunk, dict) else None
        if not raw:
            return None
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        metrics = payload.get("amazon-bedrock-invocationMetrics")
        if isinstance(metrics, dict):
            inp = {
                k: metrics.get(k)
                for k in ("inputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount")
            }
            usage = from_bedrock_invocation_log(
                {"input": inp, "output": {"outputTokenCount": metrics.get("outputTokenCount")}},
                service_tier=self.service_tier,
            )
            return usage, ()
        settlement.delivered_bytes += _text_bytes(payload)
        return None


class GovernedStream:
    """Wraps botocore's ``EventStream``: same iteration, plus exactly one settlement.

    Usage event seen -> success; the stream fails -> error (estimated); the caller closes it,
    leaves its ``with`` block or drops it unread -> cancelled, charging what was delivered.
    """

    def __init__(self, inner: Any, settlement: Settlement, watcher: Watcher) -> None:
        self._inner = inner
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._settlement = settlement
        self._watcher = watcher
        self._finalizer = weakref.finalize(self, settlement.abandon)
        self._finalizer.atexit = False  # at exit the runtime may be closed; the hold expires

    @property
    def request_id(self) -> str:
        return self._settlement.call.request_id

    @property
    def usage_event(self) -> UsageEvent | None:
        """The settled event, once the stream has been settled."""
        return self._settlement.event

    def __iter__(self) -> GovernedStream:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._iterator is None:
            self._iterator = iter(self._inner)
        try:
            event = next(self._iterator)
        except StopIteration:
            self._settlement.settle(self._settlement.estimated(), Outcome.SUCCESS, ("usage_missing",))
            raise
        except Exception:  # a modelled stream exception or a broken connection
            self._settlement.settle(self._settlement.estimated(), Outcome.ERROR, ("stream_error",))
            raise
        if not self._settlement.done:
            try:
                found = self._watcher.observe(event, self._settlement)
            except AllotmentError:
                log.exception("unreadable usage in Bedrock request %s", self.request_id)
                found = (self._settlement.estimated(), ("usage_unreadable",))
            if found is not None:
                self._settlement.settle(found[0], Outcome.SUCCESS, found[1])
            else:
                self._settlement.keep_alive()
        return event

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if callable(close):
                close()
        finally:
            self._settlement.abandon()

    def __enter__(self) -> GovernedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        # get_initial_response() and anything else botocore's EventStream offers
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)
