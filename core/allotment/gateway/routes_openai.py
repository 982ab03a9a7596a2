"""OpenAI-compatible routes: chat completions, completions, embeddings and the model list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from allotment.errors import AllotmentError
from allotment.gateway import proxy
from allotment.gateway.deps import GatewayDep, json_response
from allotment.gateway.errors import error_response
from allotment.gateway.forwarding import with_deployments

router = APIRouter(tags=["openai"])


@router.post("/v1/chat/completions", summary="Chat completion (OpenAI shape)")
async def chat_completions(request: Request) -> Response:
    # fastpath.ProxyRoutes serves these POSTs before routing; the declarations document them
    return await proxy.handle(request.app.state.gateway, request, "chat")


@router.post("/v1/completions", summary="Legacy text completion (OpenAI shape)")
async def completions(request: Request) -> Response:
    return await proxy.handle(request.app.state.gateway, request, "completions")


@router.post("/v1/embeddings", summary="Embeddings (OpenAI shape)")
async def embeddings(request: Request) -> Response:
    return await proxy.handle(request.app.state.gateway, request, "embeddings")


@router.get("/v1/models", summary="The models the caller's tier may use")
async def models(request: Request, gateway: GatewayDep) -> Response:
    anthropic = "anthropic-version" in request.headers
    dialect = "anthropic" if anthropic else "openai"
    runtime = gateway.runtime
    try:
        credential = proxy.credential_of(request)
        principal = runtime.authenticate(credential, {"adapter": "gateway", "route": "models"})
        allowed = with_deployments(runtime, principal, runtime.allowed_models(principal))
    except AllotmentError as exc:
        return error_response(exc, dialect=dialect)
    if anthropic:
        data: list[dict[str, Any]] = [
            {"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}
            for m in allowed
        ]
        return json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )
    return json_response(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": m.split("/", 1)[0]} for m in allowed
            ],
        }
    )
