"""Provider usage payloads -> ``allotment.types.Usage``, with each provider's cache semantics.

Fresh input never includes a cached token: each cached token is counted once, in its cache class.
Every parser takes ``service_tier``: the tier the provider reported outside the usage block
(OpenAI's top-level ``service_tier``, Bedrock's ``serviceTier.type``); a tier inside the block
(Anthropic's ``usage.service_tier``) is read by the parser itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from allotment.errors import InvalidRequest
from allotment.service_tiers import canonical_tier
from allotment.types import MAX_TOKENS_PER_FIELD, Usage

_MISSING = object()


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_usage")


def _as_mapping(data: object, what: str) -> Mapping[str, Any]:
    """Accept a mapping, or an SDK object (pydantic ``model_dump`` / ``dict()``)."""
    if isinstance(data, Mapping):
        return data
    dump = getattr(data, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dumped
    to_dict = getattr(data, "to_dict", None) or getattr(data, "dict", None)
    if callable(to_dict):
        dumped = to_dict()
        if isinstance(dumped, Mapping):
            return dumped
    raise _bad(f"{what} must be an object, got {type(data).__name__}")


def _count(data: Mapping[str, Any], key: str, what: str, *, required: bool = False) -> int:
    """A token count: an int in [0, MAX]; absent or null is 0 unless ``required``."""
    value = data.get(key, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise _bad(f"{what}: missing required field {key!r}")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{what}: {key} must be an integer, got {value!r}")
    if value < 0:
        raise _bad(f"{what}: {key} must not be negative, got {value}")
    if value > MAX_TOKENS_PER_FIELD:
        raise _bad(f"{what}: {key}={value} is beyond any model's limits ({MAX_TOKENS_PER_FIELD})")
    return value


def _sub(data: Mapping[str, Any], key: str, what: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    return _as_mapping(value, f"{what}.{key}")


def _subset(total: int, part: int, total_name: str, part_name: str, what: str) -> int:
    """``total - part`` where ``part`` is included in ``total``; a larger part is garbage."""
    if part > total:
        raise _bad(f"{what}: {part_name}={part} exceeds {total_name}={total}, which includes it")
    return total - part


def _served_tier(data: Mapping[str, Any], service_tier: object) -> str | None:
    """The reported tier (canonical): the caller's, else the block's own ``service_tier``."""
    return canonical_tier(service_tier if service_tier is not None else data.get("service_tier"))


def _split_writes(total: int, one_hour: int, five_min: int | None, what: str) -> tuple[int, int]:
    """(5-minute, 1-hour) writes from a total and its TTL breakdown; the rest is 5-minute."""
    detailed = one_hour + (five_min or 0)
    if detailed > total:
        raise _bad(f"{what}: cache write breakdown ({detailed}) exceeds the total ({total})")
    return total - one_hour, one_hour


# --- OpenAI -------------------------------------------------------------------------


def from_openai(
    usage: Mapping[str, Any] | Any, *, estimated: bool = False, service_tier: object = None
) -> Usage:
    """Chat/completions/embeddings (``prompt_tokens``) or Responses API (``input_tokens``).

    ``prompt_tokens``/``input_tokens`` include the cached tokens, so fresh = total - cached;
    ``completion_tokens``/``output_tokens`` include reasoning tokens. ``service_tier``: the
    response's top-level field ("default" is standard; "priority", "flex", "scale" ...).
    """
    data = _as_mapping(usage, "openai usage")
    what = "openai usage"
    if "prompt_tokens" in data or "input_tokens" not in data:
        prompt = _count(data, "prompt_tokens", what, required=True)
        details = _sub(data, "prompt_tokens_details", what)
        output = _count(data, "completion_tokens", what)  # embeddings have none
        out_details = _sub(data, "completion_tokens_details", what)
        cached_name = "prompt_tokens_details.cached_tokens"
        total_name = "prompt_tokens"
    else:
        prompt = _count(data, "input_tokens", what, required=True)
        details = _sub(data, "input_tokens_details", what)
        output = _count(data, "output_tokens", what)
        out_details = _sub(data, "output_tokens_details", what)
        cached_name = "input_tokens_details.cached_tokens"
        total_name = "input_tokens"
    cached = _count(details, "cached_tokens", what)
    reasoning = _count(out_details, "reasoning_tokens", what)
    _subset(output, reasoning, "output", "reasoning_tokens", what)
    return Usage(
        input_tokens=_subset(prompt, cached, total_name, cached_name, what),
        cache_read_tokens=cached,
        output_tokens=output,
        reasoning_tokens=reasoning,
        estimated=estimated,
        service_tier=_served_tier(data, service_tier),
    )


# --- Anthropic ----------------------------------------------------------------------


def from_anthropic(
    usage: Mapping[str, Any] | Any, *, estimated: bool = False, service_tier: object = None
) -> Usage:
    """Anthropic Messages ``usage``: ``input_tokens`` excludes cache reads and writes;
    ``usage.service_tier`` ("standard" | "priority" | "batch") is the tier that served it.

    ``cache_creation`` (``ephemeral_5m_input_tokens``/``ephemeral_1h_input_tokens``) splits
    the writes by TTL; writes it does not detail are 5-minute writes (the default TTL).
    """
    data = _as_mapping(usage, "anthropic usage")
    what = "anthropic usage"
    fresh = _count(data, "input_tokens", what, required=True)
    read = _count(data, "cache_read_input_tokens", what)
    breakdown = _sub(data, "cache_creation", what)
    five = _count(breakdown, "ephemeral_5m_input_tokens", what)
    hour = _count(breakdown, "ephemeral_1h_input_tokens", what)
    if data.get("cache_creation_input_tokens") is not None:
        writes = _count(data, "cache_creation_input_tokens", what)
    else:
        writes = five + hour
    write_5m, write_1h = _split_writes(writes, hour, five, what)
    server = _sub(data, "server_tool_use", what)
    return Usage(
        input_tokens=fresh,
        cache_read_tokens=read,
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=_count(data, "output_tokens", what),
        search_calls=_count(server, "web_search_requests", what),
        estimated=estimated,
        service_tier=_served_tier(data, service_tier),
    )


def merge_anthropic_stream(
    message_start_usage: Mapping[str, Any] | None, message_delta_usage: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One Anthropic usage from a stream: ``message_start`` carries the input counts and
    ``message_delta`` cumulative counts, so a non-null delta field replaces the start's.
    """
    merged: dict[str, Any] = dict(_as_mapping(message_start_usage or {}, "message_start usage"))
    for key, value in _as_mapping(message_delta_usage or {}, "message_delta usage").items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            nested = dict(merged[key])
            nested.update({k: v for k, v in value.items() if v is not None})
            merged[key] = nested
        else:
            merged[key] = value
    return merged


