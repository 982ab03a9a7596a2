"""The offline ``mock`` upstream: answers in the provider's own shape with realistic usage.

Used by ``make run`` / ``serve --demo``. It remembers message prefixes it has seen, so a
repeated conversation prefix is reported as cached input, as real prompt caching would be.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import orjson

from allotment.gateway.forwarding import Reply
from allotment.intents import estimate_tokens, text_bytes

_TEXT = (
    "budgets keep spend predictable while teams ship features and every call is reserved "
    "priced and settled into the ledger so finance sees cost by team model and workflow"
)
_WORDS = _TEXT.split(" ")
_PREFIX_MEMORY = 4096


def _sse(data: Any, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


class MockStream:
    """A ``ByteSource`` over pre-rendered SSE events."""

    status = 200

    def __init__(self, events: list[bytes], delay: float = 0.0) -> None:
        self.headers = {"content-type": "text/event-stream; charset=utf-8"}
        self._events = events
        self._delay = delay
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self._events:
            if self._closed:
                return
            if self._delay:
                await asyncio.sleep(self._delay)
            yield event

    def close(self) -> None:
        self._closed = True


class MockUpstream:
    """Renders OpenAI chat/completions/embeddings and Anthropic messages answers offline."""

    def __init__(self, *, chunk_delay: float = 0.0) -> None:
        self.chunk_delay = chunk_delay
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._counter = 0

    # -- usage -----------------------------------------------------------------------------
    def _prefix_usage(self, body: dict[str, Any]) -> tuple[int, int]:
        """(total input tokens, cached input tokens) for this body; remembers its prefixes."""
        total = estimate_tokens(text_bytes(body)) + 3
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return total, 0
        system = orjson.dumps(body.get("system"))
        cached = 0
        digest = hashlib.blake2b(system, digest_size=16)
        prefix_bytes = len(system) if body.get("system") else 0
        for message in messages:
            encoded = orjson.dumps(message)
            digest.update(encoded)
            prefix_bytes += text_bytes({"messages": [message]})
            key = digest.digest()
            tokens = estimate_tokens(prefix_bytes)
            if key in self._seen:
                self._seen.move_to_end(key)
                cached = tokens
            else:
                self._seen[key] = tokens
                if len(self._seen) > _PREFIX_MEMORY:
                    self._seen.popitem(last=False)
        return total, min(cached, total)

    def _reply_words(self, body: dict[str, Any], model: str) -> list[str]:
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 64
        seed = sum(orjson.dumps(body.get("messages") or body.get("prompt") or "")) % 17
        count = max(1, min(int(limit), 12 + seed))
        words = [f"[mock {model}]"] + [_WORDS[(seed + i) % len(_WORDS)] for i in range(count - 1)]
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}mock{self._counter:08d}"

    # -- OpenAI ----------------------------------------------------------------------------
    def openai(self, endpoint: str, body: dict[str, Any], model: str) -> Reply | MockStream:
        if endpoint == "embeddings":
            return self._embeddings(body, model)
        chat = endpoint == "chat"
        total, cached = self._prefix_usage(body)
        words = self._reply_words(body, model)
        usage = {
            "prompt_tokens": total,
            "completion_tokens": len(words),
            "total_tokens": total + len(words),
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        rid = self._id("chatcmpl-" if chat else "cmpl-")
        created = int(time.time())
        # OpenAI says which tier served the call: the one asked for, "default" for auto or none
        asked = body.get("service_tier")
        tier = asked if isinstance(asked, str) and asked not in ("auto", "") else "default"
        if not body.get("stream"):
            text = "".join(words)
            choice = (
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                if chat
                else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            )
            data = {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
                "service_tier": tier,
            }
            return Reply(200, orjson.dumps(data), {"content-type": "application/json"}, data)
        obj = "chat.completion.chunk" if chat else "text_completion"
        base = {"id": rid, "object": obj, "created": created, "model": model, "service_tier": tier}

        def chunk(delta: Any, finish: str | None) -> bytes:
            choice = (
                {"index": 0, "delta": delta, "finish_reason": finish}
                if chat
                else {"index": 0, "text": delta, "finish_reason": finish}
            )
            return _sse({**base, "choices": [choice]})

        events = [chunk({"role": "assistant", "content": ""} if chat else "", None)]
        events += [chunk({"content": w} if chat else w, None) for w in words]
        events.append(chunk({} if chat else "", "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(_sse({**base, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        return MockStream(events, self.chunk_delay)

    def _embeddings(self, body: dict[str, Any], model: str) -> Reply:
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
        data = []
        for index, item in enumerate(items):
            seed = hashlib.blake2b(orjson.dumps(item), digest_size=8).digest()
            vector = [(b - 128) / 128 for b in seed]
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = estimate_tokens(text_bytes(body))
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Reply(200, orjson.dumps(payload), {"content-type": "application/json"}, payload)

    # -- Anthropic -------------------------------------------------------------------------
    def anthropic(self, body: dict[str, Any], model: str) -> Reply | MockStream:
        total, cached = self._prefix_usage(body)
        words = self._reply_words(body, model)
        wants_cache = b"cache_control" in orjson.dumps(body.get("messages")) + orjson.dumps(
            body.get("system")
        )
        # a cache_control breakpoint seen for the first time writes the cache instead
        write = 0 if cached or not wants_cache else max(0, total - 3 - 8)
        usage = {
            "input_tokens": total - cached - write,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": cached,
            "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0},
            "output_tokens": len(words),
            "service_tier": "standard",
        }
        mid = self._id("msg_")
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(words)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return Reply(200, orjson.dumps(message), {"content-type": "application/json"}, message)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        events = [
            _sse({"type": "message_start", "message": start}, "message_start"),
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
        ]
        for word in words:
            delta = {"type": "text_delta", "text": word}
            events.append(
                _sse(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            )
        events.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        events.append(
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(words)},
                },
                "message_delta",
            )
        )
        events.append(_sse({"type": "message_stop"}, "message_stop"))
        return MockStream(events, self.chunk_delay)
