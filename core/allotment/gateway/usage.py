"""Provider usage blocks → ``Usage`` through the core's parsers, never failing a response.

A usage block the parser rejects (garbage from a provider) yields ``None``: the caller then
estimates and flags the usage ``estimated`` instead of losing the settlement.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from allotment.errors import InvalidRequest
from allotment.types import Usage
from allotment.usage_parsers import from_anthropic, from_litellm, from_openai, merge_anthropic_stream

log = logging.getLogger("allotment.gateway")

__all__ = ["anthropic_usage", "merge_anthropic_stream", "openai_usage"]


def openai_usage(data: Mapping[str, Any], service_tier: object = None) -> Usage | None:
    """``service_tier``: the response's (or chunk's) top-level ``service_tier``."""
    try:
        if "cache_creation_input_tokens" in data or "cache_read_input_tokens" in data:
            # LiteLLM's OpenAI-shaped answer for Anthropic-style caching: prompt_tokens also
            # holds the cache writes, which from_openai would price as fresh input
            return from_litellm(data, service_tier=service_tier)
        return from_openai(data, service_tier=service_tier)
    except InvalidRequest as exc:
        log.warning("unusable usage from an OpenAI-compatible provider: %s", exc.message)
        return None


def anthropic_usage(data: Mapping[str, Any], *, estimated: bool = False) -> Usage | None:
    try:
        return from_anthropic(data, estimated=estimated)
    except InvalidRequest as exc:
        log.warning("unusable usage from Anthropic: %s", exc.message)
        return None
