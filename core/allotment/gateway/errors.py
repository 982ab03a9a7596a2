"""Translate an ``AllotmentError`` once into the HTTP body a client's SDK understands.

OpenAI routes get ``{"error": {...}}``; ``/v1/messages`` gets Anthropic's
``{"type": "error", "error": {...}}``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from allotment.errors import AllotmentError

REQUEST_ID_HEADER = "x-allotment-request-id"
COST_HEADER = "x-allotment-cost"
# the gateway's own time on a call in ms: everything but the wait for the provider
OVERHEAD_HEADER = "x-allotment-overhead-ms"

# Anthropic's error types by status (its SDK maps them to exception classes).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def openai_body(exc: AllotmentError) -> dict[str, Any]:
    error = exc.to_dict()
    error.setdefault("param", None)
    return {"error": error}


def anthropic_body(exc: AllotmentError) -> dict[str, Any]:
    error = exc.to_dict()
    error["type"] = _ANTHROPIC_TYPES.get(exc.status, "api_error")
    return {"type": "error", "error": error}


def error_headers(exc: AllotmentError, request_id: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    if exc.status == 402 or 400 <= exc.status < 500 and exc.status not in (408, 409, 429):
        # SDKs honour x-should-retry before their status rules; a refusal is final.
        headers["x-should-retry"] = "false"
    return headers


def error_response(
    exc: AllotmentError, *, dialect: str = "openai", request_id: str | None = None
) -> Response:
    """The one place an ``AllotmentError`` becomes an HTTP response."""
    body = anthropic_body(exc) if dialect == "anthropic" else openai_body(exc)
    return Response(
        orjson.dumps(body),
        status_code=exc.status,
        media_type="application/json",
        headers=error_headers(exc, request_id),
    )
