"""allotment refusals as LiteLLM ``ProxyException``s, so the proxy answers with DESIGN's body.

LiteLLM re-raises a ``ProxyException`` unchanged and renders ``to_dict()`` under ``"error"``.
"""

from __future__ import annotations

from typing import Any

from litellm.proxy._types import ProxyException

from allotment.errors import AllotmentError

REQUEST_ID_HEADER = "x-allotment-request-id"


class AllotmentRefusal(ProxyException):
    """A refusal whose body is ``{"type", "code", "message", "param", ...details}``.

    ``ProxyException.code`` carries the HTTP status (LiteLLM's handler does ``int(exc.code)``);
    the stable allotment code goes to the body's ``code`` like every other allotment edge.
    """

    def __init__(self, error: AllotmentError, request_id: str | None = None) -> None:
        headers: dict[str, str] = {}
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        if error.status < 500 and error.status not in (408, 409, 429):
            # SDKs honour x-should-retry before their status rules; a refusal is final
            headers["x-should-retry"] = "false"
        super().__init__(
            message=error.message,
            type=error.type,
            param=None,
            code=error.status,
            headers=headers,
            openai_code=error.code,
        )
        self.error = error

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"param": None, **self.error.to_dict()}
        return body


def refusal(error: AllotmentError, request_id: str | None = None) -> AllotmentRefusal:
    return AllotmentRefusal(error, request_id)
