"""Anthropic-compatible ``POST /v1/messages`` (errors in Anthropic's own shape)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from allotment.gateway import proxy
from allotment.gateway.deps import GatewayDep

router = APIRouter(tags=["anthropic"])


@router.post("/v1/messages", summary="Create a message (Anthropic shape)")
async def messages(request: Request, gateway: GatewayDep) -> Response:
    return await proxy.handle(gateway, request, "messages")
