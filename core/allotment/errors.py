"""The one family of errors allotment raises, each with an HTTP status and a stable code.

Edges translate them once: to a CLI error message, or to an OpenAI/Anthropic-shaped body.
"""

from __future__ import annotations

from typing import Any


class AllotmentError(Exception):
    """Base error: ``status`` is the HTTP status, ``code`` a stable machine-readable code."""

    status: int = 500
    code: str = "internal_error"
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details: dict[str, Any] = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-shaped ``error`` object (without the outer ``{"error": ...}``)."""
        body: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message}
        body.update(self.details)
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class Denied(AllotmentError):
    """A call refused by authentication, policy or budget. Nothing was reserved."""

    status = 403
    code = "denied"
    type = "invalid_request_error"

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, details=details)
        if status == 401:
            self.type = "authentication_error"
        elif status == 402:
            self.type = "insufficient_quota"
        elif status == 403:
            self.type = "permission_error"
        elif status == 503:
            self.type = "server_error"


class ConfigError(AllotmentError):
    """A configuration file or value is invalid; nothing was applied."""

    status = 400
    code = "invalid_config"
    type = "invalid_request_error"


class InvalidRequest(AllotmentError):
    """Input that cannot be processed (bad token counts, malformed body...)."""

    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class PricingError(AllotmentError):
    """No rate card prices this model, or a card is malformed."""

    status = 400
    code = "unpriced_model"
    type = "invalid_request_error"


class NotFound(AllotmentError):
    status = 404
    code = "not_found"
    type = "invalid_request_error"


class LedgerUnavailable(AllotmentError):
    """The ledger could not be reached; enforced traffic fails closed."""

    status = 503
    code = "ledger_unavailable"
    type = "server_error"
