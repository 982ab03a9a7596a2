"""admit → forward → settle for one provider call; shared by the OpenAI and Anthropic routes.

Nothing reaches a provider without a reservation, and every admitted call is settled.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from allotment.errors import AllotmentError, Denied, InvalidRequest
from allotment.gateway import litellm_route
from allotment.gateway.errors import COST_HEADER, OVERHEAD_HEADER, REQUEST_ID_HEADER, error_response
from allotment.gateway.forwarding import Reply, Target, UpstreamError, priced_model, resolve_target
from allotment.gateway.state import Call, GatewayState
from allotment.gateway.streaming import AnthropicTracker, OpenAITracker, SettlingStream
from allotment.gateway.usage import anthropic_usage, openai_usage
from allotment.ids import new_request_id
from allotment.intents import estimate_tokens, extract_tags, input_upper_bound, text_bytes
from allotment.money import usd_string
from allotment.service_tiers import canonical_tier
from allotment.types import UNRECORDED, CallIntent, EndpointMode, Outcome, Usage

PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "messages": "/v1/messages",
}
STREAM_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


class TooLarge(AllotmentError):
    status = 413
    code = "request_too_large"
    type = "invalid_request_error"


def credential_of(request: Request) -> str:
    headers = request.headers
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    raise Denied(401, "invalid_api_key", "no API key: send `Authorization: Bearer <key>`")


def _check_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body is larger than {limit} bytes")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes, 400 when it is not JSON."""
    _check_declared(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return _json_object(b"".join(chunks))


async def receive_json(request: Request, limit: int) -> dict[str, Any]:
    """``read_json`` for a request whose body nothing has read yet (the proxy routes).

    It reads the ASGI messages itself: ``Request.stream()``'s async generator costs more than
    the loop, and a body almost always arrives in one message.
    """
    _check_declared(request, limit)
    receive = request.receive
    raw = b""
    chunks: list[bytes] | None = None
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"request body is larger than {limit} bytes")
            if chunks is not None:
                chunks.append(chunk)
            elif raw:
                chunks = [raw, chunk]
            else:
                raw = chunk
        if not message.get("more_body", False):
            break
    return _json_object(raw if chunks is None else b"".join(chunks))


def _max_output(body: dict[str, Any], route: str) -> int | None:
    if route == "embeddings":
        return 0
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidRequest(f"`{key}` must be a non-negative integer")
            return value
    return None


def _end_user(body: dict[str, Any]) -> str | None:
    metadata = body.get("metadata")
    for value in (
        body.get("user"),
        body.get("safety_identifier"),
        metadata.get("user_id") if isinstance(metadata, dict) else None,
    ):
        if isinstance(value, str) and value:
            return value[:200]
    return None


def _asked_tier(body: dict[str, Any]) -> str | None:
    """The tier the body asks for (OpenAI and Anthropic both say ``service_tier``), canonical."""
    return canonical_tier(body.get("service_tier"), requested=True)


def _upstream_body(
    body: dict[str, Any],
    call: Call,
    upstream_model: str,
    max_output: int | None,
    clamped: int | None,
) -> tuple[dict[str, Any], bool]:
    """The body the provider receives, and whether the usage chunk must be stripped back out."""
    out = dict(body)
    out["model"] = upstream_model
    strip_usage = False
    if clamped is not None and clamped != max_output:
        key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        out[key] = clamped
    metadata = out.get("metadata")
    if call.dialect == "anthropic":
        if isinstance(metadata, dict):  # Anthropic accepts only user_id in metadata
            user = metadata.get("user_id")
            if user is None:
                del out["metadata"]
            else:
                out["metadata"] = {"user_id": user}
    else:
        if metadata is not None and not out.get("store"):
            del out["metadata"]  # our labels; OpenAI only keeps metadata on stored completions
        if out.get("stream") is True:
            options = dict(out.get("stream_options") or {})
            strip_usage = not options.get("include_usage")
            options["include_usage"] = True
            out["stream_options"] = options
    return out, strip_usage


def _stamp_overhead(gateway: GatewayState, headers: Any, arrived: float, upstream: float) -> None:
    """Say in a header (and the metric) how long the gateway itself took on this call."""
    own = max(time.perf_counter() - arrived - upstream, 0.0)
    gateway.metrics.overhead.observe(own)
    headers[OVERHEAD_HEADER] = f"{own * 1000:.3f}"


