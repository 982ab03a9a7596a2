"""A ``CallIntent`` from the request LiteLLM hands to ``async_pre_call_hook``.

The public model group is resolved to its deployment (``provider/model``) through LiteLLM's router.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from allotment.errors import Denied
from allotment.intents import extract_tags, input_upper_bound
from allotment.runtime import Runtime
from allotment.service_tiers import canonical_tier
from allotment.types import CallIntent, EndpointMode, Principal
from allotment_litellm.identity import end_user_of

# LiteLLM provider names that allotment's rate cards call something else
PROVIDER_ALIASES = {
    "gemini": "google",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "text-completion-openai": "openai",
    "bedrock_converse": "bedrock",
}
USER_AGENT_TAG = "User-Agent:"


class ModelResolver:
    """Public model name -> its deployments as (provider, model) for allotment, cached per router.

    A model group load-balanced over several deployments resolves to all of them, in the
    router's order; a name the router does not know is priced as itself.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._router_id = 0
        self._cache: dict[str, tuple[tuple[str, str], ...]] = {}
        # a deployment's ``model`` -> its ``model_info.base_model`` (provider-qualified)
        self._base_models: dict[str, str] = {}

    def resolve(self, public_name: str) -> tuple[str, str]:
        """The group's first deployment."""
        return self.resolve_all(public_name)[0]

    def resolve_all(self, public_name: str) -> tuple[tuple[str, str], ...]:
        router = _router()
        if id(router) != self._router_id:
            self._cache = {}
            self._base_models = {}
            self._router_id = id(router)
        hit = self._cache.get(public_name)
        if hit is not None:
            return hit
        resolved = self._resolve(router, public_name)
        if len(self._cache) < 10_000:
            self._cache[public_name] = resolved
        return resolved

    def _resolve(self, router: Any, public_name: str) -> tuple[tuple[str, str], ...]:
        names: list[str] = []
        if router is not None:
            try:
                deployments = router.get_model_list(model_name=public_name) or []
            except Exception:  # a router that does not know the name: price the name itself
                deployments = []
            for entry in deployments:
                params = entry.get("litellm_params") or {}
                model = params.get("model")
                if not isinstance(model, str):
                    continue
                names.append(model)
                base = (entry.get("model_info") or {}).get("base_model")
                if isinstance(base, str) and base.strip():
                    # LiteLLM's way to price an owner-named (Azure) deployment: the model it serves
                    self._base_models[model] = self._qualified(base.strip(), model)
        return tuple(dict.fromkeys(self.deployment(name) for name in names or [public_name]))

    def _qualified(self, base: str, deployment: str) -> str:
        """``base`` with the deployment's provider in front, unless it names a provider itself
        (``azure/gpt-4o`` stays; ``gpt-4o`` and ``eu/gpt-4o-mini`` of ``azure/x`` gain ``azure/``)."""
        provider, sep, _ = deployment.partition("/")
        head = base.partition("/")[0].lower()
        if not sep or head == provider.lower():
            return base
        if head in PROVIDER_ALIASES or self.runtime.rate_book.has_provider(head):
            return base
        return f"{provider}/{base}"

    def deployment(self, name: str) -> tuple[str, str]:
        """A LiteLLM deployment (``provider/model``, or a bare model) as allotment's (provider, model);
        a deployment with a ``model_info.base_model`` is priced as that model."""
        name = self._base_models.get(name, name)
        head, sep, tail = name.partition("/")
        if sep:
            provider = PROVIDER_ALIASES.get(head.lower(), head.lower())
            if self.runtime.rate_book.has_provider(provider):
                return provider, tail
            name = tail
        return self.runtime.resolve_model(name)


def _router() -> Any:
    # only a running proxy has a router; importing proxy_server elsewhere would build one
    proxy_server = sys.modules.get("litellm.proxy.proxy_server")
    return getattr(proxy_server, "llm_router", None) if proxy_server is not None else None


def _headers(data: Mapping[str, Any]) -> dict[str, str]:
    """The client's request headers (only ``X-Allotment-*`` ones are read)."""
    for holder in (data.get("proxy_server_request"), data.get("metadata")):
        headers = holder.get("headers") if isinstance(holder, Mapping) else None
        if isinstance(headers, Mapping):
            return {str(k): v for k, v in headers.items() if isinstance(v, str)}
    return {}


def _body_metadata(data: Mapping[str, Any]) -> dict[str, Any]:
    """The client's own body ``metadata`` (LiteLLM merges its fields into ``data['metadata']``)."""
    metadata = data.get("metadata")
    if not isinstance(metadata, Mapping):
        return {}
    requester = metadata.get("requester_metadata")
    out = dict(requester) if isinstance(requester, Mapping) else {}
    tags = metadata.get("tags")
    if isinstance(tags, list):
        # tags written as key=value become labels; LiteLLM's automatic User-Agent tags do not
        for tag in tags:
            if isinstance(tag, str) and "=" in tag and not tag.startswith(USER_AGENT_TAG):
                key, _, value = tag.partition("=")
                out.setdefault(key.strip(), value.strip())
    return out


MAX_TOKEN_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def _max_output(data: Mapping[str, Any]) -> int | None:
    for key in MAX_TOKEN_KEYS:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def build_intent(
    data: Mapping[str, Any], principal: Principal, resolver: ModelResolver, user_api_key_dict: Any
) -> CallIntent:
    call_id = data.get("litellm_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise Denied(400, "invalid_request", "LiteLLM passed no litellm_call_id; cannot reserve")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise Denied(400, "invalid_request", "the request names no model")
    provider, resolved = resolver.resolve(model)
    tags = extract_tags(_headers(data), {"metadata": _body_metadata(data)})
    return CallIntent(
        request_id=call_id,
        provider=provider,
        model=resolved,
        endpoint_mode=EndpointMode.STREAM if data.get("stream") else EndpointMode.SYNC,
        input_tokens=input_upper_bound(data if isinstance(data, dict) else dict(data)),
        max_output_tokens=_max_output(data),
        labels=tags.labels,
        trace_id=tags.trace_id,
        retry_of=tags.retry_of,
        end_user=end_user_of(user_api_key_dict, data),
        principal=principal,
        # the tier asked of the provider ("priority" ...): the reservation holds its price
        service_tier=canonical_tier(data.get("service_tier"), requested=True),
    )
