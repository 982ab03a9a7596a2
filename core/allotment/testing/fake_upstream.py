"""A fake LLM provider (OpenAI and Anthropic wire shapes) on 127.0.0.1 for tests and benchmarks.

It speaks the providers' real JSON and SSE formats, including their usage blocks, and can be
scripted to fail the way real providers fail (429 with retry-after, 500, stalls, dropped streams).

Usage::

    from allotment.testing.fake_upstream import FakeUpstream, Script, FakeUsage

    with FakeUpstream() as fake:                      # starts a server thread on a free port
        fake.enqueue(Script(status=429))              # the next request gets OpenAI's real 429
        fake.default = Script(usage=FakeUsage(input_tokens=11, output_tokens=5))
        fake.enqueue(Script(service_tier="priority"))   # answers as served on priority
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test")
        ...
        assert fake.requests[-1].json["model"] == "gpt-4o"

Routes: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/messages``.
Scripts are consumed first-in first-out; when the queue is empty ``default`` answers.
``Script.match`` restricts a queued script to requests whose path contains that text.

Service tiers: the fake reports the tier it served on in each provider's own field (OpenAI: the
response's and every chunk's top-level ``service_tier``; Anthropic: ``usage.service_tier``). It
serves the tier the request body asks for (``"priority"``, ``"flex"``; ``"auto"`` or none is the
provider's standard, ``"default"``/``"standard"``) unless ``Script.service_tier`` says otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeUpstream", "FakeUsage", "ReceivedRequest", "Script"]


@dataclass(frozen=True)
class FakeUsage:
    """Usage the fake reports, in normalized classes; rendered in each provider's own shape.

    OpenAI: ``prompt_tokens = input + cache_read + cache_write`` with
    ``prompt_tokens_details.cached_tokens = cache_read``; Anthropic: ``input_tokens = input``,
    ``cache_read_input_tokens``, ``cache_creation_input_tokens`` (5 min + 1 h) separately.
    """

    input_tokens: int = 12
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 6
    reasoning_tokens: int = 0


@dataclass
class Script:
    """How the fake answers one request.

    :param status: HTTP status; non-2xx sends the provider's real error body for that status.
    :param retry_after: seconds for the ``retry-after`` header (429/503 default to 1).
    :param delay: seconds to wait before answering (use for timeouts).
    :param usage: the usage to report; ``None`` uses ``FakeUsage()`` defaults.
    :param text: the answer's text; streamed as one chunk per word. Defaults to
        ``output_tokens`` words ``"tok"`` separated by spaces.
    :param chunk_delay: seconds between stream chunks.
    :param fail_after_chunks: drop the connection after this many content chunks (stream).
    :param stall_after_chunks: after this many content chunks, wait ``stall_seconds``.
    :param send_usage: OpenAI streams: ``None`` honours ``stream_options.include_usage``;
        ``False`` never sends the usage chunk (a provider that omits it).
    :param match: only consume this queued script for a path containing this text.
    :param service_tier: the tier to report serving on, as the provider spells it (e.g.
        ``"priority"``, or ``"default"`` for OpenAI's standard); ``None`` serves what was asked.
    """

    status: int = 200
    retry_after: float | None = None
    delay: float = 0.0
    usage: FakeUsage | None = None
    text: str | None = None
    chunk_delay: float = 0.0
    fail_after_chunks: int | None = None
    stall_after_chunks: int | None = None
    stall_seconds: float = 30.0
    send_usage: bool | None = None
    match: str | None = None
    error_body: dict[str, Any] | None = None
    service_tier: str | None = None


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    at: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # the client (the gateway) went away before the answer finished
    query: dict[str, str] = field(default_factory=dict)  # e.g. Azure's api-version


_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for gpt-4o in organization org-fake on requests per min (RPM): "
        "Limit 500, Used 500, Requested 1. Please try again in 120ms.",
    ),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    404: ("not_found_error", "model not found"),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def openai_usage(usage: FakeUsage) -> dict[str, Any]:
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    prompt += usage.cache_write_1h_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "audio_tokens": 0,
            **(
                {"cache_write_tokens": usage.cache_write_tokens + usage.cache_write_1h_tokens}
                if usage.cache_write_tokens or usage.cache_write_1h_tokens
                else {}
            ),
        },
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_served_tier(script: Script, body: dict[str, Any]) -> str:
    """OpenAI's ``service_tier`` answer: the script's, else what was asked ("auto" -> "default")."""
    if script.service_tier is not None:
        return script.service_tier
    asked = body.get("service_tier")
    return asked if isinstance(asked, str) and asked not in ("auto", "") else "default"


def anthropic_served_tier(script: Script, body: dict[str, Any]) -> str:
    """Anthropic's ``usage.service_tier``: the script's, else "standard" (a request may only ask
    for "auto" or "standard_only"; priority capacity is a commitment the fake does not have)."""
    return script.service_tier if script.service_tier is not None else "standard"


def anthropic_usage(
    usage: FakeUsage, output_tokens: int | None = None, service_tier: str = "standard"
) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens + usage.cache_write_1h_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
        "output_tokens": usage.output_tokens if output_tokens is None else output_tokens,
        "service_tier": service_tier,
    }


def _words(script: Script, usage: FakeUsage) -> list[str]:
    if script.text is not None:
        parts = script.text.split(" ")
        return [p if i == 0 else " " + p for i, p in enumerate(parts)]
    return ["tok" if i == 0 else " tok" for i in range(usage.output_tokens)]


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class FakeUpstream:
    """An aiohttp server in a background thread; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.default = Script()
        self.requests: list[ReceivedRequest] = []
        self._queue: deque[Script] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._counter = 0

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> FakeUpstream:
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._startup())
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_post("/v1/completions", self._openai_completions)
        app.router.add_post("/v1/embeddings", self._openai_embeddings)
        app.router.add_post("/v1/messages", self._anthropic_messages)
        # Azure OpenAI: a deployment's URL, ?api-version=..., the key in an `api-key` header
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._openai_chat)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._openai_embeddings)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- scripting ---------------------------------------------------------------------
    def enqueue(self, *scripts: Script) -> None:
        """Queue scripts for the next requests (first in, first out)."""
        with self._lock:
            self._queue.extend(scripts)

    def reset(self) -> None:
        """Forget received requests and queued scripts; restore the default script."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.default = Script()

    def requests_to(self, path: str) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _next(self, path: str) -> Script:
        with self._lock:
            for index, script in enumerate(self._queue):
                if script.match is None or script.match in path:
                    del self._queue[index]
                    return script
            return self.default

    async def _receive(self, request: web.Request) -> tuple[ReceivedRequest, Any, Script]:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = ReceivedRequest(
            request.method, request.path, dict(request.headers), body, query=dict(request.query)
        )
        with self._lock:
            self.requests.append(record)
            self._counter += 1
        script = self._next(request.path)
        if script.delay:
            await asyncio.sleep(script.delay)
        return record, body, script

    def _id(self, prefix: str) -> str:
        return f"{prefix}{self._counter:06d}"

    # -- OpenAI --------------------------------------------------------------------------
    def _openai_error(self, script: Script) -> web.Response:
        kind, code, message = _OPENAI_ERRORS.get(script.status, _OPENAI_ERRORS[500])
        body = script.error_body or {"error": {"message": message, "type": kind, "param": None, "code": code}}
        headers = {"x-request-id": self._id("req_")}
        if script.status in (429, 503) or script.retry_after is not None:
            headers["retry-after"] = str(script.retry_after if script.retry_after else 1)
        return web.json_response(body, status=script.status, headers=headers)

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._openai_text(request, chat=True)

    async def _openai_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._openai_text(request, chat=False)

    async def _openai_text(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        record, body, script = await self._receive(request)
        if script.status >= 400:
            return self._openai_error(script)
        body = body if isinstance(body, dict) else {}
        usage = script.usage or FakeUsage()
        model = str(body.get("model", "gpt-4o"))
        created = int(time.time())
        rid = self._id("chatcmpl-" if chat else "cmpl-")
        obj = "chat.completion" if chat else "text_completion"
        words = _words(script, usage)
        tier = openai_served_tier(script, body)
        if not body.get("stream"):
            text = "".join(words)
            choice: dict[str, Any] = (
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
                if chat
                else {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
            )
            payload = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": openai_usage(usage),
                "service_tier": tier,
                "system_fingerprint": "fp_fake",
            }
            return web.json_response(payload, headers={"x-request-id": self._id("req_")})

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if script.send_usage is False:
            include_usage = False
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
            }
        )
        await response.prepare(request)

        def chunk(delta: dict[str, Any] | str | None, finish: str | None) -> dict[str, Any]:
            if chat:
                choice = {
                    "index": 0,
                    "delta": delta or {},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            else:
                choice = {
                    "index": 0,
                    "text": delta or "",
                    "logprobs": None,
                    "finish_reason": finish,
                }
            data: dict[str, Any] = {
                "id": rid,
                "object": chunk_obj,
                "created": created,
                "model": model,
                "service_tier": tier,
                "system_fingerprint": "fp_fake",
                "choices": [choice],
            }
            if include_usage:
                data["usage"] = None
            return data

        try:
            if chat:
                await response.write(_sse(chunk({"role": "assistant", "content": ""}, None)))
            for index, word in enumerate(words):
                if script.fail_after_chunks is not None and index >= script.fail_after_chunks:
                    await self._drop(request)
                    return response
                if script.stall_after_chunks is not None and index >= script.stall_after_chunks:
                    await asyncio.sleep(script.stall_seconds)
                    script.stall_after_chunks = None
                if script.chunk_delay:
                    await asyncio.sleep(script.chunk_delay)
                await response.write(_sse(chunk({"content": word} if chat else word, None)))
            await response.write(_sse(chunk({} if chat else "", "stop")))
            if include_usage:
                final = chunk(None, None)
                final["choices"] = []
                final["usage"] = openai_usage(usage)
                await response.write(_sse(final))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            record.cancelled = True
            raise
        return response

    async def _drop(self, request: web.Request) -> None:
        """Cut the connection mid-stream, as a provider crash or a network failure would."""
        transport = request.transport
        if transport is not None:
            transport.abort()

    async def _openai_embeddings(self, request: web.Request) -> web.Response:
        _record, body, script = await self._receive(request)
        if script.status >= 400:
            return self._openai_error(script)
        body = body if isinstance(body, dict) else {}
        usage = script.usage or FakeUsage(output_tokens=0)
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        vector = [0.125, -0.25, 0.5, 0.0625, -0.5, 0.25, 0.75, -0.125]
        b64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                if b64
                else vector,
            }
            for i in range(count)
        ]
        prompt = usage.input_tokens + usage.cache_read_tokens
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "text-embedding-3-small"),
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        )

    # -- Anthropic -----------------------------------------------------------------------
    def _anthropic_error(self, script: Script) -> web.Response:
        kind, message = _ANTHROPIC_ERRORS.get(script.status, _ANTHROPIC_ERRORS[500])
        body = script.error_body or {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": self._id("req_"),
        }
        headers = {"request-id": self._id("req_")}
        if script.status in (429, 529) or script.retry_after is not None:
            headers["retry-after"] = str(script.retry_after if script.retry_after else 1)
        return web.json_response(body, status=script.status, headers=headers)

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        record, body, script = await self._receive(request)
        if script.status >= 400:
            return self._anthropic_error(script)
        body = body if isinstance(body, dict) else {}
        usage = script.usage or FakeUsage()
        model = str(body.get("model", "claude-sonnet-4-5"))
        mid = self._id("msg_fake")
        words = _words(script, usage)
        tier = anthropic_served_tier(script, body)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": "".join(words)}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": anthropic_usage(usage, service_tier=tier),
                },
                headers={"request-id": self._id("req_")},
            )
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
            }
        )
        await response.prepare(request)
        start = {
            "type": "message_start",
            "message": {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": anthropic_usage(usage, output_tokens=1, service_tier=tier),
            },
        }
        try:
            await response.write(_sse(start, "message_start"))
            block = {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
            await response.write(_sse(block, "content_block_start"))
            await response.write(_sse({"type": "ping"}, "ping"))
            for index, word in enumerate(words):
                if script.fail_after_chunks is not None and index >= script.fail_after_chunks:
                    await self._drop(request)
                    return response
                if script.stall_after_chunks is not None and index >= script.stall_after_chunks:
                    await asyncio.sleep(script.stall_seconds)
                    script.stall_after_chunks = None
                if script.chunk_delay:
                    await asyncio.sleep(script.chunk_delay)
                delta = {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": word},
                }
                await response.write(_sse(delta, "content_block_delta"))
            await response.write(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
            final_usage = anthropic_usage(usage, service_tier=tier)
            await response.write(
                _sse(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": final_usage,
                    },
                    "message_delta",
                )
            )
            await response.write(_sse({"type": "message_stop"}, "message_stop"))
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            record.cancelled = True
            raise
        return response
