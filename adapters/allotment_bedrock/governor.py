"""``govern(client, runtime)``: allotment enforcement on a real boto3 ``bedrock-runtime`` client.

botocore event handlers admit before any request is sent, tag it, and settle from its usage.
"""

from __future__ import annotations

import io
import json
import logging
import weakref
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from allotment.errors import AllotmentError, Denied, InvalidRequest
from allotment.ids import time_ordered_id
from allotment.types import MAX_TOKENS_PER_FIELD, CallIntent, EndpointMode, Outcome, Usage
from allotment.usage_parsers import (
    bedrock_service_tier,
    from_anthropic,
    from_bedrock_converse,
    from_bedrock_invoke_headers,
)
from allotment_bedrock import metadata
from allotment_bedrock.errors import BedrockCallDenied
from allotment_bedrock.estimate import (
    body_bytes,
    converse_input_bound,
    converse_max_output,
    invoke_input_bound,
    invoke_max_output,
    tokens_from_bytes,
)
from allotment_bedrock.models import PROVIDER, model_for
from allotment_bedrock.streams import (
    CallState,
    ConverseWatcher,
    GovernedStream,
    InvokeWatcher,
    Settlement,
    converse_total_flags,
)

log = logging.getLogger("allotment.bedrock")

SERVICE = "bedrock-runtime"
CONVERSE = ("Converse", "ConverseStream")
INVOKE = ("InvokeModel", "InvokeModelWithResponseStream")
OPERATIONS = CONVERSE + INVOKE
STREAMING = ("ConverseStream", "InvokeModelWithResponseStream")
METADATA_HEADER = "X-Amzn-Bedrock-Request-Metadata"
_CONTEXT_KEY = "allotment_bedrock"
_HEADER = "x-amzn-bedrock-"

_governors: weakref.WeakKeyDictionary[Any, Governor] = weakref.WeakKeyDictionary()


def invoke_metadata_is_modelled(client: Any) -> bool:
    """botocore >= 1.43.12 models InvokeModel's metadata header as ``requestMetadata``."""
    shape = client.meta.service_model.operation_model("InvokeModel").input_shape
    return "requestMetadata" in shape.members


