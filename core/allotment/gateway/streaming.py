"""SSE pass-through that settles the call when the stream ends, however it ends.

Events are forwarded one by one as they arrive. Completed → ``success`` with the provider's
usage; client gone or server shutting down → ``cancelled`` with what was delivered;
provider failure mid-stream → ``error`` with partial usage. Unreported counts are estimated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from allotment.gateway.forwarding import ByteSource, UpstreamError
from allotment.gateway.usage import anthropic_usage, merge_anthropic_stream, openai_usage
from allotment.intents import estimate_tokens
from allotment.money import usd_string
from allotment.service_tiers import canonical_tier
from allotment.types import Outcome, Usage, UsageEvent

if TYPE_CHECKING:
    from allotment.gateway.state import Call, GatewayState

log = logging.getLogger("allotment.gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _data_of(event: bytes) -> bytes | None:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip()
    return None


class Tracker:
    """Reads the events of one stream: usage reported, bytes of text delivered, how it ended."""

    def __init__(self, input_estimate: int) -> None:
        self.input_estimate = input_estimate
        self.output_bytes = 0
        self.completed = False
        self.error: dict[str, Any] | None = None

    def feed(self, event: bytes) -> bytes | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def usage(self) -> Usage:  # pragma: no cover - abstract
        raise NotImplementedError

    def _estimated(self) -> Usage:
        return Usage(
            input_tokens=self.input_estimate,
            output_tokens=estimate_tokens(self.output_bytes),
            estimated=True,
        )


class OpenAITracker(Tracker):
    """Chat/completions chunks; drops the injected usage chunk when the client did not ask."""

    def __init__(self, input_estimate: int, *, strip_usage: bool) -> None:
        super().__init__(input_estimate)
        self.strip_usage = strip_usage
        self.reported: Usage | None = None
        self.service_tier: object = None  # every chunk says which tier serves the stream

    def feed(self, event: bytes) -> bytes | None:
        data = _data_of(event)
        if data is None:
            return event
        if data == b"[DONE]":
            self.completed = True
            return event
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict):
            return event
        if "error" in chunk:
            self.error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": data}
            return event
        if chunk.get("service_tier") is not None:
            self.service_tier = chunk["service_tier"]
        choices = chunk.get("choices") or ()
        for choice in choices:
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for key in ("content", "reasoning_content", "reasoning", "refusal"):
                    text = delta.get(key)
                    if isinstance(text, str):
                        self.output_bytes += len(text.encode())
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") or {}
                    for key in ("name", "arguments"):
                        text = function.get(key)
                        if isinstance(text, str):
                            self.output_bytes += len(text.encode())
            text = choice.get("text")
            if isinstance(text, str):
                self.output_bytes += len(text.encode())
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.reported = openai_usage(usage, self.service_tier) or self.reported
            if self.strip_usage and not choices:
                return None
        return event

    def usage(self) -> Usage:
        if self.reported is not None:
            return self.reported
        estimated = self._estimated()
        if self.service_tier is None:
            return estimated
        return replace(estimated, service_tier=canonical_tier(self.service_tier))


class AnthropicTracker(Tracker):
    """Messages events: input usage from ``message_start``, cumulative output from deltas."""

    def __init__(self, input_estimate: int) -> None:
        super().__init__(input_estimate)
        self.reported: dict[str, Any] | None = None

    def feed(self, event: bytes) -> bytes | None:
        data = _data_of(event)
        if data is None:
            return event
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(message, dict):
            return event
        kind = message.get("type")
        if kind == "content_block_delta":
            delta = message.get("delta") or {}
            for key in ("text", "thinking", "partial_json"):
                text = delta.get(key)
                if isinstance(text, str):
                    self.output_bytes += len(text.encode())
        elif kind == "message_start":
            usage = (message.get("message") or {}).get("usage")
            if isinstance(usage, dict):
                self.reported = dict(usage)
        elif kind == "message_delta":
            usage = message.get("usage")
            if isinstance(usage, dict):
                self.reported = merge_anthropic_stream(self.reported, usage)
        elif kind == "message_stop":
            self.completed = True
        elif kind == "error":
            error = message.get("error")
            self.error = error if isinstance(error, dict) else {"message": str(error)}
        return event

    def usage(self) -> Usage:
        if self.reported is None:
            return self._estimated()
        usage = anthropic_usage(self.reported)
        if usage is None:
            return self._estimated()
        if self.completed:
            return usage
        # cut short: output so far is at least what was delivered
        delivered = estimate_tokens(self.output_bytes)
        if delivered > usage.output_tokens:
            cut = anthropic_usage({**self.reported, "output_tokens": delivered}, estimated=True)
            return cut or usage
        return usage


def _error_event(dialect: str, exc: UpstreamError) -> bytes:
    if dialect == "anthropic":
        body = {"type": "error", "error": {"type": "api_error", "message": exc.message}}
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
    body = {"error": {"type": exc.type, "code": exc.code, "message": exc.message}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


class SettlingStream(Response):
    """An ASGI response streaming ``source`` to the client and settling the call at its end."""

    def __init__(
        self,
        gateway: GatewayState,
        call: Call,
        source: ByteSource,
        tracker: Tracker,
        headers: dict[str, str],
    ) -> None:
        self.status_code = 200
        self.background = None
        self.gateway = gateway
        self.call = call
        self.source = source
        self.tracker = tracker
        self.init_headers(headers)
        self._pump_task: asyncio.Task[None] | None = None
        self._settle_task: asyncio.Task[UsageEvent | None] | None = None
        self._shutdown = False

    # -- lifecycle ---------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        gateway.streams.add(self)
        pump = self._pump_task = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(self._watch(receive))
        keeper = asyncio.ensure_future(self._keep_alive())
        try:
            done, _ = await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done and not pump.cancelled() and pump.exception() is not None:
                log.error("stream %s failed", self.call.request_id, exc_info=pump.exception())
            if pump not in done:  # the client went away: stop reading from the provider
                pump.cancel()
                await asyncio.wait({pump})
            elif self._shutdown:
                await self._end(send)
        except asyncio.CancelledError:  # the server is stopping this request
            pump.cancel()
            self._finish(Outcome.CANCELLED)
            # end the chunked body cleanly so the client sees a finished stream, not a reset
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._end(send), 1)
            raise
        finally:
            watcher.cancel()
            keeper.cancel()
            self.source.close()
            gateway.streams.discard(self)
            self._finish(Outcome.CANCELLED)

    def stop_for_shutdown(self) -> None:
        """Graceful shutdown: end the stream now and charge what was delivered."""
        self._shutdown = True
        if self._pump_task is not None:
            self._pump_task.cancel()

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    async def _keep_alive(self) -> None:
        runtime = self.gateway.runtime
        interval = self.gateway.extend_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await runtime.extend_async(self.call.request_id, self.gateway.extend_seconds)
            except Exception:  # the stream goes on; expiry is the worst case
                log.warning("could not extend reservation %s", self.call.request_id)

    async def _end(self, send: Send) -> None:
        with contextlib.suppress(Exception):  # the client may be gone; nothing to tell it
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- the stream ----------------------------------------------------------------------
    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        tracker = self.tracker
        failure: UpstreamError | None = None
        buffer = b""
        try:
            async for data in self.source:
                buffer += data.replace(b"\r\n", b"\n") if b"\r" in data else data
                while True:
                    end = buffer.find(b"\n\n")
                    if end < 0:
                        break
                    event, buffer = buffer[: end + 2], buffer[end + 2 :]
                    out = tracker.feed(event)
                    if out is not None:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
        except UpstreamError as exc:
            failure = exc
        except OSError:  # the client's socket failed under us
            return
        if failure is None and tracker.error is None and tracker.completed:
            price = self.gateway.runtime.quote(self.call.request_id, tracker.usage())
            settling = self._finish(Outcome.SUCCESS)  # a task: it runs when this one next waits
            if price is None:  # admitted elsewhere: settle first, the trailer says what it charged
                settled = await asyncio.shield(settling)
                cost = None if settled is None else settled.cost_nanos
            else:  # the exact price settle will charge: the last bytes go out before the ledger write
                cost = price.amount_nanos
            trailer = b"" if cost is None else b": x-allotment-cost " + usd_string(cost).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": trailer, "more_body": False})
            await asyncio.shield(settling)
            return
        if failure is None and tracker.error is None:
            failure = UpstreamError("the provider ended the stream early", code="upstream_truncated")
        await asyncio.shield(self._finish(Outcome.ERROR))
        body = _error_event(self.call.dialect, failure) if failure is not None else b""
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _finish(self, outcome: Outcome) -> asyncio.Task[UsageEvent | None]:
        """Settle once (later calls return the first settlement), outside any cancellation."""
        if self._settle_task is None:
            usage = self.tracker.usage()
            self._settle_task = self.gateway.spawn(self.gateway.settle(self.call, usage, outcome, status=200))
        return self._settle_task
