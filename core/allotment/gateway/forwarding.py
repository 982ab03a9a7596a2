"""Forward an admitted call to its provider over one shared pool of keep-alive connections.

OpenAI-compatible providers and Anthropic's native API are passed through byte for byte;
other providers go through the ``litellm`` SDK when it is installed; ``mock`` answers offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from allotment.errors import AllotmentError
from allotment.gateway.upstream_http import Origin, UpstreamPool, UpstreamResponse

DEFAULT_TIMEOUT_SECONDS = 600.0
ANTHROPIC_BASE = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
# Providers whose public API speaks OpenAI's wire format at this base URL.
OPENAI_COMPATIBLE_BASES = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "xai": "https://api.x.ai/v1",
    "together": "https://api.together.xyz/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
    "google": "https://generativelanguage.googleapis.com/v1beta/openai",
    "ollama": "http://127.0.0.1:11434/v1",
}
# Providers whose API is not OpenAI's even at an `api_base` of their own: they always go
# through the litellm SDK (Azure's deployment URLs and api-version, Bedrock's and Vertex's
# signed requests).
SDK_PROVIDERS = frozenset({"azure", "bedrock", "bedrock_converse", "vertex_ai", "sagemaker"})
# Response headers a client must not receive from the provider verbatim.
_DROP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "date",
        "server",
        "set-cookie",
        "alt-svc",
        "strict-transport-security",
    }
)


class UpstreamError(AllotmentError):
    """The provider could not be reached or did not answer in time (nothing was charged)."""

    status = 502
    code = "upstream_unavailable"
    type = "server_error"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one provider's calls go. ``kind``: ``openai``, ``anthropic``, ``litellm``, ``mock``."""

    provider: str
    kind: str
    base_url: str | None = None
    api_key: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    extra: Mapping[str, Any] = field(default_factory=dict)  # litellm SDK keyword arguments


@dataclass(slots=True)
class Reply:
    """A complete (non-streamed) answer, or a provider error that ended a stream request."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    data: Any = None  # the parsed JSON body, when it is JSON


class ByteSource(Protocol):
    """A streamed answer: raw SSE bytes as they arrive, and a way to abandon the upstream."""

    status: int
    headers: dict[str, str]

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


def passthrough_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names; a repeated header keeps its last value."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k.lower(): v for k, v in items if k.lower() not in _DROP_HEADERS}


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


class _StreamSource:
    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = passthrough_headers(response.headers)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response:
                yield data
        except TimeoutError as exc:
            raise UpstreamError(
                "the provider stopped sending mid-stream", code="upstream_timeout", status=504
            ) from exc
        except OSError as exc:
            raise UpstreamError(f"the provider's stream broke: {exc}") from exc

    def close(self) -> None:
        # an abandoned stream's connection is closed, never reused; a finished one is pooled
        self._response.close()


def _upstreams(runtime: Any) -> Mapping[str, Any]:
    config = getattr(runtime, "config", None)
    upstreams = getattr(config, "upstreams", None) if config is not None else None
    return upstreams or {}


def priced_model(runtime: Any, provider: str, model: str) -> str:
    """The model a call to ``model`` is priced, checked and recorded as: the model a named
    deployment serves (``upstreams.<provider>.deployments``), else ``model`` itself."""
    upstream = _upstreams(runtime).get(provider)
    deployments = getattr(upstream, "deployments", None)
    return deployments.get(model, model) if deployments else model


def with_deployments(runtime: Any, principal: Any, allowed: list[str]) -> list[str]:
    """``provider/model`` names a caller may use, where a provider with named deployments
    lists those (``azure/prod-gpt4o``) in place of the card's models they serve."""
    named = {
        provider: upstream.deployments
        for provider, upstream in _upstreams(runtime).items()
        if getattr(upstream, "deployments", None)
    }
    if not named:
        return allowed
    tier = runtime.directory.tiers.get(principal.tier or "")
    out = [name for name in allowed if name.partition("/")[0] not in named]
    if tier is not None:
        for provider, deployments in named.items():
            allowed_here = (d for d, m in deployments.items() if tier.allowlist.allows(provider, m))
            out.extend(f"{provider}/{name}" for name in allowed_here)
    return sorted(out)