async def handle(gateway: GatewayState, request: Request, route: str) -> Response:
    arrived = time.perf_counter()
    dialect = "anthropic" if route == "messages" else "openai"
    request_id = new_request_id()
    runtime = gateway.runtime
    metrics = gateway.metrics
    try:
        body = await receive_json(request, gateway.max_body_bytes)
        credential = credential_of(request)
        model_name = body.get("model")
        if not isinstance(model_name, str) or not model_name:
            raise InvalidRequest("`model` is required")
        provider, deployment = runtime.resolve_model(model_name)
        model = priced_model(runtime, provider, deployment)
        target = (
            Target(provider, "mock") if gateway.force_mock else resolve_target(runtime, provider, dialect)
        )
        tags = extract_tags(request.headers, body)
        stream = route != "embeddings" and body.get("stream") is True
        max_output = _max_output(body, route)
        intent = CallIntent(
            request_id=request_id,
            provider=provider,
            model=model,
            credential=credential,
            endpoint_mode=EndpointMode.STREAM if stream else EndpointMode.SYNC,
            input_tokens=input_upper_bound(body),
            max_output_tokens=max_output,
            labels=tags.labels,
            trace_id=tags.trace_id,
            retry_of=tags.retry_of,
            end_user=_end_user(body),
            service_tier=_asked_tier(body),
        )
        started = time.perf_counter()
        admission = await gateway.admit(intent)
        metrics.admit_latency.observe(time.perf_counter() - started)
        if admission.reservation.state == UNRECORDED:
            metrics.fail_open.inc()
    except AllotmentError as exc:
        metrics.denials.labels(exc.code).inc()
        metrics.count_request(route, exc.status, "denied")
        denial = error_response(exc, dialect=dialect, request_id=request_id)
        _stamp_overhead(gateway, denial.headers, arrived, 0.0)
        return denial

    call = Call(request_id, route, dialect, provider, model)
    upstream_model = (
        model_name[len(provider) + 1 :] if model_name.startswith(provider + "/") else (model_name)
    )
    out, strip_usage = _upstream_body(body, call, upstream_model, max_output, admission.max_output_tokens)
    started = time.perf_counter()
    try:
        result = await _forward(gateway, target, call, out, request, stream)
    except UpstreamError as exc:
        upstream = time.perf_counter() - started
        event = await gateway.settle(call, Usage(), Outcome.ERROR, status=exc.status)
        response = error_response(exc, dialect=dialect, request_id=request_id)
        if event is not None:
            response.headers[COST_HEADER] = usd_string(event.cost_nanos)
        _stamp_overhead(gateway, response.headers, arrived, upstream)
        return response
    finally:
        upstream = time.perf_counter() - started
        metrics.observe_upstream(provider, upstream)

    if isinstance(result, Reply):
        return await _complete(gateway, call, body, result, arrived, upstream)
    input_estimate = estimate_tokens(text_bytes(body))
    tracker = (
        AnthropicTracker(input_estimate)
        if dialect == "anthropic"
        else OpenAITracker(input_estimate, strip_usage=strip_usage)
    )
    headers = {**STREAM_HEADERS, REQUEST_ID_HEADER: request_id}
    for key in ("x-request-id", "request-id", "openai-processing-ms"):
        if key in result.headers:
            headers[key] = result.headers[key]
    _stamp_overhead(gateway, headers, arrived, upstream)  # up to the first byte
    return SettlingStream(gateway, call, result, tracker, headers)


async def _forward(
    gateway: GatewayState,
    target: Target,
    call: Call,
    body: dict[str, Any],
    request: Request,
    stream: bool,
) -> Any:
    if target.kind == "mock":
        if call.dialect == "anthropic":
            return gateway.mock.anthropic(body, body["model"])
        return gateway.mock.openai(call.route, body, body["model"])
    if target.kind == "litellm":
        return await litellm_route.call(target, call.route, body, stream)
    headers = gateway.forwarder.request_headers(target, request.headers)
    return await gateway.forwarder.send(target, PATHS[call.route], orjson.dumps(body), headers, stream=stream)


def _reply_usage(call: Call, body: dict[str, Any], reply: Reply) -> Usage:
    data = reply.data if isinstance(reply.data, dict) else {}
    usage = data.get("usage")
    if isinstance(usage, dict):
        parsed = (
            anthropic_usage(usage)
            if call.dialect == "anthropic"
            else openai_usage(usage, data.get("service_tier"))
        )
        if parsed is not None:
            return parsed
    # no usage block: estimate from what we can see, and say so
    text = 0
    for choice in data.get("choices") or ():
        message = choice.get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        for value in (content, choice.get("text")):
            if isinstance(value, str):
                text += len(value.encode())
    for block in data.get("content") or ():
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            text += len(block["text"].encode())
    return Usage(
        input_tokens=estimate_tokens(text_bytes(body)),
        output_tokens=estimate_tokens(text),
        estimated=True,
        service_tier=canonical_tier(data.get("service_tier")),
    )


async def _complete(
    gateway: GatewayState, call: Call, body: dict[str, Any], reply: Reply, arrived: float, upstream: float
) -> Response:
    """The provider's answer, then the settlement.

    The client does not wait for the ledger: the cost header is the exact price settle will
    charge (same intent, usage and rate card), and the answer is written before the settle
    runs. The reservation keeps covering the call until then, so a following request can
    never overspend; the ledger shows the call a moment after the client has it.
    """
    headers = dict(reply.headers)
    headers[REQUEST_ID_HEADER] = call.request_id
    if reply.status >= 400:
        # the provider refused: pass its answer through and release the reservation
        usage, outcome = Usage(), Outcome.ERROR
    else:
        usage, outcome = _reply_usage(call, body, reply), Outcome.SUCCESS
    media = headers.pop("content-type", "application/json")
    price = gateway.runtime.quote(call.request_id, usage)
    settle_after: BackgroundTask | None = None
    if price is None:  # admitted elsewhere: settle first, the header then says what it charged
        event = await gateway.settle(call, usage, outcome, status=reply.status)
        cost = None if event is None else event.cost_nanos
    else:
        cost = price.amount_nanos
        settle_after = BackgroundTask(gateway.settle, call, usage, outcome, status=reply.status)
    if cost is not None:
        headers[COST_HEADER] = usd_string(cost)
    _stamp_overhead(gateway, headers, arrived, upstream)
    return Response(
        reply.body, status_code=reply.status, headers=headers, media_type=media, background=settle_after
    )
