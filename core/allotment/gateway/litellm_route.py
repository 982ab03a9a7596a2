"""Providers without an OpenAI-compatible API (Bedrock, Vertex, Azure ...) via the litellm SDK.

Only imported when such a provider is called; answers are rendered in OpenAI's shape.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from allotment.gateway.forwarding import Reply, Target, UpstreamError


class _ChunkSource:
    status = 200

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.headers = {"content-type": "text/event-stream; charset=utf-8"}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield b"data: " + orjson.dumps(chunk.model_dump(exclude_none=True)) + b"\n\n"
        except Exception as exc:
            raise UpstreamError(f"the provider's stream broke: {exc}") from exc
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            import asyncio

            asyncio.ensure_future(closer())


async def call(target: Target, route: str, body: dict[str, Any], stream: bool) -> Reply | _ChunkSource:
    # litellm otherwise downloads its price map at import; allotment prices from its own cards
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    kwargs = dict(body)
    kwargs.update(target.extra)  # e.g. Azure's api_version; the config refuses the keys set below
    kwargs["model"] = f"{target.provider}/{body['model']}"
    if target.api_key:
        kwargs["api_key"] = target.api_key
    if target.base_url:
        kwargs["api_base"] = target.base_url
    kwargs["timeout"] = target.timeout
    functions = {
        "chat": litellm.acompletion,
        "completions": litellm.atext_completion,
        "embeddings": litellm.aembedding,
    }
    try:
        result = await functions[route](**kwargs)
    except Exception as exc:  # litellm maps provider errors to exceptions with a status
        status = getattr(exc, "status_code", None)
        if not isinstance(status, int) or status < 400:
            raise UpstreamError(f"{target.provider} call failed: {exc}") from exc
        error = {"error": {"message": str(exc), "type": type(exc).__name__, "code": None}}
        return Reply(status, orjson.dumps(error), {"content-type": "application/json"}, error)
    if stream:
        return _ChunkSource(result)
    data = result.model_dump()
    return Reply(200, orjson.dumps(data), {"content-type": "application/json"}, data)
