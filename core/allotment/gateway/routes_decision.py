"""The decision API for other gateways: authorize (admit only), settle, and business outcomes.

``/v1/authorize`` works with headers alone (nginx ``auth_request`` sends no body).
``/v1/settle`` moves money, so only a holder of ``ALLOTMENT_ADMIN_TOKEN`` may call it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from allotment.errors import AllotmentError, Denied, InvalidRequest
from allotment.gateway.deps import GatewayDep, json_response
from allotment.gateway.errors import REQUEST_ID_HEADER, error_response
from allotment.gateway.forwarding import priced_model
from allotment.gateway.proxy import credential_of, read_json
from allotment.gateway.routes_admin import check_admin
from allotment.ids import new_request_id
from allotment.intents import extract_tags, input_upper_bound
from allotment.money import to_decimal, usd_string
from allotment.service_tiers import canonical_tier
from allotment.types import UNRECORDED, CallIntent, EndpointMode, Outcome, Usage
from allotment.usage_parsers import parse_usage

router = APIRouter(tags=["decision"])
_BODY_LIMIT = 4 * 1024 * 1024


async def _optional_json(request: Request) -> dict[str, Any]:
    if request.headers.get("content-length") in (None, "0") and "chunked" not in (
        request.headers.get("transfer-encoding") or ""
    ):
        return {}
    return await read_json(request, _BODY_LIMIT)


def _int_field(body: dict[str, Any], key: str, header: str | None) -> int | None:
    value: Any = body.get(key)
    if value is None and header is not None:
        value = int(header) if header.isdigit() else header
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"`{key}` must be a non-negative integer")
    return value


@router.post("/v1/authorize", summary="Admit a call without forwarding it (reserve its worst case)")
async def authorize(request: Request, gateway: GatewayDep) -> Response:
    runtime = gateway.runtime
    headers = request.headers
    request_id = new_request_id()
    try:
        body = await _optional_json(request)
        request_id = str(body.get("request_id") or headers.get("x-allotment-request-id") or request_id)
        credential = body.get("credential") or credential_of(request)
        model_name = body.get("model") or headers.get("x-allotment-model")
        if not isinstance(model_name, str) or not model_name:
            raise InvalidRequest("`model` is required (body or X-Allotment-Model)")
        provider = body.get("provider") or headers.get("x-allotment-provider")
        if provider:
            model = model_name.removeprefix(f"{provider}/")
        else:
            provider, model = runtime.resolve_model(model_name)
        model = priced_model(runtime, str(provider), model)
        tags = extract_tags(headers, body)
        labels = {
            **tags.labels,
            **{k.lower(): str(v) for k, v in (body.get("labels") or {}).items()},
        }
        input_tokens = _int_field(body, "input_tokens", headers.get("x-allotment-input-tokens"))
        if input_tokens is None:
            input_tokens = input_upper_bound(body)
        stream = bool(body.get("stream")) or headers.get("x-allotment-stream") == "true"
        intent = CallIntent(
            request_id=request_id,
            provider=str(provider),
            model=model,
            credential=str(credential),
            endpoint_mode=EndpointMode.STREAM if stream else EndpointMode.SYNC,
            input_tokens=input_tokens,
            max_output_tokens=_int_field(
                body, "max_output_tokens", headers.get("x-allotment-max-output-tokens")
            ),
            labels=labels,
            trace_id=body.get("trace_id") or tags.trace_id,
            retry_of=body.get("retry_of") or tags.retry_of,
            end_user=body.get("end_user") or body.get("user"),
            # the tier asked of the provider: the reservation covers its price
            service_tier=canonical_tier(
                body.get("service_tier") or headers.get("x-allotment-service-tier"), requested=True
            ),
        )
        admission = await runtime.admit_async(intent)
    except AllotmentError as exc:
        gateway.metrics.denials.labels(exc.code).inc()
        return error_response(exc, request_id=request_id)
    principal = admission.principal
    reservation = admission.reservation
    fail_open = reservation.state == UNRECORDED
    if fail_open:
        gateway.metrics.fail_open.inc()
    return json_response(
        {
            "request_id": admission.request_id,
            # let through while the ledger was down: no reservation; settle (or a log line
            # without a reservation) records the call unenforced
            "reservation_id": None if fail_open else reservation.id,
            "fail_open": fail_open,
            "reserved": usd_string(reservation.amount_nanos),
            "reserved_nanos": reservation.amount_nanos,
            "expires_at": reservation.expires_at.isoformat(),
            "provider": admission.provider,
            "model": admission.model,
            "max_output_tokens": admission.max_output_tokens,
            "labels": admission.labels,
            "principal": {
                "person_id": principal.person_id,
                "email": principal.email,
                "team_id": principal.team_id,
                "tier": principal.tier,
                "key_id": principal.key_id,
                "cost_center": principal.cost_center,
            },
        },
        headers={
            REQUEST_ID_HEADER: admission.request_id,
            "x-allotment-person": principal.person_id,
            "x-allotment-team": principal.team_id or "",
        },
    )


@router.post("/v1/settle", summary="Settle an authorized call with its actual usage (admin token)")
async def settle(request: Request, gateway: GatewayDep) -> Response:
    try:
        check_admin(request, gateway)
        body = await read_json(request, _BODY_LIMIT)
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidRequest("`request_id` is required")
        try:
            outcome = Outcome(body.get("outcome", "success"))
        except ValueError:
            raise InvalidRequest("`outcome` is success, error or cancelled") from None
        if isinstance(body.get("provider_usage"), dict):
            # the provider's own usage block, e.g. {"format": "openai", "provider_usage": {...}}
            # and the tier the provider reported outside it (OpenAI's top-level service_tier)
            usage = parse_usage(
                str(body.get("format", "openai")),
                body["provider_usage"],
                service_tier=body.get("service_tier"),
            )
        elif isinstance(body.get("usage"), dict):
            usage = Usage.from_dict(body["usage"])
        else:
            usage = Usage()
        external = body.get("external_cost_nanos")
        event = await gateway.runtime.settle_async(
            request_id,
            usage,
            outcome,
            external_cost_nanos=external if isinstance(external, int) else None,
        )
    except AllotmentError as exc:
        return error_response(exc)
    return json_response(
        {
            "request_id": event.request_id,
            "cost": usd_string(event.cost_nanos),
            "cost_nanos": event.cost_nanos,
            "card_version": event.card_version,
            "outcome": event.outcome.value,
            "usage": event.usage.to_dict(),
            "flags": list(event.flags),
        }
    )


@router.post("/v1/outcomes", summary="Attach a business outcome to a request or trace")
async def outcomes(request: Request, gateway: GatewayDep) -> Response:
    runtime = gateway.runtime
    try:
        try:
            check_admin(request, gateway)
        except Denied:
            runtime.authenticate(credential_of(request), {"adapter": "gateway", "route": "outcomes"})
        body = await read_json(request, _BODY_LIMIT)
        labels = body.get("labels") or {}
        if not isinstance(labels, dict):
            raise InvalidRequest("`labels` must be an object")
        value = body.get("value_usd")
        try:
            value_usd = None if value is None else to_decimal(value)
        except ValueError:
            raise InvalidRequest("`value_usd` must be a decimal amount") from None
        outcome_id = runtime.admin.record_outcome(
            request_id=body.get("request_id"),
            trace_id=body.get("trace_id"),
            outcome=str(body.get("outcome") or ""),
            value_usd=value_usd,
            labels={str(k): str(v) for k, v in labels.items()},
        )
    except AllotmentError as exc:
        return error_response(exc)
    return json_response({"id": outcome_id, "outcome": body.get("outcome")}, status=201)
