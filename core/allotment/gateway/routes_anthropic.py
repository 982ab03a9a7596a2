"""Anthropic-compatible ``POST /v1/messages`` (errors in Anthropic's own shape)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from allotment.gateway import proxy

router = APIRouter(tags=["anthropic"])


@router.post("/v1/messages", summary="Create a message (Anthropic shape)")
async def messages(request: Request) -> Response:
    return await proxy.handle(request.app.state.gateway, request, "messages")
