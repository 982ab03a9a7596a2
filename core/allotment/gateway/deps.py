"""FastAPI dependencies shared by the gateway's routers (the gateway state, JSON responses)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from allotment.gateway.state import GatewayState


async def get_gateway(request: Request) -> GatewayState:
    gateway: GatewayState = request.app.state.gateway
    return gateway


GatewayDep = Annotated[GatewayState, Depends(get_gateway)]


def _default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson-encoded JSON (dataclasses, datetimes and Decimals included)."""
    body = orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status, headers=headers, media_type="application/json")