# --- Bedrock ------------------------------------------------------------------------


def from_bedrock_converse(
    usage: Mapping[str, Any] | Any, *, estimated: bool = False, service_tier: object = None
) -> Usage:
    """Converse/ConverseStream ``usage``: ``inputTokens`` excludes cache reads and writes;
    ``cacheDetails`` ([{ttl: "5m"|"1h", inputTokens}]) splits the writes by TTL.
    ``service_tier``: the response's ``serviceTier`` (``{"type": ...}``, or its type).
    """
    data = _as_mapping(usage, "bedrock usage")
    what = "bedrock usage"
    fresh = _count(data, "inputTokens", what, required=True)
    output = _count(data, "outputTokens", what, required=True)
    read = _count(data, "cacheReadInputTokens", what)
    hour = five = 0
    details = data.get("cacheDetails") or []
    if not isinstance(details, list):
        raise _bad(f"{what}: cacheDetails must be a list")
    for item in details:
        entry = _as_mapping(item, f"{what}.cacheDetails[]")
        ttl = entry.get("ttl")
        tokens = _count(entry, "inputTokens", f"{what}.cacheDetails[]", required=True)
        if ttl == "1h":
            hour += tokens
        elif ttl in ("5m", None):
            five += tokens
        else:
            raise _bad(f"{what}: unknown cacheDetails ttl {ttl!r}")
    if data.get("cacheWriteInputTokens") is not None:
        writes = _count(data, "cacheWriteInputTokens", what)
    else:
        writes = five + hour
    write_5m, write_1h = _split_writes(writes, hour, five, what)
    return Usage(
        input_tokens=fresh,
        cache_read_tokens=read,
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
        estimated=estimated,
        service_tier=bedrock_service_tier(service_tier),
    )


def bedrock_service_tier(value: object) -> str | None:
    """Bedrock's ``serviceTier`` (``{"type": "priority"|"default"|"flex"|"reserved"}``) or its
    type, canonical ("default" is standard)."""
    if isinstance(value, Mapping):
        value = value.get("type")
    return canonical_tier(value)