def resolve_target(runtime: Any, provider: str, dialect: str) -> Target:
    """Pick the upstream for ``provider`` on a route of ``dialect`` (``openai``/``anthropic``)."""
    upstreams = _upstreams(runtime)
    mock = upstreams.get("mock")
    # the `mock` upstream answers every provider (offline demos); otherwise the provider's own
    upstream = mock if mock is not None and getattr(mock, "mock", False) else upstreams.get(provider)
    if upstream is None:
        raise UpstreamError(
            f"no upstream is configured for provider {provider!r}; add it under `upstreams`",
            code="upstream_not_configured",
        )
    timeout = float(getattr(upstream, "timeout_seconds", None) or DEFAULT_TIMEOUT_SECONDS)
    resolve = getattr(upstream, "resolved_api_key", None)
    api_key = resolve() if callable(resolve) else getattr(upstream, "api_key", None)
    api_base = getattr(upstream, "api_base", None)
    if getattr(upstream, "mock", False):
        return Target(provider, "mock", timeout=timeout)
    if provider == "anthropic":
        base = (api_base or ANTHROPIC_BASE).rstrip("/")
        base = base[: -len("/v1")] if base.endswith("/v1") else base
        if dialect == "anthropic":
            return Target(provider, "anthropic", base, api_key, timeout)
        if litellm_available():
            return Target(provider, "litellm", api_base, api_key, timeout)
        # Anthropic's OpenAI-compatible endpoint, for OpenAI clients without litellm
        return Target(provider, "openai", base + "/v1", api_key, timeout)
    if dialect == "anthropic":
        raise AllotmentError(
            f"/v1/messages serves Anthropic models; {provider!r} models use /v1/chat/completions",
            code="invalid_request",
            status=400,
        )
    base = api_base or OPENAI_COMPATIBLE_BASES.get(provider)
    if base is not None and provider not in SDK_PROVIDERS:
        return Target(provider, "openai", base.rstrip("/"), api_key, timeout)
    if litellm_available():
        resolve_extra = getattr(upstream, "resolved_extra", None)
        extra = resolve_extra() if callable(resolve_extra) else {}
        return Target(provider, "litellm", api_base, api_key, timeout, extra)
    raise UpstreamError(
        f"provider {provider!r} needs an OpenAI-compatible `api_base` or the litellm extra",
        code="upstream_not_configured",
    )


_LITELLM: bool | None = None


def litellm_available() -> bool:
    global _LITELLM
    if _LITELLM is None:
        import importlib.util

        _LITELLM = importlib.util.find_spec("litellm") is not None
    return _LITELLM


class Forwarder:
    """Owns the upstream connection pool (opened on the serving loop, closed at exit)."""

    def __init__(self, *, connection_limit: int = 512) -> None:
        self.pool = UpstreamPool(limit=connection_limit, keepalive_seconds=60.0)
        self._origins: dict[str, Origin] = {}

    async def close(self) -> None:
        self.pool.close()

    def _origin(self, base_url: str) -> Origin:
        origin = self._origins.get(base_url)
        if origin is None:
            origin = self._origins[base_url] = Origin.parse(base_url)
        return origin

    @staticmethod
    def request_headers(target: Target, client_headers: Mapping[str, str]) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if target.kind == "anthropic":
            if target.api_key:
                headers["x-api-key"] = target.api_key
            headers["anthropic-version"] = client_headers.get("anthropic-version", ANTHROPIC_VERSION)
            beta = client_headers.get("anthropic-beta")
            if beta:
                headers["anthropic-beta"] = beta
        elif target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        return headers

    async def send(
        self, target: Target, path: str, body: bytes, headers: dict[str, str], *, stream: bool
    ) -> Reply | ByteSource:
        """POST ``body`` to ``target.base_url + path``; a stream returns its open byte source.

        A complete answer must arrive within ``target.timeout``; a stream may run long, so
        the timeout bounds the silence before its headers and between its chunks instead.
        """
        timeout = target.timeout
        deadline = None if stream else asyncio.get_running_loop().time() + timeout
        response: UpstreamResponse | None = None
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.pool.post(
                    self._origin(target.base_url or ""),
                    path,
                    body,
                    headers,
                    connect_timeout=min(10.0, timeout),
                    read_timeout=timeout if stream else None,
                )
                if stream and response.status == 200:
                    return _StreamSource(response)
                raw = await response.read()
        except TimeoutError as exc:
            if response is not None:
                response.close()
            raise UpstreamError(
                f"{target.provider} did not answer within {timeout:g}s",
                code="upstream_timeout",
                status=504,
            ) from exc
        except OSError as exc:
            if response is None:
                raise UpstreamError(f"could not reach {target.provider}: {_describe(exc)}") from exc
            response.close()
            raise UpstreamError(f"{target.provider} broke the connection: {_describe(exc)}") from exc
        return Reply(response.status, raw, passthrough_headers(response.headers), parse_json(raw))


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