class Governor:
    """The handlers one governed client runs; ``govern()`` builds and installs one."""

    def __init__(
        self,
        client: Any,
        runtime: Any,
        *,
        credential: str,
        labels: Mapping[str, str] | None = None,
        inference_profiles: Mapping[str, str] | None = None,
        trace_id: str | None = None,
    ) -> None:
        service = getattr(getattr(client, "meta", None), "service_model", None)
        if service is None or service.service_name != SERVICE:
            raise InvalidRequest(f"govern() needs a boto3 {SERVICE!r} client, got {type(client).__name__}")
        if not credential:
            raise InvalidRequest("govern() needs the caller's allotment API key (credential=...)")
        self.client = client
        self.runtime = runtime
        self.credential = credential
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self.trace_id = trace_id
        configured = _plugin_settings(runtime).get("inference_profiles") or {}
        self.inference_profiles = {**configured, **(inference_profiles or {})}
        self.invoke_metadata_modelled = invoke_metadata_is_modelled(client)
        self._handlers: list[tuple[str, Any, str]] = []

    # -- installation ------------------------------------------------------------------
    def install(self) -> Governor:
        if self.client in _governors:
            raise InvalidRequest("this client is already governed; uninstall() the first governor")
        for op in OPERATIONS:
            self._on(f"provide-client-params.{SERVICE}.{op}", self._admit, op)
            self._on(f"after-call.{SERVICE}.{op}", self._after_call, op)
            self._on(f"after-call-error.{SERVICE}.{op}", self._after_error, op)
        if not self.invoke_metadata_modelled:
            for op in INVOKE:
                self._on(f"before-sign.{SERVICE}.{op}", self._sign_header, op)
        _governors[self.client] = self
        return self

    def uninstall(self) -> None:
        events = self.client.meta.events
        for event, handler, unique_id in self._handlers:
            events.unregister(event, handler, unique_id=unique_id)
        self._handlers.clear()
        _governors.pop(self.client, None)

    def _on(self, event: str, handler: Any, op: str) -> None:
        unique_id = f"allotment-{id(self)}-{event}"
        self.client.meta.events.register(event, handler, unique_id=unique_id)
        self._handlers.append((event, handler, unique_id))

    # -- before the call ---------------------------------------------------------------
    def _admit(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        op = model.name
        if self.client.meta.config.parameter_validation:
            # botocore validates after this event; a bad call must be refused before we reserve
            from botocore.validate import validate_parameters

            validate_parameters(params, model.input_shape)
        model_id = params["modelId"]
        if op in CONVERSE:
            bound, max_out = converse_input_bound(params), converse_max_output(params)
        else:
            body = body_bytes(params.get("body"))
            bound, max_out = invoke_input_bound(body), invoke_max_output(body)
        call = CallState(
            request_id=time_ordered_id("bedrock-"),
            operation=op,
            model_id=model_id,
            input_bound=min(bound, MAX_TOKENS_PER_FIELD),
            max_output=max_out,
            metadata={},
        )
        intent = CallIntent(
            request_id=call.request_id,
            provider=PROVIDER,
            model=model_for(model_id, self.inference_profiles),
            credential=self.credential,
            endpoint_mode=EndpointMode.STREAM if op in STREAMING else EndpointMode.SYNC,
            input_tokens=call.input_bound,
            max_output_tokens=max_out,
            labels=dict(self.labels),
            trace_id=self.trace_id,
            # the tier asked for (Converse: {"type": ...}; InvokeModel: a string): held at its price
            service_tier=bedrock_service_tier(params.get("serviceTier")),
        )
        try:
            admission = self.runtime.admit(intent)
        except Denied as denied:
            raise BedrockCallDenied.from_denied(denied, op, model_id) from None
        principal = admission.principal
        ours = metadata.attribution(
            call.request_id,
            principal.email or principal.person_id,
            principal.team_id,
            principal.cost_center,
            admission.labels,
        )
        if op in CONVERSE:
            call.metadata = metadata.build(ours, params.get("requestMetadata"))
            params["requestMetadata"] = call.metadata
        else:
            call.metadata = metadata.build(ours, metadata.parse_header_json(params.get("requestMetadata")))
            if self.invoke_metadata_modelled:
                params["requestMetadata"] = metadata.header_json(call.metadata)
        context[_CONTEXT_KEY] = call

    def _sign_header(self, request: Any, **_: Any) -> None:
        call = getattr(request, "context", {}).get(_CONTEXT_KEY)
        if call is not None:
            # set before signing so SigV4 covers it, as the modelled member would be
            request.headers[METADATA_HEADER] = metadata.header_json(call.metadata)

    # -- after the call ----------------------------------------------------------------
    def _after_error(self, context: dict[str, Any], **_: Any) -> None:
        call = context.pop(_CONTEXT_KEY, None)
        if call is not None:
            Settlement(self.runtime, call).settle(Usage(), Outcome.ERROR, ("provider_unreachable",))

    def _after_call(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        call = context.pop(_CONTEXT_KEY, None)
        if call is None:
            return
        settlement = Settlement(self.runtime, call)
        response_metadata = parsed.setdefault("ResponseMetadata", {})
        response_metadata["AllotmentRequestId"] = call.request_id
        if http_response.status_code >= 300:
            settlement.settle(Usage(), Outcome.ERROR, ("provider_error",))
            return
        op = model.name
        if op == "ConverseStream" and "stream" in parsed:
            parsed["stream"] = GovernedStream(parsed["stream"], settlement, ConverseWatcher())
            return
        if op == "InvokeModelWithResponseStream" and "body" in parsed:
            watcher = InvokeWatcher(_served_tier(parsed))
            parsed["body"] = GovernedStream(parsed["body"], settlement, watcher)
            return
        try:
            usage, flags = self._sync_usage(op, parsed, call)
        except AllotmentError:
            log.exception("unreadable usage in Bedrock request %s", call.request_id)
            usage = Usage(input_tokens=call.input_bound, output_tokens=call.max_output or 0, estimated=True)
            flags = ("usage_unreadable",)
        settlement.settle(usage, Outcome.SUCCESS, flags)
        if settlement.event is not None:
            response_metadata["AllotmentCostNanos"] = settlement.event.cost_nanos

    def _sync_usage(self, op: str, parsed: dict[str, Any], call: CallState) -> tuple[Usage, tuple[str, ...]]:
        served = _served_tier(parsed)
        if op == "Converse":
            usage = parsed.get("usage") or {}
            return from_bedrock_converse(usage, service_tier=served), converse_total_flags(usage)
        headers = {str(k).lower(): v for k, v in parsed["ResponseMetadata"].get("HTTPHeaders", {}).items()}
        counts = {k: v for k, v in headers.items() if k.startswith(_HEADER) and k.endswith("-count")}
        if _HEADER + "input-token-count" in counts:
            counts.setdefault(_HEADER + "output-token-count", "0")  # embeddings produce no output
            return from_bedrock_invoke_headers(counts, service_tier=served), ()
        usage = self._body_usage(parsed, call)
        if served is not None:
            usage = replace(usage, service_tier=bedrock_service_tier(served))
        return usage, ("usage_from_body",)

    def _body_usage(self, parsed: dict[str, Any], call: CallState) -> Usage:
        """No token headers (some providers): the body's own usage, else an estimate."""
        body = parsed.get("body")
        if body is None or not hasattr(body, "read"):
            return Usage(input_tokens=tokens_from_bytes(call.input_bound), estimated=True)
        from botocore.response import StreamingBody

        data = body.read()
        parsed["body"] = StreamingBody(io.BytesIO(data), len(data))  # the caller still reads it
        try:
            document = json.loads(data)
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("usage"), dict):
            return from_anthropic(document["usage"])
        return Usage(
            input_tokens=tokens_from_bytes(call.input_bound),
            output_tokens=tokens_from_bytes(len(data)),
            estimated=True,
        )


def _served_tier(parsed: dict[str, Any]) -> Any:
    """The tier AWS says served the call: Converse's ``serviceTier``, InvokeModel's modelled
    ``serviceTier`` or its ``x-amzn-bedrock-service-tier`` header; None when it did not say."""
    if parsed.get("serviceTier") is not None:
        return parsed["serviceTier"]
    headers = parsed.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return next((v for k, v in headers.items() if str(k).lower() == _HEADER + "service-tier"), None)


def govern(
    client: Any,
    runtime: Any,
    *,
    credential: str,
    labels: Mapping[str, str] | None = None,
    inference_profiles: Mapping[str, str] | None = None,
    trace_id: str | None = None,
) -> Any:
    """Put a boto3 ``bedrock-runtime`` client under allotment's budgets; returns the client.

    Every Converse, ConverseStream, InvokeModel and InvokeModelWithResponseStream call is
    admitted for the person behind ``credential`` (an allotment API key) before any request
    is sent (a refusal raises ``BedrockCallDenied``), tagged with ``requestMetadata``, and
    settled from the usage Bedrock reports. ``inference_profiles`` maps application
    inference-profile ARNs to the model they serve (also read from ``plugins.bedrock``).
    """
    Governor(
        client,
        runtime,
        credential=credential,
        labels=labels,
        inference_profiles=inference_profiles,
        trace_id=trace_id,
    ).install()
    return client


def governor_of(client: Any) -> Governor | None:
    """The governor installed on ``client``, if any."""
    return _governors.get(client)


def _plugin_settings(runtime: Any) -> dict[str, Any]:
    config = getattr(runtime, "config", None)
    settings = (getattr(config, "plugins", None) or {}).get("bedrock") if config else None
    return settings if isinstance(settings, dict) else {}