_HEADER = "x-amzn-bedrock-"


def from_bedrock_invoke_headers(
    headers: Mapping[str, Any], *, estimated: bool = False, service_tier: object = None
) -> Usage:
    """InvokeModel response headers (``x-amzn-bedrock-*-token-count``; names case-insensitive;
    the tier from ``x-amzn-bedrock-service-tier``)."""
    what = "bedrock invoke headers"
    lowered: dict[str, Any] = {}
    for key, value in _as_mapping(headers, what).items():
        if str(key).lower() == _HEADER + "service-tier" and service_tier is None:
            service_tier = value
        if not str(key).lower().endswith("-token-count"):
            continue  # the response carries other headers too (request id, content type ...)
        text = value.strip() if isinstance(value, str) else value
        if isinstance(text, str):
            if not text.isdigit():
                raise _bad(f"{what}: {key.lower()} must be a non-negative integer, got {value!r}")
            text = int(text)
        lowered[str(key).lower()] = text
    return Usage(
        input_tokens=_count(lowered, _HEADER + "input-token-count", what, required=True),
        output_tokens=_count(lowered, _HEADER + "output-token-count", what, required=True),
        cache_read_tokens=_count(lowered, _HEADER + "cache-read-input-token-count", what),
        cache_write_tokens=_count(lowered, _HEADER + "cache-write-input-token-count", what),
        estimated=estimated,
        service_tier=bedrock_service_tier(service_tier),
    )


def from_bedrock_invocation_log(
    record: Mapping[str, Any], *, estimated: bool = False, service_tier: object = None
) -> Usage:
    """A model-invocation log record: counts under ``input``/``output``; absent cache -> 0;
    the tier from ``serviceTier`` when the record carries one."""
    what = "bedrock invocation log"
    data = _as_mapping(record, what)
    if not isinstance(data.get("input"), Mapping) or not isinstance(data.get("output"), Mapping):
        raise _bad(f"{what}: missing the input and output sections")
    inp, out = data["input"], data["output"]
    return Usage(
        input_tokens=_count(inp, "inputTokenCount", f"{what}.input", required=True),
        cache_read_tokens=_count(inp, "cacheReadInputTokenCount", f"{what}.input"),
        cache_write_tokens=_count(inp, "cacheWriteInputTokenCount", f"{what}.input"),
        output_tokens=_count(out, "outputTokenCount", f"{what}.output", required=True),
        estimated=estimated,
        service_tier=bedrock_service_tier(
            service_tier if service_tier is not None else data.get("serviceTier")
        ),
    )


# --- Gemini -------------------------------------------------------------------------


def from_gemini(
    usage_metadata: Mapping[str, Any] | Any, *, estimated: bool = False, service_tier: object = None
) -> Usage:
    """Gemini ``usageMetadata``: ``promptTokenCount`` includes ``cachedContentTokenCount``;
    output = ``candidatesTokenCount`` + ``thoughtsTokenCount``; tool-use prompt tokens are input.
    """
    what = "gemini usageMetadata"
    data = _as_mapping(usage_metadata, what)
    prompt = _count(data, "promptTokenCount", what, required=True)
    cached = _count(data, "cachedContentTokenCount", what)
    thoughts = _count(data, "thoughtsTokenCount", what)
    output = _count(data, "candidatesTokenCount", what) + thoughts
    fresh = _subset(prompt, cached, "promptTokenCount", "cachedContentTokenCount", what)
    return Usage(
        input_tokens=fresh + _count(data, "toolUsePromptTokenCount", what),
        cache_read_tokens=cached,
        output_tokens=output,
        reasoning_tokens=thoughts,
        estimated=estimated,
        service_tier=canonical_tier(service_tier),
    )


# --- LiteLLM ------------------------------------------------------------------------


