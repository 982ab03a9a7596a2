"""What a LiteLLM logging event says happened: call id, usage, outcome, LiteLLM's own cost.

Pure functions over the ``kwargs`` LiteLLM passes to ``async_log_success/failure_event``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from allotment.money import dollars_to_nanos
from allotment.types import Outcome, Usage
from allotment.usage_parsers import from_litellm, litellm_service_tier

DIVERGENCE_FLAG = "litellm_cost_diverges"
UNPRICED_FLAG = "litellm_unpriced"
DISCONNECT_FLAG = "client_disconnected"
CACHE_HIT_FLAG = "litellm_cache_hit"
DIVERGENCE_RATIO = Decimal("0.01")  # 1 % ...
DIVERGENCE_FLOOR_NANOS = 10  # ... or 10 nano-dollars (float rounding), whichever is larger


@dataclass(frozen=True, slots=True)
class Settlement:
    call_id: str
    usage: Usage
    outcome: Outcome
    external_cost_nanos: int | None
    flags: tuple[str, ...]
    deployment: str | None = None  # the deployment that answered (``provider/model``), if known


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def served_deployment(kwargs: Mapping[str, Any]) -> str | None:
    """The deployment LiteLLM's router sent the call to: the log's ``model``, qualified by its
    ``custom_llm_provider`` when bare (the public group name is ``model_group``)."""
    slo = _mapping(kwargs.get("standard_logging_object"))
    model = slo.get("model") or kwargs.get("model")
    if not isinstance(model, str) or not model:
        return None
    provider = slo.get("custom_llm_provider") or _mapping(kwargs.get("litellm_params")).get(
        "custom_llm_provider"
    )
    if "/" in model or not isinstance(provider, str) or not provider:
        return model
    return f"{provider}/{model}"


def call_id_of(kwargs: Mapping[str, Any]) -> str | None:
    value = kwargs.get("litellm_call_id") or _mapping(kwargs.get("standard_logging_object")).get(
        "litellm_call_id"
    )
    return value if isinstance(value, str) and value else None


def external_cost(kwargs: Mapping[str, Any]) -> int | None:
    """LiteLLM's ``response_cost`` in nano-dollars; None when it did not price the call."""
    slo = _mapping(kwargs.get("standard_logging_object"))
    value = slo.get("response_cost", kwargs.get("response_cost"))
    if value is None or isinstance(value, bool):
        return None
    try:
        # through str: the float's shortest repr, not its binary expansion
        return dollars_to_nanos(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def client_disconnected(kwargs: Mapping[str, Any]) -> bool:
    metadata = _mapping(_mapping(kwargs.get("litellm_params")).get("metadata"))
    if metadata.get("client_disconnected") is True:
        return True
    info = _mapping(_mapping(kwargs.get("standard_logging_object")).get("error_information"))
    return str(info.get("error_code")) == "499"


def served_tier(kwargs: Mapping[str, Any], response_obj: Any) -> str | None:
    """The service tier the provider served the call on (canonical), or None if nobody said.

    The provider's own answer first (the response's ``service_tier``, Anthropic's
    ``usage.service_tier``), then the tier LiteLLM priced (``cost_breakdown.service_tier``).
    """
    for source in (response_obj, kwargs.get("async_complete_streaming_response")):
        if source is None:
            continue
        try:
            found = litellm_service_tier(_as_dict(source))
        except Exception:  # not a response object we can read
            continue
        if found is not None:
            return found
    slo = kwargs.get("standard_logging_object")
    return litellm_service_tier(slo) if isinstance(slo, Mapping) else None


def _as_dict(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    dumped = dump() if callable(dump) else None
    return dumped if isinstance(dumped, Mapping) else {}


def _usage(kwargs: Mapping[str, Any], response_obj: Any, estimated: bool) -> Usage | None:
    slo = kwargs.get("standard_logging_object")
    tier = served_tier(kwargs, response_obj)
    for source in (slo, response_obj, kwargs.get("async_complete_streaming_response")):
        if source is None:
            continue
        try:
            return from_litellm(source, estimated=estimated, service_tier=tier)
        except Exception:  # this source has no usable usage: try the next one
            continue
    return None


def success(kwargs: Mapping[str, Any], response_obj: Any) -> Settlement | None:
    call_id = call_id_of(kwargs)
    if call_id is None:
        return None
    flags: list[str] = []
    disconnected = client_disconnected(kwargs)
    external = external_cost(kwargs)
    if kwargs.get("cache_hit") is True:
        # answered from LiteLLM's response cache: no provider was paid
        return Settlement(
            call_id, Usage(), Outcome.SUCCESS, external, (CACHE_HIT_FLAG,), served_deployment(kwargs)
        )
    usage = _usage(kwargs, response_obj, estimated=disconnected)
    if usage is None:
        raise ValueError(f"LiteLLM success event for {call_id} carries no usage")
    if disconnected:
        flags.append(DISCONNECT_FLAG)
    outcome = Outcome.CANCELLED if disconnected else Outcome.SUCCESS
    return Settlement(call_id, usage, outcome, external, tuple(flags), served_deployment(kwargs))


def failure(kwargs: Mapping[str, Any], response_obj: Any) -> Settlement | None:
    """A provider failure: release, or charge LiteLLM's estimate of what was streamed first."""
    call_id = call_id_of(kwargs)
    if call_id is None:
        return None
    external = external_cost(kwargs)
    usage = _usage(kwargs, response_obj, estimated=True)
    if usage is None or usage.output_tokens == 0:
        # nothing was delivered: a provider does not bill a call that produced no output
        return Settlement(call_id, Usage(), Outcome.ERROR, external, (), served_deployment(kwargs))
    return Settlement(call_id, usage, Outcome.ERROR, external, (), served_deployment(kwargs))


def diverges(ours: int, theirs: int | None) -> bool:
    if theirs is None:
        return False
    tolerance = max(DIVERGENCE_FLOOR_NANOS, int(DIVERGENCE_RATIO * abs(ours)))
    return abs(ours - theirs) > tolerance