def _litellm_usage(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """Find the usage object in a usage dict, a response, a logging payload or its kwargs."""
    # A logging payload has top-level prompt_tokens without the cache fields: prefer usage_object.
    metadata = payload.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("usage_object") is not None:
        return _as_mapping(metadata["usage_object"], "litellm usage_object")
    slo = payload.get("standard_logging_object")
    if isinstance(slo, Mapping):
        return _litellm_usage(slo)
    if payload.get("usage") is not None:
        return _as_mapping(payload["usage"], "litellm usage")
    if "prompt_tokens" in payload:
        return payload
    raise _bad("litellm payload: no usage (expected prompt_tokens or metadata.usage_object)")


def litellm_service_tier(payload: Mapping[str, Any]) -> str | None:
    """The served tier in a LiteLLM response, usage or logging payload (canonical), or None.

    Looked for, in order: the logging payload's ``standard_logging_object``, then
    ``cost_breakdown.service_tier`` (the tier LiteLLM priced), the response's top-level
    ``service_tier``, and the usage object's own (Anthropic-style).
    """
    slo = payload.get("standard_logging_object")
    if isinstance(slo, Mapping):
        found = litellm_service_tier(slo)
        if found is not None:
            return found
    breakdown = payload.get("cost_breakdown")
    usage = payload.get("usage")
    metadata = payload.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("usage_object") is not None:
        usage = metadata["usage_object"]
    for holder, key in ((breakdown, "service_tier"), (payload, "service_tier"), (usage, "service_tier")):
        if isinstance(holder, Mapping):
            tier = canonical_tier(holder.get(key))
            if tier is not None:
                return tier
    return None


def from_litellm(
    payload_or_usage: Mapping[str, Any] | Any, *, estimated: bool = False, service_tier: object = None
) -> Usage:
    """LiteLLM's normalised usage (OpenAI-shaped) from a usage dict, response or logging payload.

    ``prompt_tokens`` includes cache reads (``prompt_tokens_details.cached_tokens`` or
    ``cache_read_input_tokens``) and, for Anthropic models, cache writes
    (``cache_creation_input_tokens``); fresh input is what remains. The served tier: the
    caller's ``service_tier``, else what ``litellm_service_tier`` finds in the payload.
    """
    what = "litellm usage"
    payload = _as_mapping(payload_or_usage, what)
    data = _litellm_usage(payload)
    tier = canonical_tier(service_tier) if service_tier is not None else litellm_service_tier(payload)
    prompt = _count(data, "prompt_tokens", what, required=True)
    output = _count(data, "completion_tokens", what)
    details = _sub(data, "prompt_tokens_details", what)
    out_details = _sub(data, "completion_tokens_details", what)
    # The top-level Anthropic fields and the details are the same tokens: take one, never both.
    if data.get("cache_read_input_tokens") is not None:
        read = _count(data, "cache_read_input_tokens", what)
    else:
        read = _count(details, "cached_tokens", what)
    if data.get("cache_creation_input_tokens") is not None:
        writes = _count(data, "cache_creation_input_tokens", what)
    else:
        writes = _count(details, "cache_creation_tokens", what)
    breakdown = _sub(details, "cache_creation_token_details", what) or _sub(data, "cache_creation", what)
    hour = _count(breakdown, "ephemeral_1h_input_tokens", what)
    five = _count(breakdown, "ephemeral_5m_input_tokens", what)
    write_5m, write_1h = _split_writes(writes, hour, five, what)
    reasoning = _count(out_details, "reasoning_tokens", what)
    _subset(output, reasoning, "completion_tokens", "reasoning_tokens", what)
    server = _sub(data, "server_tool_use", what)
    return Usage(
        input_tokens=_subset(prompt, read + writes, "prompt_tokens", "cache read + write", what),
        cache_read_tokens=read,
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
        reasoning_tokens=reasoning,
        search_calls=_count(server, "web_search_requests", what),
        estimated=estimated,
        service_tier=tier,
    )


# --- dispatcher ---------------------------------------------------------------------

PARSERS: dict[str, Callable[..., Usage]] = {
    "openai": from_openai,
    "openai_responses": from_openai,
    "azure": from_openai,
    "anthropic": from_anthropic,
    "bedrock": from_bedrock_converse,
    "bedrock_converse": from_bedrock_converse,
    "bedrock_invoke_headers": from_bedrock_invoke_headers,
    "bedrock_invocation_log": from_bedrock_invocation_log,
    "gemini": from_gemini,
    "google": from_gemini,
    "vertex_ai": from_gemini,
    "litellm": from_litellm,
}


def parse_usage(
    provider_shape: str, data: Any, *, estimated: bool = False, service_tier: object = None
) -> Usage:
    """Normalise ``data`` given its shape name (see ``PARSERS``); unknown shapes are errors.
    ``service_tier``: the tier reported outside the usage block, if any."""
    parser = PARSERS.get(provider_shape.strip().lower())
    if parser is None:
        raise _bad(f"unknown usage shape {provider_shape!r} (known: {', '.join(sorted(PARSERS))})")
    return parser(data, estimated=estimated, service_tier=service_tier)
